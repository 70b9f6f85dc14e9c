"""Deterministic synthetic street layouts (Cityscapes train ids) at any resolution.

No real dataset may be downloaded here, so tests, demos and benchmarks draw their own scenes:
sky, buildings, vegetation, a road in perspective with sidewalks, cars, people, poles and signs,
and the ego vehicle's bonnet as void. Shapes live in unit coordinates, so one seed gives the same
scene at every resolution; ``t`` moves the traffic for animations.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import UsageError
from ..labels import CITYSCAPES_ID_TO_TRAIN_ID, LABEL_SETS, VOID_ID, LabelSet

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
SIDEWALK_WIDTH = 0.16  # at the bottom edge, in image widths
# train id -> Cityscapes label id (void -> 0, "unlabeled"), the inverse of labels.CITYSCAPES_ID_TO_TRAIN_ID
TRAIN_ID_TO_LABEL_ID = np.zeros(256, np.uint8)
for _label_id in range(34):
    if CITYSCAPES_ID_TO_TRAIN_ID[_label_id] != VOID_ID:
        TRAIN_ID_TO_LABEL_ID[CITYSCAPES_ID_TO_TRAIN_ID[_label_id]] = _label_id


class _Canvas:
    def __init__(self, height: int, width: int) -> None:
        self.ids = np.full((height, width), SKY, np.uint8)
        self.size = np.array([width, height], np.float64)

    def poly(self, points, cls: int) -> None:
        pts = np.round(np.asarray(points, np.float64) * self.size).astype(np.int32)
        cv2.fillPoly(self.ids, [pts], int(cls))

    def rect(self, x0, y0, x1, y1, cls: int) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls)

    def ellipse(self, cx, cy, rx, ry, cls: int) -> None:
        center = tuple(int(v) for v in np.round(np.array([cx, cy]) * self.size))
        axes = tuple(max(1, int(v)) for v in np.round(np.array([rx, ry]) * self.size))
        cv2.ellipse(self.ids, center, axes, 0, 0, 360, int(cls), -1)


def street_layout(height: int, width: int, seed: int = 0, t: float = 0.0) -> np.ndarray:
    """A uint8 [height, width] map of class ids (255 = void)."""
    rng = np.random.default_rng(seed)
    c = _Canvas(height, width)
    horizon = rng.uniform(0.36, 0.46)
    vanish = rng.uniform(0.42, 0.58)
    _buildings(c, rng, horizon)
    road = rng.uniform(0.3, 0.42)  # half the road's width at the bottom edge
    _ground(c, rng, horizon, vanish, road)
    _street_furniture(c, rng, horizon, vanish, road)
    _traffic(c, rng, horizon, vanish, road, t)
    _pedestrians(c, rng, horizon, vanish, road, t)
    c.ellipse(0.5, 1.08, 0.42, 0.12, VOID_ID)  # ego vehicle's bonnet
    return c.ids


def cityscapes_scene(height: int, width: int, seed: int = 0, t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A street layout as Cityscapes' own files hold one: uint8 label ids (``*_labelIds.png``, 0..33,
    not train ids) and int32 instance ids (``*_instanceIds.png``: ``label_id * 1000 + k`` for each
    car, truck, bus, person and rider, the label id elsewhere) — the input pix2pixHD and SPADE take."""
    train = street_layout(height, width, seed, t)
    label_ids = TRAIN_ID_TO_LABEL_ID[train]
    instances = label_ids.astype(np.int32)
    for cls in (PERSON, RIDER, CAR, TRUCK, BUS):
        count, components = cv2.connectedComponents((train == cls).astype(np.uint8), connectivity=4)
        for k in range(1, count):
            instances[components == k] = int(TRAIN_ID_TO_LABEL_ID[cls]) * 1000 + k - 1
    return label_ids, instances


