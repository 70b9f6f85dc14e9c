"""OpenVINO CPU engines: an FP32 artifact compiled by OpenVINO for a CPU, in FP32 or BF16, and exported
(``export_model``) as ``x.openvino.engine``. No torch. The manifest's engine record says which OpenVINO
version built it and the precision it computes in; opening it imports the compiled model with that
precision (OpenVINO recompiles an export for the properties it is imported with, so the record is what
keeps a BF16 engine BF16 and an FP32 one FP32) and checks that the graph's FP32 islands stay FP32.

Threads follow ONNX Runtime's rules: ``threads`` inference threads per map (None: OpenVINO's own choice);
``streams`` maps may run at once, from threads sharing the backend, each on its own OpenVINO stream with
its own infer request.
"""

from __future__ import annotations

import importlib
import io
import threading
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, CrnError, UsageError
from ..manifest import OUTPUT_NAME, Manifest
from ..precisions import FP32_ISLAND, Precision, precision
from ..records import CpuRecord, EngineRecord
from ..targets import OPENVINO, EngineTarget
from .base import Backend, read_engine, recorded_engine

DEVICE = "CPU"  # OpenVINO's CPU plugin
# What a CPU needs for each reduced inference precision: OpenVINO's name for the capability, and the CPU
# feature that gives it (AVX512-BF16 on AMD Zen 4 and Intel Xeons since Cooper Lake; AMX on top on Sapphire
# Rapids and later). FP32 runs on every CPU.
CPU_FEATURES = {"bf16": ("BF16", "avx512_bf16 (or amx_bf16)")}
# The kernel's CPU flags worth recording with an engine: what OpenVINO's CPU kernels are chosen by.
ISA_FLAGS = ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8")
_FLOAT_TYPES = ("f32", "bf16", "f16")  # runtime precisions that say how a node computes (u8, i32 ... do not)


def import_openvino(target: EngineTarget = OPENVINO):
    """The openvino module, or a one-line refusal naming the extra."""
    try:
        ov = importlib.import_module(target.module)
    except ImportError:
        raise UsageError(f"{target.runtime} is not installed: pip install 'crn-deploy[{target.extra}]'") from None
    if version_tuple(ov.__version__) < target.min_version:
        wanted = ".".join(map(str, target.min_version))
        raise UsageError(f"{target.runtime} {ov.__version__} is too old: crn-deploy needs >= {wanted}")
    return ov


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("-")[0].split(".")[:3] if p.isdigit())


def engines_unavailable_reason(target: EngineTarget = OPENVINO, *, to_build: bool = False) -> str | None:
    """None where OpenVINO engines can be run (or built) here, else one line why not."""
    try:
        import_openvino(target)
    except CrnError as e:
        return str(e)
    return None


