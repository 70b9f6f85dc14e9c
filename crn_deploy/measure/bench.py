"""Latency and parity of every artifact in a folder, on every available backend, in one run.

Parity is always against the PyTorch FP32 reference on the same label maps; speed-ups are
against the PyTorch reference of the same precision and device, measured in the same run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..backends import engine_module
from ..backends.base import Backend
from ..sizes import Sizes, format_resolution
from ..data.images import resize_labels
from ..data.label_mapping import load_label_map, resolve_label_map
from ..data.label_maps import find_label_files
from ..data.synthetic import scenes
from ..errors import ArtifactError, CrnError, UsageError
from ..families import model_inputs
from ..labels import UnknownColors
from ..manifest import Manifest, find_manifests
from ..runtime import open_backend
from ..runtime.synthesizer import Synthesizer
from ..precisions import FP32, Precision
from ..records import EngineRecord, Parity
from ..targets import EngineTarget
from .parity import compare_images, per_class
from .reference import reference_backend, reference_model
from ..runtime.timing import measure_latency, summarize

BENCH_SEED = 2000  # synthetic layouts for benchmarks (export validation uses another seed)
BACKENDS = ("tensorrt", "openvino", "onnxruntime", "torch")  # --backend tensorrt: TensorRT and TensorRT-RTX engines


@dataclass
class BenchOptions:
    labels_dir: Path | None = None
    label_map: object = None  # the label mapping --labels are read through (a name, file or LabelMapping)
    strict_colors: bool = False  # colour label images with colours outside the palette: an error, not void
    samples: int = 4
    warmup_s: float = 1.0
    iterations: int = 10
    duration_s: float = 3.0
    backends: tuple[str, ...] = BACKENDS
    devices: tuple[str, ...] = ()  # empty: every device present (cpu; cuda where available)
    # PyTorch on a CPU has no FP16 kernels worth timing (tens of times slower than FP32): opt-in there.
    torch_cpu_fp16: bool = False
    checkpoint: Path | None = None
    threads: int | None = None
    max_abs: float | None = None
    min_psnr: float | None = None


Reference = tuple[str, np.ndarray]  # what the reference is ("torch-fp32", or an FP32 artifact), and its pictures
LabelMaps = list[tuple[np.ndarray, np.ndarray | None]]  # the user's label images as ids, with instance ids or None


@dataclass
class _Context:
    """What a benchmark run computes once and every row shares, keyed by the values that decide it."""

    options: BenchOptions
    log: Callable[[str], None]
    manifests: list[Manifest] = field(default_factory=list)
    torch: bool = True  # the PyTorch reference is here; else parity is against each model's FP32 artifact
    inputs: dict[tuple[str, Sizes], tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    models: dict[str, object] = field(default_factory=dict)  # the weights' source -> the FP32 reference model
    references: dict[tuple[str, Sizes], Reference | None] = field(default_factory=dict)  # (source, sizes)
    label_maps: dict[str, LabelMaps] = field(default_factory=dict)  # label set name -> the maps of --labels
    samples: dict[str, dict] | None = None  # picture size text -> first picture of each row, for report grids
    unknown_colors: UnknownColors = field(default_factory=UnknownColors)  # in the user's colour label images


@dataclass
class BenchRow:
    """One artifact on one backend: what ``crn-bench`` measured. Reports hold it as ``to_dict()``."""

    artifact: str
    name: str
    backend: str
    precision: Precision  # what it computes in (a CPU engine's own, bf16)
    sizes: Sizes
    batch: int
    megapixels: float
    cuda_graphs: bool | None
    status: str = "ok"
    device: str | None = None
    parity: Parity | None = None
    latency_ms: dict | None = None  # count, mean, std, min, max, p50, p90, p95, p99
    fps: float | None = None
    throughput_fps: float | None = None
    ms_per_megapixel: float | None = None
    breakdown_ms: dict | None = None  # engines: h2d, compute, d2h, enqueue, each like latency_ms
    graph_captures: int | None = None  # TensorRT-RTX with its own graphs: captures during the timed frames
    device_memory_mib: float | None = None  # engines: weights, scratch and I/O buffers
    device_memory_measured_mib: float | None = None  # engines: what opening took, as cudaMemGetInfo saw it
    host_rss_mib: float | None = None
    host_peak_rss_mib: float | None = None
    speedup_vs_torch: float | None = None
    speedup_reference: str | None = None
    engine: dict | None = None  # engines: the library that built it, its version, size, build time, targets
    error: str | None = None

    _ALWAYS = ("artifact", "name", "backend", "precision", "sizes", "batch", "megapixels", "cuda_graphs", "status")

    @property
    def resolution(self) -> str:
        """As reports write it: the label map's size, then ``>`` the picture's where larger."""
        return format_resolution(self.sizes.labels) + \
            (f">{format_resolution(self.sizes.picture)}" if self.sizes.decoupled else "")

    def to_dict(self) -> dict:
        data = {}
        for key, value in vars(self).items():
            if key in self._ALWAYS or value is not None:
                data[key] = value.to_dict() if isinstance(value, Parity) else value
        data["precision"] = self.precision.name
        del data["sizes"]
        return {"artifact": data.pop("artifact"), "name": data.pop("name"), "backend": data.pop("backend"),
                "precision": data.pop("precision"), "resolution": self.resolution, **data}


def find_artifacts(folder: Path) -> list[Manifest]:
    manifests = find_manifests(folder)
    if not manifests:
        raise UsageError(f"no crn-deploy artifacts (.onnx + .json manifest) in {folder}; run crn-export first")
    return manifests


def run_bench(manifests: list[Manifest], options: BenchOptions, log: Callable[[str], None] = print,
              samples: dict | None = None) -> dict:
    """The report (JSON-ready). Pass a dict as ``samples`` to collect pictures for image grids."""
    ctx = _Context(options, log, manifests=list(manifests), torch=torch_available(), samples=samples)
    ctx.unknown_colors.notify = lambda notice: None  # the report's warnings say it, once, with the totals
    if options.labels_dir is not None:  # bad label images stop the run before any row
        files = find_label_files(options.labels_dir)
        for label_set in {m.label_set.name: m.label_set for m in manifests}.values():
            label_map = resolve_label_map(options.label_map, label_set)  # one the set cannot take stops here
            ctx.label_maps[label_set.name] = [
                (files.read(name, label_set, strict_colors=options.strict_colors, unknown=ctx.unknown_colors,
                            label_map=label_map), files.read_instances(name)) for name in files.names]
    check_artifacts_load(manifests, options)  # a broken artifact stops the run before anything is timed
    rows: list[BenchRow] = []
    skipped: list[str] = []
    warnings: list[str] = []
    if not ctx.torch:
        if "torch" in options.backends and options.backends != BACKENDS:
            raise UsageError("--backend torch needs torch: pip install 'crn-deploy[export]'")
        skipped.append(NO_TORCH_NOTE)
        log(f"note: {NO_TORCH_NOTE}")
    done_torch: set = set()
    for manifest in sorted(manifests, key=lambda m: (m.name, m.resolution, m.precision.name)):
        for engine_target, record in manifest.engine_records().items():
            if engine_target.backend in options.backends:
                rows.extend(_engine_rows(ctx, manifest, engine_target, record, skipped))
        if "onnxruntime" in options.backends:
            for provider in ort_providers(options, skipped):
                make = lambda m=manifest, p=provider: _ort(m, p, options)  # noqa: E731
                rows.append(_row(ctx, manifest, f"onnxruntime-{provider}", make))
        if "torch" not in options.backends or not ctx.torch:
            continue
        for device in _present(options, "torch", _torch_devices(), skipped):
            key = (_source_key(manifest), manifest.resolution, manifest.output_resolution, manifest.precision,
                   manifest.batch, device)
            skip = device == "cpu" and manifest.precision.reduced and not options.torch_cpu_fp16
            if key not in done_torch and not skip:
                done_torch.add(key)
                for graphs in ((True, False) if device == "cuda" else (None,)):
                    make = lambda m=manifest, d=device, g=graphs: _torch(ctx, m, d, g)  # noqa: E731
                    rows.append(_row(ctx, manifest, _label(f"torch-{device}", graphs), make,
                                     artifact=f"{manifest.name} (PyTorch)", graphs=graphs))
    palettes = ", ".join(sorted({m.label_set.name for m in manifests}))
    warnings += [f"--labels {options.labels_dir}: {line}" for line in ctx.unknown_colors.summaries(palettes)]
    _add_speedups(rows)
    for row in rows:
        row.status = _status(row, options)
    settings = {**_settings(manifests, options), "reference": TORCH_REFERENCE if ctx.torch else ARTIFACT_REFERENCE}
    return {"tool": f"crn-bench {__version__}", "machine": machine_info(), "versions": _versions(),
            "settings": settings, "rows": [row.to_dict() for row in rows], "skipped": skipped, "warnings": warnings}


BUILT_NEEDS_GPU = "built; needs a GPU to run"
TORCH_REFERENCE = "the PyTorch FP32 reference"
ARTIFACT_REFERENCE = "the FP32 ONNX artifact of the same model on ONNX Runtime's CPU provider (no torch here)"
NO_TORCH_NOTE = ("PyTorch rows and parity against the PyTorch reference: torch is not installed (pip install "
                 "'crn-deploy[export]' for them); parity is against the FP32 artifact of the same model instead")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def check_artifacts_load(manifests: list[Manifest], options: BenchOptions) -> None:
    """Every artifact opens (ONNX Runtime reads each ONNX; each engine is there at its recorded size),
    or one error naming every one that does not."""
    problems = []
    for manifest in manifests:
        try:
            _check_loads(manifest, options)
        except CrnError as e:
            problems.append(str(e))
    if problems:
        raise ArtifactError(f"{len(problems)} of {len(manifests)} artifacts cannot be loaded, nothing was timed: "
                            + " | ".join(problems))


def _check_loads(manifest: Manifest, options: BenchOptions) -> None:
    path = manifest.artifact_path
    if not path.is_file():
        raise ArtifactError(f"{path} is missing beside its manifest {manifest.path.name}; re-export it")
    if "onnxruntime" in options.backends and importlib.util.find_spec("onnxruntime") is not None:
        with open_backend(manifest, None, device="cpu", threads=1):
            pass
    for engine_target, engine in manifest.engine_records().items():
        if engine_target.backend not in options.backends:
            continue
        engine_path = path.parent / engine.file
        size = engine_path.stat().st_size if engine_path.is_file() else None
        if size != engine.size_bytes:
            state = "missing" if size is None else f"{size} bytes, its manifest says {engine.size_bytes}"
            raise ArtifactError(f"{engine_path} is {state}; rebuild it with "
                                f"{engine_module(engine_target).rebuild_command(manifest, engine_target)}")


def _label(backend: str, graphs: bool | None) -> str:
    return backend if graphs is None else f"{backend}{'+graph' if graphs else ''}"


def _engine_row(manifest: Manifest, backend_name: str, record: EngineRecord | None = None,
                graphs: bool | None = None, artifact: str | None = None) -> BenchRow:
    out = manifest.sizes.picture
    computes_in = (record.inference_precision if record else None) or manifest.precision  # a CPU engine's own
    row = BenchRow(artifact or (record.file if record else manifest.artifact), manifest.name, backend_name,
                   computes_in, manifest.sizes, manifest.batch, out[0] * out[1] / 1e6, graphs)  # picture megapixels
    if record is not None:
        row.engine = {"runtime": record.runtime, "version": record.runtime_version, "size_bytes": record.size_bytes,
                      "build_seconds": record.build_seconds, "compute_capabilities": record.compute_capabilities}
    return row


def _row(ctx: _Context, manifest: Manifest, backend_name: str, make: Callable[[], Backend],
         artifact: str | None = None, graphs: bool | None = None, record: EngineRecord | None = None) -> BenchRow:
    out = manifest.output_resolution
    row = _engine_row(manifest, backend_name, record, graphs=graphs, artifact=artifact)
    try:
        (inputs, *extra), reference = _inputs(ctx, manifest), _reference(ctx, manifest)
        with Synthesizer(make(), manifest) as synth:
            row.device = _memory_device(synth.backend.device)
            if graphs is not None:  # what ran: a library may run without the graphs asked for
                row.cuda_graphs = bool(getattr(synth.backend, "graphs_active", graphs))
            outputs = synth.run_ids(inputs, *extra)
            if reference is not None and reference[0] != f"{manifest.artifact} ({backend_name})":  # not itself
                name, images = reference
                classes = inputs if out == manifest.resolution else \
                    np.stack([resize_labels(m, out, "nearest") for m in inputs[:, 0]])[:, None]  # at picture size
                row.parity = compare_images(outputs, images, reference=name, samples=len(inputs),
                                            per_class=per_class(outputs, images, classes, manifest.label_set.names))
                _keep_sample(ctx, manifest, row, classes, images, outputs)
            one_batch = [_one_batch(a, manifest.batch) for a in (inputs, *extra)]
            breakdown: list[dict] = []
            captures = [getattr(synth.backend, "graph_captures", None)]  # before each frame, then after the last

            def one_frame():
                pending = synth.backend.submit(*one_batch)
                pending.result()
                if getattr(pending, "timings", None):
                    breakdown.append(pending.timings)
                captures.append(synth.backend.graph_captures if captures[0] is not None else None)

            stats = measure_latency(one_frame, warmup_s=ctx.options.warmup_s, iterations=ctx.options.iterations,
                                    duration_s=ctx.options.duration_s, frames_per_call=manifest.batch)
            if breakdown:  # the first calls were warm-up: keep the timed ones
                timed = breakdown[-stats.count:]
                row.breakdown_ms = {part: _stats_dict([t[part] for t in timed]) for part in timed[0]}
            if captures[0] is not None:
                row.graph_captures = captures[-1] - captures[-1 - stats.count]
            row.throughput_fps = (_throughput(synth.backend, one_batch, max(ctx.options.iterations, 8))
                                  if synth.backend.pipelined else stats.fps)  # serial backends: the same
            row.device_memory_mib = _mib(synth.backend.device_memory_bytes())
            row.device_memory_measured_mib = _mib(getattr(synth.backend, "opened_device_bytes", None))
        row.host_rss_mib, row.host_peak_rss_mib = host_memory_mib()
        row.latency_ms = {k: v for k, v in stats.to_dict().items() if k != "fps"}
        row.fps = stats.fps
        row.ms_per_megapixel = stats.p50 / (row.megapixels * manifest.batch)
    except CrnError as e:
        row.error = str(e)
    ctx.log(_progress_line(row))
    return row


def _engine_rows(ctx: _Context, manifest: Manifest, engine_target: EngineTarget, record: EngineRecord,
                 skipped: list[str]) -> list[BenchRow]:
    """An engine's rows where it can run here: a GPU engine's with CUDA graphs and without, a CPU engine's on
    --threads. Where it cannot, a line in ``skipped`` says why; and an engine built anywhere (TensorRT-RTX's) on a
    machine without its library or a GPU also gets a row saying it was built and needs a GPU to run, which is not
    an error."""
    label, runner = engine_target.label, engine_module(engine_target)
    reason = runner.why_engine_cannot_run_here(manifest, engine_target)
    if reason is None:
        return [_row(ctx, manifest, _label(label, graphs),
                     lambda g=graphs: open_backend(manifest, engine_target, cuda_graphs=bool(g), timing=True,
                                                   threads=ctx.options.threads),
                     artifact=record.file, graphs=graphs, record=record)
                for graphs in ((True, False) if engine_target.device == "cuda" else (None,))]
    skipped.append(f"{record.file}: {reason}")
    if engine_target.build_needs_gpu or runner.engines_unavailable_reason(engine_target) is None:
        return []  # built on its GPU, or here is a GPU (or a CPU) it was not built for: the skipped line says why
    row = _engine_row(manifest, label, record)
    library_here = runner.engines_unavailable_reason(engine_target, to_build=True) is None
    row.status = BUILT_NEEDS_GPU if library_here else f"built; {reason}"
    ctx.log(f"  {record.file} [{label}]: {row.status} ({reason})")
    return [row]


def _one_batch(array: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` samples, repeated where there are fewer."""
    one = np.ascontiguousarray(array[:batch])
    return one if len(one) == batch else np.resize(one, (batch, *one.shape[1:]))


def _stats_dict(samples_ms: list[float]) -> dict:
    return {k: v for k, v in summarize(samples_ms).to_dict().items() if k != "fps"}


def _throughput(backend: Backend, batch: list[np.ndarray], frames: int) -> float:
    """Frames per second with frames overlapping where the backend pipelines (submit ahead, collect later)."""
    started = time.perf_counter()
    handles = [backend.submit(*batch) for _ in range(frames)]
    for handle in handles:
        handle.result()
    return frames * len(batch[0]) / (time.perf_counter() - started)


def _keep_sample(ctx: _Context, manifest: Manifest, row: BenchRow, inputs, reference, outputs) -> None:
    if ctx.samples is None:
        return

    def first(images):
        return images[0] if images.ndim == 4 else images[0, 0]  # [N,H,W,3] or [N,k,H,W,3]

    sample = ctx.samples.setdefault(row.resolution, {
        "labels": manifest.label_set.ids_to_colors(inputs[0, 0]), "reference": first(reference), "outputs": {}})
    sample["outputs"][f"{row.backend} {row.precision}"] = first(outputs)


def _ort(manifest: Manifest, device: str, options: BenchOptions) -> Backend:
    return open_backend(manifest, None, device=device, threads=options.threads)


def _torch(ctx: _Context, manifest: Manifest, device: str, graphs: bool | None) -> Backend:
    return reference_backend(manifest, _model(ctx, manifest), manifest.precision, device, cuda_graphs=bool(graphs))


def _model(ctx: _Context, manifest: Manifest):
    key = _source_key(manifest)
    if key not in ctx.models:
        ctx.models[key] = reference_model(manifest, ctx.options.checkpoint)
    return ctx.models[key]


def _reference(ctx: _Context, manifest: Manifest) -> tuple[str, np.ndarray] | None:
    """(what it is, its pictures) for the model and resolution of ``manifest``, or None where there is
    none: without torch, the FP32 artifact of the same model stands in for the PyTorch reference."""
    key = (_source_key(manifest), manifest.sizes)
    if key not in ctx.references:
        inputs, *extra = _inputs(ctx, manifest)
        if ctx.torch:
            with reference_backend(manifest, _model(ctx, manifest)) as ref:
                images = np.concatenate([ref.run(*(a[i : i + 1] for a in (inputs, *extra)))
                                         for i in range(len(inputs))])
            ctx.references[key] = ("torch-fp32", images)
        else:
            ctx.references[key] = _artifact_reference(ctx, manifest, inputs, *extra)
    return ctx.references[key]


def _artifact_reference(ctx: _Context, manifest: Manifest, inputs: np.ndarray,
                        *extra: np.ndarray) -> tuple[str, np.ndarray] | None:
    same_model = [m for m in ctx.manifests if m.precision is FP32 and _source_key(m) == _source_key(manifest)
                  and m.sizes == manifest.sizes]
    if not same_model:
        return None
    with Synthesizer(open_backend(same_model[0], None, device="cpu", threads=ctx.options.threads),
                     same_model[0]) as synth:
        return f"{same_model[0].artifact} (onnxruntime-cpu)", synth.run_ids(inputs, *extra)


def _inputs(ctx: _Context, manifest: Manifest) -> tuple[np.ndarray, ...]:
    """(uint8 ids [S,1,H,W], then the artifact's further inputs such as int32 instance ids) for parity and
    timing: synthetic scenes in the artifact's label space, or the user's label images (--labels, where a
    Cityscapes ``*_instanceIds.png`` beside a ``*_labelIds.png`` gives the instances)."""
    resolution = manifest.sizes.labels
    key = (manifest.label_set.name, manifest.sizes)
    if key not in ctx.inputs:
        if not ctx.label_maps:
            ids, instances = scenes(manifest.label_set, ctx.options.samples, *resolution, seed=BENCH_SEED)
        else:
            rule = manifest.family.label_resize
            maps = ctx.label_maps[manifest.label_set.name]
            ids = np.stack([resize_labels(m, resolution, rule) for m, _ in maps])[:, None]
            instances = np.stack([resize_labels(i if i is not None else m.astype(np.int32), resolution, rule)
                                  for m, i in maps])[:, None]
        ctx.inputs[key] = (ids, instances)
    return model_inputs(manifest.input_specs, *ctx.inputs[key], style_seed=BENCH_SEED)


def _source_key(manifest: Manifest) -> str:
    return json.dumps(manifest.source.to_dict(), sort_keys=True)


def _present(options: BenchOptions, backend: str, present: list[str], skipped: list[str]) -> list[str]:
    """The devices asked for (default: all present) that this backend has here; the rest noted once."""
    for device in options.devices:
        note = f"{backend} on {device}: not available here"
        if device not in present and note not in skipped:
            skipped.append(note)
    return [d for d in (options.devices or present) if d in present]


def ort_providers(options: BenchOptions, skipped: list[str]) -> list[str]:
    """The ONNX Runtime providers to measure (cpu, cuda, tensorrt) on the devices asked for."""
    from ..backends.onnxruntime import available_devices

    offered = available_devices()
    devices = _present(options, "onnxruntime", sorted({_memory_device(p) for p in offered}), skipped)
    return [provider for provider in offered if _memory_device(provider) in devices]


def _memory_device(backend_device: str) -> str:
    """Where a backend's frames live: ONNX Runtime's TensorRT provider runs on the CUDA device."""
    return "cuda" if backend_device == "tensorrt" else backend_device


def _torch_devices() -> list[str]:
    from ..backends.torch_ref import torch_devices

    return torch_devices()


def _add_speedups(rows: list[BenchRow]) -> None:
    """speedup_vs_torch = PyTorch p50 / this row's p50: same model, resolution, device and batch, and the
    same precision where PyTorch ran it (else PyTorch FP32, named in ``speedup_reference``)."""
    def key(row, precision):
        return (row.name, row.resolution, precision, row.device, row.batch, row.cuda_graphs)

    torch_p50 = {key(r, r.precision): r.latency_ms["p50"] for r in rows
                 if r.backend.startswith("torch") and r.latency_ms}
    for row in rows:
        for precision in dict.fromkeys((row.precision, FP32)):
            if row.latency_ms and key(row, precision) in torch_p50:
                row.speedup_vs_torch = torch_p50[key(row, precision)] / row.latency_ms["p50"]
                row.speedup_reference = f"torch-{row.device} {precision}"
                break


def _status(row: BenchRow, options: BenchOptions) -> str:
    if row.error is not None:
        return "ERROR"
    if row.latency_ms is None and row.status.startswith("built;"):  # an engine that cannot run here
        return row.status
    if options.max_abs is None and options.min_psnr is None:
        return "ok"
    if row.parity is None:
        return "no reference"
    return "PASSED" if row.parity.passes(max_abs=options.max_abs, min_psnr=options.min_psnr) else "FAILED"


def _progress_line(row: BenchRow) -> str:
    if row.error is not None:
        return f"  {row.artifact} [{row.backend}]: error: {row.error}"
    line = f"  {row.artifact} [{row.backend}]: p50 {row.latency_ms['p50']:.2f} ms"
    if row.parity is None:
        return f"{line}, no parity (this is the reference, or there is none)"
    psnr = row.parity.psnr_db
    return f"{line}, PSNR {'inf' if psnr is None else f'{psnr:.1f}'} dB"


def host_memory_mib() -> tuple[float | None, float | None]:
    """This process's resident memory now and at its peak (Linux /proc), in MiB."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)
    except (OSError, KeyError, ValueError):
        return None, None


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 2**20


def machine_info() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_name(),
            "logical_cores": os.cpu_count(), "memory_gib": _memory_gib()}
    if torch_available():
        from ..backends.torch_ref import cuda_device_facts

        gpu = cuda_device_facts()
        if gpu is not None:
            info["gpu"] = gpu
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _versions() -> dict:
    versions = {"crn_deploy": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for module in ("onnxruntime", "torch", "onnx"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return versions


def _settings(manifests: list[Manifest], options: BenchOptions) -> dict:
    inputs = (f"label images in {options.labels_dir}" if options.labels_dir else
              f"synthetic street layouts, seed {BENCH_SEED}, {options.samples} samples")
    if options.labels_dir and options.label_map is not None:
        inputs += f", read through the '{load_label_map(options.label_map).name}' label mapping"
    return {"artifacts": [str(m.artifact_path) for m in manifests], "inputs": inputs,
            "warmup_s": options.warmup_s, "min_iterations": options.iterations, "min_duration_s": options.duration_s,
            "threads": options.threads, "torch_cpu_fp16": options.torch_cpu_fp16,
            "gates": {"max_abs": options.max_abs, "min_psnr_db": options.min_psnr}}
