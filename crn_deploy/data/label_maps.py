"""Label maps into class ids: the one decoder every input path uses (files and bytes: crn-run's folders and
prefixes, crn-bench's --labels, Ray Data rows, the Serve endpoint, training pairs; arrays: the runtime's calls,
video frames), and instance maps beside label files.

Id maps hold ids; a label file in another id space is known by its name and mapped by its label set's own table
(``LabelSet.raw_ids``: Cityscapes ``*_labelIds.png`` to train ids for train-id sets, ADE20K's annotation PNGs
``ADE_*.png`` to SPADE's ids, as its loader does); ids past the set are void and counted. Colour maps are matched
to the label set's palette exactly, pixels of other colours void and counted (or refused, ``strict_colors``).
A label mapping (``label_map``, resolved once against the set: ``label_mapping``) reads another space instead: its
ids (from one channel of colour images where it says so: CARLA's raw frames), its colours, or, for a Replicator
frame (``semantic_segmentation_<N>.png|.npy`` with ``semantic_segmentation_labels_<N>.json`` beside), the class
names its own labels file gives its values. JPEG is refused: its compression changes colours at every region edge.
"""

from __future__ import annotations

import glob
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import UnreadableInput, UsageError
from ..labels import LabelSet, UnknownColors
from .label_mapping import BY_NAME, ResolvedMapping
from .storage import Store, matching, split_pattern

LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")
CITYSCAPES_LABEL_SUFFIX = "_labelIds.png"
INSTANCE_SUFFIX = "_instanceIds.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Omniverse Replicator's BasicWriter: semantic_segmentation_<N>.png (or .npy), its labels beside (see frame_labels_name)
REPLICATOR_FRAME = re.compile(r"semantic_segmentation_(?!labels_)(.+)\.(png|npy)")


def decode_label_map(data: bytes, label_set: LabelSet, *, name: str = "the label map", strict_colors: bool = False,
                     unknown: UnknownColors | None = None, png_only: bool = False,
                     label_map: ResolvedMapping | None = None, frame_labels: bytes | dict | None = None) -> np.ndarray:
    """uint8 [H, W] class ids from an encoded label image (``name``: its file name, which says whether it holds
    Cityscapes label ids or ADE20K annotations, and names it in errors), through ``label_map`` where given;
    ``frame_labels``: a Replicator frame's own labels file (its idToLabels, as bytes or parsed)."""
    if png_only and not data.startswith(PNG_SIGNATURE):
        raise UsageError(f"{name} is not a PNG (send the label map as a lossless PNG)")
    if frame_labels is not None:
        return _decode_frame(data, frame_labels, label_set, name, label_map, strict_colors, unknown)
    image = _decode(data, name)
    if image.dtype != np.uint8:
        raise UsageError(f"{name} has {image.dtype} pixels; save ids or colours as 8-bit PNG")
    try:
        if image.ndim == 3 and label_map is not None and label_map.reads_colors_by_channel():
            return label_map.map_channel(image, strict=strict_colors, unknown=unknown, bgr=True)  # no RGB copy
        colors = image.ndim == 3
        if colors:  # OpenCV's BGR(A) -> RGB
            image = np.ascontiguousarray(image[..., 2::-1])
        return label_ids(image, label_set, colors=colors, file_name=Path(name).name, strict=strict_colors,
                         unknown=unknown, label_map=label_map)
    except UsageError as e:
        raise UsageError(f"{name}: {e}") from None


def _decode_frame(data: bytes, frame_labels: bytes | dict, label_set: LabelSet, name: str,
                  label_map: ResolvedMapping | None, strict: bool, unknown: UnknownColors | None) -> np.ndarray:
    """A Replicator frame: ids (8- or 16-bit PNG, or a NumPy array) or RGBA colours (its colourised PNG), each
    value named by the frame's labels."""
    try:
        return _frame_ids(data, frame_labels, label_set, name, label_map, strict, unknown)
    except UnreadableInput:
        raise
    except UsageError as e:
        raise UsageError(f"{name}: {e}") from None


