"""The CUDA runtime through cuda-python (``cuda.bindings.runtime``): streams, device and pinned
buffers, events and graphs, owned by one object and freed in reverse order of creation.

No torch, no CuPy: the TensorRT backend needs only these few calls. Every cuda-python call
returns ``(error, *results)``; ``check`` turns a failure into a ``CudaError`` naming the call.
CUDA's current device is per thread: ``Cuda.make_current`` sets it in whichever thread calls, and
looking at a GPU (``device_properties``) leaves the caller's current device as it was.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from ..errors import CrnError, UsageError


class CudaError(CrnError):
    """A CUDA call failed (out of memory, no device, a bad pointer...)."""


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 12.x
        except ImportError:
            raise UsageError("the TensorRT backend needs cuda-python: pip install 'crn-deploy[tensorrt]'") from None
    return cudart


def check(cudart, result, what: str):
    """Unpack a cuda-python result tuple; raise with the error's name on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        hint = _HINTS.get(name, "")
        raise CudaError(f"CUDA {what} failed: {name}{hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


_HINTS = {
    "cudaErrorMemoryAllocation": " (out of GPU memory: close other GPU programs, or use a smaller resolution)",
    "cudaErrorNoDevice": " (no CUDA GPU is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES)",
    "cudaErrorInsufficientDriver": " (no NVIDIA driver, or one older than this CUDA runtime)",
}


def handle(obj) -> int:
    """The integer value of a CUDA handle object (stream, event, graph), as TensorRT takes it."""
    if isinstance(obj, int):
        return obj
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


class DeviceBuffer:
    def __init__(self, ptr: int, nbytes: int) -> None:
        self.ptr, self.nbytes = ptr, nbytes


class PinnedBuffer:
    """Page-locked host memory with a NumPy view, so copies to and from the GPU can be asynchronous."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype) -> None:
        self.ptr = ptr
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_ubyte * self.nbytes).from_address(ptr)
        self.array = np.frombuffer(raw, np.uint8).view(dtype).reshape(shape)


def require_device(device: int = 0, cudart=None):
    """The CUDA runtime module, once ``device`` is known to be visible; else a one-line refusal."""
    rt = cudart or import_cudart()
    try:
        count = check(rt, rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as e:
        raise UsageError(f"no usable NVIDIA GPU here ({e}); run this on the GPU machine") from None
    if device >= count:
        raise UsageError(f"CUDA device {device} not found ({count} visible); run this on the GPU machine")
    return rt


def device_properties(device: int = 0, cudart=None) -> dict:
    """Name, compute capability and memory of GPU ``device``; the calling thread's current device stays as it was."""
    rt = require_device(device, cudart)
    props = check(rt, rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}",
            "memory_bytes": int(props.totalGlobalMem)}


