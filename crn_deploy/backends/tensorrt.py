"""TensorRT and TensorRT-RTX engines (one code path: the libraries share their runtime API) through
cuda-python. No torch. The manifest's engine record says which library made an engine, and that is
the library imported to run it.

Per engine: three streams (copy in, compute, copy out) and a ring of ``slots``, each with its own
execution context bound once to its own pinned host and device I/O buffers, events and CUDA graph (as
trtexec keeps one context per stream). The contexts share one block of scratch memory: they run one
at a time, on the compute stream. Frame k+1's upload overlaps frame k's compute and frame k-1's
download; results come back in submission order. Everything is allocated at open and freed at close;
every call sets the engine's GPU as the calling thread's current device first (CUDA keeps one per
thread). TensorRT-RTX engines also get their JIT kernel cache as a file beside the engine (read at
open, written once warmed up and at close) and capture their own CUDA graphs, one per context.
"""

from __future__ import annotations

import importlib
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, CrnError, UsageError
from ..files import write_bytes_atomic
from ..manifest import OUTPUT_NAME, Manifest
from ..records import EngineRecord
from ..targets import RTX, TENSORRT, EngineTarget, artifact_stem_of, serves
from .base import Backend, read_engine, recorded_engine
from .cuda import Cuda, CudaError, DeviceBuffer, PinnedBuffer, device_properties, handle, require_device
from .device_arrays import check_label_batch, describe


def import_engine_library(target: EngineTarget = TENSORRT):
    """The target's Python module (tensorrt or tensorrt_rtx), or a one-line refusal naming the extra."""
    try:
        trt = importlib.import_module(target.module)
    except ImportError:
        where = " on a machine with an NVIDIA GPU" if target.build_needs_gpu else ""
        raise UsageError(f"{target.runtime} is not installed: pip install 'crn-deploy[{target.extra}]'{where}") \
            from None
    if version_tuple(trt.__version__) < target.min_version:
        wanted = ".".join(map(str, target.min_version))
        raise UsageError(f"{target.runtime} {trt.__version__} is too old: crn-deploy needs >= {wanted} "
                         "(strongly typed networks)")
    return trt


def engines_unavailable_reason(target: EngineTarget = TENSORRT, *, to_build: bool = False) -> str | None:
    """None where ``target``'s engines can be run here (or, ``to_build``, built here), else one line why not."""
    try:
        import_engine_library(target)
        if not to_build or target.build_needs_gpu:
            require_device()
    except CrnError as e:
        return str(e)
    return None


def gpu_properties(device: int = 0) -> dict:
    """Name, compute capability and memory of GPU ``device`` (the caller's current device stays as it was)."""
    return device_properties(device)


def target_unavailable_here(target: EngineTarget) -> str | None:
    """None where ``target``'s engines can run on this machine (its library, and a GPU it can target: TensorRT-RTX
    has none for Hopper and datacenter Blackwell), else one line why not."""
    reason = engines_unavailable_reason(target)
    if reason is None and target.gpus is not None:
        gpu = gpu_properties()
        if not serves(target.gpus, gpu["compute_capability"]):
            reason = (f"this GPU, {gpu['name']} (compute capability {gpu['compute_capability']}), is not a "
                      f"{target.runtime} target: Hopper and datacenter Blackwell run TensorRT engines")
    return reason


def why_engine_cannot_run_here(manifest: Manifest, target: EngineTarget) -> str | None:
    """None where this machine can run ``manifest``'s ``target`` engine (library, GPU, version, compute
    capability); else one line why not."""
    reason = engines_unavailable_reason(target)
    if reason is not None:
        return reason
    try:
        check_engine_compatible(manifest, target, import_engine_library(target).__version__, gpu_properties())
    except ArtifactError as e:
        return str(e)
    return None


def default_build_target() -> EngineTarget:
    """TensorRT where it and a GPU are here; else TensorRT-RTX where it is installed (it needs no GPU to
    build); else a refusal saying what each would need."""
    tensorrt_reason = engines_unavailable_reason(TENSORRT, to_build=True)
    if tensorrt_reason is None:
        return TENSORRT
    rtx_reason = engines_unavailable_reason(RTX, to_build=True)
    if rtx_reason is None:
        return RTX
    raise UsageError(f"no engine builder here: {tensorrt_reason}; or, for RTX GPUs built on any machine, "
                     f"{rtx_reason[0].lower()}{rtx_reason[1:]}")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def tensorrt_dtype(trt, dtype: str):
    """The TensorRT type of a manifest's tensor dtype (uint8 labels and images, int32 instance ids, float32
    style vectors)."""
    return {"uint8": trt.DataType.UINT8, "int32": trt.DataType.INT32, "float32": trt.DataType.FLOAT}[dtype]


