"""Label mappings: what another label space's ids, colours or class names are in a model's label set, by class
name, so that one mapping serves every label set that has those classes. A mapping is data: a built-in table
(``BUILT_IN``, made from ``simulator_labels``) or a TOML or JSON file:

    name = "my-simulator"
    channel = "red"             # optional: colour images hold the id in this channel (CARLA's raw frames)
    [ids]                       # a source id -> a class name, "void", or a list: the first the label set has
    0 = "void"
    1 = "road"
    28 = ["guard rail", "fence"]
    [colors]                    # "R,G,B" -> the same
    "157,234,50" = "road"
    [names]                     # a source's class name (Replicator's idToLabels) -> the same
    pedestrian = "person"

Resolved once against a label set (``ResolvedMapping``): a 256-entry table for ids, a colour table for colours, a
name table for class names (a source class name the mapping does not name matches the set's class of that name,
case aside); a mapping that names a class the set lacks is refused in one line. Reading a map is then one table
lookup; values the mapping does not name become void and are counted (``UnknownColors``) or refused (strict).
TOML needs Python 3.11's tomllib, or the tomli package on 3.10 (a dependency there); JSON reads everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..labels import VOID_ID, LabelSet, UnknownColors, pack_rgb
from .simulator_labels import CARLA_0_9_13_TAGS, CARLA_TAGS, REPLICATOR_RESERVED

VOID = "void"
# In a resolved table: a value the mapping does not name. No label set has a class 254 (at most 254 classes).
UNLISTED = 254
CHANNELS = {"red": 0, "green": 1, "blue": 2}  # of an RGB(A) map
MAPPING_KEYS = ("name", "channel", "ids", "colors", "names")
Targets = tuple[str, ...]


@dataclass(frozen=True)
class LabelMapping:
    """A source's ids, colours and class names, each naming the classes it becomes (the first of them that a label
    set has; ``"void"`` always resolves). ``channel``: colour images hold the id in that channel of RGB(A)."""

    name: str
    ids: Mapping[int, Targets] = field(default_factory=dict)
    colors: Mapping[tuple[int, int, int], Targets] = field(default_factory=dict)
    names: Mapping[str, Targets] = field(default_factory=dict)
    channel: str | None = None
    origin: str = "built in"

    def __post_init__(self) -> None:
        where = f"label mapping '{self.name}' ({self.origin})"
        if not (self.ids or self.colors or self.names):
            raise UsageError(f"{where} maps nothing: give it an [ids], [colors] or [names] table")
        if self.channel is not None and self.channel not in CHANNELS:
            raise UsageError(f"{where}: channel must be one of {', '.join(CHANNELS)}, got '{self.channel}'")
        if self.channel is not None and (self.colors or not self.ids):
            raise UsageError(f"{where}: a channel reads ids out of colour images, so it goes with [ids] and not "
                             "with [colors]; make two mappings")

    def resolve(self, label_set: LabelSet) -> ResolvedMapping:
        return ResolvedMapping(self, label_set)


class ResolvedMapping:
    """A mapping against one label set, its tables built once: reading a map is one lookup."""

    def __init__(self, mapping: LabelMapping, label_set: LabelSet) -> None:
        self.mapping, self.label_set = mapping, label_set
        self._index = {name.lower(): i for i, name in enumerate(label_set.names)}
        self.id_table = self._id_table() if mapping.ids else None
        # every id up to this one is named: a map whose ids stay below it needs no check for unnamed ones
        unnamed = np.flatnonzero(self.id_table == UNLISTED) if self.id_table is not None else [0]
        self._named_up_to = int(unnamed[0]) - 1 if len(unnamed) else 255
        self._colors = {color: self._class(t, f"colour {color}") for color, t in mapping.colors.items()}
        self._names = {name.lower(): self._class(t, f"class '{name}'") for name, t in mapping.names.items()}
        self._reserved = {name: self._class(t, name) for name, t in REPLICATOR_RESERVED.items()}
        self._lut: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.mapping.name

    def _class(self, targets: Targets, what: str) -> int:
        for target in targets:
            if target.lower() == VOID:
                return VOID_ID
            if target.lower() in self._index:
                return self._index[target.lower()]
        lacking = " nor ".join(f"'{t}'" for t in targets)
        shown = ", ".join(self.label_set.names[:24]) + (", ..." if self.label_set.num_classes > 24 else "")
        raise UsageError(f"label mapping '{self.name}' ({self.mapping.origin}) maps {what} to {lacking}, which the "
                         f"'{self.label_set.name}' label set lacks (its classes: {shown}); name one of its classes or "
                         f"'{VOID}'")

    def _id_table(self) -> np.ndarray:
        table = np.full(256, UNLISTED, np.uint8)
        for value, targets in self.mapping.ids.items():
            table[value] = self._class(targets, f"id {value}")
        return table

    # reading maps --------------------------------------------------------------------------------------------
    def map_ids(self, ids: np.ndarray, *, strict: bool = False, unknown: UnknownColors | None = None) -> np.ndarray:
        """uint8 class ids of the label set from uint8 source ids (any shape; a strided view is read in place)."""
        if self.id_table is None:
            raise UsageError(self._cannot("id maps", "ids"))
        out = self.id_table[ids]
        if ids.size and int(ids.max()) > self._named_up_to:
            self._void_unnamed(out, ids, lambda v: f"id {v}", strict, unknown)
        return out

    def map_channel(self, image: np.ndarray, *, strict: bool = False, unknown: UnknownColors | None = None,
                    bgr: bool = False) -> np.ndarray:
        """Class ids from the channel that holds the id in a colour image ([..., H, W, 3|4], RGB(A), or BGR(A)
        where ``bgr``): a view of that channel, then the id table."""
        index = CHANNELS[self.mapping.channel]
        return self.map_ids(image[..., 2 - index if bgr else index], strict=strict, unknown=unknown)

    def map_colors(self, rgb: np.ndarray, *, strict: bool = False, unknown: UnknownColors | None = None) -> np.ndarray:
        """Class ids from a colour map ([..., H, W, 3|4] RGB(A), alpha ignored) through the mapping's colours."""
        if not self._colors:
            raise UsageError(self._cannot("colour maps", "colours"))
        rgb = rgb[..., :3]
        out = self._color_lut()[pack_rgb(rgb)]
        outside = out == UNLISTED
        if strict and outside.any():
            counted = UnknownColors()
            counted.add(rgb, outside)
            raise UsageError(f"{counted.unknown} pixels have colours the '{self.name}' label mapping does not name "
                             f"(commonest: {counted.commonest_text()}); name them in a mapping file, or leave out "
                             "--strict-labels")
        if unknown is not None:  # its notice says "outside the '<mapping>' palette"
            unknown.add(rgb, outside, self.name)
        out[outside] = VOID_ID
        return out

    def reads_colors_by_channel(self) -> bool:
        return self.mapping.channel is not None

    def map_frame(self, values: np.ndarray, id_to_labels: Mapping, *, bgra: bool = False, strict: bool = False,
                  unknown: UnknownColors | None = None) -> np.ndarray:
        """Class ids from one frame whose own table names its values (Replicator's ``idToLabels``: ids, or
        ``"(r, g, b, a)"`` colours, each to ``{"class": "road"}``): ``values`` ids [H,W] (unsigned integers) or
        colours [H,W,4] uint8 (RGBA, BGRA where ``bgra``). Each value becomes the class its label names."""
        colors = _check_frame(values)
        named = {}  # packed value -> (class id or UNLISTED, its label)
        for key, entry in id_to_labels.items():
            label = _label_of(entry)
            found = self.class_of_labels(label)
            named[_frame_key(str(key), colors)] = (UNLISTED if found is None else found, label)
        packed = _pack_rgba(values, bgra) if colors else values.astype(np.uint32, copy=False)
        keys = np.array(sorted(named) or [0], np.uint32)
        classes = np.array([named[k][0] for k in keys] if named else [UNLISTED], np.uint8)
        where = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
        out = np.where(keys[where] == packed, classes[where], UNLISTED).astype(np.uint8)

        def describe(value: int) -> str:
            if value in named:
                return f"class '{named[value][1]}'"
            return f"{f'colour {_unpack_rgba(value)}' if colors else f'id {value}'} (not in the frame's labels)"

        self._void_unnamed(out, packed, describe, strict, unknown)
        return out

    def class_of_labels(self, labels: str) -> int | None:
        """The class of a source's label (``"road"``, or several: ``"road,car"``, the first that resolves): the
        mapping's own name for it, Replicator's reserved names, else the label set's class of that name."""
        for label in (part.strip().lower() for part in labels.split(",")):
            for table in (self._names, self._reserved, self._index):
                if label in table:
                    return table[label]
        return None

    def _void_unnamed(self, out: np.ndarray, values: np.ndarray, describe, strict: bool,
                      unknown: UnknownColors | None) -> None:
        outside = out == UNLISTED
        if not outside.any():
            return
        found, counts = np.unique(values[outside], return_counts=True)
        described = {describe(int(v)): int(n) for v, n in zip(found, counts, strict=True)}
        if strict:
            raise UsageError(f"{int(counts.sum())} label pixels hold values the '{self.name}' label mapping does not "
                             f"name ({', '.join(list(described)[:3])}); name them in a mapping file, or leave out "
                             "--strict-labels")
        if unknown is not None:
            unknown.add_unmapped(described, out.size, self.name)
        out[outside] = VOID_ID

    def _color_lut(self) -> np.ndarray:
        if self._lut is None:  # one byte per 24-bit colour (16 MiB), built once: a single gather per frame
            lut = np.full(1 << 24, UNLISTED, np.uint8)
            lut[pack_rgb(np.array(list(self._colors), np.uint8))] = list(self._colors.values())
            self._lut = lut
        return self._lut

    def _cannot(self, given: str, kind: str) -> str:
        has = [k for k, table in (("ids", self.mapping.ids), ("colours", self.mapping.colors),
                                  ("class names", self.mapping.names)) if table]
        hint = {"carla": " (CARLA's palette-converted frames: --label-map carla-palette)",
                "carla-palette": " (CARLA's raw tag frames: --label-map carla)"}.get(self.name, "")
        return (f"the '{self.name}' label mapping names {' and '.join(has)}, not {kind}, so it cannot read {given}; "
                f"give a mapping of {kind}{hint}")