def _frame_ids(data: bytes, frame_labels: bytes | dict, label_set: LabelSet, name: str,
               label_map: ResolvedMapping | None, strict: bool, unknown: UnknownColors | None) -> np.ndarray:
    if data.startswith(b"\x93NUMPY"):
        try:
            values = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise UnreadableInput(f"cannot read {name}: {e}") from None
        values = values[..., 0] if values.ndim == 3 and values.shape[-1] == 1 else values
        bgra = False
    else:
        values, bgra = _decode(data, name), True
    if isinstance(frame_labels, bytes):
        try:
            frame_labels = json.loads(frame_labels)
        except ValueError as e:
            raise UnreadableInput(f"cannot read the labels of {name}: not JSON ({e})") from None
    if not isinstance(frame_labels, dict):
        raise UsageError("its labels file must map ids (or RGBA colours) to labels, as Replicator's idToLabels")
    mapping = label_map if label_map is not None else BY_NAME.resolve(label_set)
    return mapping.map_frame(values, frame_labels, bgra=bgra, strict=strict, unknown=unknown)


def label_ids(array: np.ndarray, label_set: LabelSet, *, colors: bool, file_name: str | None = None,
              strict: bool = False, unknown: UnknownColors | None = None,
              label_map: ResolvedMapping | None = None) -> np.ndarray:
    """uint8 class ids of the label set from a decoded label map: colours ``[..., H, W, 3|4]`` RGB(A), matched to
    the palette; or ids ``[..., H, W]``, through the set's table where ``file_name`` says they are in another
    id space. With ``label_map``, its tables instead (colours, or the channel it names, or ids). Unknown colours,
    ids past the set and values the mapping does not name are void and counted into ``unknown``, or refused
    (``strict``)."""
    if label_map is not None:
        if colors and label_map.reads_colors_by_channel():
            return label_map.map_channel(array, strict=strict, unknown=unknown)
        if colors:
            return label_map.map_colors(array, strict=strict, unknown=unknown)
        return label_map.map_ids(_as_uint8_ids(np.asarray(array)), strict=strict, unknown=unknown)
    if colors:
        return label_set.colors_to_ids(array, strict=strict, unknown=unknown)
    ids = _as_uint8_ids(np.asarray(array))
    table = label_set.raw_table(file_name)
    if table is not None:
        ids = table[ids]
    label_set.check_ids(ids, strict=strict, unknown=unknown)
    return ids


def label_batch(labels, label_set: LabelSet, *, palette: LabelSet | None = None, strict: bool = False,
                unknown: UnknownColors | None = None, label_map: ResolvedMapping | None = None,
                frame_labels: dict | None = None) -> tuple[np.ndarray, bool]:
    """(uint8 ids [N,1,H,W], whether one map was given) from the arrays a caller passes: ids [H,W], [H,W,1],
    [N,H,W], [N,1,H,W]; colours [H,W,3|4] or [N,H,W,3|4] (in ``palette`` where given, else the label set's, or
    through ``label_map``); with ``frame_labels`` (a Replicator frame's idToLabels), one frame: ids [H,W] or RGBA
    colours [H,W,4], named by it."""
    array = np.asarray(labels)
    if frame_labels is not None:
        if array.ndim not in (2, 3):
            raise UsageError(f"a frame named by its labels is one map, ids [H,W] or RGBA [H,W,4], got "
                             f"{list(array.shape)}")
        mapping = label_map if label_map is not None else BY_NAME.resolve(label_set)
        return mapping.map_frame(array, frame_labels, strict=strict, unknown=unknown)[None, None], True
    colors = palette is not None or _is_color_map(array)
    if colors:
        array = label_ids(array, palette or label_set, colors=True, strict=strict, unknown=unknown,
                          label_map=None if palette is not None else label_map)
    if array.ndim == 3 and array.shape[-1] == 1:  # [H,W,1]: one id map, as images are read
        array = array[..., 0]
    elif array.ndim == 4 and array.shape[1] != 1 and array.shape[-1] == 1:  # [N,H,W,1]
        array = array[..., 0]
    if array.ndim == 2:
        batch, single = array[None, None], True
    elif array.ndim == 3 and array.shape[-1] not in (3, 4):
        batch, single = array[:, None], False
    elif array.ndim == 4 and array.shape[1] == 1:
        batch, single = array, False
    else:
        raise UsageError(f"a label map of shape {list(array.shape)} ({array.dtype}) is ambiguous or not a label "
                         f"map: pass {ACCEPTED_SHAPES}")
    if batch.size == 0:
        raise UsageError(f"label map is empty (shape {list(array.shape)})")
    if not colors:  # decoded colours are in the label set or void by construction
        batch = label_ids(batch, label_set, colors=False, strict=strict, unknown=unknown, label_map=label_map)
    return batch, single


