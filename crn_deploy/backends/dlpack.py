"""Read a DLPack tensor's pointer, device, dtype and shape without importing its framework.

Only reads: the capsule is not consumed, so the producer frees the tensor when the capsule is
released. Keep the capsule alive until the GPU has finished reading the memory.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

KDL_CPU, KDL_CUDA, KDL_CUDA_MANAGED = 1, 2, 13
KDL_INT, KDL_UINT = 0, 1
_DTYPES = {(KDL_UINT, 8, 1): "uint8", (KDL_INT, 32, 1): "int32"}  # the ones artifacts take


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32), ("dtype", _DataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass
class DLPackView:
    ptr: int
    device_type: int
    device_id: int
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None  # in elements; None means C-contiguous
    dtype: str  # "uint8", "int32", or "other"
    capsule: object  # keeps the producer's memory alive


def dlpack_view(obj, stream: int | None = None) -> DLPackView:
    """``obj.__dlpack__(stream=...)`` read in place. ``stream`` is the CUDA stream that will read it."""
    capsule = obj.__dlpack__() if stream is None else obj.__dlpack__(stream=stream)
    tensor = _Tensor.from_address(_get_pointer(capsule, b"dltensor"))  # DLManagedTensor starts with its DLTensor
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = tuple(tensor.strides[i] for i in range(tensor.ndim)) if tensor.strides else None
    dtype = _DTYPES.get((tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes), "other")
    return DLPackView((tensor.data or 0) + tensor.byte_offset, tensor.device.device_type, tensor.device.device_id,
                      shape, strides, dtype, capsule)