def rebuild_command(manifest: Manifest, target: EngineTarget = TENSORRT,
                    compute_capability: str | None = None) -> str:
    """The crn-build command that makes ``target``'s engine of this artifact again (for this GPU's compute
    capability, where one is given and the target names GPUs)."""
    command = f"crn-build {manifest.artifact_path}"
    if target is not TENSORRT:
        command += f" --target {target.name}"
    if target.compute_capabilities and compute_capability:
        command += f" --compute-capability {compute_capability.replace('.', '')}"
    return command


def check_engine_compatible(manifest: Manifest, target: EngineTarget, version: str, gpu: dict) -> EngineRecord:
    """The manifest's ``target`` engine record, if this library version and this GPU can run it; else a
    clear refusal naming both sides and the command that fixes it."""
    record = recorded_engine(manifest, target, version, rebuild_command(manifest, target))
    here = gpu["compute_capability"]
    if target.compute_capabilities:
        if not serves(record.compute_capabilities or (), here):
            raise ArtifactError(
                f"{record.file} was built for compute capabilities {', '.join(record.compute_capabilities or [])} "
                f"and this GPU is {gpu['name']} ({here}); {_rtx_fix(manifest, here)}")
    elif record.gpu is None or record.gpu.compute_capability != here:
        built_for = f"{record.gpu.name} (compute capability {record.gpu.compute_capability})" if record.gpu else \
            "an unrecorded GPU"
        raise ArtifactError(f"{record.file} was built for {built_for} and this GPU is {gpu['name']} ({here}); "
                            f"rebuild it here with: {rebuild_command(manifest, target)}")
    return record


def _rtx_fix(manifest: Manifest, compute_capability: str) -> str:
    if serves(RTX.gpus, compute_capability):
        return f"rebuild it with: {rebuild_command(manifest, RTX, compute_capability)}"
    return (f"TensorRT-RTX has no target for compute capability {compute_capability}: build a TensorRT engine on "
            f"this GPU with: {rebuild_command(manifest, TENSORRT)}")


def check_engine_header(trt, runtime, plan: bytes, path: Path, fix: str) -> None:
    """TensorRT-RTX's own header check (version, compute capability, driver, CUDA, memory), before the
    whole plan is deserialized."""
    validity, diagnostics = runtime.get_engine_validity(plan)
    if validity == trt.EngineValidity.INVALID:
        causes = [name for name, flag in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) &
                  int(flag)] or ["no cause given"]
        raise ArtifactError(f"TensorRT-RTX cannot run {path.name} on this machine ({', '.join(causes)}); {fix}")


def engine_weights_bytes(trt, engine) -> int | None:
    """The engine's weights on the GPU, where the library says (TensorRT 11, TensorRT-RTX); else None."""
    if not hasattr(trt, "EngineStat"):  # older TensorRT 10 releases have no engine statistics
        return None
    return int(engine.get_engine_stat(trt.EngineStat.TOTAL_WEIGHTS_SIZE))


@dataclass
class _Slot:
    context: object  # this slot's own execution context, bound once to this slot's buffers
    host_in: list[PinnedBuffer]  # one per input of the manifest (labels, then instances where taken)
    host_out: PinnedBuffer
    dev_in: list[DeviceBuffer]
    dev_out: DeviceBuffer
    uploaded: object  # events
    computed: object
    downloaded: object
    starts: tuple | None = None  # with timing: events before the copy in, compute and download
    graph: object = None
    pending: Pending | None = None
    runs: int = 0  # executions of its context
    graph_key: tuple | None = None  # what its context was bound to when TensorRT-RTX last captured it


class Pending:
    """A submitted frame; ``result()`` waits for it. Results come back in submission order."""

    def __init__(self, backend: TensorRTBackend, slot: _Slot, on_device: bool, enqueue_ms: float,
                 copy_in: str) -> None:
        self._backend, self._slot, self._on_device = backend, slot, on_device
        self._value = None
        self._keep_alive = None
        self.enqueue_ms = enqueue_ms
        self.copy_in = copy_in  # "h2d" from host memory, "d2d" from device memory
        # with timing: the copy in (h2d or d2d), compute and, for host output, d2h (GPU ms); enqueue (host ms)
        self.timings: dict | None = None

    def result(self):
        if self._value is None:
            self._backend._collect(self)
        return self._value