ACCEPTED_SHAPES = ("class ids [H,W], [H,W,1], [N,H,W] or [N,1,H,W] (integers 0..255), or colour maps uint8 "
                   "[H,W,3], [H,W,4] (RGBA, alpha ignored), [N,H,W,3] or [N,H,W,4]; a batch of id maps 3 or 4 "
                   "pixels wide must be [N,1,H,W]")


def _is_color_map(array: np.ndarray) -> bool:
    """uint8 [H,W,3|4] or [N,H,W,3|4]: RGB(A) colours, as images are read ([N,1,H,W] stays ids)."""
    if array.dtype != np.uint8 or array.shape[-1:] not in ((3,), (4,)):
        return False
    return array.ndim == 3 or (array.ndim == 4 and array.shape[1] != 1)


def _as_uint8_ids(ids: np.ndarray) -> np.ndarray:
    if ids.dtype == np.uint8:
        return ids
    if not np.issubdtype(ids.dtype, np.integer):
        raise UsageError(
            f"label map must hold integer class ids (uint8), got {ids.dtype}; convert with .astype(np.uint8)"
        )
    if ids.min() < 0 or ids.max() > 255:
        raise UsageError(f"label ids must be 0..255 (255 = void), got {ids.min()}..{ids.max()}")
    return ids.astype(np.uint8)


