"""Picture writing and resizing of label maps and pictures (OpenCV). Reading label maps is ``label_maps``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import UsageError
from ..files import write_bytes_atomic

def encode_picture(rgb: np.ndarray, suffix: str = ".png") -> bytes:
    """An RGB uint8 picture encoded in the format of ``suffix`` (.png, .jpg...)."""
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise UsageError(f"cannot encode a picture as '{suffix}'; use .png or .jpg")
    return encoded.tobytes()


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
