"""Build engines from our ONNX artifacts, for either target: TensorRT (>= 10.12 and 11.x, on the GPU
that will run the engine) or TensorRT-RTX (ahead of time, on any machine, for the RTX-class GPUs it
names). Needs the target's library (and, for TensorRT, cuda-python and a GPU), not torch, so
``crn-build`` runs on a deployment box: export anywhere, build where the library is.

One code path: a strongly typed network (precision is decided in the ONNX graph; BuilderFlag.FP16 is
gone in 11 and never existed in TensorRT-RTX), checked layer by layer and at its inputs and outputs
before the build, so an FP16 request never yields a silent FP32 engine. Nothing is written unless the
build succeeds; the library's log stays quiet unless ``verbose``, its warnings are kept in the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..backends.tensorrt import gpu_properties, import_engine_library, tensorrt_dtype
from ..errors import ArtifactError, CrnError, UsageError
from ..files import sha256_file, write_bytes_atomic
from ..manifest import Manifest
from ..precisions import FP32, FP32_ISLAND, Precision
from ..records import EngineRecord, GpuRecord
from ..targets import RTX_DEFAULT_COMPUTE_CAPABILITIES, TENSORRT, EngineTarget

TIMING_CACHE_NAME = "timing.cache"  # in the engines folder, shared by every resolution (TensorRT only)


@dataclass(frozen=True)
class BuildOptions:
    workspace_bytes: int | None = None  # None: TensorRT's default (all of the GPU's memory)
    optimization_level: int = 3  # 0..5; TensorRT's default is 3
    timing_cache: Path | None = None  # None: <engines folder>/timing.cache
    detailed_profiling: bool = False  # ProfilingVerbosity.DETAILED: per-layer info in the engine inspector
    tf32: bool = False  # allow TF32 convolutions (off: FP32 engines and FP32 islands compute in FP32)
    target: EngineTarget = TENSORRT
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets ("8.6", ...); empty: its default
    verbose: bool = False  # print the library's log (info and above), not only a count of its warnings

    def __post_init__(self) -> None:
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"builder optimization level must be 0..5, got {self.optimization_level}")
        if self.compute_capabilities and not self.target.compute_capabilities:
            raise UsageError(f"--compute-capability chooses TensorRT-RTX's GPUs; a {self.target.runtime} engine runs "
                             "on the GPU that builds it (add --target rtx, or drop --compute-capability)")

    def to_record(self, timing_cache: Path | None) -> dict:
        """The options as the manifest keeps them (no defaults that do not apply to the target)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("target", "compute_capabilities", "verbose")}
        data["timing_cache"] = str(timing_cache) if timing_cache else None
        if self.target.compute_capabilities:
            data["compute_capabilities"] = list(self.compute_capabilities) or "default"
        return data


def build_engine(manifest: Manifest, options: BuildOptions = BuildOptions(),
                 log: Callable[[str], None] = print) -> Manifest:
    """Write ``<stem><target suffix>`` beside the ONNX and record it in the manifest."""
    target = options.target
    trt = import_engine_library(target)
    onnx_path = manifest.artifact_path
    manifest.check_artifact()  # the parser reads it whole anyway
    gpu = gpu_properties() if target.build_needs_gpu else None
    logger = build_log(trt, log if options.verbose else None)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path, target)  # held to the end: the parser owns weights
    check_network(trt, network, manifest, onnx_path)
    config = _config(trt, builder, manifest, options)
    cache_path = (options.timing_cache or onnx_path.parent / TIMING_CACHE_NAME) if target.timing_cache else None
    _cache = use_timing_cache(config, cache_path, log) if cache_path else None  # must outlive the build

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if plan is None:
        raise CrnError(f"{target.runtime} could not build an engine from {onnx_path}: {logger.first_error()}"
                       + ("; if it ran out of memory, close other GPU programs or lower --workspace"
                          if target.build_needs_gpu else ""))
    engine_path = onnx_path.with_name(target.engine_name(Path(manifest.artifact).stem))
    convolutions = _check_plan(trt, logger, plan, manifest, target, engine_path)  # before writing: keep a good one
    write_bytes_atomic(engine_path, memoryview(plan))
    if cache_path:
        write_bytes_atomic(cache_path, memoryview(config.get_timing_cache().serialize()))
    manifest.set_engine_record(target, EngineRecord(
        file=engine_path.name, sha256=sha256_file(engine_path), size_bytes=engine_path.stat().st_size,
        runtime_version=trt.__version__, target=target.name, runtime=target.runtime,
        gpu=GpuRecord(**gpu) if gpu else None, compute_capabilities=_served(options),
        build_seconds=round(seconds, 2), builder=options.to_record(cache_path), builder_warnings=logger.warnings,
        convolution_weights=convolutions))
    manifest.write(manifest.path)
    log(f"{engine_path.name}: built in {seconds:.1f} s with {target.runtime} {trt.__version__} for "
        f"{gpu['name'] if gpu else 'compute capabilities ' + ', '.join(_served(options))} "
        f"({engine_path.stat().st_size / 2**20:.1f} MiB)" + _warnings_note(logger, options))
    return manifest


