"""Label maps from files and bytes: the one decoder every input path uses (crn-run's folders, crn-bench's
--labels, Ray Data rows, the Serve endpoint), and instance maps beside them.

Single-channel 8-bit images hold ids: Cityscapes ``*_labelIds.png`` are mapped to train ids for train-id
label sets, ADE20K's annotation PNGs ``ADE_*.png`` to SPADE's ADE20K ids (as its loader does); colour
images are matched to the label set's palette exactly, pixels of other colours void and counted (or
refused, ``strict_colors``). JPEG is refused: its compression changes colours at every region edge.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import UsageError
from ..labels import (ADE20K, CITYSCAPES, LabelSet, UnknownColors, ade20k_annotation_to_ids,
                      cityscapes_label_ids_to_train_ids)

LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
INSTANCE_SUFFIX = "_instanceIds.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_label_map(data: bytes, label_set: LabelSet, *, name: str = "the label map", strict_colors: bool = False,
                     unknown: UnknownColors | None = None, png_only: bool = False) -> np.ndarray:
    """uint8 [H, W] class ids from an encoded label image (``name``: its file name, which says whether it holds
    Cityscapes label ids or ADE20K annotations, and names it in errors)."""
    if png_only and not data.startswith(PNG_SIGNATURE):
        raise UsageError(f"{name} is not a PNG (send the label map as a lossless PNG)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UsageError(f"cannot read {name}: not an image OpenCV can decode")
    if image.dtype != np.uint8:
        raise UsageError(f"{name} has {image.dtype} pixels; save ids or colours as 8-bit PNG")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 2:
        ids = _ids_of(image, Path(name).name, label_set)
        try:
            label_set.check_ids(ids, strict=strict_colors, unknown=unknown)
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
        return ids
    try:
        return label_set.colors_to_ids(np.ascontiguousarray(image[..., ::-1]), strict=strict_colors, unknown=unknown)
    except UsageError as e:
        raise UsageError(f"{name}: {e}") from None


def _ids_of(image: np.ndarray, base: str, label_set: LabelSet) -> np.ndarray:
    if base.endswith("_labelIds.png") and label_set.name == CITYSCAPES.name:
        return cityscapes_label_ids_to_train_ids(image)  # train-id label sets (CRN's) map label ids
    if base.startswith("ADE_") and label_set.name == ADE20K.name:
        return ade20k_annotation_to_ids(image)
    return image


def read_label_image(path: Path, label_set: LabelSet, *, strict_colors: bool = False,
                     unknown: UnknownColors | None = None) -> np.ndarray:
    """A label image file as uint8 [H, W] class ids (see ``decode_label_map``)."""
    path = Path(path)
    refuse_lossy(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read label image {path}: {e.strerror or e}") from None
    return decode_label_map(data, label_set, name=str(path), strict_colors=strict_colors, unknown=unknown)


def refuse_lossy(path: Path) -> None:
    if Path(path).suffix.lower() in LOSSY_SUFFIXES:
        raise UsageError(f"{path} is a JPEG/WebP: lossy compression changes the colours and ids at every region "
                         "edge, so it cannot be a label map; save the label maps as PNG")


def decode_instance_map(data: bytes, name: str = "the instance map") -> np.ndarray:
    """int32 [H, W] instance ids from an encoded single-channel image (Cityscapes' 16-bit PNGs:
    ``label_id * 1000 + k`` for objects, the label id elsewhere)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise UsageError(f"{name} is not a single-channel image; it must hold instance ids")
    return image.astype(np.int32)


def instance_path(label_path: Path) -> Path | None:
    """Cityscapes' instance map beside a ``*_labelIds.png``, where there is one."""
    name = Path(label_path).name
    if not name.endswith("_labelIds.png"):
        return None
    candidate = Path(label_path).with_name(name[: -len("_labelIds.png")] + INSTANCE_SUFFIX)
    return candidate if candidate.is_file() else None


def read_instance_image(label_path: Path) -> np.ndarray | None:
    """int32 [H, W] instance ids from the ``*_instanceIds.png`` beside a ``*_labelIds.png``, or None."""
    path = instance_path(label_path)
    return None if path is None else decode_instance_map(path.read_bytes(), str(path))


def is_label_image(path: Path) -> bool:
    return path.suffix.lower() in LABEL_SUFFIXES and not path.name.endswith(INSTANCE_SUFFIX)


def list_label_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--labels {folder} is not a folder of label images")
    found = sorted(p for p in folder.iterdir() if is_label_image(p))
    if not found:
        raise no_label_images(folder, [p.name for p in folder.iterdir()])
    return found


def no_label_images(where, names: list[str], fix: str = "pass a folder or a glob") -> UsageError:
    """The error for a place with no label image, saying why where it holds JPEG/WebP files instead."""
    lossy = sorted(str(name) for name in names if Path(str(name)).suffix.lower() in LOSSY_SUFFIXES)
    if lossy:
        return UsageError(f"no label images in {where}: JPEG/WebP files such as {Path(lossy[0]).name} cannot be "
                          "label maps (lossy compression changes the ids and colours at every region border); save "
                          "them as PNG")
    return UsageError(f"no label images ({', '.join(LABEL_SUFFIXES)}) in {where}; {fix}")
