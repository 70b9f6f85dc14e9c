"""Label-image reading, picture writing and resizing (OpenCV)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import UsageError
from ..files import write_bytes_atomic
from ..labels import (ADE20K, CITYSCAPES, LabelSet, UnknownColors, ade20k_annotation_to_ids,
                      cityscapes_label_ids_to_train_ids)

LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def read_label_image(path: Path, label_set: LabelSet, *, strict_colors: bool = False,
                     unknown: UnknownColors | None = None) -> np.ndarray:
    """A label image as uint8 [H, W] class ids.

    Single-channel images hold ids (Cityscapes ``*_labelIds.png`` are mapped to train ids for train-id
    label sets; ADE20K's annotation PNGs ``ADE_*.png`` to SPADE's ADE20K ids, as its loader does);
    colour images are matched to the label set's palette exactly (pixels of other colours are void and
    counted into ``unknown``, or refused with ``strict_colors``).
    """
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UsageError(f"cannot read label image {path}: not an image file OpenCV can decode")
    if image.dtype != np.uint8:
        raise UsageError(f"label image {path} has {image.dtype} pixels; save ids or colours as 8-bit PNG")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 2:  # Cityscapes *_labelIds.png hold label ids: train-id label sets (CRN's) map them
        if path.name.endswith("_labelIds.png") and label_set.name == CITYSCAPES.name:
            return cityscapes_label_ids_to_train_ids(image)
        if path.name.startswith("ADE_") and label_set.name == ADE20K.name:
            return ade20k_annotation_to_ids(image)
        return image
    try:
        return label_set.colors_to_ids(np.ascontiguousarray(image[..., ::-1]), strict=strict_colors, unknown=unknown)
    except UsageError as e:
        raise UsageError(f"label image {path}: {e}") from None


INSTANCE_SUFFIX = "_instanceIds.png"


def instance_path(label_path: Path) -> Path | None:
    """Cityscapes' instance map beside a ``*_labelIds.png``, where there is one."""
    name = Path(label_path).name
    if not name.endswith("_labelIds.png"):
        return None
    candidate = Path(label_path).with_name(name[: -len("_labelIds.png")] + INSTANCE_SUFFIX)
    return candidate if candidate.is_file() else None


def read_instance_image(label_path: Path) -> np.ndarray | None:
    """int32 [H, W] instance ids from the ``*_instanceIds.png`` beside a ``*_labelIds.png`` (16-bit PNG:
    ``label_id * 1000 + k`` for objects, the label id elsewhere), or None where there is none."""
    path = instance_path(label_path)
    if path is None:
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise UsageError(f"instance map {path} is not a single-channel image; it must hold instance ids")
    return image.astype(np.int32)


def is_label_image(path: Path) -> bool:
    return path.suffix.lower() in LABEL_SUFFIXES and not path.name.endswith(INSTANCE_SUFFIX)


def list_label_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--labels {folder} is not a folder of label images")
    found = sorted(p for p in folder.iterdir() if is_label_image(p))
    if not found:
        raise UsageError(f"no label images ({', '.join(LABEL_SUFFIXES)}) in {folder}")
    return found


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 picture; the format follows the suffix. Atomic."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise UsageError(f"cannot encode a picture as '{path.suffix}'; use .png or .jpg")
    write_bytes_atomic(path, encoded.tobytes())


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
