"""The thin runtime: open an exported artifact and synthesize pictures from label maps.

    from crn_deploy import runtime
    with runtime.load("engines/cityscapes-1024p-seed0-1024x2048-fp16.engine") as synth:
        rgb = synth(ids)                  # uint8 [H,W] ids -> uint8 [H,W,3]

``.engine`` files run on TensorRT, ``.rtx.engine`` files on TensorRT-RTX, ``.onnx`` files on ONNX Runtime.

Imports neither torch nor any backend library until an artifact is opened. The PyTorch reference behind
an artifact is ``crn_deploy.measure.reference.load_reference`` (it needs torch).
"""

from __future__ import annotations

from pathlib import Path

from ..backends.base import Backend
from ..errors import ArtifactError, UsageError
from ..files import file_digest
from ..manifest import Manifest, manifest_for
from ..targets import TARGETS, target_of_engine_file
from .synthesizer import OutputSize, Synthesizer

__all__ = ["OutputSize", "Synthesizer", "artifact_sha256", "load", "open_backend"]

ARTIFACT_SUFFIXES = (".onnx", ".engine")  # every engine target's file ends in .engine


def load(path, *, device: str = "auto", threads: int | None = None, cuda_graphs: bool = True,
         slots: int = 2, gpu: int = 0, style_seed: int = 0) -> Synthesizer:
    """Open an artifact: ``x.engine`` with TensorRT, ``x.rtx.engine`` with TensorRT-RTX (``cuda_graphs``,
    ``slots`` frames in flight),
    ``x.onnx`` (or its ``x.json`` manifest) with ONNX Runtime on ``device`` (cpu, cuda, tensorrt, auto).
    ``gpu`` picks the CUDA device (as numbered under CUDA_VISIBLE_DEVICES); ``style_seed`` the style of
    models with a style input (SPADE with a VAE)."""
    path = Path(path)
    manifest = _read_manifest(path)
    engine_target = target_of_engine_file(path.name)
    kind = engine_target.name if engine_target else "onnxruntime"
    backend = open_backend(manifest, kind, device=device, threads=threads, cuda_graphs=cuda_graphs, slots=slots,
                           gpu=gpu)
    return Synthesizer(backend, manifest, style_seed=style_seed).open()


def open_backend(manifest: Manifest, kind: str, *, device: str = "auto", threads: int | None = None,
                 cuda_graphs: bool = True, slots: int = 2, gpu: int = 0, timing: bool = False) -> Backend:
    """The backend (not yet opened) that runs ``manifest``'s artifact: ``kind`` an engine target ("tensorrt",
    "rtx": its engine) or "onnxruntime" (its ONNX, on ``device``). The one factory: ``load`` and ``crn-bench``
    both use it."""
    if kind in TARGETS:
        from ..backends.tensorrt import TensorRTBackend, rebuild_command

        engine_target = TARGETS[kind]
        record = manifest.engine_record(engine_target)
        if record is None:
            raise ArtifactError(f"{manifest.path} records no {engine_target.runtime} engine; build one with "
                                f"{rebuild_command(manifest, engine_target)}")
        return TensorRTBackend(manifest.path.parent / record.file, manifest, target=engine_target,
                               cuda_graphs=cuda_graphs, slots=slots, device=gpu, timing=timing)
    if kind != "onnxruntime":
        raise UsageError(f"unknown backend '{kind}': choose {', '.join(TARGETS)} or onnxruntime")
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
