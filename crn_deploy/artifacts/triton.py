"""Triton Inference Server model repositories from exported artifacts: one model per artifact and
backend, ``REPO/<model>/config.pbtxt``, ``REPO/<model>/1/model.plan`` (TensorRT engine) or
``1/model.onnx`` (ONNX Runtime), and the artifact's manifest beside the config.

Our artifacts have static shapes with a fixed batch (TensorRT 11 builds them strongly typed from a
static graph). Triton batches only models whose first dimension is -1: a fixed one is refused ("for
the model to support batching ... the first dimension must be -1", onnxruntime_backend #111, #220;
TensorRT plans accept only their one batch size, server #4384). So every config says
``max_batch_size: 0`` and gives whole shapes, the batch included; clients send whole batches of the
artifact's size, and Triton's concurrency comes from its instances: ``instances_per_gpu`` on each GPU
(``KIND_GPU`` for engines; ``KIND_AUTO`` for ONNX Runtime models, which then load on a CPU-only server too).
No torch, no tritonclient: the config is text.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import __version__
from ..sizes import format_resolution
from ..errors import ArtifactError, UsageError
from ..files import atomic_path, ensure_writable_dir
from ..manifest import Manifest
from ..targets import TENSORRT

TRITON_TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "float32": "TYPE_FP32"}
PLATFORMS = {"tensorrt": ("tensorrt_plan", "model.plan"), "onnxruntime": ("onnxruntime_onnx", "model.onnx")}
# A TensorRT plan runs on a GPU only; an ONNX Runtime model on whatever the server has: KIND_AUTO places its
# instances on every GPU, or on the CPU of a server without one (KIND_GPU would refuse to load there).
INSTANCE_KINDS = {"tensorrt": "KIND_GPU", "onnxruntime": "KIND_AUTO"}
MANIFEST_NAME = "crn-manifest.json"


def model_name(manifest: Manifest, kind: str) -> str:
    return f"{Path(manifest.artifact).stem}-{kind}"


def config_text(manifest: Manifest, kind: str, instances_per_gpu: int = 1) -> str:
    """config.pbtxt for one artifact on ``kind`` ("tensorrt" or "onnxruntime")."""
    platform, _ = PLATFORMS[kind]
    engine = manifest.engine_record(TENSORRT)
    trt = f"; engine built with TensorRT {engine.runtime_version}: the server's must match" \
        if kind == "tensorrt" and engine else ""
    out = manifest.output_resolution
    sizes = format_resolution(manifest.resolution) + ("" if out == manifest.resolution else
                                                      f" -> {format_resolution(out)}")
    lines = [
        f"# crn-deploy {__version__}: {manifest.artifact} ({manifest.family_name}, {sizes}, {manifest.precision}, "
        f"batch {manifest.batch}){trt}",
        "# Whole shapes and max_batch_size 0: the artifact's batch is fixed (Triton batches only a -1 batch "
        "dimension).",
        f'name: "{model_name(manifest, kind)}"',
        f'platform: "{platform}"',
        "max_batch_size: 0",
        *_tensors("input", manifest.input_specs),
        *_tensors("output", (manifest.output_spec,)),
        f"instance_group [ {{ count: {instances_per_gpu} kind: {INSTANCE_KINDS[kind]} }} ]",
    ]
    return "\n".join(lines) + "\n"


def _tensors(field: str, specs) -> list[str]:
    entries = [f'  {{ name: "{s.name}" data_type: {TRITON_TYPES[s.dtype]} dims: [ {", ".join(map(str, s.shape))} ] }}'
               for s in specs]
    return [f"{field} [", ",\n".join(entries), "]"]


def write_model(repo: Path, manifest: Manifest, kind: str, instances_per_gpu: int = 1) -> Path:
    """``repo/<model>/``: config.pbtxt, ``1/model.plan`` or ``1/model.onnx``, the manifest. Files are
    written under temporary names and renamed; an existing model folder of that name is replaced."""
    if kind not in PLATFORMS:
        raise UsageError(f"no Triton platform for backend '{kind}': choose tensorrt or onnxruntime")
    if instances_per_gpu < 1:
        raise UsageError(f"instances per GPU must be at least 1, got {instances_per_gpu}")
    source = _artifact_file(manifest, kind)
    folder = Path(repo) / model_name(manifest, kind)
    ensure_writable_dir(folder / "1")
    with atomic_path(folder / "1" / PLATFORMS[kind][1]) as tmp:
        shutil.copyfile(source, tmp)
    with atomic_path(folder / MANIFEST_NAME) as tmp:
        tmp.write_text(manifest.path.read_text())
    with atomic_path(folder / "config.pbtxt") as tmp:  # last: a folder with a config is complete
        tmp.write_text(config_text(manifest, kind, instances_per_gpu))
    return folder


def _artifact_file(manifest: Manifest, kind: str) -> Path:
    if manifest.path is None:
        raise ArtifactError(f"manifest for {manifest.artifact} has not been written; export it first")
    if kind == "tensorrt":
        engine = manifest.engine_record(TENSORRT)  # Triton's TensorRT backend loads TensorRT plans only
        if engine is None:
            raise ArtifactError(f"{manifest.path} records no TensorRT engine; build one with crn-build "
                                f"{manifest.artifact_path}")
        path = manifest.path.parent / engine.file
    else:
        path = manifest.artifact_path
    if not path.is_file():
        raise ArtifactError(f"{path} is missing beside its manifest {manifest.path}; re-export or rebuild it")
    return path
