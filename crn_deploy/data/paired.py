"""Paired (label map, photograph) data for training: the built-in synthetic street dataset, Cityscapes,
and a generic folder of pairs. Every dataset is indexable and stateless, so a step's sample depends
only on (seed, step) and a resumed run continues exactly.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import UsageError
from ..labels import CITYSCAPES, VOID_ID
from .images import resize_image, resize_labels
from .label_maps import read_label_image
from .synthetic import BUILDING, CAR, SKY, VEGETATION, street_layout

# A base colour per Cityscapes train id: what the procedural "photographs" are painted with.
_BASE = np.array([
    (88, 86, 92), (150, 146, 140), (128, 112, 96), (142, 134, 124), (116, 104, 92), (74, 74, 78), (40, 40, 44),
    (196, 170, 44), (62, 104, 46), (118, 132, 78), (132, 178, 228), (150, 96, 84), (126, 72, 62), (128, 26, 34),
    (70, 70, 86), (184, 160, 60), (96, 100, 110), (40, 40, 120), (90, 40, 40),
], np.float32)


def street_photo(ids: np.ndarray) -> np.ndarray:
    """A deterministic procedural 'photograph' of a layout: shaded surfaces, facades with windows, a
    sky gradient, mottled foliage, car bodies with dark glass, darkened contact edges. uint8 RGB."""
    h, w = ids.shape
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    classes = np.minimum(ids, len(_BASE))
    palette = np.vstack([_BASE, np.zeros((1, 3), np.float32)])  # void renders black
    image = palette[classes] * (1.05 - 0.15 * y)  # light falls off towards the bottom
    sky = ids == SKY
    gradient = np.array([100, 150, 215], np.float32) * (1 - y) + np.array([205, 222, 240], np.float32) * y
    image[sky] = np.broadcast_to(gradient, (h, w, 3))[sky]
    windows = ((np.arange(h)[:, None] * 24 // h) % 3 == 1) & ((np.arange(w)[None, :] * 48 // w) % 3 == 1)
    image[(ids == BUILDING) & windows] *= 0.55
    leaves = _smooth_noise(h, w, seed=1, scale=max(2, h // 40))
    image[ids == VEGETATION] *= (0.8 + 0.4 * leaves[ids == VEGETATION])[:, None]
    glass = (ids == CAR) & (np.roll(ids, max(1, h // 40), axis=0) != CAR)
    image[glass] = (30, 38, 48)
    edges = cv2.dilate((cv2.Laplacian(classes.astype(np.float32), cv2.CV_32F) != 0).astype(np.uint8),
                       np.ones((3, 3), np.uint8))
    image[edges > 0] *= 0.8
    image = cv2.GaussianBlur(image, (3, 3), 0.8)
    image[ids == VOID_ID] = 0  # after the blur: void stays black, as in Cityscapes' ego-vehicle mask
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _smooth_noise(h: int, w: int, seed: int, scale: int) -> np.ndarray:
    coarse = np.random.default_rng(seed).random((h // scale + 2, w // scale + 2)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


class SyntheticPairs:
    """Procedural street layouts with their procedural photographs. ``first_seed`` separates splits."""

    held_out_seed = 1_000_000  # validation and PSNR reports use layouts from here on

    def __init__(self, first_seed: int = 0, size: int = 100_000) -> None:
        self.first_seed, self.size = first_seed, size
        self.label_set = CITYSCAPES

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int, resolution: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ids = street_layout(*resolution, seed=self.first_seed + index)
        return ids, street_photo(ids)


class CityscapesPairs:
    """``ROOT/gtFine/<split>/<city>/*_labelIds.png`` with ``ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png``."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        self.labels = sorted((root / "gtFine" / split).glob("*/*_labelIds.png"))
        if not self.labels:
            raise UsageError(f"no gtFine/{split}/*/*_labelIds.png under {root}: pass the Cityscapes root folder")
        self.images = [root / "leftImg8bit" / split / p.parent.name / p.name.replace("gtFine_labelIds", "leftImg8bit")
                       for p in self.labels]
        missing = [p for p in self.images if not p.is_file()]
        if missing:
            raise UsageError(f"{len(missing)} label maps have no leftImg8bit photograph (e.g. {missing[0]})")
        self.label_set = CITYSCAPES

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int, resolution: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ids = read_label_image(self.labels[index], self.label_set)  # *_labelIds.png: label ids to train ids
        return resize_labels(ids, resolution), resize_image(read_photo(self.images[index]), resolution)


class FolderPairs:
    """``DIR/labels/NAME.png`` (ids or colours) with ``DIR/images/NAME.png|jpg``."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.labels = sorted((folder / "labels").glob("*.png"))
        self.images = []
        for label in self.labels:
            found = [p for ext in (".png", ".jpg", ".jpeg") if (p := folder / "images" / (label.stem + ext)).is_file()]
            if not found:
                raise UsageError(f"{label} has no photograph images/{label.stem}.png|jpg in {folder}")
            self.images.append(found[0])
        if not self.labels:
            raise UsageError(f"no label maps in {folder}/labels/*.png (pairs: labels/NAME.png + images/NAME.png)")
        self.label_set = CITYSCAPES

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int, resolution: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ids = read_label_image(self.labels[index], self.label_set)
        return resize_labels(ids, resolution), resize_image(read_photo(self.images[index]), resolution)


def read_photo(path: Path) -> np.ndarray:
    """A photograph as uint8 RGB."""
    photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if photo is None:
        raise UsageError(f"cannot read photograph {path}: not an image OpenCV can decode")
    return np.ascontiguousarray(photo[..., ::-1])


def open_dataset(spec: str):
    """``synthetic``, ``cityscapes:ROOT`` or ``pairs:DIR``."""
    kind, _, where = spec.partition(":")
    if kind == "synthetic":
        return SyntheticPairs()
    if kind == "cityscapes" and where:
        return CityscapesPairs(where)
    if kind == "pairs" and where:
        return FolderPairs(where)
    raise UsageError(f"unknown dataset '{spec}': use synthetic, cityscapes:ROOT or pairs:DIR")
