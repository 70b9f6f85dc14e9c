"""Build TensorRT engines from our ONNX artifacts. Needs tensorrt and cuda-python, not torch, so
``crn-build`` runs on a deployment box: export anywhere, build on the target.

One code path for TensorRT >= 10.12 and 11.x: a strongly typed network (precision is decided in
the ONNX graph; BuilderFlag.FP16 is gone in 11), checked layer by layer before the build, so an
FP16 request never yields a silent FP32 engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..backends.cuda import Cuda
from ..backends.tensorrt import import_tensorrt, tensorrt_dtype
from ..errors import ArtifactError, CrnError, UsageError
from ..files import sha256_file, write_bytes_atomic
from ..manifest import Manifest
from ..precisions import TABLE as PRECISION_TABLE
from ..records import EngineRecord, GpuRecord

TIMING_CACHE_NAME = "timing.cache"  # in the engines folder, shared by every resolution


@dataclass(frozen=True)
class BuildOptions:
    workspace_bytes: int | None = None  # None: TensorRT's default (all of the GPU's memory)
    optimization_level: int = 3  # 0..5; TensorRT's default is 3
    timing_cache: Path | None = None  # None: <engines folder>/timing.cache
    detailed_profiling: bool = False  # ProfilingVerbosity.DETAILED: per-layer info in the engine inspector
    tf32: bool = False  # FP32 engines: allow TF32 convolutions (off: an fp32 engine computes in FP32)

    def __post_init__(self) -> None:
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"builder optimization level must be 0..5, got {self.optimization_level}")


def build_engine(manifest: Manifest, options: BuildOptions = BuildOptions(),
                 log: Callable[[str], None] = print) -> Manifest:
    """Write ``<stem>.engine`` beside the ONNX and record it in the manifest."""
    trt = import_tensorrt()
    onnx_path = manifest.artifact_path
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path} is missing beside its manifest {manifest.path}; re-export it")
    cuda = Cuda()
    try:
        gpu = cuda.properties()
    finally:
        cuda.close()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)  # held to the end: the parser owns weights
    check_network_precision(trt, network, manifest.precision, onnx_path)
    config = _config(trt, builder, manifest, options)
    cache_path = options.timing_cache or onnx_path.parent / TIMING_CACHE_NAME
    _cache = use_timing_cache(config, cache_path, log)  # held to the end: TensorRT needs it through the build

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if plan is None:
        raise CrnError(f"TensorRT could not build an engine from {onnx_path} (see its log above); if it ran out of "
                       "memory, close other GPU programs or lower --workspace")
    engine_path = onnx_path.with_suffix(".engine")
    convolutions = check_built_engine(trt, logger, plan, manifest)  # before writing: never replace a good one
    write_bytes_atomic(engine_path, memoryview(plan))
    write_bytes_atomic(cache_path, memoryview(config.get_timing_cache().serialize()))
    manifest.engine = EngineRecord(
        file=engine_path.name, sha256=sha256_file(engine_path), size_bytes=engine_path.stat().st_size,
        tensorrt_version=trt.__version__, gpu=GpuRecord(**gpu), build_seconds=round(seconds, 2),
        builder={**asdict(options), "timing_cache": str(cache_path)}, convolution_weights=convolutions)
    manifest.write(manifest.path)
    log(f"{engine_path.name}: built in {seconds:.1f} s with TensorRT {trt.__version__} for {gpu['name']} "
        f"({engine_path.stat().st_size / 2**20:.1f} MiB)")
    return manifest


def _parse(trt, builder, logger, onnx_path: Path):
    # STRONGLY_TYPED is needed on 10.x and accepted (ignored) on 11.x; its integer value changed
    # between releases, so it is always used by name.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    return network, parser


def check_network_precision(trt, network, precision: str, where: Path) -> None:
    """Refuse unless every (transposed) convolution computes in the requested type and every norm in FP32."""
    want = getattr(trt.DataType, PRECISION_TABLE[precision].tensorrt_type)
    convolutions = (trt.LayerType.CONVOLUTION, trt.LayerType.DECONVOLUTION)
    wrong = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in convolutions and layer.get_output(0).dtype != want:
            wrong.append(f"{layer.name} computes in {layer.get_output(0).dtype}")
        if layer.type == trt.LayerType.NORMALIZATION and layer.get_input(0).dtype != trt.DataType.FLOAT:
            wrong.append(f"{layer.name} normalizes in {layer.get_input(0).dtype}")
    if wrong:
        raise ArtifactError(f"{where} would not give a {precision} engine with FP32 normalization "
                            f"({'; '.join(wrong[:4])}); re-export it with this crn-export")


def _config(trt, builder, manifest: Manifest, options: BuildOptions):
    config = builder.create_builder_config()
    if options.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    if options.detailed_profiling:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not PRECISION_TABLE[manifest.precision].reduced and not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default and would round FP32 convolutions
    return config


def use_timing_cache(config, cache_path: Path, log: Callable[[str], None]):
    """Attach the engines folder's timing cache; one from another GPU or TensorRT is replaced, not trusted.
    Returns the cache, which must outlive the build."""
    saved = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(saved)
    if config.set_timing_cache(cache, False):
        return cache
    log(f"{cache_path} was timed on another GPU or TensorRT version; starting a fresh timing cache")
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, False):
        raise CrnError(f"TensorRT refused an empty timing cache for {cache_path}")
    return cache


def check_built_engine(trt, logger, plan, manifest: Manifest) -> dict[str, int] | None:
    """Deserialize the built plan, confirm uint8 I/O of the manifest's shapes and, where the engine
    carries detailed layer information, the type of its convolution weights."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise CrnError(f"TensorRT cannot read back the engine it just built from {manifest.artifact_path}")
    for spec in (*manifest.input_specs, manifest.output_spec):
        shape = tuple(engine.get_tensor_shape(spec.name))
        if engine.get_tensor_dtype(spec.name) != tensorrt_dtype(trt, spec.dtype) or shape != spec.shape:
            raise CrnError(f"the built engine's {spec.name} is {engine.get_tensor_dtype(spec.name)} {list(shape)}, "
                           f"not {spec.dtype} {list(spec.shape)}; not kept")
    inspector = engine.create_engine_inspector()
    counts = convolution_weight_types(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    wanted = PRECISION_TABLE[manifest.precision].inspector_weights
    if counts and set(counts) != {wanted}:
        raise ArtifactError(f"the built engine's convolutions hold weights of types {counts}, not all {wanted} as "
                            f"{manifest.precision} needs; not kept (re-export with this crn-export, then crn-build)")
    return counts or None


def convolution_weight_types(layer_information: str) -> dict[str, int]:
    """How many convolution layers hold weights of each type ("Half", "Float"...), from the engine
    inspector's JSON. Empty where it names layers only (ProfilingVerbosity other than DETAILED) or
    where TensorRT fused the convolutions into opaque nodes."""
    try:
        layers = json.loads(layer_information).get("Layers", [])
    except (ValueError, AttributeError):
        return {}
    counts: dict[str, int] = {}
    for layer in layers:
        kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}" if isinstance(layer, dict) else ""
        if "convolution" not in kind.lower():  # CaskConvolution, Convolution...
            continue
        weights = layer.get("Weights")
        if isinstance(weights, dict) and weights.get("Type"):
            counts[weights["Type"]] = counts.get(weights["Type"], 0) + 1
    return counts