def _decode(data: bytes, name: str) -> np.ndarray:
    if not data:
        raise UnreadableInput(f"cannot read {name}: the file is empty (0 bytes)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        raise UnreadableInput(f"cannot read {name}: not an image OpenCV can decode (damaged or cut short?)")
    return image


def read_label_image(path: Path, label_set: LabelSet, *, strict_colors: bool = False,
                     unknown: UnknownColors | None = None, label_map: ResolvedMapping | None = None) -> np.ndarray:
    """A label image file (or a Replicator frame, its labels beside) as uint8 [H, W] class ids (see
    ``decode_label_map``)."""
    path = Path(path)
    refuse_lossy(path)
    beside = frame_labels_name(path.name)
    try:
        data = path.read_bytes()
        frame = path.with_name(beside).read_bytes() if beside and path.with_name(beside).is_file() else None
    except OSError as e:
        raise UnreadableInput(f"cannot read label image {path}: {e.strerror or e}") from None
    return decode_label_map(data, label_set, name=str(path), strict_colors=strict_colors, unknown=unknown,
                            label_map=label_map, frame_labels=frame)


def refuse_lossy(path: Path) -> None:
    if Path(path).suffix.lower() in LOSSY_SUFFIXES:
        raise UsageError(f"{path} is a JPEG/WebP: lossy compression changes the colours and ids at every region "
                         "edge, so it cannot be a label map; save the label maps as PNG")


def decode_instance_map(data: bytes, name: str = "the instance map") -> np.ndarray:
    """int32 [H, W] instance ids from an encoded single-channel image (Cityscapes' 16-bit PNGs:
    ``label_id * 1000 + k`` for objects, the label id elsewhere)."""
    image = _decode(data, name)
    if image.ndim != 2:
        raise UsageError(f"{name} is not a single-channel image; it must hold instance ids")
    return image.astype(np.int32)


def instance_name(label_name: str) -> str | None:
    """The one rule for instance maps: Cityscapes' ``*_instanceIds.png`` beside its ``*_labelIds.png``."""
    if not label_name.endswith(CITYSCAPES_LABEL_SUFFIX):
        return None
    return label_name[: -len(CITYSCAPES_LABEL_SUFFIX)] + INSTANCE_SUFFIX


def instance_path(label_path: Path) -> Path | None:
    """Cityscapes' instance map beside a ``*_labelIds.png``, where there is one."""
    name = instance_name(Path(label_path).name)
    candidate = Path(label_path).with_name(name) if name else None
    return candidate if candidate is not None and candidate.is_file() else None


def read_instance_image(label_path: Path) -> np.ndarray | None:
    """int32 [H, W] instance ids from the ``*_instanceIds.png`` beside a ``*_labelIds.png``, or None."""
    path = instance_path(label_path)
    return None if path is None else decode_instance_map(path.read_bytes(), str(path))


def is_label_image(path: Path) -> bool:
    return path.suffix.lower() in LABEL_SUFFIXES and not path.name.endswith(INSTANCE_SUFFIX)


def frame_labels_name(label_name: str) -> str | None:
    """The one rule for Replicator frames: ``semantic_segmentation_<N>.png`` (or ``.npy``) has its labels in
    ``semantic_segmentation_labels_<N>.json`` beside it (the name, in the same folder), where one lies there."""
    folder, slash, file = label_name.rpartition("/")
    match = REPLICATOR_FRAME.fullmatch(file)
    return f"{folder}{slash}semantic_segmentation_labels_{match.group(1)}.json" if match else None


@dataclass(frozen=True)
class LabelFiles:
    """The label images a folder, object-store prefix, glob or file names: their names relative to ``store``, in
    order, with the instance map beside each where one lies there, and each Replicator frame's labels file."""

    store: Store
    names: tuple[str, ...]
    instances: dict[str, str]
    frame_labels: dict[str, str] = field(default_factory=dict)

    def read(self, name: str, label_set: LabelSet, *, strict_colors: bool = False,
             unknown: UnknownColors | None = None, label_map: ResolvedMapping | None = None) -> np.ndarray:
        uri = self.store.uri(name)
        refuse_lossy(Path(name))
        beside = self.frame_labels.get(name)
        return decode_label_map(self.store.read(name), label_set, name=uri, strict_colors=strict_colors,
                                unknown=unknown, label_map=label_map,
                                frame_labels=None if beside is None else self.store.read(beside))

    def read_instances(self, name: str) -> np.ndarray | None:
        beside = self.instances.get(name)
        return None if beside is None else decode_instance_map(self.store.read(beside), self.store.uri(beside))


def find_label_files(pattern: str | Path) -> LabelFiles:
    """The label images of a folder or prefix (those directly in it), a glob (``**`` across folders) or one file,
    local or in object storage; refused in one line where there is none."""
    store, glob_part = split_pattern(str(pattern))
    if not store.remote and not Path(store.root).exists():
        raise UsageError(f"{pattern}: no such folder or file; pass a folder, a glob or a label image")
    deep = "/" in glob_part  # a glob across folders; a folder, prefix or one file lists only what is directly in it
    every = store.files(recursive=deep)
    matched = matching(every, glob_part)
    if not deep and not any(is_label_image(Path(name)) for name in matched):
        every = store.files()  # nothing here: what lies below says which glob to give instead
    return label_files_among(store, every, matched, pattern)


def label_files_among(store: Store, every: list[str], matched: list[str], pattern) -> LabelFiles:
    """``matched`` names of ``store`` (whose files are ``every``) that are label images, with their instance maps;
    where Replicator frames are among them, those frames alone (its output folders hold rgb_, depth... files too)."""
    present = set(every)
    frames = {name: beside for name in matched if (beside := frame_labels_name(name)) in present}
    labels = [name for name in matched if name in frames] if frames else [
        name for name in matched if is_label_image(Path(name))]
    if not labels:
        deeper = [name for name in every if "/" in name and is_label_image(Path(name))]
        if deeper and not glob.has_magic(str(pattern)):
            raise UsageError(f"no label images directly in {pattern}; {len(deeper)} lie in folders below it: pass "
                             f"a glob such as '{str(pattern).rstrip('/')}/**/*.png'")
        raise no_label_images(pattern, matched or every)
    instances = {name: beside for name in labels if (beside := instance_name(name)) in present}
    return LabelFiles(store, tuple(labels), instances, frames)


def no_label_images(where, names: list[str], fix: str = "pass a folder or a glob") -> UsageError:
    """The error for a place with no label image, saying why where it holds JPEG/WebP files instead."""
    lossy = sorted(str(name) for name in names if Path(str(name)).suffix.lower() in LOSSY_SUFFIXES)
    if lossy:
        return UsageError(f"no label images in {where}: JPEG/WebP files such as {Path(lossy[0]).name} cannot be "
                          "label maps (lossy compression changes the ids and colours at every region border); save "
                          "them as PNG")
    return UsageError(f"no label images ({', '.join(LABEL_SUFFIXES)}) in {where}; {fix}")