def _check_frame(values: np.ndarray) -> bool:
    """Whether a frame holds RGBA colours [H,W,4] uint8 (else ids [H,W], integers 0..2^32-1)."""
    if values.ndim == 3 and values.shape[-1] == 4 and values.dtype == np.uint8:
        return True
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
        raise UsageError(f"a frame named by its labels holds ids [H,W] or RGBA colours [H,W,4] uint8, not "
                         f"{values.dtype} {list(values.shape)}")
    if values.size and (int(values.min()) < 0 or int(values.max()) >= 1 << 32):
        raise UsageError(f"a frame's ids must be 0..2^32-1, got {values.min()}..{values.max()}")
    return False


def _frame_key(key: str, colors: bool) -> int:
    rgba = re.fullmatch(r"\(?\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)?", key)
    if colors and rgba:
        r, g, b, a = (int(v) for v in rgba.groups())
        return r | g << 8 | b << 16 | a << 24
    if not colors and key.strip().isdigit():
        return int(key)
    raise UsageError(f"the frame's labels name {'ids' if rgba is None else 'RGBA colours'} (key '{key}'), but its "
                     f"image holds {'RGBA colours' if colors else 'ids'}: pair each image with its own labels file")


def _label_of(entry) -> str:
    """Replicator's ``{"class": "road"}`` (other semantic types aside), or a bare label."""
    if isinstance(entry, Mapping):
        return str(entry.get("class", next(iter(entry.values()), "")))
    return str(entry)


