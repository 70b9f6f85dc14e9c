"""Read TensorFlow checkpoints (tensor bundles) without TensorFlow.

A bundle is ``PREFIX.index`` — an SSTable (LevelDB table format) mapping each tensor name to a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C), with the empty key
holding a ``BundleHeaderProto`` — and ``PREFIX.data-0000k-of-0000n`` shards of raw little-endian
tensor bytes. Every block trailer and every tensor's checksum is verified.

Protobuf decoding uses google.protobuf with the two messages' schemas built in code (the
messages are tiny and fixed; compiling TensorFlow's .proto files is not worth a build step);
CRC32C comes from google-crc32c.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC32C (4 bytes)
_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto: DataType -> NumPy
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
               9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}


def crc32c(data: bytes) -> int:
    try:
        import google_crc32c
    except ImportError:
        raise CheckpointError("reading TensorFlow checkpoints needs google-crc32c: pip install 'crn-deploy[export]'") \
            from None
    return google_crc32c.value(data)


def unmask_crc(masked: int) -> int:
    """LevelDB/TensorFlow store CRCs rotated and offset, so a CRC of data holding CRCs stays robust."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _messages():
    """BundleHeaderProto and BundleEntryProto classes (tensorflow/core/protobuf/tensor_bundle.proto)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="crn_deploy/tensor_bundle.proto", package="crn_deploy_tf",
                                              syntax="proto3")
    shape = file.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    dim.field.add(name="size", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    dim.field.add(name="name", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    shape.field.add(name="dim", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                    type_name=".crn_deploy_tf.TensorShapeProto.Dim")
    shape.field.add(name="unknown_rank", number=3, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    entry = file.message_type.add(name="BundleEntryProto")
    for name, number, kind in (("dtype", 1, F.TYPE_INT32), ("shard_id", 3, F.TYPE_INT32), ("offset", 4, F.TYPE_INT64),
                               ("size", 5, F.TYPE_INT64), ("crc32c", 6, F.TYPE_FIXED32)):
        entry.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)  # enums are int32 on the wire
    entry.field.add(name="shape", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".crn_deploy_tf.TensorShapeProto")
    entry.field.add(name="slices", number=7, type=F.TYPE_BYTES, label=F.LABEL_REPEATED)  # only counted
    header = file.message_type.add(name="BundleHeaderProto")
    header.field.add(name="num_shards", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    header.field.add(name="endianness", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    header.field.add(name="version", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"crn_deploy_tf.{name}"))

    return cls("BundleHeaderProto"), cls("BundleEntryProto")


BundleHeaderProto, BundleEntryProto = _messages()


# SSTable ----------------------------------------------------------------------------------------
def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("varint runs past its block")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def read_table(data: bytes, where: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an uncompressed SSTable, in key order, checking each block's CRC."""
    if len(data) < FOOTER_SIZE or struct.unpack("<Q", data[-8:])[0] != TABLE_MAGIC:
        raise CheckpointError(f"{where} is not a TensorFlow checkpoint index (no table footer): truncated or "
                              "another file; download model.ckpt.index again")
    try:
        footer = data[-FOOTER_SIZE:]
        _metaindex, pos = _read_handle(footer, 0)
        index_handle, _ = _read_handle(footer, pos)
        entries = []
        for _, handle_bytes in _read_block(data, index_handle, where):
            entries += _read_block(data, _read_handle(handle_bytes, 0)[0], where)
        return entries
    except ValueError as e:
        raise CheckpointError(f"{where} is damaged ({e}); download it again") from None


