"""Label sets (class names, colours, void) and exact colour <-> id conversion. NumPy only."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import UsageError

VOID_ID = 255  # any id >= num_classes lights nothing; 255 is the conventional "ignore" id, others are warned of


@dataclass(frozen=True)
class RawIds:
    """Label files in another id space, known by their names: ``pattern`` (a glob on the file's name, e.g.
    Cityscapes' ``*_labelIds.png``) and the 256-entry table from their ids to the label set's (void elsewhere)."""

    pattern: str
    table: np.ndarray = field(compare=False)


@dataclass(frozen=True)
class LabelSet:
    """Classes 0..n-1 with their palette colours; any other id or colour is void. ``raw_ids``: label files of
    another id space this set reads by mapping (data, not code: the decoder asks ``raw_table``)."""

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    void_color: tuple[int, int, int] = (0, 0, 0)
    # Cityscapes' label-id palette gives several classes one colour (black, pole grey): allowed only when
    # said; a colour map then decodes such a colour to the lowest of those ids.
    shared_colors: bool = False
    raw_ids: tuple[RawIds, ...] = field(default=(), compare=False)
    _lut: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))
        object.__setattr__(self, "void_color", tuple(int(v) for v in self.void_color))
        if len(self.names) != len(self.colors):
            raise UsageError(f"label set '{self.name}' has {len(self.names)} names but {len(self.colors)} colours")
        if len(set(self.colors)) != len(self.colors) and not self.shared_colors:
            raise UsageError(f"label set '{self.name}' uses one colour for two classes")
        if not 1 <= len(self.names) < VOID_ID:
            raise UsageError(f"label set '{self.name}' must have 1..254 classes, has {len(self.names)}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def raw_table(self, file_name: str | None) -> np.ndarray | None:
        """The id table for a label file of this name where it holds another id space (None: its ids are ours)."""
        if file_name is None:
            return None
        return next((raw.table for raw in self.raw_ids if fnmatch.fnmatch(file_name, raw.pattern)), None)

    def palette(self) -> np.ndarray:
        """[256, 3] uint8: row i is class i's colour, void rows get the void colour."""
        table = np.empty((256, 3), np.uint8)
        table[:] = self.void_color
        table[: self.num_classes] = self.colors
        return table

    def ids_to_colors(self, ids: np.ndarray) -> np.ndarray:
        return self.palette()[np.asarray(ids, np.uint8)]

    def colors_to_ids(self, rgb: np.ndarray, *, strict: bool = False,
                      unknown: UnknownColors | None = None) -> np.ndarray:
        """Exact palette match per pixel ([..., H, W, 3] RGB, or RGBA with alpha ignored); unknown
        colours become void, and are counted into ``unknown`` (or refused, if ``strict``)."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim < 3 or rgb.shape[-1] not in (3, 4):
            raise UsageError(f"a colour label map must be uint8 [..., H, W, 3] RGB (or RGBA), got {rgb.dtype} "
                             f"{list(rgb.shape)}")
        rgb = rgb[..., :3]
        ids = self._color_lut()[pack_rgb(rgb)]
        if strict or unknown is not None:
            outside = (ids == VOID_ID) & np.any(rgb != self.void_color, axis=-1)
            if strict and outside.any():
                self._refuse_unknown(rgb, outside)
            if unknown is not None:
                unknown.add(rgb, outside, self.name)
        return ids

    def check_ids(self, ids: np.ndarray, *, strict: bool = False, unknown: UnknownColors | None = None) -> None:
        """Ids past the label set (other than VOID_ID) light nothing: counted into ``unknown`` (which warns
        past 1% of a map's pixels), or refused with ``strict``. uint8 ids, any shape."""
        ids = np.asarray(ids)
        if not strict and unknown is None:  # nobody to tell: such ids light nothing either way
            return
        if ids.size == 0 or int(ids.max()) < self.num_classes:  # the common case costs one max()
            return
        counts = np.bincount(ids.ravel(), minlength=256)[: VOID_ID]
        past = {i: int(n) for i in range(self.num_classes, VOID_ID) if (n := counts[i])}
        if not past:
            return
        if strict:
            raise UsageError(f"{sum(past.values())} label pixels hold ids past the '{self.name}' label set's "
                             f"{self.num_classes} classes ({_ids_text(past)}): they would light nothing; map them "
                             "into the label set (or to 255, void), or leave out --strict-labels")
        if unknown is not None:
            unknown.add_past_ids(past, ids.size, self)

    def _color_lut(self) -> np.ndarray:
        # One byte per 24-bit colour (16 MiB), built once: a single gather per frame.
        if "lut" not in self._lut:
            lut = np.full(1 << 24, VOID_ID, np.uint8)
            # reversed: where classes share a colour, the lowest id is written last and wins
            lut[pack_rgb(np.array(self.colors[::-1], np.uint8))] = np.arange(self.num_classes, dtype=np.uint8)[::-1]
            self._lut["lut"] = lut
        return self._lut["lut"]

    def _refuse_unknown(self, rgb: np.ndarray, outside: np.ndarray) -> None:
        counted = UnknownColors()
        counted.add(rgb, outside)
        raise UsageError(
            f"{counted.unknown} pixels ({counted.share:.1%}) have colours outside the '{self.name}' palette "
            f"(commonest: {counted.commonest_text()}); save label images losslessly (PNG, not JPEG) without "
            "anti-aliasing and resize them with nearest-neighbour, or allow unknown colours as void "
            "(no --strict-labels)"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "void_color": list(self.void_color),
            "void_id": VOID_ID,
            **({"shared_colors": True} if self.shared_colors else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> LabelSet:
        """As ``to_dict`` wrote it; a built-in set of the same classes gets its raw file formats back."""
        try:
            found = cls(data["name"], tuple(data["names"]), tuple(map(tuple, data["colors"])),
                        tuple(data["void_color"]), bool(data.get("shared_colors", False)))
        except (KeyError, TypeError) as e:
            raise UsageError(f"malformed label set: missing or bad field {e}") from None
        built_in = LABEL_SETS.get(found.name)
        return built_in if built_in == found else found


class UnknownColors:
    """A running count of label pixels whose colour is outside the palette (they become void): a
    JPEG-saved or anti-aliased label map is mostly such pixels, and its picture is nonsense."""

    WARN_SHARE = 0.01  # a map with more than 1% unknown pixels is worth a warning

    def __init__(self, notify: Callable[[str], None] | None = None) -> None:
        self.notify = notify  # where the one-time notices go (a CLI's log); default: Python warnings
        self.pixels = 0
        self.unknown = 0
        self._colors: dict[int, int] = {}  # packed RGB -> pixels
        self.warned = False
        self.past_ids: dict[int, int] = {}  # id past the label set -> pixels, for id maps
        self.warned_ids = False
        self.unmapped: dict[str, int] = {}  # a value a label mapping does not name ("tag 29") -> pixels
        self.unmapped_by = ""  # the mapping that named none of them
        self.warned_unmapped = False

    def add(self, rgb: np.ndarray, outside: np.ndarray, palette: str | None = None) -> None:
        """Count one decoded map; the first one with more than WARN_SHARE unknown pixels is warned of
        (``UnknownColorsWarning``), where ``palette`` names the label set."""
        self.pixels += outside.size
        count = int(np.count_nonzero(outside))
        if not count:
            return
        self.unknown += count
        colors, counts = np.unique(pack_rgb(rgb[outside]), return_counts=True)
        for color, n in zip(colors.tolist(), counts.tolist(), strict=True):
            self._colors[color] = self._colors.get(color, 0) + n
        if palette is not None and not self.warned and count > self.WARN_SHARE * outside.size:
            self.warned = True
            self._tell(UnknownColorsWarning(
                f"{count / outside.size:.1%} of a colour label map's pixels are outside the '{palette}' palette and "
                f"become void (commonest: {self.commonest_text()}); was it saved as JPEG or anti-aliased? "
                "Use lossless PNG, or strict=True / --strict-labels to refuse such maps"))

    @property
    def share(self) -> float:
        return self.unknown / self.pixels if self.pixels else 0.0

    def commonest(self, n: int = 3) -> list[tuple[tuple[int, int, int], int]]:
        top = sorted(self._colors.items(), key=lambda item: -item[1])[:n]
        return [(((c >> 16) & 255, (c >> 8) & 255, c & 255), count) for c, count in top]

    def commonest_text(self) -> str:
        return ", ".join(f"{color} on {count} px" for color, count in self.commonest())

    def add_past_ids(self, past: dict[int, int], pixels: int, label_set: LabelSet) -> None:
        """Count one id map's ids past the label set (``past``: id -> pixels of ``pixels``); warn
        (``IdsPastLabelSetWarning``) of the first map where they exceed WARN_SHARE."""
        count = sum(past.values())
        for i, n in past.items():
            self.past_ids[i] = self.past_ids.get(i, 0) + n
        if not self.warned_ids and count > self.WARN_SHARE * pixels:
            self.warned_ids = True
            self._tell(IdsPastLabelSetWarning(
                f"{count / pixels:.1%} of a label map's pixels hold ids past the '{label_set.name}' label set's "
                f"{label_set.num_classes} classes ({_ids_text(past)}) and light nothing; is the map in another "
                "label space? Map the ids into the label set, or strict=True / --strict-labels to refuse such "
                "maps"))

    def add_unmapped(self, values: dict[str, int], pixels: int, mapping: str) -> None:
        """Count one map's pixels whose values (``values``: "tag 29" -> pixels of ``pixels``) the label mapping
        ``mapping`` does not name (they become void); warn (``UnmappedLabelsWarning``) of the first map where they
        exceed WARN_SHARE."""
        count = sum(values.values())
        for value, n in values.items():
            self.unmapped[value] = self.unmapped.get(value, 0) + n
        self.unmapped_by = mapping
        if not self.warned_unmapped and count > self.WARN_SHARE * pixels:
            self.warned_unmapped = True
            self._tell(UnmappedLabelsWarning(
                f"{count / pixels:.1%} of a label map's pixels hold values the '{mapping}' label mapping does not "
                f"name ({_values_text(values)}) and become void; name them in a mapping file (--label-map FILE), "
                "or strict=True / --strict-labels to refuse such maps"))

    def _tell(self, warning: UserWarning) -> None:
        if self.notify is not None:
            self.notify(str(warning))
        else:
            warnings.warn(warning, stacklevel=5)  # the caller of the synthesizer or decoder

    def summaries(self, palette: str, *, unwarned_only: bool = False) -> list[str]:
        """One line per kind of fault seen (colours outside the palette, ids past the label set), over
        every map counted; ``unwarned_only``: only those no warning has told of yet (each said once)."""
        lines = []
        if self.unknown and not (unwarned_only and self.warned):
            lines.append(self.summary(palette))
        if self.past_ids and not (unwarned_only and self.warned_ids):
            lines.append(f"{sum(self.past_ids.values())} label pixels held ids past the '{palette}' label set "
                         f"({_ids_text(self.past_ids)}) and lit nothing; map them into the label set, or "
                         "--strict-labels (strict=True) to refuse such maps")
        if self.unmapped and not (unwarned_only and self.warned_unmapped):
            lines.append(f"{sum(self.unmapped.values())} label pixels held values the '{self.unmapped_by}' label "
                         f"mapping does not name ({_values_text(self.unmapped)}) and were synthesized as void; name "
                         "them in a mapping file (--label-map FILE), or --strict-labels (strict=True) to refuse them")
        return lines

    def summary(self, palette: str) -> str:
        return (f"{self.share:.1%} of label pixels ({self.unknown} of {self.pixels}) had colours outside the "
                f"'{palette}' palette and were synthesized as void (commonest: {self.commonest_text()}); "
                "label images saved as JPEG or with anti-aliasing do this: use lossless PNG, or --strict-labels "
                "(strict=True) to refuse them")


class UnknownColorsWarning(UserWarning):
    """Colour label maps with many pixels outside the palette."""


class IdsPastLabelSetWarning(UserWarning):
    """Id label maps with many pixels holding ids the model has no class for."""


class UnmappedLabelsWarning(UserWarning):
    """Label maps read through a label mapping with many pixels holding values the mapping does not name."""


def _ids_text(past: dict[int, int], n: int = 3) -> str:
    top = sorted(past.items(), key=lambda item: -item[1])[:n]
    return ", ".join(f"id {i} on {count} px" for i, count in top) + (", ..." if len(past) > n else "")


def _values_text(values: dict[str, int], n: int = 3) -> str:
    top = sorted(values.items(), key=lambda item: -item[1])[:n]
    return ", ".join(f"{value} on {count} px" for value, count in top) + (", ..." if len(values) > n else "")


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


CITYSCAPES = LabelSet(
    "cityscapes",
    (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
        "motorcycle", "bicycle",
    ),
    (
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
)

# Cityscapes label id (as in *_labelIds.png) -> train id, from cityscapesscripts' labels.py.
_CITYSCAPES_ID_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_ID_TO_TRAIN_ID = np.full(256, VOID_ID, np.uint8)
for _id, _train in _CITYSCAPES_ID_TO_TRAIN.items():
    CITYSCAPES_ID_TO_TRAIN_ID[_id] = _train


CITYSCAPES = replace(CITYSCAPES, raw_ids=(RawIds("*_labelIds.png", CITYSCAPES_ID_TO_TRAIN_ID),))


def cityscapes_label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``*_labelIds.png`` (ids 0..33) to train ids 0..18, others void."""
    return CITYSCAPES_ID_TO_TRAIN_ID[np.asarray(label_ids, np.uint8)]


# Cityscapes label ids as *_labelIds.png hold them (0..33, plus 34 so that label_nc 35 has a name for
# every channel), with cityscapesscripts' colours: the label space of pix2pixHD and SPADE, whose
# Cityscapes models take these ids, not the 19 train ids above.
CITYSCAPES_LABEL_IDS = LabelSet(
    "cityscapes-labelids",
    (
        "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
        "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
        "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
        "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "license plate",
    ),
    (
        (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
        (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
        (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
        (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142),
    ),
    shared_colors=True,
)


def spade_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """The colours SPADE's and pix2pixHD's ``util.labelcolormap`` give ``count`` classes other than
    Cityscapes': the bits of ``id + 1`` dealt out three at a time to R, G and B, most significant first
    (the PASCAL VOC colour map, shifted so that class 0 is not black)."""
    colors = []
    for i in range(count):
        code, rgb = i + 1, [0, 0, 0]
        for bit in range(7, 0, -1):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << bit
            code >>= 3
        colors.append(tuple(rgb))
    return tuple(colors)


# ADE20K's 150 SceneParsing classes (objectInfo150), as SPADE numbers them: the dataset's annotation
# PNGs hold 1..150 for these and 0 for "other"; SPADE's loader subtracts one and makes "other" the
# don't-care id 150 (``ade20k_annotation_to_ids``).
ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
# ADE20K annotation PNGs (0 = other, 1..150 = classes) -> SPADE's ids (0..149, 150 = other)
ADE20K_ANNOTATION_TO_ID = ((np.arange(256) - 1) % 256).astype(np.uint8)
ADE20K_ANNOTATION_TO_ID[0] = len(ADE20K_NAMES)
ADE20K = LabelSet("ade20k", (*ADE20K_NAMES, "other (don't care)"), spade_palette(len(ADE20K_NAMES) + 1),
                  raw_ids=(RawIds("ADE_*.png", ADE20K_ANNOTATION_TO_ID),))


def ade20k_annotation_to_ids(annotation: np.ndarray) -> np.ndarray:
    """An ADE20K annotation PNG (0 = other, 1..150 = classes) to SPADE's ids (0..149, 150 = other)."""
    return ADE20K_ANNOTATION_TO_ID[np.asarray(annotation, np.uint8)]


# COCO-Stuff's 182 labels (91 thing ids, 11 of them unused, then 91 stuff), as its stuffthingmaps PNGs
# hold them: label id - 1, so 0 is person; 255 (unlabeled) is SPADE's don't-care id 182.
COCO_STUFF_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet", "door", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "blender", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood",
    "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
# SPADE's colour map for COCO-Stuff sets five landscape classes apart from the generated colours.
_COCO_STUFF_COLORS = {"sea": (54, 62, 167), "sky-other": (95, 219, 255), "tree": (140, 104, 47),
                      "clouds": (170, 170, 170), "grass": (29, 195, 49)}
COCO_STUFF = LabelSet(
    "coco-stuff", (*COCO_STUFF_NAMES, "unlabeled (don't care)"),
    tuple(_COCO_STUFF_COLORS.get(name, color)
          for name, color in zip((*COCO_STUFF_NAMES, ""), spade_palette(len(COCO_STUFF_NAMES) + 1), strict=True)))


def generic_label_set(count: int) -> LabelSet:
    """``count`` unnamed classes in SPADE's colour map: for models trained on a custom dataset."""
    return LabelSet(f"classes-{count}", tuple(f"class {i}" for i in range(count)), spade_palette(count))


LABEL_SETS = {s.name: s for s in (CITYSCAPES, CITYSCAPES_LABEL_IDS, ADE20K, COCO_STUFF)}