def _pack_rgba(values: np.ndarray, bgra: bool) -> np.ndarray:
    r, g, b = (values[..., i].astype(np.uint32) for i in ((2, 1, 0) if bgra else (0, 1, 2)))
    return r | g << 8 | b << 16 | values[..., 3].astype(np.uint32) << 24


def _unpack_rgba(value: int) -> tuple[int, int, int, int]:
    return value & 255, value >> 8 & 255, value >> 16 & 255, value >> 24 & 255


# mapping files ---------------------------------------------------------------------------------------------------
def mapping_from_dict(data: dict, origin: str) -> LabelMapping:
    """A mapping as a TOML or JSON file holds it (see the module's docstring)."""
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: a label mapping is a table with {', '.join(MAPPING_KEYS)}")
    unknown = [k for k in data if k not in MAPPING_KEYS]
    if unknown:
        raise UsageError(f"{origin}: unknown key '{unknown[0]}' (a label mapping has {', '.join(MAPPING_KEYS)})")
    tables = {key: data.get(key, {}) for key in ("ids", "colors", "names")}
    for key, table in tables.items():
        if not isinstance(table, dict):
            raise UsageError(f"{origin}: [{key}] must be a table of source {key} to class names")
    return LabelMapping(
        name=str(data.get("name") or Path(origin).stem),
        ids={_id_key(k, origin): _targets(v, origin, f"id {k}") for k, v in tables["ids"].items()},
        colors={_color_key(k, origin): _targets(v, origin, f"colour {k}") for k, v in tables["colors"].items()},
        names={str(k).strip().lower(): _targets(v, origin, f"class '{k}'") for k, v in tables["names"].items()},
        channel=data.get("channel"), origin=origin)