def _served(options: BuildOptions) -> list[str] | None:
    if not options.target.compute_capabilities:
        return None
    return list(options.compute_capabilities or RTX_DEFAULT_COMPUTE_CAPABILITIES)


def _warnings_note(logger, options: BuildOptions) -> str:
    if not logger.warnings or options.verbose:
        return ""
    return f"; {len(logger.warnings)} builder warning(s), first: {logger.warnings[0]} (--verbose shows the log)"


def build_log(trt, echo: Callable[[str], None] | None):
    """A logger for ``trt`` that keeps warnings and errors and passes messages on (info and above) only to
    ``echo``, where one is given: the library's own logger prints to stderr."""

    class BuildLog(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.warnings: list[str] = []
            self.errors: list[str] = []

        def log(self, severity, message) -> None:
            text = " ".join(str(message).split())
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(text)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(text)
            if echo is not None and severity <= trt.ILogger.Severity.INFO:
                echo(f"  [{trt.__name__}] {text}")

        def first_error(self) -> str:
            return self.errors[0] if self.errors else "no error was logged"

    return BuildLog()


def _parse(trt, builder, logger, onnx_path: Path, target: EngineTarget):
    # STRONGLY_TYPED is needed on 10.x and accepted (ignored) on 11.x and TensorRT-RTX; its integer value
    # changed between releases, so it is always used by name.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise ArtifactError(f"{target.runtime}'s ONNX parser refused {onnx_path.name}: {_parser_error(parser)}; "
                            "nothing was written")
    return network, parser


def _parser_error(parser) -> str:
    """The first parser error as one line: the ONNX node and operator, then what the parser said."""
    if parser.num_errors == 0:
        return "no error was given"
    error = parser.get_error(0)
    node, operator = error.node_name(), error.node_operator()
    where = f"node '{node}' ({operator})" if node or operator else "the graph"
    more = f" (and {parser.num_errors - 1} more)" if parser.num_errors > 1 else ""
    return f"{where}: {error.desc()}{more}"


def check_network(trt, network, manifest: Manifest, where: Path) -> None:
    """Before any build, for every target: inputs and outputs of the manifest's types and shapes, every
    (transposed) convolution in the requested precision and every normalization in FP32."""
    check_network_io(trt, network, manifest, where)
    check_network_precision(trt, network, manifest.precision, where)


def check_network_io(trt, network, manifest: Manifest, where: Path) -> None:
    expected = {spec.name: spec for spec in (*manifest.input_specs, manifest.output_spec)}
    found = {t.name: t for t in [*(network.get_input(i) for i in range(network.num_inputs)),
                                 *(network.get_output(i) for i in range(network.num_outputs))]}
    if sorted(found) != sorted(expected):
        raise ArtifactError(f"{where} has inputs and outputs {sorted(found)}, its manifest says {sorted(expected)}; "
                            "re-export it with this crn-export")
    for name, spec in expected.items():
        tensor = found[name]
        if tensor.dtype != tensorrt_dtype(trt, spec.dtype) or tuple(tensor.shape) != tuple(spec.shape):
            raise ArtifactError(f"{where}: {name} is {tensor.dtype} {list(tensor.shape)}, the manifest says "
                                f"{spec.dtype} {list(spec.shape)}; re-export it with this crn-export")