def cpu_capabilities(core) -> list[str]:
    """What OpenVINO's CPU plugin says this CPU computes in (FP32, BF16, INT8...)."""
    return list(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def cpu_record(core) -> CpuRecord:
    return CpuRecord(name=str(core.get_property(DEVICE, "FULL_DEVICE_NAME")).strip(), isa=cpu_flags(),
                     capabilities=cpu_capabilities(core))


def cpu_flags() -> list[str]:
    """The inference-relevant extensions among the kernel's CPU flags (Linux); empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in ISA_FLAGS if flag in flags]


def missing_cpu_feature(precision: Precision, core) -> str | None:
    """The CPU feature this CPU lacks to compute in ``precision`` (None where it has it, or needs none)."""
    need = CPU_FEATURES.get(precision.name)
    if need is None or need[0] in cpu_capabilities(core):
        return None
    return need[1]


def default_precision(core, target: EngineTarget = OPENVINO) -> str:
    """The first of the target's precisions this CPU computes in (BF16 where it can, else FP32)."""
    return next(name for name in target.precisions if missing_cpu_feature(precision(name), core) is None)


def compile_config(precision: Precision, threads: int | None = None, streams: int = 1) -> dict:
    """The properties an engine is compiled and imported with: its precision, and ``threads`` per stream."""
    config = {"INFERENCE_PRECISION_HINT": precision.openvino_hint, "NUM_STREAMS": max(1, streams)}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads * max(1, streams)
    return config


def rebuild_command(manifest: Manifest, target: EngineTarget = OPENVINO, precision: str | None = None) -> str:
    """The crn-build command that makes this artifact's OpenVINO engine again (in ``precision``, where given)."""
    return f"crn-build {manifest.artifact_path} --target {target.name}" + (f" --precision {precision}"
                                                                          if precision else "")


def check_engine_compatible(manifest: Manifest, target: EngineTarget, version: str, core) -> EngineRecord:
    """The manifest's OpenVINO engine record, if this OpenVINO and this CPU can run it; else a clear refusal
    naming both sides and the command that fixes it."""
    record = manifest.engine_record(target)
    record = recorded_engine(manifest, target, version, rebuild_command(manifest, target),
                             record and rebuild_command(manifest, target, _precision_name(record)))
    computes_in = record.inference_precision
    if computes_in is None:
        raise ArtifactError(f"{manifest.path}'s {target.runtime} engine record names no inference precision; rebuild "
                            f"it with: {rebuild_command(manifest, target)}")
    missing = missing_cpu_feature(computes_in, core)
    if missing:
        raise ArtifactError(
            f"{record.file} computes in {computes_in.name.upper()} and this CPU "
            f"({core.get_property(DEVICE, 'FULL_DEVICE_NAME')}) has no {missing}; rebuild it for this CPU with: "
            f"{rebuild_command(manifest, target, 'fp32')}")
    return record


def why_engine_cannot_run_here(manifest: Manifest, target: EngineTarget = OPENVINO) -> str | None:
    """None where this machine can run ``manifest``'s OpenVINO engine (library, version, CPU); else one line."""
    reason = engines_unavailable_reason(target)
    if reason is not None:
        return reason
    ov = import_openvino(target)
    try:
        check_engine_compatible(manifest, target, ov.__version__, ov.Core())
    except ArtifactError as e:
        return str(e)
    return None


def islands_not_in_fp32(compiled, islands: list[str]) -> list[str]:
    """The compiled nodes that hold a part of an FP32 island (``islands``: graph node names) but compute in
    another floating-point type: empty where OpenVINO kept every island FP32."""
    wrong = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        originals = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        runs_in = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else ""
        if runs_in in _FLOAT_TYPES and runs_in != "f32" and any(
                name.split("/")[0] in islands for name in originals.split(",")):
            wrong.append(f"{op.get_friendly_name()} computes in {runs_in}")
    return wrong


def island_names(names) -> list[str]:
    """The graph nodes (by name) that compute in FP32 by design."""
    return sorted({name.split("/")[0] for name in names if FP32_ISLAND in name})


def check_io(compiled, manifest: Manifest, where: Path, fix: str) -> None:
    """The compiled model's inputs and outputs have the manifest's names, types and shapes."""
    expected = {spec.name: spec for spec in (*manifest.input_specs, manifest.output_spec)}
    found = {port.get_any_name(): port for port in (*compiled.inputs, *compiled.outputs)}
    if sorted(found) != sorted(expected) or compiled.outputs[0].get_any_name() != OUTPUT_NAME:
        raise ArtifactError(f"{where} has inputs and outputs {sorted(found)}, its manifest says {sorted(expected)}; "
                            f"{fix}")
    for name, spec in expected.items():
        port = found[name]
        dtype, shape = np.dtype(port.get_element_type().to_dtype()).name, tuple(port.get_shape())
        if dtype != spec.dtype or shape != tuple(spec.shape):
            raise ArtifactError(f"{where}: {name} is {dtype} {list(shape)}, the manifest says {spec.dtype} "
                                f"{list(spec.shape)}; {fix}")


def _precision_name(record: EngineRecord) -> str | None:
    return record.inference_precision.name if record.inference_precision is not None else None


class OpenVINOBackend(Backend):
    """Runs one OpenVINO engine on this CPU. ``record``: the engine's record (default: the manifest's; a build
    passes the one it is about to write)."""

    device = "cpu"

    def __init__(self, engine_path: Path, manifest: Manifest, *, record: EngineRecord | None = None,
                 threads: int | None = None, streams: int = 1, target: EngineTarget = OPENVINO) -> None:
        super().__init__()
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        self.path, self.manifest, self.target = Path(engine_path), manifest, target
        self.record, self.threads, self.streams = record, threads, max(1, streams)
        self.name = target.label
        self._compiled = None
        self._local = threading.local()

    def _open_impl(self) -> None:
        ov = import_openvino(self.target)
        core = ov.Core()
        record = self.record or check_engine_compatible(self.manifest, self.target, ov.__version__, core)
        rebuild = rebuild_command(self.manifest, self.target, _precision_name(record))
        fix = f"rebuild it with: {rebuild}"
        blob = read_engine(self.path, record, rebuild_command(self.manifest, self.target), rebuild)
        config = compile_config(record.inference_precision, self.threads, self.streams)
        try:
            compiled = core.import_model(io.BytesIO(blob), DEVICE, config)
        except RuntimeError as e:
            raise ArtifactError(f"{self.target.runtime} cannot import {self.path} ({_what_it_said(e)}); {fix}") \
                from None
        check_io(compiled, self.manifest, self.path, fix)
        wrong = islands_not_in_fp32(compiled, record.fp32_islands or [])
        if wrong:
            raise ArtifactError(f"{self.path}: {self.target.runtime} {ov.__version__} does not keep the graph's FP32 "
                                f"islands in FP32 ({'; '.join(wrong[:3])}); {fix}")
        self._input_names = [spec.name for spec in self.manifest.input_specs]
        self._compiled = compiled

    def _request(self):
        """This thread's infer request: maps painted at once each need their own."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def _run_impl(self, ids: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        result = self._request().infer(dict(zip(self._input_names, (ids, *extra), strict=True)))
        return np.asarray(result[0])

    def _close_impl(self) -> None:
        self._compiled = None
        self._local = threading.local()


def open_engine(manifest: Manifest, target: EngineTarget, record: EngineRecord, *, threads: int | None = None,
                concurrent: int = 1, **_) -> OpenVINOBackend:
    """The backend (not yet opened) for ``manifest``'s OpenVINO engine: ``threads`` per map (None: OpenVINO's
    choice), ``concurrent`` maps at once. GPU options (CUDA graphs, slots, gpu) do not apply on a CPU."""
    return OpenVINOBackend(manifest.path.parent / record.file, manifest, threads=threads, streams=concurrent,
                           target=target)


def _what_it_said(error: Exception) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