def street_layouts(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """[count, 1, height, width] uint8: the batch layout the engines take."""
    return np.stack([street_layout(height, width, seed + i)[None] for i in range(count)])


def _depth_scale(y: float, horizon: float) -> float:
    """Apparent size of an object standing at screen height y (0 at the horizon, 1 at the bottom)."""
    return max(0.0, (y - horizon) / (1.0 - horizon))


def _buildings(c: _Canvas, rng, horizon: float) -> None:
    x = 0.0
    while x < 1.0:
        w = rng.uniform(0.06, 0.18)
        top = rng.uniform(0.02, horizon - 0.08)
        c.rect(x, top, x + w, horizon + 0.02, BUILDING if rng.random() > 0.15 else WALL)
        if rng.random() < 0.5:  # a tree in front of the facade
            c.ellipse(x + w / 2, horizon - rng.uniform(0.0, 0.06), w * 0.45, rng.uniform(0.04, 0.09), VEGETATION)
        x += w


def _ground(c: _Canvas, rng, horizon: float, vanish: float, road: float) -> None:
    c.rect(0.0, horizon, 1.0, 1.0, TERRAIN)
    walk = road + SIDEWALK_WIDTH
    c.poly([(vanish - 0.01, horizon), (vanish + 0.01, horizon), (0.5 + walk, 1.0), (0.5 - walk, 1.0)], SIDEWALK)
    c.poly([(vanish - 0.004, horizon), (vanish + 0.004, horizon), (0.5 + road, 1.0), (0.5 - road, 1.0)], ROAD)
    if rng.random() < 0.6:
        top, bottom = (vanish - 0.05, horizon), (vanish - 0.05, horizon + 0.01)
        fence = [(0.0, horizon + 0.04), top, bottom, (0.0, horizon + 0.09)]
        c.poly(fence, FENCE)


def _street_furniture(c: _Canvas, rng, horizon: float, vanish: float, road: float) -> None:
    for side in (-1, 1):
        for y in sorted(rng.uniform(horizon + 0.05, 0.95, size=rng.integers(1, 4))):
            s = _depth_scale(y, horizon)
            x = vanish + side * (road + SIDEWALK_WIDTH * 0.8) * s
            top = y - 0.55 * s - 0.02
            c.rect(x - 0.004 * s - 0.001, top, x + 0.004 * s + 0.001, y, POLE)
            if rng.random() < 0.5:
                c.rect(x - 0.02 * s, top, x + 0.02 * s, top + 0.05 * s + 0.005, SIGN)
            else:
                c.rect(x - 0.008 * s, top, x + 0.008 * s + 0.001, top + 0.08 * s + 0.005, LIGHT)


def _traffic(c: _Canvas, rng, horizon: float, vanish: float, road: float, t: float) -> None:
    count = int(rng.integers(2, 6))
    for y, lane, kind, speed in zip(sorted(rng.uniform(horizon + 0.04, 0.85, size=count)),
                                    rng.uniform(-0.8, 0.8, size=count),
                                    rng.choice([CAR, CAR, CAR, TRUCK, BUS], size=count),
                                    rng.uniform(-0.05, 0.05, size=count), strict=True):
        s = _depth_scale(y, horizon)
        x = vanish + (lane * road * 0.75 + speed * t) * s
        w, h = (0.22 if kind == CAR else 0.3) * s, (0.12 if kind == CAR else 0.22) * s
        c.rect(x - w / 2, y - h, x + w / 2, y, int(kind))
        if kind == CAR:  # cabin
            c.rect(x - w / 3, y - h * 1.5, x + w / 3, y - h * 0.9, int(kind))


def _pedestrians(c: _Canvas, rng, horizon: float, vanish: float, road: float, t: float) -> None:
    for _ in range(int(rng.integers(1, 5))):
        y = rng.uniform(horizon + 0.06, 0.9)
        s = _depth_scale(y, horizon)
        side = rng.choice([-1, 1])
        x = vanish + side * (road + SIDEWALK_WIDTH * 0.4) * s + rng.uniform(-0.02, 0.02) * t
        cls = PERSON if rng.random() > 0.2 else RIDER
        c.rect(x - 0.012 * s, y - 0.2 * s, x + 0.012 * s + 0.001, y, cls)
        c.ellipse(x, y - 0.22 * s, 0.01 * s, 0.02 * s, cls)
        if cls == RIDER:
            c.ellipse(x, y - 0.02 * s, 0.03 * s, 0.02 * s, BICYCLE)


def patchwork_scene(height: int, width: int, num_classes: int, seed: int = 0, t: float = 0.0,
                    shapes: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A layout of many small regions of many classes, for label sets without a street scene (ADE20K,
    COCO-Stuff, custom): a few large background bands, then ``shapes`` rectangles and ellipses of random
    classes and sizes (1..12% of the width), each its own instance; ``t`` drifts them sideways. uint8 ids
    [H,W] (0..num_classes-1) and int32 instance ids [H,W]."""
    rng = np.random.default_rng(seed)
    c = _Canvas(height, width)
    instances = np.zeros((height, width), np.int32)
    bands = np.sort(rng.uniform(0, 1, 3))
    for top, bottom in zip([0.0, *bands], [*bands, 1.0], strict=True):
        c.rect(-0.01, top, 1.01, bottom, rng.integers(num_classes))
    for k in range(shapes):
        cls = int(rng.integers(num_classes))
        cx, cy = (rng.uniform(0, 1) + 0.05 * t * rng.uniform(-1, 1)) % 1.0, rng.uniform(0, 1)
        rx, ry = rng.uniform(0.01, 0.12), rng.uniform(0.01, 0.12) * width / height
        before = c.ids.copy()
        if k % 2:
            c.ellipse(cx, cy, rx, ry, cls)
        else:
            c.rect(cx - rx, cy - ry, cx + rx, cy + ry, cls)
        drawn = c.ids != before
        instances[(c.ids == cls) & (drawn | (instances == 0))] = k + 1
    return c.ids, instances


def scenes(label_set: LabelSet | str, count: int, height: int, width: int, seed: int = 0,
           t: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """``count`` synthetic scenes in a label set's id space: uint8 [count,1,H,W] ids, plus int32 instance
    ids shaped alike (None for Cityscapes train ids, CRN's space, which has no instance maps). Street
    scenes for the Cityscapes sets; patchworks of many small classes for any other set."""
    name = label_set if isinstance(label_set, str) else label_set.name
    if name == "cityscapes":
        return np.stack([street_layout(height, width, seed + i, t)[None] for i in range(count)]), None
    if name == "cityscapes-labelids":
        pairs = [cityscapes_scene(height, width, seed + i, t) for i in range(count)]
    else:
        known = LABEL_SETS.get(name) if isinstance(label_set, str) else label_set
        if known is None:
            raise UsageError(f"no synthetic scenes for the label set '{name}': pass label maps")
        pairs = [patchwork_scene(height, width, known.num_classes, seed + i, t) for i in range(count)]
    return np.stack([p[0] for p in pairs])[:, None], np.stack([p[1] for p in pairs])[:, None]
