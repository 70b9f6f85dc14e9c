"""A TensorFlow tensor-bundle WRITER for tests, written from the format's specification and kept
independent of the reader: protobuf fields are encoded by hand from tensor_bundle.proto's field
numbers, the SSTable from LevelDB's table format (prefix-compressed keys, restart points, block
trailers with masked CRC32C, footer with metaindex and index handles)."""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import numpy as np

MAGIC = 0xDB4775248B80FB57
TF_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.int64): 9}


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""  # proto3 omits zeros


def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _field_fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def entry_proto(dtype: int, shape, offset: int, size: int, crc: int, shard: int = 0) -> bytes:
    dims = b"".join(_field_bytes(2, _field_varint(1, d)) for d in shape)  # repeated Dim { int64 size = 1 }
    return (_field_varint(1, dtype) + _field_bytes(2, dims) + _field_varint(3, shard) + _field_varint(4, offset)
            + _field_varint(5, size) + _field_fixed32(6, crc))


def header_proto(num_shards: int) -> bytes:
    version = _field_varint(1, 1)  # VersionDef { producer: 1 }: a field the reader must skip
    return _field_varint(1, num_shards) + _field_bytes(3, version)


class _Block:
    def __init__(self, restart_interval: int) -> None:
        self.buf, self.restarts, self.interval, self.count, self.last = bytearray(), [0], restart_interval, 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        if self.count == self.interval:
            self.restarts.append(len(self.buf))
            self.count, shared = 0, 0
        else:
            shared = 0
            while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
                shared += 1
        self.buf += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        self.last, self.count = key, self.count + 1

    def finish(self) -> bytes:
        restarts = b"".join(struct.pack("<I", r) for r in self.restarts)
        return bytes(self.buf) + restarts + struct.pack("<I", len(self.restarts))


class _Table:
    def __init__(self, block_size: int) -> None:
        self.out, self.block_size = bytearray(), block_size
        self.data, self.index = _Block(16), _Block(1)

    def _write_block(self, contents: bytes) -> bytes:
        handle = varint(len(self.out)) + varint(len(contents))
        self.out += contents + b"\x00" + struct.pack("<I", masked_crc(contents + b"\x00"))
        return handle

    def _flush(self) -> None:
        if self.data.buf:
            self.index.add(self.data.last, self._write_block(self.data.finish()))
            self.data = _Block(16)

    def add(self, key: bytes, value: bytes) -> None:
        self.data.add(key, value)
        if len(self.data.buf) >= self.block_size:
            self._flush()

    def finish(self) -> bytes:
        self._flush()
        handles = self._write_block(_Block(16).finish()) + self._write_block(self.index.finish())
        return bytes(self.out) + handles + b"\x00" * (40 - len(handles)) + struct.pack("<Q", MAGIC)


def write_checkpoint(prefix: Path, tensors: dict[str, np.ndarray], *, block_size: int = 512,
                     index_only: bool = False) -> None:
    """``prefix.index`` + ``prefix.data-00000-of-00001``, as TensorFlow's BundleWriter lays them out.
    ``index_only``: just the index (sizes from the shapes, no data), like a download of the index alone."""
    table, data, offset = _Table(block_size), bytearray(), 0
    table.add(b"", header_proto(1))
    for name in sorted(tensors):
        array = tensors[name]
        size = array.size * array.dtype.itemsize
        raw = b"" if index_only else np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        crc = 0 if index_only else masked_crc(raw)
        table.add(name.encode(), entry_proto(TF_DTYPES[array.dtype], array.shape, offset, size, crc))
        data += raw
        offset += size
    Path(f"{prefix}.index").write_bytes(table.finish())
    if not index_only:
        Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
