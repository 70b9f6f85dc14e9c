"""FAKES of cuda-python's runtime module and of TensorRT, for testing our own plumbing only.

Memory is real host memory (ctypes buffers), copies and "kernels" run at once, graphs replay the
operations recorded during capture. Nothing here says anything about TensorRT or a GPU.

The rules they keep, each as NVIDIA documents it (the tests rely on them): the current device is per
thread (cudaSetDevice), and memory, engines and contexts belong to the device current where they were
made; fresh device memory holds garbage until written; an event never recorded (or made without
timing) has no elapsed time; TensorRT's weights and a context's scratch memory take device memory
(cudaMemGetInfo sees them). TensorRT-RTX's execution context keeps only a weak hold on its runtime
configuration, and under WHOLE_GRAPH_CAPTURE it runs eagerly once, then captures a CUDA graph keyed on the
bound addresses and shapes, and captures again whenever they change.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import threading
import weakref
from collections import defaultdict
from types import SimpleNamespace

import numpy as np

OK = 0
INVALID_VALUE = 1
INVALID_DEVICE = 101
INVALID_RESOURCE_HANDLE = 400
CAPTURE_INVALIDATED = 901
GARBAGE = 0xA5  # what fresh device memory holds here until something writes it
_ERROR_NAMES = {INVALID_VALUE: b"cudaErrorInvalidValue", INVALID_DEVICE: b"cudaErrorInvalidDevice",
                INVALID_RESOURCE_HANDLE: b"cudaErrorInvalidResourceHandle",
                CAPTURE_INVALIDATED: b"cudaErrorStreamCaptureInvalidated"}


class FakeCudart:
    cudaError_t = SimpleNamespace(cudaSuccess=OK, cudaErrorStreamCaptureInvalidated=CAPTURE_INVALIDATED)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
    cudaMemoryType = SimpleNamespace(cudaMemoryTypeHost=1, cudaMemoryTypeDevice=2, cudaMemoryTypeManaged=3)
    cudaStreamNonBlocking, cudaEventDefault, cudaEventDisableTiming = 1, 0, 2

    TOTAL_MEMORY = 80 << 30

    def __init__(self, *, capture_fails: bool = False, compute_capability=(9, 0), name: bytes = b"Fake GPU",
                 devices: int = 1) -> None:
        self.capture_fails, self.cc, self.gpu_name, self.devices = capture_fails, compute_capability, name, devices
        self.device_mem: dict[int, ctypes.Array] = {}
        self.device_of: dict[int, int] = {}  # device pointer -> the device it was allocated on
        self.host_mem: dict[int, ctypes.Array] = {}
        self.used = defaultdict(int)  # device -> bytes held (our buffers, and the library's weights and scratch)
        self.written: set[int] = set()  # device buffers something has written since they were allocated
        self.uninitialised_reads = 0  # kernels that read a device buffer nothing had written
        self.live: set = set()
        self.graphs: dict = {}
        self.capturing = None
        self.launches = 0
        self.recorded: set = set()  # events recorded at least once
        self.timing_events: set = set()
        self._ids = itertools.count(1000)
        self._thread = threading.local()

    @property
    def current_device(self) -> int:
        """This thread's current device: 0 until the thread calls cudaSetDevice, as in CUDA."""
        return getattr(self._thread, "device", 0)

    def run(self, op) -> None:
        """Do an operation now, or record it when a stream is being captured."""
        if self.capturing is not None:
            self.capturing.append(op)
        else:
            op()

    def cudaGetErrorName(self, err):
        return OK, _ERROR_NAMES.get(err, b"cudaErrorUnknown")

    def cudaGetDeviceCount(self):
        return OK, self.devices

    def cudaSetDevice(self, device):
        if not 0 <= device < self.devices:
            return (INVALID_DEVICE,)
        self._thread.device = device
        return (OK,)

    def cudaMemGetInfo(self):
        return OK, self.TOTAL_MEMORY - self.used[self.current_device], self.TOTAL_MEMORY

    def hold(self, nbytes: int) -> int:
        """Device memory the library takes for itself (weights, scratch) on the current device; returns it."""
        device = self.current_device
        self.used[device] += nbytes
        return device

    def release(self, device: int, nbytes: int) -> None:
        self.used[device] -= nbytes

    def _alloc(self, table, kind, nbytes):
        buf = (ctypes.c_ubyte * nbytes)()
        ptr = ctypes.addressof(buf)
        table[ptr] = buf
        self.live.add((kind, ptr))
        return OK, ptr

    def cudaMalloc(self, nbytes):
        ok, ptr = self._alloc(self.device_mem, "device", nbytes)
        ctypes.memset(ptr, GARBAGE, nbytes)
        self.device_of[ptr] = self.hold(nbytes)
        return ok, ptr

    def cudaMallocHost(self, nbytes):
        return self._alloc(self.host_mem, "pinned", nbytes)

    def cudaFree(self, ptr):
        self.live.remove(("device", ptr))
        self.release(self.device_of[ptr], len(self.device_mem[ptr]))
        self.written.discard(ptr)
        return (OK,)

    def cudaFreeHost(self, ptr):
        self.live.remove(("pinned", ptr))
        return (OK,)

    def _handle(self, kind):
        h = next(self._ids)
        self.live.add((kind, h))
        return OK, h

    def cudaStreamCreateWithFlags(self, flags):
        return self._handle("stream")

    def cudaStreamDestroy(self, h):
        self.live.remove(("stream", h))
        return (OK,)

    def cudaEventCreateWithFlags(self, flags):
        ok, event = self._handle("event")
        if not flags & self.cudaEventDisableTiming:
            self.timing_events.add(event)
        return ok, event

    def cudaEventDestroy(self, h):
        self.live.remove(("event", h))
        return (OK,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        def copy():
            ctypes.memmove(dst, src, nbytes)
            self.written.add(dst)

        self.run(copy)
        return (OK,)

    def cudaMemsetAsync(self, ptr, value, nbytes, stream):
        def fill():
            ctypes.memset(ptr, value, nbytes)
            self.written.add(ptr)

        self.run(fill)
        return (OK,)

    def cudaEventRecord(self, event, stream):
        self.recorded.add(event)
        return (OK,)

    def cudaStreamWaitEvent(self, stream, event, flags):
        return (OK,)

    def cudaStreamSynchronize(self, stream):
        return (OK,)

    def cudaEventSynchronize(self, event):
        return (OK,)

    def cudaEventElapsedTime(self, start, end):
        # CUDA: an event never recorded, or made with cudaEventDisableTiming, has no time
        if not {start, end} <= self.recorded or not {start, end} <= self.timing_events:
            return INVALID_RESOURCE_HANDLE, 0.0
        return OK, 1.0

    def cudaGetLastError(self):
        return (OK,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = []
        return (OK,)

    def cudaStreamEndCapture(self, stream):
        ops, self.capturing = self.capturing, None
        if self.capture_fails:
            return CAPTURE_INVALIDATED, None
        ok, graph = self._handle("graph")
        self.graphs[graph] = ops
        return OK, graph

    def cudaGraphInstantiate(self, graph, flags):
        ok, executable = self._handle("graph_exec")
        self.graphs[executable] = self.graphs[graph]
        return OK, executable

    def cudaGraphLaunch(self, executable, stream):
        self.launches += 1
        for op in self.graphs[executable]:
            op()
        return (OK,)

    def cudaGraphDestroy(self, graph):
        self.live.discard(("graph", graph))
        return (OK,)

    def cudaGraphExecDestroy(self, executable):
        self.live.remove(("graph_exec", executable))
        return (OK,)

    def cudaPointerGetAttributes(self, ptr):
        owner = next((start for start, buf in self.device_mem.items() if start <= ptr < start + len(buf)), None)
        kind = self.cudaMemoryType.cudaMemoryTypeHost if owner is None else self.cudaMemoryType.cudaMemoryTypeDevice
        return OK, SimpleNamespace(type=kind, device=-2 if owner is None else self.device_of[owner])

    def cudaGetDeviceProperties(self, device):
        if not 0 <= device < self.devices:
            return INVALID_DEVICE, None
        return OK, SimpleNamespace(name=self.gpu_name, major=self.cc[0], minor=self.cc[1],
                                   totalGlobalMem=self.TOTAL_MEMORY)


def fake_kernel(ids: np.ndarray, out_shape, instances: np.ndarray | None = None) -> np.ndarray:
    """What the fake engine 'computes': a fixed function of the ids (and instance ids, for two-input
    engines), so results can be checked."""
    base = ids[:, 0].astype(np.int64) + (0 if instances is None else instances[:, 0].astype(np.int64) % 7 * 31)
    images = np.stack([(base * (c + 1) * 7 + c) % 256 for c in range(3)], axis=-1).astype(np.uint8)
    return images.reshape(out_shape)


class FakeTensorRT:
    """Just the TensorRT runtime surface our backend touches. ``errors``: what TensorRT would log as errors (an
    enqueue that returns False says why there)."""

    __version__ = "11.4.0.106"
    DataType = SimpleNamespace(UINT8="UINT8", INT32="INT32", HALF="HALF", FLOAT="FLOAT")
    TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    LayerType = SimpleNamespace(CONVOLUTION="CONVOLUTION", DECONVOLUTION="DECONVOLUTION", NORMALIZATION="NORMALIZATION",
                                ACTIVATION="ACTIVATION")
    LayerInformationFormat = SimpleNamespace(ONELINE="ONELINE", JSON="JSON")
    EngineStat = SimpleNamespace(TOTAL_WEIGHTS_SIZE="TOTAL_WEIGHTS_SIZE", STRIPPED_WEIGHTS_SIZE="STRIPPED_WEIGHTS_SIZE")
    ExecutionContextAllocationStrategy = SimpleNamespace(STATIC="STATIC", ON_PROFILE_CHANGE="ON_PROFILE_CHANGE",
                                                         USER_MANAGED="USER_MANAGED")
    WEIGHTS_BYTES = 3 << 20  # what a fake engine holds on the GPU from deserialization on
    SCRATCH_BYTES = 1 << 20  # device_memory_size_v2: a context's activations

    def __init__(self, cudart: FakeCudart, *, context_fails: bool = False, capturable: bool = True,
                 layer_information: str = '{"Layers": ["conv1", "conv2"], "Bindings": ["labels", "image"]}') -> None:
        self.cudart, self.context_fails, self.capturable = cudart, context_fails, capturable
        self.layer_information = layer_information  # what the engine inspector prints (names only by default)
        self._contexts: list[weakref.ref] = []
        self.contexts_made = 0
        self.captures = 0  # CUDA graphs the library captured itself (TensorRT-RTX, WHOLE_GRAPH_CAPTURE)
        self.configs_freed_under_a_context = 0
        self.errors: list[str] = []
        trt = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan: bytes):
                if not plan.startswith(b"FAKEPLAN"):
                    return None
                return FakeEngine(trt, json.loads(plan[len(b"FAKEPLAN"):]))

        self.Logger, self.Runtime = Logger, Runtime

    @property
    def contexts(self) -> list[FakeContext]:
        """The execution contexts still alive, oldest first (the fake holds them weakly, as an application would
        not)."""
        return [c for c in (ref() for ref in self._contexts) if c is not None]


def fake_plan(input_shape, output_shape, *, instances: bool = False) -> bytes:
    shapes = {"labels": list(input_shape), **({"instances": list(input_shape)} if instances else {}),
              "image": list(output_shape)}
    return b"FAKEPLAN" + json.dumps(shapes).encode()


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, shapes: dict) -> None:
        self.trt, self.shapes = trt, shapes
        self.num_io_tensors = len(shapes)
        self.device_memory_size_v2 = trt.SCRATCH_BYTES
        self.device = trt.cudart.hold(trt.WEIGHTS_BYTES)  # the weights go to the GPU current at deserialization
        weakref.finalize(self, trt.cudart.release, self.device, trt.WEIGHTS_BYTES)

    def get_tensor_name(self, i):
        return list(self.shapes)[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.OUTPUT if name == "image" else self.trt.TensorIOMode.INPUT

    def get_tensor_dtype(self, name):
        return self.trt.DataType.INT32 if name == "instances" else self.trt.DataType.UINT8

    def get_tensor_shape(self, name):
        return tuple(self.shapes[name])

    def get_engine_stat(self, stat):
        return self.trt.WEIGHTS_BYTES if stat == self.trt.EngineStat.TOTAL_WEIGHTS_SIZE else -1

    def create_engine_inspector(self):
        info = self.trt.layer_information
        return SimpleNamespace(get_engine_information=lambda fmt: info if fmt == "JSON" else "")

    def create_execution_context(self, how=None):
        """``how``: an allocation strategy (default STATIC), or a runtime configuration (which names one)."""
        if self.trt.context_fails:
            return None
        config = how if isinstance(how, FakeRuntimeConfig) else None
        strategy = config.allocation if config is not None else how or "STATIC"
        context = FakeContext(self, config, strategy)
        self.trt._contexts.append(weakref.ref(context))
        self.trt.contexts_made += 1
        return context

    def create_runtime_config(self):
        return FakeRuntimeConfig()


def _runtime_config_freed(context_ref) -> None:
    """The binding keeps only the engine alive: a context whose runtime configuration is freed is left broken."""
    context = context_ref()
    if context is not None:
        context.valid = False
        context.engine.trt.configs_freed_under_a_context += 1


class FakeContext:
    def __init__(self, engine: FakeEngine, config: FakeRuntimeConfig | None, strategy: str) -> None:
        cudart = engine.trt.cudart
        self.engine, self.addresses, self.enqueues, self.valid = engine, {}, 0, True
        self.device = cudart.current_device
        self.user_managed = strategy == "USER_MANAGED"
        self.scratch: tuple[int, int] | None = None
        if not self.user_managed:  # STATIC: the context allocates its own scratch memory
            cudart.hold(engine.device_memory_size_v2)
            weakref.finalize(self, cudart.release, self.device, engine.device_memory_size_v2)
        self._config = None if config is None else weakref.ref(config)
        self.graph_strategy = "DISABLED" if config is None else config.cuda_graph_strategy
        self.runs, self.graph_key, self.captures = 0, None, 0
        if config is not None:
            weakref.finalize(config, _runtime_config_freed, weakref.ref(self))
            if config.cache is not None and not config.cache.kernels:  # TensorRT-RTX compiles its kernels here
                config.cache.kernels = b"KERNELS compiled for this GPU"

    def get_runtime_config(self):
        return None if self._config is None else self._config()

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def get_tensor_address(self, name):
        return self.addresses.get(name, 0)

    def get_tensor_shape(self, name):
        return tuple(self.engine.shapes[name])

    def set_device_memory(self, ptr, size):
        self.scratch = (ptr, size)

    def is_stream_capturable(self, stream):
        return self.engine.trt.capturable

    def _refuse(self) -> str | None:
        if not self.valid:
            return "the runtime configuration of this execution context was destroyed before it"
        if self.engine.trt.cudart.current_device != self.device:
            return (f"enqueue on device {self.engine.trt.cudart.current_device}, the execution context belongs to "
                    f"device {self.device}")
        if self.user_managed and (self.scratch is None or self.scratch[1] < self.engine.device_memory_size_v2):
            return "USER_MANAGED execution context without enough device memory set"
        return None

    def execute_async_v3(self, stream):
        trt = self.engine.trt
        refused = self._refuse()
        if refused:
            trt.errors.append(refused)
            return False
        self.enqueues += 1
        self._own_graph()
        cudart = trt.cudart
        in_shape, out_shape = self.engine.shapes["labels"], self.engine.shapes["image"]
        src, dst = self.addresses["labels"], self.addresses["image"]  # bound now, as a graph would
        instances_at = self.addresses.get("instances") if "instances" in self.engine.shapes else None

        def kernel():
            inputs = [src] + ([instances_at] if instances_at is not None else [])
            cudart.uninitialised_reads += sum(ptr not in cudart.written for ptr in inputs)
            ids = np.frombuffer(ctypes.string_at(src, int(np.prod(in_shape))), np.uint8).reshape(in_shape)
            instances = None if instances_at is None else np.frombuffer(
                ctypes.string_at(instances_at, 4 * int(np.prod(in_shape))), np.int32).reshape(in_shape)
            out = fake_kernel(ids, out_shape, instances)
            ctypes.memmove(dst, out.ctypes.data, out.nbytes)
            cudart.written.add(dst)

        cudart.run(kernel)
        return True

    def _own_graph(self) -> None:
        """TensorRT-RTX under WHOLE_GRAPH_CAPTURE: an eager first run, then a graph keyed on the bound addresses and
        shapes (one per context), captured again whenever the key changes."""
        trt = self.engine.trt
        self.runs += 1
        if self.graph_strategy != "WHOLE_GRAPH_CAPTURE" or not trt.capturable or self.runs == 1:
            return
        key = tuple(sorted((name, ptr, self.get_tensor_shape(name)) for name, ptr in self.addresses.items()))
        if key != self.graph_key:
            self.graph_key = key
            self.captures += 1
            trt.captures += 1


class FakeRuntimeCache:
    """TensorRT-RTX's kernel cache: takes blobs it wrote itself (b"KERNELS..."), refuses others unchanged."""

    def __init__(self) -> None:
        self.kernels = b""

    def deserialize(self, blob) -> bool:
        if not bytes(blob).startswith(b"KERNELS"):
            return False
        self.kernels = bytes(blob)
        return True

    def serialize(self) -> bytes:
        return self.kernels


class FakeRuntimeConfig:
    def __init__(self) -> None:
        self.cache = None
        self.cuda_graph_strategy = "DISABLED"
        self.allocation = "STATIC"

    def create_runtime_cache(self):
        return FakeRuntimeCache()

    def set_runtime_cache(self, cache) -> bool:
        self.cache = cache
        return True

    def get_runtime_cache(self):
        return self.cache

    def set_execution_context_allocation_strategy(self, strategy) -> None:
        self.allocation = strategy


class FakeDiagnostics(enum.IntFlag):
    VERSION_MISMATCH = 1
    UNSUPPORTED_CC = 2
    OLD_CUDA_DRIVER = 4
    MALFORMED_ENGINE = 32


class FakeTensorRTRTX(FakeTensorRT):
    """FakeTensorRT plus the TensorRT-RTX runtime surface: the header check, runtime configuration, runtime
    cache and CUDA-graph strategy. ``invalid``: the diagnostics the header check reports (0: valid);
    ``capturable``: what ``is_stream_capturable`` answers (False: the library runs without graphs)."""

    __version__ = "1.7.1.116"
    EngineValidity = SimpleNamespace(VALID="VALID", SUBOPTIMAL="SUBOPTIMAL", INVALID="INVALID")
    EngineInvalidityDiagnostics = FakeDiagnostics
    CudaGraphStrategy = SimpleNamespace(DISABLED="DISABLED", WHOLE_GRAPH_CAPTURE="WHOLE_GRAPH_CAPTURE")

    def __init__(self, cudart: FakeCudart, *, invalid: int = 0, **options) -> None:
        super().__init__(cudart, **options)
        base = self.Runtime

        class Runtime(base):
            def get_engine_validity(self, plan):
                return ("INVALID" if invalid else "VALID"), invalid

        self.Runtime = Runtime
