"""Triton Inference Server model repositories from exported artifacts: one model per artifact and
backend, ``REPO/<model>/config.pbtxt``, ``REPO/<model>/1/model.plan`` (TensorRT engine), ``1/model.onnx``
(ONNX Runtime) or ``1/model.xml`` and ``model.bin`` (OpenVINO IR, for Triton's openvino backend on CPU
servers), and the artifact's manifest beside the config.

Our artifacts have static shapes with a fixed batch (TensorRT 11 builds them strongly typed from a
static graph). Triton batches only models whose first dimension is -1: a fixed one is refused ("for
the model to support batching ... the first dimension must be -1", onnxruntime_backend #111, #220;
TensorRT plans accept only their one batch size, server #4384). So every config says
``max_batch_size: 0`` and gives whole shapes, the batch included; clients send whole batches of the
artifact's size, and Triton's concurrency comes from its instances: ``instances_per_gpu`` on each GPU
(``KIND_GPU`` for engines; ``KIND_AUTO`` for ONNX Runtime models, which then load on a CPU-only server too;
``KIND_CPU`` for OpenVINO models). No torch, no tritonclient: the config is text.

Triton's OpenVINO backend compiles a model itself; it cannot load OpenVINO's exported compiled model (our
``.openvino.engine``). So the OpenVINO model is the FP32 artifact written as OpenVINO IR, with the FP32 islands
the engine keeps marked as the engine build marks them, and the engine's precision as a parameter
(``HINT_BF16``), as its record says.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..sizes import format_resolution
from ..errors import ArtifactError, UsageError
from ..files import atomic_path, ensure_writable_dir
from ..manifest import Manifest
from ..targets import OPENVINO, TENSORRT

TRITON_TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "float32": "TYPE_FP32"}


@dataclass(frozen=True)
class TritonKind:
    runs_on: str  # the config's line naming what runs the model: a platform, or a backend
    model_file: str  # in the version folder
    instances: str  # the instance group's kind


# A TensorRT plan runs on a GPU only; an ONNX Runtime model on whatever the server has: KIND_AUTO places its
# instances on every GPU, or on the CPU of a server without one (KIND_GPU would refuse to load there); an
# OpenVINO model on the CPU.
KINDS = {"tensorrt": TritonKind('platform: "tensorrt_plan"', "model.plan", "KIND_GPU"),
         "onnxruntime": TritonKind('platform: "onnxruntime_onnx"', "model.onnx", "KIND_AUTO"),
         "openvino": TritonKind('backend: "openvino"', "model.xml", "KIND_CPU")}
MANIFEST_NAME = "crn-manifest.json"


def model_name(manifest: Manifest, kind: str) -> str:
    return f"{Path(manifest.artifact).stem}-{kind}"


def config_text(manifest: Manifest, kind: str, instances_per_gpu: int = 1) -> str:
    """config.pbtxt for one artifact on ``kind`` ("tensorrt", "onnxruntime" or "openvino")."""
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
        KINDS[kind].runs_on,
        "max_batch_size: 0",
        *_tensors("input", manifest.input_specs),
        *_tensors("output", (manifest.output_spec,)),
        f"instance_group [ {{ count: {instances_per_gpu} kind: {KINDS[kind].instances} }} ]",
        *(_openvino_parameters(manifest) if kind == "openvino" else []),
    ]
    return "\n".join(lines) + "\n"


def _openvino_parameters(manifest: Manifest) -> list[str]:
    """Triton's openvino backend's parameters for the engine's record: BF16 where it computes in BF16, one
    stream per instance (latency), the threads it was built and checked with."""
    record = _engine(manifest, OPENVINO)
    values = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(record.threads or 0)}
    if record.inference_precision is not None and record.inference_precision.openvino_hint == "bf16":
        values["HINT_BF16"] = "YES"
    entries = [f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}' for key, value in values.items()]
    return ["parameters [", ",\n".join(entries), "]"]


def _tensors(field: str, specs) -> list[str]:
    entries = [f'  {{ name: "{s.name}" data_type: {TRITON_TYPES[s.dtype]} dims: [ {", ".join(map(str, s.shape))} ] }}'
               for s in specs]
    return [f"{field} [", ",\n".join(entries), "]"]


def write_model(repo: Path, manifest: Manifest, kind: str, instances_per_gpu: int = 1) -> Path:
    """``repo/<model>/``: config.pbtxt, ``1/model.plan``, ``1/model.onnx`` or ``1/model.xml`` (+ ``.bin``), the
    manifest. Files are written under temporary names and renamed; an existing model folder of that name is
    replaced."""
    if kind not in KINDS:
        raise UsageError(f"no Triton backend for '{kind}': choose {', '.join(KINDS)}")
    if instances_per_gpu < 1:
        raise UsageError(f"instances per GPU must be at least 1, got {instances_per_gpu}")
    source = _artifact_file(manifest, kind)
    folder = Path(repo) / model_name(manifest, kind)
    ensure_writable_dir(folder / "1")
    if kind == "openvino":
        _write_openvino_ir(manifest, source, folder / "1" / KINDS[kind].model_file)
    else:
        with atomic_path(folder / "1" / KINDS[kind].model_file) as tmp:
            shutil.copyfile(source, tmp)
    with atomic_path(folder / MANIFEST_NAME) as tmp:
        tmp.write_text(manifest.path.read_text())
    with atomic_path(folder / "config.pbtxt") as tmp:  # last: a folder with a config is complete
        tmp.write_text(config_text(manifest, kind, instances_per_gpu))
    return folder


def _write_openvino_ir(manifest: Manifest, onnx_path: Path, xml: Path) -> None:
    """The FP32 artifact as OpenVINO IR (``xml`` and its ``.bin``), the engine's FP32 islands marked."""
    from ..backends.openvino import import_openvino
    from .openvino_build import write_ir

    ov = import_openvino()
    islands = _engine(manifest, OPENVINO).fp32_islands or []
    with atomic_path(xml) as xml_tmp, atomic_path(xml.with_suffix(".bin")) as bin_tmp, \
            tempfile.TemporaryDirectory(prefix="crn-openvino-") as folder:
        staged = Path(folder) / xml.name  # OpenVINO writes the weights beside, named after the .xml
        write_ir(ov, ov.Core().read_model(str(onnx_path)), islands, staged)
        shutil.move(staged, xml_tmp)
        shutil.move(staged.with_suffix(".bin"), bin_tmp)


def _engine(manifest: Manifest, engine_target):
    record = manifest.engine_record(engine_target)
    if record is None:
        raise ArtifactError(f"{manifest.path} records no {engine_target.runtime} engine; build one with crn-build "
                            f"{manifest.artifact_path}" + ("" if engine_target is TENSORRT else
                                                           f" --target {engine_target.name}"))
    return record


def _artifact_file(manifest: Manifest, kind: str) -> Path:
    if manifest.path is None:
        raise ArtifactError(f"manifest for {manifest.artifact} has not been written; export it first")
    if kind == "tensorrt":  # Triton's TensorRT backend loads TensorRT plans only
        path = manifest.path.parent / _engine(manifest, TENSORRT).file
    else:  # ONNX Runtime's model, and the model OpenVINO's IR is written from
        path = manifest.artifact_path
    if not path.is_file():
        raise ArtifactError(f"{path} is missing beside its manifest {manifest.path}; re-export or rebuild it")
    return path
