"""Picture writing and resizing of label maps and pictures (OpenCV). Reading label maps is ``label_maps``."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ..errors import UsageError
from ..files import write_bytes_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ARTIFACT_KEY = "crn-deploy artifact sha256"  # the tEXt keyword of the artifact that painted a picture


def encode_picture(rgb: np.ndarray, suffix: str = ".png", artifact_sha256: str | None = None) -> bytes:
    """An RGB uint8 picture encoded in the format of ``suffix`` (.png, .jpg...); a PNG carries the SHA-256 of
    the artifact that painted it where one is given (a tEXt chunk: the same picture, the same bytes)."""
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise UsageError(f"cannot encode a picture as '{suffix}'; use .png or .jpg")
    png = encoded.tobytes()
    return with_text(png, {ARTIFACT_KEY: artifact_sha256}) if artifact_sha256 and suffix == ".png" else png


def with_text(png: bytes, text: dict[str, str]) -> bytes:
    """``png`` with a tEXt chunk per item, right after its header (PNG spec 11.3.4.3: Latin-1 keyword of 1-79
    characters, a zero byte, the text)."""
    header_end = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    chunks = b"".join(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
                      for key, value in text.items())
    return png[:header_end] + chunks + png[header_end:]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_text(png: bytes) -> dict[str, str] | None:
    """The tEXt items of a complete PNG; None where ``png`` is not one (empty, cut short, a chunk's CRC wrong,
    anything after IEND): what a crash or power loss may leave under a picture's name."""
    if not png.startswith(PNG_SIGNATURE):
        return None
    text, at = {}, len(PNG_SIGNATURE)
    while at + 12 <= len(png):
        (length,), kind = struct.unpack_from(">I", png, at), png[at + 4:at + 8]
        data_end = at + 8 + length
        if data_end + 4 > len(png) or zlib.crc32(png[at + 4:data_end]) != struct.unpack_from(">I", png, data_end)[0]:
            return None
        if kind == b"tEXt":
            key, _, value = png[at + 8:data_end].partition(b"\0")
            text[key.decode("latin-1")] = value.decode("latin-1")
        at = data_end + 4
        if kind == b"IEND":
            return text if at == len(png) else None
    return None


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 picture; the format follows the suffix. Atomic."""
    path = Path(path)
    write_bytes_atomic(path, encode_picture(rgb, path.suffix or ".png"))


LABEL_RESIZE = {
    "nearest": cv2.INTER_NEAREST,  # source pixel floor(y * in / out): OpenCV's and torch's nearest
    "nearest-exact": cv2.INTER_NEAREST_EXACT,  # floor((y + 0.5) * in / out): PIL's NEAREST, as pix2pixHD loads
}


def resize_labels(ids: np.ndarray, size: tuple[int, int], rule: str = "nearest") -> np.ndarray:
    """Nearest-neighbour: class (or instance) ids are never blended. ``size`` is (height, width);
    ``rule`` says which source pixel a target pixel takes (``LABEL_RESIZE``)."""
    if ids.shape[-2:] == tuple(size):
        return ids
    return cv2.resize(ids, (size[1], size[0]), interpolation=LABEL_RESIZE[rule])


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    shrinking = size[0] * size[1] < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
