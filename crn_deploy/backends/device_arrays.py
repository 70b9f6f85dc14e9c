"""Label maps that live in device (or any non-NumPy) memory: ``__cuda_array_interface__`` or DLPack.

One description for every backend: where the memory is, its pointer, shape and dtype, which
stream the producer wrote it on, and what must stay alive while it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .dlpack import KDL_CPU, KDL_CUDA, KDL_CUDA_MANAGED, dlpack_view


@dataclass
class ExternalArray:
    ptr: int
    shape: tuple[int, ...]
    dtype: str  # "uint8", "int32", or another NumPy name
    contiguous: bool
    device: str  # "cuda", "cpu" or "other"
    device_id: int
    stream: int | None  # producer stream to wait for (CUDA array interface), None if already ordered (DLPack)
    keep_alive: object


LEGACY_STREAM = 1  # cudaStreamLegacy, as DLPack and the CUDA array interface number it


def describe(labels, consumer_stream: int | None = None) -> ExternalArray:
    """``consumer_stream``: the CUDA stream that will read CUDA memory (DLPack orders the producer before it).

    DLPack comes first where an object speaks both protocols (torch, CuPy): it orders the producer's
    work explicitly. A CUDA array interface without a stream (version 2, as torch writes it) gets the
    legacy default stream as its producer stream: that is where such work usually runs, and our
    non-blocking streams would not wait for it otherwise.
    """
    if hasattr(labels, "__dlpack__") and hasattr(labels, "__dlpack_device__"):
        device_type, device_id = labels.__dlpack_device__()
        on_cuda = device_type in (KDL_CUDA, KDL_CUDA_MANAGED)
        view = dlpack_view(labels, consumer_stream if on_cuda else None)
        device = "cuda" if on_cuda else "cpu" if device_type == KDL_CPU else "other"
        return ExternalArray(view.ptr, view.shape, view.dtype, view.strides in (None, _contiguous(view.shape)),
                             device, device_id, None, view.capsule)
    cai = getattr(labels, "__cuda_array_interface__", None)
    if cai is not None:
        shape = tuple(cai["shape"])
        strides = cai.get("strides")  # bytes; for uint8 the same as elements
        stream = cai.get("stream")
        return ExternalArray(int(cai["data"][0]), shape, np.dtype(cai["typestr"]).name,
                             strides in (None, _contiguous(shape)), "cuda", -1,
                             LEGACY_STREAM if stream is None else int(stream), labels)
    raise UsageError("device input must expose __cuda_array_interface__ or __dlpack__ (a CuPy array or CUDA torch "
                     "tensor); NumPy arrays go through run()/submit()")


def check_label_batch(array: ExternalArray, shape: tuple[int, ...], dtype: str = "uint8") -> None:
    if array.dtype != dtype or array.shape != tuple(shape):
        raise UsageError(f"device input must be {dtype} {list(shape)}, got {array.dtype} {list(array.shape)}")
    if not array.contiguous:
        raise UsageError("device label map must be C-contiguous; call .contiguous() or cupy.ascontiguousarray")


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))
