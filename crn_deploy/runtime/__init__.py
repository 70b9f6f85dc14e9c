"""The thin runtime: open an exported artifact and synthesize pictures from label maps.

    from crn_deploy import runtime
    with runtime.load("engines/cityscapes-1024p-seed0-1024x2048-fp16.engine") as synth:
        rgb = synth(ids)                  # uint8 [H,W] ids -> uint8 [H,W,3]

``.engine`` files run on TensorRT, ``.rtx.engine`` files on TensorRT-RTX, ``.openvino.engine`` files on OpenVINO
(CPU), ``.onnx`` files on ONNX Runtime: the engine targets' table names each file's backend.

Imports neither torch nor any backend library until an artifact is opened. The PyTorch reference behind
an artifact is ``crn_deploy.measure.reference.load_reference`` (it needs torch).
"""

from __future__ import annotations

from pathlib import Path

from ..backends import engine_module
from ..backends.base import Backend
from ..data.label_mapping import resolve_label_map
from ..errors import ArtifactError, UsageError
from ..files import file_digest
from ..manifest import Manifest, manifest_for
from ..targets import EngineTarget, target_of_engine_file
from .synthesizer import OutputSize, Synthesizer

__all__ = ["OutputSize", "Synthesizer", "artifact_sha256", "load", "open_backend"]

ARTIFACT_SUFFIXES = (".onnx", ".engine")  # every engine target's file ends in .engine


def load(path, *, device: str = "auto", threads: int | None = None, cuda_graphs: bool = True,
         slots: int = 2, gpu: int = 0, style_seed: int = 0, concurrent: int = 1, label_map=None) -> Synthesizer:
    """Open an artifact: ``x.engine`` with TensorRT, ``x.rtx.engine`` with TensorRT-RTX (``cuda_graphs``,
    ``slots`` frames in flight), ``x.openvino.engine`` with OpenVINO on the CPU (``threads`` per map),
    ``x.onnx`` (or its ``x.json`` manifest) with ONNX Runtime on ``device`` (cpu, cuda, tensorrt, auto).
    ``gpu`` picks the CUDA device (as numbered under CUDA_VISIBLE_DEVICES); ``style_seed`` the style of
    models with a style input (SPADE with a VAE); ``concurrent``: maps the caller runs at once from threads
    sharing the synthesizer (an OpenVINO engine gives each its own stream); ``label_map`` the label mapping the
    maps passed in are read through (``"carla"``, ``"carla-palette"``, a .toml/.json file: docs/streaming.md),
    checked against the artifact's label set before anything is opened."""
    path = Path(path)
    manifest = _read_manifest(path)
    label_map = resolve_label_map(label_map, manifest.label_set)  # a mapping the set cannot take stops here
    backend = open_backend(manifest, target_of_engine_file(path.name), device=device, threads=threads,
                           cuda_graphs=cuda_graphs, slots=slots, gpu=gpu, concurrent=concurrent)
    return Synthesizer(backend, manifest, style_seed=style_seed, label_map=label_map).open()


def open_backend(manifest: Manifest, engine_target: EngineTarget | None, *, device: str = "auto",
                 threads: int | None = None, cuda_graphs: bool = True, slots: int = 2, gpu: int = 0,
                 timing: bool = False, concurrent: int = 1) -> Backend:
    """The backend (not yet opened) that runs ``manifest``'s artifact: an engine target's engine (run by the
    backend module the targets' table names), or, for None, its ONNX on ONNX Runtime on ``device``. The one
    factory: ``load`` and ``crn-bench`` both use it."""
    if engine_target is not None:
        runner = engine_module(engine_target)
        record = manifest.engine_record(engine_target)
        if record is None:
            raise ArtifactError(f"{manifest.path} records no {engine_target.runtime} engine; build one with "
                                f"{runner.rebuild_command(manifest, engine_target)}")
        return runner.open_engine(manifest, engine_target, record, threads=threads, concurrent=concurrent,
                                  cuda_graphs=cuda_graphs, slots=slots, gpu=gpu, timing=timing)
    manifest.check_artifact()  # ONNX Runtime reads the file whole: its digest is taken once per file
    from ..backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest.artifact_path, device, threads=threads, gpu=gpu)


def artifact_sha256(path) -> str:
    """The SHA-256 of the file ``load(path)`` runs: the .onnx or .engine given, or a manifest's ONNX (taken once
    per file and process; ONNX Runtime's opening takes the same one)."""
    path = Path(path)
    if path.suffix == ".json":
        path = _read_manifest(path).artifact_path
    elif not path.is_file():
        _read_manifest(path)  # names what is missing and how to make it
    return file_digest(path)


def _read_manifest(path) -> Manifest:
    path = Path(path)
    if path.suffix not in (".json", *ARTIFACT_SUFFIXES):
        raise UsageError(f"{path}: expected an exported .onnx or .engine file, or its .json manifest")
    if path.suffix in ARTIFACT_SUFFIXES and not path.is_file():
        make = "build it with crn-build" if path.suffix == ".engine" else "export it with crn-export"
        raise ArtifactError(f"{path} not found; {make}, or pass the path of one that exists")
    return Manifest.read(manifest_for(path))
