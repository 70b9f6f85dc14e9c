"""FAKES of cuda-python's runtime module and of TensorRT, for testing our own plumbing only.

Memory is real host memory (ctypes buffers), copies and "kernels" run at once, graphs replay the
operations recorded during capture. Nothing here says anything about TensorRT or a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
from types import SimpleNamespace

import numpy as np

OK = 0
CAPTURE_INVALIDATED = 901


class FakeCudart:
    cudaError_t = SimpleNamespace(cudaSuccess=OK, cudaErrorStreamCaptureInvalidated=CAPTURE_INVALIDATED)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)
    cudaMemoryType = SimpleNamespace(cudaMemoryTypeHost=1, cudaMemoryTypeDevice=2, cudaMemoryTypeManaged=3)
    cudaStreamNonBlocking, cudaEventDefault, cudaEventDisableTiming = 1, 0, 2

    def __init__(self, *, capture_fails: bool = False, compute_capability=(9, 0), name: bytes = b"Fake GPU") -> None:
        self.capture_fails, self.cc, self.gpu_name = capture_fails, compute_capability, name
        self.device_mem: dict[int, ctypes.Array] = {}
        self.host_mem: dict[int, ctypes.Array] = {}
        self.live: set = set()
        self.graphs: dict = {}
        self.capturing = None
        self.launches = 0
        self._ids = itertools.count(1000)

    def run(self, op) -> None:
        """Do an operation now, or record it when a stream is being captured."""
        if self.capturing is not None:
            self.capturing.append(op)
        else:
            op()

    def cudaGetErrorName(self, err):
        return OK, {CAPTURE_INVALIDATED: b"cudaErrorStreamCaptureInvalidated"}.get(err, b"cudaErrorUnknown")

    def cudaGetDeviceCount(self):
        return OK, 1

    def cudaSetDevice(self, device):
        return (OK,)

    def _alloc(self, table, kind, nbytes):
        buf = (ctypes.c_ubyte * nbytes)()
        ptr = ctypes.addressof(buf)
        table[ptr] = buf
        self.live.add((kind, ptr))
        return OK, ptr

    def cudaMalloc(self, nbytes):
        return self._alloc(self.device_mem, "device", nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc(self.host_mem, "pinned", nbytes)

    def cudaFree(self, ptr):
        self.live.remove(("device", ptr))
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
        return self._handle("event")

    def cudaEventDestroy(self, h):
        self.live.remove(("event", h))
        return (OK,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self.run(lambda: ctypes.memmove(dst, src, nbytes))
        return (OK,)

    def cudaEventRecord(self, event, stream):
        return (OK,)

    def cudaStreamWaitEvent(self, stream, event, flags):
        return (OK,)

    def cudaStreamSynchronize(self, stream):
        return (OK,)

    def cudaEventSynchronize(self, event):
        return (OK,)

    def cudaEventElapsedTime(self, start, end):
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
        on_device = any(start <= ptr < start + len(buf) for start, buf in self.device_mem.items())
        kind = self.cudaMemoryType.cudaMemoryTypeDevice if on_device else self.cudaMemoryType.cudaMemoryTypeHost
        return OK, SimpleNamespace(type=kind, device=0 if on_device else -2)

    def cudaGetDeviceProperties(self, device):
        return OK, SimpleNamespace(name=self.gpu_name, major=self.cc[0], minor=self.cc[1], totalGlobalMem=80 << 30)


def fake_kernel(ids: np.ndarray, out_shape, instances: np.ndarray | None = None) -> np.ndarray:
    """What the fake engine 'computes': a fixed function of the ids (and instance ids, for two-input
    engines), so results can be checked."""
    base = ids[:, 0].astype(np.int64) + (0 if instances is None else instances[:, 0].astype(np.int64) % 7 * 31)
    images = np.stack([(base * (c + 1) * 7 + c) % 256 for c in range(3)], axis=-1).astype(np.uint8)
    return images.reshape(out_shape)


class FakeTensorRT:
    """Just the TensorRT runtime surface our backend touches."""

    __version__ = "11.4.0.106"
    DataType = SimpleNamespace(UINT8="UINT8", INT32="INT32", HALF="HALF", FLOAT="FLOAT")
    TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    LayerType = SimpleNamespace(CONVOLUTION="CONVOLUTION", DECONVOLUTION="DECONVOLUTION", NORMALIZATION="NORMALIZATION",
                                ACTIVATION="ACTIVATION")
    LayerInformationFormat = SimpleNamespace(ONELINE="ONELINE", JSON="JSON")

    def __init__(self, cudart: FakeCudart, *, context_fails: bool = False,
                 layer_information: str = '{"Layers": ["conv1", "conv2"], "Bindings": ["labels", "image"]}') -> None:
        self.cudart, self.context_fails = cudart, context_fails
        self.layer_information = layer_information  # what the engine inspector prints (names only by default)
        self.contexts: list[FakeContext] = []
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


def fake_plan(input_shape, output_shape, *, instances: bool = False) -> bytes:
    shapes = {"labels": list(input_shape), **({"instances": list(input_shape)} if instances else {}),
              "image": list(output_shape)}
    return b"FAKEPLAN" + json.dumps(shapes).encode()


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, shapes: dict) -> None:
        self.trt, self.shapes = trt, shapes
        self.num_io_tensors = len(shapes)
        self.device_memory_size_v2 = 1 << 20

    def get_tensor_name(self, i):
        return list(self.shapes)[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.OUTPUT if name == "image" else self.trt.TensorIOMode.INPUT

    def get_tensor_dtype(self, name):
        return self.trt.DataType.INT32 if name == "instances" else self.trt.DataType.UINT8

    def get_tensor_shape(self, name):
        return tuple(self.shapes[name])

    def create_engine_inspector(self):
        info = self.trt.layer_information
        return SimpleNamespace(get_engine_information=lambda fmt: info if fmt == "JSON" else "")

    def create_execution_context(self, runtime_config=None):
        if self.trt.context_fails:
            return None
        context = FakeContext(self)
        context.runtime_config = runtime_config
        self.trt.contexts.append(context)
        return context

    def create_runtime_config(self):
        return FakeRuntimeConfig()


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.addresses, self.enqueues = engine, {}, 0

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.enqueues += 1
        in_shape, out_shape = self.engine.shapes["labels"], self.engine.shapes["image"]
        src, dst = self.addresses["labels"], self.addresses["image"]  # bound now, as a graph would
        instances_at = self.addresses.get("instances") if "instances" in self.engine.shapes else None

        def kernel():
            ids = np.frombuffer(ctypes.string_at(src, int(np.prod(in_shape))), np.uint8).reshape(in_shape)
            instances = None if instances_at is None else np.frombuffer(
                ctypes.string_at(instances_at, 4 * int(np.prod(in_shape))), np.int32).reshape(in_shape)
            out = fake_kernel(ids, out_shape, instances)
            ctypes.memmove(dst, out.ctypes.data, out.nbytes)

        self.engine.trt.cudart.run(kernel)
        return True


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
        return self.kernels or b"KERNELS compiled at first run"


class FakeRuntimeConfig:
    def __init__(self) -> None:
        self.cache = None
        self.cuda_graph_strategy = "DISABLED"

    def create_runtime_cache(self):
        return FakeRuntimeCache()

    def set_runtime_cache(self, cache) -> None:
        self.cache = cache


class FakeDiagnostics(enum.IntFlag):
    VERSION_MISMATCH = 1
    UNSUPPORTED_CC = 2
    OLD_CUDA_DRIVER = 4
    MALFORMED_ENGINE = 32


class FakeTensorRTRTX(FakeTensorRT):
    """FakeTensorRT plus the TensorRT-RTX runtime surface: the header check, runtime configuration, runtime
    cache and CUDA-graph strategy. ``invalid``: the diagnostics the header check reports (0: valid)."""

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