def _targets(value, origin: str, what: str) -> Targets:
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    raise UsageError(f"{origin}: {what} must name a class, '{VOID}', or a list of classes (the first the label set "
                     f"has), got {value!r}")


def _id_key(key, origin: str) -> int:
    if str(key).strip().isdigit() and 0 <= int(key) <= 255:
        return int(key)
    raise UsageError(f"{origin}: [ids] keys must be ids 0..255, got '{key}'")


def _color_key(key, origin: str) -> tuple[int, int, int]:
    text = str(key).strip()
    hexa = re.fullmatch(r"#([0-9a-fA-F]{6})", text)
    if hexa:
        return tuple(int(hexa.group(1)[i : i + 2], 16) for i in (0, 2, 4))
    parts = re.fullmatch(r"\(?\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)?", text)
    if parts and all(int(v) <= 255 for v in parts.groups()):
        return tuple(int(v) for v in parts.groups())
    raise UsageError(f"{origin}: [colors] keys must be \"R,G,B\" (0..255 each) or \"#rrggbb\", got '{key}'")


def _carla(name: str, rows: tuple, version: str, palette: bool) -> LabelMapping:
    origin = f"built in: CARLA {version} {'CityScapesPalette colours' if palette else 'semantic tags'}"
    if palette:
        return LabelMapping(name, colors={color: targets for _, _, color, targets in rows}, origin=origin)
    return LabelMapping(name, ids={tag: targets for tag, _, _, targets in rows}, channel="red", origin=origin)


BUILT_IN = {m.name: m for m in (
    _carla("carla", CARLA_TAGS, "0.9.14+", palette=False),
    _carla("carla-palette", CARLA_TAGS, "0.9.14+", palette=True),
    _carla("carla-0.9.13", CARLA_0_9_13_TAGS, "0.9.10-0.9.13", palette=False),
    _carla("carla-0.9.13-palette", CARLA_0_9_13_TAGS, "0.9.10-0.9.13", palette=True),
)}
# A Replicator frame read without a mapping: its class names match the label set's (reserved names void).
BY_NAME = LabelMapping("by class name", names=REPLICATOR_RESERVED, origin="class names as they are")


def load_label_map(spec: str | Path | LabelMapping) -> LabelMapping:
    """A built-in mapping by name, or a mapping file (.toml or .json)."""
    if isinstance(spec, LabelMapping):
        return spec
    text = str(spec)
    if text in BUILT_IN:
        return BUILT_IN[text]
    path = Path(text)
    kinds = f"a built-in one ({', '.join(BUILT_IN)}) or a .toml or .json mapping file"
    if path.suffix.lower() not in (".toml", ".json"):
        raise UsageError(f"label mapping '{text}' is not {kinds}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the label mapping {path}: {e.strerror or e}; give {kinds}") from None
    return mapping_from_dict(_parse(raw, path), str(path))


def _parse(raw: bytes, path: Path) -> dict:
    try:
        if path.suffix.lower() == ".json":
            return json.loads(raw)
        return _toml().loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise UsageError(f"{path} is not valid {path.suffix[1:].upper()}: {e}") from None


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli, the same parser (a dependency there)
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError("TOML mapping files need Python 3.11, or pip install tomli on 3.10; or write the "
                             "mapping as JSON") from None
    return tomllib


def resolve_label_map(spec, label_set: LabelSet) -> ResolvedMapping | None:
    """``spec`` (a built-in name, a file, a ``LabelMapping``, or one already resolved for this set; None: none)
    against ``label_set``."""
    if spec is None:
        return None
    if isinstance(spec, ResolvedMapping):
        return spec if spec.label_set == label_set else spec.mapping.resolve(label_set)
    return load_label_map(spec).resolve(label_set)