def check_network_precision(trt, network, precision: Precision, where: Path) -> None:
    """Refuse unless every (transposed) convolution computes in the requested type (FP32 where the graph
    marks an FP32 island) and every norm in FP32."""
    want = getattr(trt.DataType, precision.tensorrt_type)
    convolutions = (trt.LayerType.CONVOLUTION, trt.LayerType.DECONVOLUTION)
    wrong = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        wanted = trt.DataType.FLOAT if FP32_ISLAND in layer.name else want
        if layer.type in convolutions and layer.get_output(0).dtype != wanted:
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
    if not options.tf32:  # TF32 is on by default and would round FP32 convolutions: an FP32 engine's, and the
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 islands of a reduced-precision one (PosGen's tail)
    if options.compute_capabilities:
        config.num_compute_capabilities = len(options.compute_capabilities)
        for i, cc in enumerate(options.compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + cc.replace(".", "")), i)
    return config


def use_timing_cache(config, cache_path: Path, log: Callable[[str], None]):
    """Attach the engines folder's timing cache; one from another GPU or TensorRT is replaced, not trusted.
    Returns the cache, which must outlive the build."""
    saved = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(saved)  # None where TensorRT cannot read the file (cut short, damaged)
    if cache is not None and config.set_timing_cache(cache, False):
        return cache
    why = "cannot be read" if cache is None else "was timed on another GPU or TensorRT version"
    log(f"{cache_path} {why}; starting a fresh timing cache")
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, False):
        raise CrnError(f"TensorRT refused an empty timing cache for {cache_path}")
    return cache


def _check_plan(trt, logger, plan, manifest: Manifest, target: EngineTarget, engine_path: Path):
    """What can be checked of a plan here: TensorRT's is read back on the GPU that built it; TensorRT-RTX's
    needs a GPU to deserialize, so only its header is checked (malformed or not) on the machine that built it."""
    if target.build_needs_gpu:
        return check_built_engine(trt, logger, plan, manifest)
    _, diagnostics = trt.Runtime(logger).get_engine_validity(plan)
    if int(diagnostics) & int(trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE):
        raise CrnError(f"{target.runtime} built a plan from {manifest.artifact_path} whose header it calls malformed; "
                       f"{engine_path.name} not kept")
    return None


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
    convolutions = convolution_weights(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    counts: dict[str, int] = {}
    for _, kind in convolutions:
        counts[kind] = counts.get(kind, 0) + 1
    wanted = manifest.precision.inspector_weights
    wrong = [f"{name} {kind}" for name, kind in convolutions
             if kind != (FP32.inspector_weights if FP32_ISLAND in name else wanted)]
    if wrong:
        raise ArtifactError(f"the built engine's convolutions hold weights of types {counts}: {'; '.join(wrong[:3])}, "
                            f"where {manifest.precision} needs {wanted} ({FP32.inspector_weights} only in the graph's "
                            "FP32 islands); not kept (re-export with this crn-export, then crn-build)")
    return counts or None


def convolution_weights(layer_information: str) -> list[tuple[str, str]]:
    """(layer name, weight type: "Half", "Float"...) of each convolution layer, from the engine inspector's
    JSON; a fused layer's name holds the names of the ONNX nodes in it. Empty where it names layers only
    (ProfilingVerbosity other than DETAILED) or where TensorRT fused the convolutions into opaque nodes."""
    try:
        layers = json.loads(layer_information).get("Layers", [])
    except (ValueError, AttributeError):
        return []
    found = []
    for layer in layers:
        kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}" if isinstance(layer, dict) else ""
        if "convolution" not in kind.lower():  # CaskConvolution, Convolution...
            continue
        weights = layer.get("Weights")
        if isinstance(weights, dict) and weights.get("Type"):
            found.append((str(layer.get("Name", "")), weights["Type"]))
    return found