class DeviceImage:
    """The engine's output left on the GPU (``__cuda_array_interface__``), valid until its slot is reused."""

    def __init__(self, ptr: int, shape: tuple[int, ...], stream: int) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "|u1", "data": (ptr, False),
                                         "version": 3, "strides": None, "stream": stream}


class TensorRTBackend(Backend):
    """Runs one engine of ``target`` (TensorRT or TensorRT-RTX); ``slots`` frames may be in flight at once."""

    pipelined = True

    def __init__(self, engine_path: Path, manifest: Manifest, *, target: EngineTarget = TENSORRT,
                 cuda_graphs: bool = True, slots: int = 2, device: int = 0, timing: bool = False,
                 tensorrt_module=None, cudart_module=None) -> None:
        super().__init__()
        if slots < 1:
            raise UsageError(f"slots must be >= 1, got {slots}")
        self.path, self.manifest, self.target = Path(engine_path), manifest, target
        self.use_cuda_graphs, self.num_slots, self.device_index = cuda_graphs, slots, device
        self.timing = timing  # record CUDA events around upload, compute and download (trtexec's split)
        self.name, self.device = ("tensorrt" if target is TENSORRT else f"tensorrt-{target.name}"), "cuda"
        self._trt_module, self._cudart_module = tensorrt_module, cudart_module
        self.graphs_active = False
        # TensorRT-RTX capturing its own graphs: the captures so far, by its rule (see _count_capture); else None
        self.graph_captures: int | None = None
        self.opened_device_bytes: int | None = None  # GPU memory open() took, as cudaMemGetInfo saw it
        self._weights_bytes: int | None = None
        self._runtime_cache = self._runtime_config = None
        self._slots: list[_Slot] = []

    @property
    def runtime_cache_path(self) -> Path | None:
        """Where the JIT kernel cache of this engine lives (TensorRT-RTX), beside the engine."""
        suffix = self.target.runtime_cache
        return self.path.with_name(artifact_stem_of(self.path.name) + suffix) if suffix else None

    # lifecycle -------------------------------------------------------------------------------
    def _open_impl(self) -> None:
        trt = self._trt_module or import_engine_library(self.target)
        self._cuda = Cuda(self.device_index, self._cudart_module)
        try:
            free_before = self._cuda.free_memory()
            self._open_engine(trt)
            self._allocate(trt)
            self._warm_up_and_capture()
            self.opened_device_bytes = free_before - self._cuda.free_memory()
            self._save_runtime_cache(warn=False)  # the kernels compiled so far survive a stream killed later
        except BaseException:
            self._release()
            raise

    def _open_engine(self, trt) -> None:
        gpu = self._cuda.properties()
        record = check_engine_compatible(self.manifest, self.target, trt.__version__, gpu)
        rebuild = rebuild_command(self.manifest, self.target, gpu["compute_capability"])
        fix = f"rebuild it with: {rebuild}"
        plan = read_engine(self.path, record, rebuild_command(self.manifest, self.target), rebuild)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.target.header_check:
            check_engine_header(trt, self._runtime, plan, self.path, fix)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ArtifactError(f"{self.target.runtime} cannot deserialize {self.path} (corrupt?); {fix}")
        self._check_io(trt)
        self._weights_bytes = engine_weights_bytes(trt, self._engine)
        if self.target.runtime_cache or self.target.own_cuda_graphs:
            self._runtime_config = self._create_runtime_config(trt)

    def _create_runtime_config(self, trt):
        """TensorRT-RTX's runtime configuration: its kernel cache from the file beside the engine, and its own
        CUDA-graph capture where graphs are asked for. Held as long as the contexts made from it: the binding
        keeps only the engine alive."""
        config = self._engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self.target.runtime_cache:
            self._runtime_cache = config.create_runtime_cache()
            saved = self.runtime_cache_path.read_bytes() if self.runtime_cache_path.is_file() else b""
            if saved and not self._runtime_cache.deserialize(saved):  # refused whole: the cache stays empty
                warnings.warn(f"{self.runtime_cache_path} was refused by {self.target.runtime} (another GPU, driver "
                              "or version wrote it, or it is damaged); it compiles its kernels again and the file is "
                              "rewritten", stacklevel=2)
            config.set_runtime_cache(self._runtime_cache)
        if self.target.own_cuda_graphs and self.use_cuda_graphs:
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        return config

    def _create_context(self, trt):
        """An execution context on the shared scratch block (TensorRT-RTX's through its runtime configuration)."""
        if self._runtime_config is not None:
            context = self._engine.create_execution_context(self._runtime_config)
        else:
            context = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise CudaError(f"{self.target.runtime} could not create an execution context for {self.path}: out of "
                            "GPU memory?")
        context.set_device_memory(self._scratch.ptr, self._scratch.nbytes)
        return context

    def _check_io(self, trt) -> None:
        expected = {spec.name: spec for spec in (*self.manifest.input_specs, self.manifest.output_spec)}
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted(expected):
            raise ArtifactError(f"{self.path} has I/O tensors {names}, expected {sorted(expected)}; rebuild it")
        for name in names:
            shape = tuple(engine.get_tensor_shape(name))
            dtype = engine.get_tensor_dtype(name)
            spec = expected[name]
            if shape != spec.shape or dtype != tensorrt_dtype(trt, spec.dtype):
                raise ArtifactError(f"{self.path}: tensor {name} is {dtype} {list(shape)}, the manifest says "
                                    f"{spec.dtype} {list(spec.shape)}; rebuild it with: "
                                    f"{rebuild_command(self.manifest, self.target)}")
        for spec in self.manifest.input_specs:  # labels, and instances where the model takes them
            if engine.get_tensor_mode(spec.name) != trt.TensorIOMode.INPUT:
                raise ArtifactError(f"{self.path}: '{spec.name}' is not an input tensor; rebuild it")

    def _allocate(self, trt) -> None:
        cuda = self._cuda
        self._inputs = self.manifest.input_specs
        self.in_shape, self.out_shape = self._inputs[0].shape, self.manifest.output_spec.shape
        self._upload, self._compute, self._download = cuda.stream(), cuda.stream(), cuda.stream()
        self._compute_handle = handle(self._compute)
        self._scratch = cuda.device_buffer(int(self._engine.device_memory_size_v2))
        self._slots = []
        for _ in range(self.num_slots):
            host_in = [cuda.pinned(spec.shape, np.dtype(spec.dtype)) for spec in self._inputs]
            host_out = cuda.pinned(self.out_shape, np.uint8)
            dev_in, dev_out = [cuda.device_buffer(h.nbytes) for h in host_in], cuda.device_buffer(host_out.nbytes)
            timed = self.timing
            slot = _Slot(self._create_context(trt), host_in, host_out, dev_in, dev_out, cuda.event(timed),
                         cuda.event(timed), cuda.event(timed))
            self._slots.append(slot)
            if timed:
                slot.starts = (cuda.event(), cuda.event(), cuda.event())
            for spec, device in zip(self._inputs, slot.dev_in, strict=True):
                slot.context.set_tensor_address(spec.name, device.ptr)
            slot.context.set_tensor_address(OUTPUT_NAME, slot.dev_out.ptr)
        self._next = 0

    def _warm_up_and_capture(self) -> None:
        """Zeroed inputs (trtexec fills its inputs before the first run too); one eager run per slot (the library
        initializes lazily), then a CUDA graph per slot where capturable: ours (TensorRT), or TensorRT-RTX's own,
        which it captures on a context's next run."""
        for slot in self._slots:
            for device in slot.dev_in:
                self._cuda.memset(device.ptr, 0, device.nbytes, self._compute)
        own = self.target.own_cuda_graphs and self.use_cuda_graphs
        capture = self.use_cuda_graphs and not self.target.own_cuda_graphs
        self.graph_captures = 0 if own else None
        for slot in self._slots:
            for _ in range(2 if own else 1):
                if not self._enqueue(slot):
                    raise CrnError(f"{self.target.runtime} failed to run {self.path} (see its log above)")
                self._count_capture(slot)
            self._cuda.synchronize(self._compute)
            if capture:
                slot.graph = self._cuda.capture(self._compute, lambda s=slot: self._enqueue(s))
        if own:  # TensorRT-RTX runs without graphs where the engine cannot be captured: say so
            self.graphs_active = all(slot.context.is_stream_capturable(self._compute_handle) for slot in self._slots)
            if not self.graphs_active:
                self.graph_captures = None
            return
        self.graphs_active = capture and all(slot.graph is not None for slot in self._slots)
        if not self.graphs_active:  # all or nothing: a partial set would make latency depend on the slot
            for slot in self._slots:
                slot.graph = None

    def _close_impl(self) -> None:
        self._cuda.make_current()
        for slot in self._slots:
            if slot.pending is not None:
                self._collect(slot.pending)
        try:
            self._save_runtime_cache()
        finally:
            self._release()

    def _save_runtime_cache(self, warn: bool = True) -> None:
        """Write TensorRT-RTX's kernel cache beside the engine (once warmed up, and at close, which says when the
        folder cannot be written)."""
        if self._runtime_cache is None:
            return
        try:
            write_bytes_atomic(self.runtime_cache_path, memoryview(self._runtime_cache.serialize()))
        except OSError as e:  # a read-only engines folder still runs; the next start compiles again
            if warn:
                warnings.warn(f"{self.target.runtime} kernel cache not saved to {self.runtime_cache_path} ({e}); the "
                              "next start compiles its kernels again", stacklevel=2)

    def _release(self) -> None:
        """The contexts first, then what they use: the kernel cache, the runtime configuration, the engine (the
        order of TensorRT-RTX's apiUsage sample); then their memory."""
        for slot in self._slots:
            slot.context = None
        self._runtime_cache = self._runtime_config = None
        self._engine = self._runtime = None
        cuda, self._cuda = getattr(self, "_cuda", None), None
        if cuda is not None:
            cuda.close()

    def device_memory_bytes(self) -> int | None:
        """The weights, the contexts' scratch block and the slots' buffers; where the library does not give its
        weights' size, what open() took as cudaMemGetInfo saw it."""
        if self._weights_bytes is None:
            return self.opened_device_bytes
        io = sum(sum(d.nbytes for d in slot.dev_in) + slot.dev_out.nbytes for slot in self._slots)
        return self._weights_bytes + self._scratch.nbytes + io

    # frames ----------------------------------------------------------------------------------
    def _run_impl(self, ids: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        return self.submit(ids, *extra).result()

    def submit(self, ids: np.ndarray, *extra: np.ndarray, output: str = "host") -> Pending:
        """Queue uint8 ids [B,1,H,W] (and the artifact's further inputs, e.g. int32 instance ids) from host
        memory; returns at once unless every slot is busy."""
        slot = self._take_slot()
        for host, array in zip(slot.host_in, (ids, *extra), strict=True):
            np.copyto(host.array, array, casting="no")
        if slot.starts:
            self._cuda.record(slot.starts[0], self._upload)
        for device, host in zip(slot.dev_in, slot.host_in, strict=True):
            self._cuda.h2d(device.ptr, host.ptr, host.nbytes, self._upload)
        self._cuda.record(slot.uploaded, self._upload)
        self._cuda.wait(self._compute, slot.uploaded)
        return self._launch(slot, output, "h2d")

    def submit_device(self, labels, *extra, output: str = "host") -> Pending:
        """Queue inputs already on this GPU: objects with ``__cuda_array_interface__`` or ``__dlpack__``
        (CuPy arrays, CUDA torch tensors...), in the manifest's input order. No host round trip, no torch."""
        arrays = (labels, *extra)
        if len(arrays) != len(self._inputs):
            raise UsageError(f"{self.path} takes {', '.join(s.name for s in self._inputs)}: pass every one")
        sources = [self._device_input(array, spec) for array, spec in zip(arrays, self._inputs, strict=True)]
        slot = self._take_slot()
        for _, producer_stream, _ in sources:
            if producer_stream is not None:  # the producer's work must finish before we read its buffer
                self._cuda.record(slot.uploaded, producer_stream)
                self._cuda.wait(self._compute, slot.uploaded)
        if slot.starts:
            self._cuda.record(slot.starts[0], self._compute)
        for (ptr, _, _), device in zip(sources, slot.dev_in, strict=True):
            self._cuda.d2d(device.ptr, ptr, device.nbytes, self._compute)
        self._cuda.record(slot.uploaded, self._compute)
        pending = self._launch(slot, output, "d2d")
        pending._keep_alive = [keep for _, _, keep in sources]  # the producers' memory must outlive the copies
        return pending

    def _take_slot(self) -> _Slot:
        if not self.is_open:
            raise CrnError(f"{self.name} is not open; call open() or use it as a context manager")
        self._cuda.make_current()  # this thread's current device may be another (a worker thread's is 0)
        slot = self._slots[self._next % self.num_slots]
        self._next += 1
        if slot.pending is not None:  # the ring is full: finish the oldest frame first
            self._collect(slot.pending)
        return slot

    def _launch(self, slot: _Slot, output: str, copy_in: str) -> Pending:
        if output not in ("host", "device"):
            raise UsageError(f"output must be 'host' or 'device', got {output!r}")
        if slot.starts:
            self._cuda.record(slot.starts[1], self._compute)
        started = time.perf_counter()
        if slot.graph is not None:
            self._cuda.launch(slot.graph, self._compute)
        elif not self._enqueue(slot):
            raise CrnError(f"{self.target.runtime} failed to enqueue {self.path}")
        enqueue_ms = (time.perf_counter() - started) * 1000
        self._count_capture(slot)  # outside the enqueue time: it reads the context back
        self._cuda.record(slot.computed, self._compute)
        if output == "host":
            self._cuda.wait(self._download, slot.computed)
            if slot.starts:
                self._cuda.record(slot.starts[2], self._download)
            self._cuda.d2h(slot.host_out.ptr, slot.dev_out.ptr, slot.host_out.nbytes, self._download)
            self._cuda.record(slot.downloaded, self._download)
        slot.pending = Pending(self, slot, output == "device", enqueue_ms, copy_in)
        return slot.pending

    def _enqueue(self, slot: _Slot) -> bool:
        return bool(slot.context.execute_async_v3(self._compute_handle))

    def _count_capture(self, slot: _Slot) -> None:
        """After each run of a context while TensorRT-RTX captures its own graphs, which it does not count for us.
        NVIDIA describes its rule: a context's graph is keyed on the bound addresses and shapes and captured again
        when either changes. A context's first run is taken as eager (the library asks for a warm-up run before it
        captures). The key is read back from the context, so a rebinding from anywhere counts."""
        if self.graph_captures is None:
            return
        context, slot.runs = slot.context, slot.runs + 1
        key = tuple((name, context.get_tensor_address(name), tuple(context.get_tensor_shape(name)))
                    for name in (*(spec.name for spec in self._inputs), OUTPUT_NAME))
        if slot.runs > 1 and key != slot.graph_key:
            slot.graph_key = key
            self.graph_captures += 1

    def _collect(self, pending: Pending) -> None:
        self._cuda.make_current()
        slot = pending._slot
        if pending._on_device:
            self._cuda.event_synchronize(slot.computed)
            pending._value = DeviceImage(slot.dev_out.ptr, self.out_shape, self._compute_handle)
        else:
            self._cuda.event_synchronize(slot.downloaded)
            pending._value = slot.host_out.array.copy()
        pending._keep_alive = None
        if slot.starts:
            cuda = self._cuda
            timings = {pending.copy_in: cuda.elapsed_ms(slot.starts[0], slot.uploaded),
                       "compute": cuda.elapsed_ms(slot.starts[1], slot.computed)}
            if not pending._on_device:
                timings["d2h"] = cuda.elapsed_ms(slot.starts[2], slot.downloaded)
            pending.timings = {**timings, "enqueue": pending.enqueue_ms}
        if slot.pending is pending:
            slot.pending = None

    def _device_input(self, labels, spec) -> tuple[int, int | None, object]:
        """(pointer, producer stream to wait for or None, object to keep alive) of a device input."""
        array = describe(labels, self._compute_handle)
        if array.device != "cuda":
            raise UsageError(f"device label map is in {array.device} memory, not on GPU {self.device_index}; "
                             "move it there, or pass a NumPy array to run()")
        check_label_batch(array, spec.shape, spec.dtype)
        if not self._cuda.pointer_is_on_this_device(array.ptr):
            raise UsageError(f"device label map is not in GPU {self.device_index}'s memory (host memory or another "
                             f"GPU); move it there, or pass a NumPy array to run()")
        return array.ptr, array.stream, array.keep_alive


def open_engine(manifest: Manifest, target: EngineTarget, record: EngineRecord, *, cuda_graphs: bool = True,
                slots: int = 2, gpu: int = 0, timing: bool = False, **_) -> TensorRTBackend:
    """The backend (not yet opened) for ``manifest``'s ``target`` engine. CPU threading options do not apply."""
    return TensorRTBackend(manifest.path.parent / record.file, manifest, target=target, cuda_graphs=cuda_graphs,
                           slots=slots, device=gpu, timing=timing)