def _read_handle(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(data, pos)
    size, pos = read_varint(data, pos)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int], where: Path) -> list[tuple[bytes, bytes]]:
    offset, size = handle
    if offset + size + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise CheckpointError(f"{where} is truncated (a block runs past the end); download it again")
    block = data[offset : offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack("<I", data[offset + size + 1 : offset + size + 5])
    if unmask_crc(stored) != crc32c(block + bytes([kind])):
        raise CheckpointError(f"checksum mismatch in {where} (block at byte {offset}): the file is corrupt; "
                              "download it again")
    if kind != 0:
        raise CheckpointError(f"{where} uses block compression {kind}; TensorFlow writes bundles uncompressed, "
                              "so this is not a tensor bundle index")
    (restarts,) = struct.unpack("<I", block[-4:])
    end = len(block) - 4 - 4 * restarts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_size, pos = read_varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_size]))
        pos += value_size
    return entries


# Bundle -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: int  # TensorFlow DataType
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"DataType {self.dtype}")


class TensorBundle:
    """``TensorBundle(prefix)`` reads only the index; ``read(name)`` reads and checks one tensor."""

    def __init__(self, prefix: Path | str) -> None:
        self.prefix = resolve_prefix(Path(prefix))
        self.index_path = Path(f"{self.prefix}.index")
        entries = read_table(self.index_path.read_bytes(), self.index_path)
        if not entries or entries[0][0] != b"":
            raise CheckpointError(f"{self.index_path} has no bundle header: not a TensorFlow V2 checkpoint")
        header = BundleHeaderProto.FromString(entries[0][1])
        if header.endianness != 0:
            raise CheckpointError(f"{self.index_path} was written big-endian; re-save it on a little-endian machine")
        self.num_shards = header.num_shards or 1
        self.tensors: dict[str, TensorInfo] = {}
        for key, value in entries[1:]:
            entry = BundleEntryProto.FromString(value)
            name = key.decode("utf-8", errors="replace")
            self.tensors[name] = TensorInfo(name, entry.dtype, tuple(d.size for d in entry.shape.dim),
                                            entry.shard_id, entry.offset, entry.size, entry.crc32c,
                                            len(entry.slices) > 0)

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        info = self.tensors[name]
        if info.sliced or info.dtype not in DTYPES:
            kind = "partitioned" if info.sliced else info.dtype_name
            raise CheckpointError(f"{name} in {self.index_path} is {kind}; crn-import reads whole numeric tensors only")
        path = self.shard_path(info.shard)
        try:
            with open(path, "rb") as f:
                f.seek(info.offset)
                raw = f.read(info.size)
        except FileNotFoundError:
            raise CheckpointError(f"data shard {path} is missing: download it beside {self.index_path}") from None
        if len(raw) != info.size:
            raise CheckpointError(f"{path} is truncated ({name} needs bytes {info.offset}..{info.offset + info.size});"
                                  " download it again")
        if crc32c(raw) != unmask_crc(info.crc32c):
            raise CheckpointError(f"checksum mismatch for {name} in {path}: the file is corrupt; download it again")
        dtype = np.dtype(DTYPES[info.dtype]).newbyteorder("<")
        expected = int(np.prod(info.shape, dtype=np.int64)) * dtype.itemsize
        if expected != info.size:
            raise CheckpointError(f"{name} in {self.index_path}: {info.size} bytes for shape {list(info.shape)}")
        return np.frombuffer(raw, dtype).reshape(info.shape).astype(dtype.newbyteorder("="))


def resolve_prefix(path: Path) -> Path:
    """Accept ``dir/model.ckpt``, ``dir/model.ckpt.index``, a data shard, or ``dir`` holding one index."""
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise CheckpointError(f"{path} holds {len(indexes)} checkpoint indexes (*.index); pass PREFIX "
                                  "(for example result_256p/model.ckpt)")
        return indexes[0].with_suffix("")
    text = str(path)
    if text.endswith(".index"):
        text = text[: -len(".index")]
    elif ".data-" in path.name:
        text = text[: text.rindex(".data-")]
    if not Path(f"{text}.index").is_file():
        raise CheckpointError(f"{text}.index not found; pass the checkpoint PREFIX (for example "
                              "result_256p/model.ckpt) with its .index and .data-00000-of-00001 files beside it")
    return Path(text)