class Cuda:
    """Owns every CUDA resource it creates; ``close()`` frees them all, newest first."""

    def __init__(self, device: int = 0, cudart=None) -> None:
        self.rt = require_device(device, cudart)
        self.device = device
        self.make_current()
        self._owned: list[tuple[Callable, object]] = []

    def call(self, what: str, result):
        return check(self.rt, result, what)

    def make_current(self) -> None:
        """Make this object's GPU the calling thread's current device (CUDA keeps one per thread, 0 until set)."""
        self.call("cudaSetDevice", self.rt.cudaSetDevice(self.device))

    # resources -------------------------------------------------------------------------------
    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        ptr = self.call(f"cudaMalloc({nbytes} bytes)", self.rt.cudaMalloc(max(nbytes, 1)))
        self._own(self.rt.cudaFree, ptr)
        return DeviceBuffer(int(ptr), nbytes)

    def pinned(self, shape: tuple[int, ...], dtype) -> PinnedBuffer:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self.call(f"cudaMallocHost({nbytes} bytes)", self.rt.cudaMallocHost(max(nbytes, 1)))
        self._own(self.rt.cudaFreeHost, ptr)
        return PinnedBuffer(int(ptr), shape, dtype)

    def stream(self):
        stream = self.call("cudaStreamCreateWithFlags",
                           self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking))
        self._own(self.rt.cudaStreamDestroy, stream)
        return stream

    def event(self, timing: bool = True):
        flags = self.rt.cudaEventDefault if timing else self.rt.cudaEventDisableTiming
        event = self.call("cudaEventCreateWithFlags", self.rt.cudaEventCreateWithFlags(flags))
        self._own(self.rt.cudaEventDestroy, event)
        return event

    def _own(self, free: Callable, resource) -> None:
        self._owned.append((free, resource))

    # operations ------------------------------------------------------------------------------
    def h2d(self, dst: int, src: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync (host to device)", self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream))

    def d2h(self, dst: int, src: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync (device to host)", self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream))

    def memset(self, dst: int, value: int, nbytes: int, stream) -> None:
        self.call("cudaMemsetAsync", self.rt.cudaMemsetAsync(dst, value, nbytes, stream))

    def d2d(self, dst: int, src: int, nbytes: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self.call("cudaMemcpyAsync (device to device)", self.rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream))

    def record(self, event, stream) -> None:
        self.call("cudaEventRecord", self.rt.cudaEventRecord(event, stream))

    def wait(self, stream, event) -> None:
        self.call("cudaStreamWaitEvent", self.rt.cudaStreamWaitEvent(stream, event, 0))

    def synchronize(self, stream) -> None:
        self.call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def event_synchronize(self, event) -> None:
        self.call("cudaEventSynchronize", self.rt.cudaEventSynchronize(event))

    def elapsed_ms(self, start, end) -> float:
        return float(self.call("cudaEventElapsedTime", self.rt.cudaEventElapsedTime(start, end)))

    def capture(self, stream, enqueue: Callable[[], bool]):
        """Record ``enqueue`` on ``stream`` into an executable CUDA graph; None if it cannot be captured."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.call("cudaStreamBeginCapture", self.rt.cudaStreamBeginCapture(stream, mode))
        ok = False
        try:
            ok = bool(enqueue())
        finally:
            err, graph = self.rt.cudaStreamEndCapture(stream)
        if not ok or err != self.rt.cudaError_t.cudaSuccess:
            if err == self.rt.cudaError_t.cudaSuccess:
                self.rt.cudaGraphDestroy(graph)
            self.rt.cudaGetLastError()  # clear the capture error so later calls succeed
            return None
        self._own(self.rt.cudaGraphDestroy, graph)
        executable = self.call("cudaGraphInstantiate", self.rt.cudaGraphInstantiate(graph, 0))
        self._own(self.rt.cudaGraphExecDestroy, executable)
        return executable

    def launch(self, executable, stream) -> None:
        self.call("cudaGraphLaunch", self.rt.cudaGraphLaunch(executable, stream))

    def pointer_is_on_this_device(self, ptr: int) -> bool:
        """True for device (or managed) memory of this GPU, False for host memory or another GPU."""
        attrs = self.call("cudaPointerGetAttributes", self.rt.cudaPointerGetAttributes(ptr))
        device_types = (self.rt.cudaMemoryType.cudaMemoryTypeDevice, self.rt.cudaMemoryType.cudaMemoryTypeManaged)
        return attrs.type in device_types and attrs.device == self.device

    def properties(self) -> dict:
        return device_properties(self.device, self.rt)

    def free_memory(self) -> int:
        """Bytes free on this GPU now, as cudaMemGetInfo sees it (every process's allocations count)."""
        self.make_current()
        free, _total = self.call("cudaMemGetInfo", self.rt.cudaMemGetInfo())
        return int(free)

    def close(self) -> None:
        """Free everything, newest first; report the first failure after freeing the rest."""
        first_error = None
        while self._owned:
            free, resource = self._owned.pop()
            err = free(resource)
            err = err[0] if isinstance(err, tuple) else err
            if err != self.rt.cudaError_t.cudaSuccess and first_error is None:
                first_error = f"{getattr(free, '__name__', 'free')} failed: {err}"
        if first_error:
            raise CudaError(f"CUDA cleanup: {first_error}")
