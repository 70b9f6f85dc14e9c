"""Engine targets as one table: TensorRT (built on the GPU that runs it), TensorRT for RTX (built
ahead of time on any machine, GPU or not, for the GeForce RTX / RTX PRO / A100 generations it names) and
OpenVINO (CPU engines, FP32 or BF16, built on a CPU of the kind that runs them).

What differs between them is data here: the module to import, the engine file's name, where the manifest
keeps its record, whether a build needs a GPU, which runtime features (compute-capability targets, runtime
cache, the library's own CUDA-graph capture) apply, which crn-deploy modules build and run its engines, and
where those run. Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class EngineTarget:
    name: str  # --target value
    runtime: str  # the library's name as people write it
    module: str  # the Python module to import
    extra: str  # the crn-deploy extra that installs it
    suffix: str  # engine file: <artifact stem><suffix>
    manifest_key: str  # the manifest section holding the engine record
    min_version: tuple[int, ...]
    build_needs_gpu: bool  # TensorRT times kernels on the GPU; TensorRT-RTX compiles ahead of time on the CPU
    timing_cache: bool  # TensorRT's timing cache (a no-op in TensorRT-RTX, which refuses CPU builds with one)
    compute_capabilities: bool  # the build names the GPUs it serves (--compute-capability)
    runtime_cache: str | None  # suffix of the JIT kernel cache kept beside the engine, where there is one
    own_cuda_graphs: bool  # the library captures CUDA graphs itself (we do not capture around it)
    header_check: bool  # IRuntime.get_engine_validity reads the plan's header before it is deserialized
    gpus: tuple[str, ...] | None = None  # compute capabilities it can target at all ("12.x": every 12 minor); None: any
    backend: str = "tensorrt"  # the crn_deploy.backends module that runs its engines
    builder: str = "engine"  # the crn_deploy.artifacts module that builds them
    device: str = "cuda"  # where its engines run: cuda or cpu
    artifacts: tuple[str, ...] = ("fp32", "fp16")  # the precisions of the ONNX artifacts it builds from
    precisions: tuple[str, ...] = ()  # the precisions a build may compute in (--precision); empty: the graph's own
    triton: str | None = None  # the Triton model kind (crn_deploy.artifacts.triton) serving it; None: Triton has none

    def engine_name(self, artifact_stem: str) -> str:
        return f"{artifact_stem}{self.suffix}"

    def file_names(self, artifact_stem: str) -> list[str]:
        """The engine and what is kept beside it (TensorRT-RTX's kernel cache)."""
        return [self.engine_name(artifact_stem), *([artifact_stem + self.runtime_cache] if self.runtime_cache else [])]

    @property
    def label(self) -> str:
        """The backend's name in reports: tensorrt, tensorrt-rtx, openvino."""
        return self.backend if self.name == self.backend else f"{self.backend}-{self.name}"


TENSORRT = EngineTarget("tensorrt", "TensorRT", "tensorrt", "tensorrt", ".engine", "engine", (10, 12),
                        build_needs_gpu=True, timing_cache=True, compute_capabilities=False, runtime_cache=None,
                        own_cuda_graphs=False, header_check=False, triton="tensorrt")
RTX = EngineTarget("rtx", "TensorRT-RTX", "tensorrt_rtx", "rtx", ".rtx.engine", "rtx_engine", (1, 0),
                   build_needs_gpu=False, timing_cache=False, compute_capabilities=True,
                   runtime_cache=".rtx.runtime-cache", own_cuda_graphs=True, header_check=True,
                   gpus=("7.5", "8.0", "8.6", "8.9", "12.x"))
# OpenVINO compiles the FP32 artifact for this CPU in FP32 or BF16 and exports the compiled model (export_model);
# Triton's OpenVINO backend serves the model itself (OpenVINO IR), not that export.
OPENVINO = EngineTarget("openvino", "OpenVINO", "openvino", "openvino", ".openvino.engine", "openvino_engine",
                        (2026, 4), build_needs_gpu=False, timing_cache=False, compute_capabilities=False,
                        runtime_cache=None, own_cuda_graphs=False, header_check=False, backend="openvino",
                        builder="openvino_build", device="cpu", artifacts=("fp32",), precisions=("bf16", "fp32"),
                        triton="openvino")
TARGETS: dict[str, EngineTarget] = {t.name: t for t in (TENSORRT, RTX, OPENVINO)}

# The GPUs TensorRT-RTX can build for, by compute capability (its ComputeCapability.SM<nn> names).
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# What it builds for when none is named: Ampere and later ("12.x": 12.0 and every later 12 minor).
RTX_DEFAULT_COMPUTE_CAPABILITIES = ("8.0", "8.6", "8.9", "12.x")
_NOT_RTX = {"9.0": "Hopper (H100, H200)", "10.0": "datacenter Blackwell (B200)", "10.3": "datacenter Blackwell",
            "8.7": "Jetson Orin", "11.0": "Jetson Thor"}


def target(name: str) -> EngineTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown engine target '{name}': choose one of {', '.join(TARGETS)}") from None


def target_of_engine_file(path_name: str) -> EngineTarget | None:
    """The target whose engines are named like ``path_name`` (the longest matching suffix wins)."""
    matches = [t for t in TARGETS.values() if path_name.endswith(t.suffix)]
    return max(matches, key=lambda t: len(t.suffix)) if matches else None


def artifact_stem_of(path_name: str) -> str:
    """``x.rtx.engine``, ``x.openvino.engine`` and ``x.engine`` -> ``x``; other names lose their last suffix."""
    found = target_of_engine_file(path_name)
    if found is not None:
        return path_name[: -len(found.suffix)]
    return path_name.rsplit(".", 1)[0] if "." in path_name else path_name


def parse_compute_capabilities(text: str) -> tuple[str, ...]:
    """'75,86,89,120' or '8.6,12.0' -> ('7.5', '8.6', '8.9', '12.0'): the GPUs an RTX engine serves."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        cc = item if "." in item else (f"{item[:-1]}.{item[-1]}" if item.isdigit() and len(item) >= 2 else item)
        if cc in _NOT_RTX:
            raise UsageError(f"compute capability {item} ({_NOT_RTX[cc]}) is not a TensorRT-RTX target; build a "
                             "TensorRT engine on that GPU instead: crn-build ... --target tensorrt")
        if cc not in RTX_COMPUTE_CAPABILITIES:
            raise UsageError(f"--compute-capability takes a comma-separated list of "
                             f"{', '.join(c.replace('.', '') for c in RTX_COMPUTE_CAPABILITIES)}; got '{item}'")
        found.append(cc)
    return tuple(dict.fromkeys(found))


def serves(compute_capabilities, gpu_compute_capability: str) -> bool:
    """Whether an engine built for ``compute_capabilities`` ("8.6", "12.x", ...) runs on a GPU of that one."""
    major = gpu_compute_capability.split(".")[0]
    return any(cc == gpu_compute_capability or cc == f"{major}.x" for cc in compute_capabilities)
