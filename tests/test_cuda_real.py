"""Our CUDA calls against the real cuda-python bindings, on a machine with or without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from crn_deploy.errors import UsageError

from .api_usage import used_in_files

cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-bindings not installed (test extra)")
ROOT = Path(__file__).resolve().parents[1]


def _has_gpu() -> bool:
    err, count = cudart.cudaGetDeviceCount()
    return err == cudart.cudaError_t.cudaSuccess and count > 0


def test_every_cuda_runtime_name_we_use_exists():
    used = used_in_files([ROOT / "crn_deploy/backends/cuda.py"], {"rt"})
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaGraphLaunch", "cudaStreamBeginCapture"} <= used
    missing = []
    for name in sorted(used):
        if not any(hasattr(obj, name) for obj in (cudart, cudart.cudaError_t, cudart.cudaMemcpyKind,
                                                  cudart.cudaStreamCaptureMode, cudart.cudaMemoryType)):
            missing.append(name)
    assert missing == []


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the no-GPU path does not apply")
def test_no_gpu_is_one_clear_error():
    from crn_deploy.backends.cuda import Cuda
    from crn_deploy.backends.tensorrt import engines_unavailable_reason

    with pytest.raises(UsageError, match="no usable NVIDIA GPU here .*run this on the GPU machine"):
        Cuda(cudart=cudart)
    assert engines_unavailable_reason() is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
def test_cuda_buffers_round_trip_on_a_real_gpu():
    import numpy as np

    from crn_deploy.backends.cuda import Cuda

    cuda = Cuda(cudart=cudart)
    try:
        host_in, host_out = cuda.pinned((4, 5), np.uint8), cuda.pinned((4, 5), np.uint8)
        dev = cuda.device_buffer(host_in.nbytes)
        stream = cuda.stream()
        host_in.array[:] = np.arange(20, dtype=np.uint8).reshape(4, 5)
        cuda.h2d(dev.ptr, host_in.ptr, host_in.nbytes, stream)
        cuda.d2h(host_out.ptr, dev.ptr, host_out.nbytes, stream)
        cuda.synchronize(stream)
        assert np.array_equal(host_out.array, host_in.array)
        assert cuda.pointer_is_on_this_device(dev.ptr) and not cuda.pointer_is_on_this_device(host_in.ptr)
    finally:
        cuda.close()
