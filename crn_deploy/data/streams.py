"""Where label maps come from and where pictures go, for the streaming loop.

A source is an iterable of label maps (uint8 ids [H,W], or objects on the GPU for device input)
with an optional ``fps``; a sink takes RGB frames and is always finalised by ``close()``. Sources that
decode files or frames themselves (``yields_label_ids``) give class ids of the label set, through a label
mapping where they have one; the maps of any other source are read by the loop as the synthesizer reads a
caller's.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import UnreadableInput, UsageError
from ..files import (ensure_writable_dir, register_temporary, release_temporary, remove_empty_folders,
                     temporary_name)
from ..labels import LabelSet, UnknownColors
from .images import encode_picture
from .label_mapping import ResolvedMapping, resolve_label_map
from .label_maps import find_label_files, label_ids
from .storage import Store, is_uri
from .synthetic import scenes

class LabelFrame(NamedTuple):
    """A label map with its instance map (for models that take one: pix2pixHD, SPADE)."""

    ids: np.ndarray
    instances: np.ndarray


class Named(NamedTuple):
    """A map with the name of the file it came from: a folder sink writes its picture under that name."""

    name: str
    labels: object  # uint8 [H,W] ids or a LabelFrame


VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1", ".mov": "mp4v"}


class FolderSource:
    """Label images from a folder, an object-store prefix, a glob or one file (see ``find_label_files``), in name
    order (ids, colours, or ``*_labelIds.png`` with the ``*_instanceIds.png`` beside).

    Yields ``Named(name, map)``: each file's path below the folder (or the glob's fixed leading folders, or the
    prefix) without suffix, so that a folder sink writes each picture under its label file's name. A file that
    cannot be read is skipped: it is said (``on_unreadable``) and listed in ``unreadable``. A Replicator output
    folder gives its semantic frames, each read by its own labels file; ``label_map`` reads another label space."""

    yields_label_ids = True

    def __init__(self, pattern: str | Path, label_set: LabelSet, fps: float | None = None, *,
                 strict_colors: bool = False, unknown: UnknownColors | None = None,
                 on_unreadable: Callable[[str], None] | None = None, label_map=None) -> None:
        self.labels = find_label_files(pattern)
        self.label_set, self.fps = label_set, fps
        self.label_map = resolve_label_map(label_map, label_set)
        self.names = [name.rsplit(".", 1)[0] for name in self.labels.names]
        self.strict_colors, self.unknown = strict_colors, unknown
        self.on_unreadable = on_unreadable
        self.unreadable: list[str] = []  # one line per label file skipped

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Named]:
        for file, name in zip(self.labels.names, self.names, strict=True):
            try:
                ids = self.labels.read(file, self.label_set, strict_colors=self.strict_colors, unknown=self.unknown,
                                       label_map=self.label_map)
                instances = self.labels.read_instances(file)
            except UnreadableInput as e:
                self._skip(str(e))
                continue
            yield Named(name, ids if instances is None else LabelFrame(ids, instances))

    def _skip(self, reason: str) -> None:
        self.unreadable.append(reason)
        if self.on_unreadable is not None:
            self.on_unreadable(f"{reason}; skipped, no picture for it")


class VideoSource:
    """A video of colour-coded label maps (decoded by OpenCV; use a lossless codec such as FFV1)."""

    yields_label_ids = True

    def __init__(self, path: str | Path, label_set: LabelSet, *, strict_colors: bool = False,
                 unknown: UnknownColors | None = None, label_map=None) -> None:
        self.path, self.label_set = Path(path), label_set
        self.label_map = resolve_label_map(label_map, label_set)
        self.strict_colors, self.unknown = strict_colors, unknown
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise UsageError(f"cannot open label video {self.path}: not a video OpenCV can decode")
        self.fps = capture.get(cv2.CAP_PROP_FPS) or None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._length = count if count > 0 else None
        capture.release()

    def __len__(self) -> int:
        return self._length or 0

    def __iter__(self) -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield label_ids(np.ascontiguousarray(bgr[..., ::-1]), self.label_set, colors=True,
                                strict=self.strict_colors, unknown=self.unknown, label_map=self.label_map)
        finally:
            capture.release()


class SyntheticSource:
    """The synthetic street scene, animated: cars and people move from frame to frame."""

    yields_label_ids = True

    def __init__(self, height: int, width: int, frames: int, seed: int = 0, fps: float = 10.0,
                 label_set_name: LabelSet | str = "cityscapes") -> None:
        self.height, self.width, self.frames, self.seed, self.fps = height, width, frames, seed, fps
        self.label_set_name = label_set_name  # the id space of the scene: train ids, or label ids + instances

    def __len__(self) -> int:
        return self.frames

    def __iter__(self) -> Iterator:
        for i in range(self.frames):
            ids, instances = scenes(self.label_set_name, 1, self.height, self.width, self.seed, t=i / self.fps)
            yield ids[0, 0] if instances is None else LabelFrame(ids[0, 0], instances[0, 0])


class IterableSource:
    """Any iterable (a simulator's generator) or a callable returning a map per call, None to stop."""

    def __init__(self, maps: Iterable | Callable[[], object], fps: float | None = None) -> None:
        self.maps, self.fps = maps, fps

    def __iter__(self) -> Iterator:
        if callable(self.maps):
            while (item := self.maps()) is not None:
                yield item
        else:
            yield from self.maps


class CarlaSource:
    """CARLA's semantic segmentation camera as a source. ``push`` is the sensor's callback
    (``camera.listen(source.push)``): it keeps the frame (a ``carla.Image``, BGRA bytes with ``width`` and
    ``height``, or an H x W x 4 BGRA array) and returns at once; where the loop falls behind, the oldest waiting
    frame is dropped (counted in ``dropped``), so the simulator's tick never waits on painting. ``frames``: an
    iterable of such frames instead. The loop's decode stage reads each frame's tags (``carla_tags``: a strided
    view, no copy) through the label mapping's table (``"carla"`` for 0.9.14+, ``"carla-0.9.13"``): class ids of
    the label set, named ``frame_<CARLA's frame number>``. ``close()`` ends the stream after the frames pushed."""

    yields_label_ids = True

    def __init__(self, label_set: LabelSet, label_map="carla", *, frames: Iterable | None = None,
                 queue_size: int = 4, fps: float | None = None, strict: bool = False,
                 unknown: UnknownColors | None = None) -> None:
        self.label_map: ResolvedMapping = resolve_label_map(label_map, label_set)
        if self.label_map.id_table is None:
            raise UsageError(f"CARLA's raw frames hold tags: give a mapping of tag ids (carla, carla-0.9.13), not "
                             f"'{self.label_map.name}'")
        if queue_size < 1:
            raise UsageError("queue size must be at least 1")
        self.frames, self.queue_size, self.fps, self.strict, self.unknown = frames, queue_size, fps, strict, unknown
        self._waiting: deque = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.pushed = self.dropped = 0

    def push(self, image, width: int | None = None, height: int | None = None) -> None:
        """Keep one frame for the loop (never blocks; drops the oldest waiting one where the queue is full)."""
        with self._changed:
            if self._closed:
                return
            if len(self._waiting) >= self.queue_size:
                self._waiting.popleft()
                self.dropped += 1
            self._waiting.append((image, width, height))
            self.pushed += 1
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def stop_waiting(self) -> None:
        """The stream stopped (Ctrl-C, or a later stage failed): it waits for no more frames."""
        self.close()

    def __iter__(self) -> Iterator[Named]:
        frames = self.frames if self.frames is not None else self._pushed()
        for index, frame in enumerate(frames):
            image, width, height = frame if isinstance(frame, tuple) else (frame, None, None)
            ids = self.label_map.map_ids(carla_tags(image, width, height), strict=self.strict, unknown=self.unknown)
            yield Named(f"frame_{getattr(image, 'frame', index):06d}", ids)

    def _pushed(self) -> Iterator[tuple]:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait(0.1)
                if not self._waiting:
                    return
                frame = self._waiting.popleft()
            yield frame


def carla_tags(image, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The tags of a CARLA semantic camera frame (its red channel: byte 2 of each BGRA pixel) as a strided uint8
    [H,W] view of the frame's own buffer, no copy. ``image``: a ``carla.Image`` (``raw_data``, ``width``,
    ``height``), BGRA bytes (any buffer) with ``width`` and ``height``, or an H x W x 4 uint8 BGRA array."""
    if hasattr(image, "raw_data"):
        image, width, height = image.raw_data, image.width, image.height
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 4:
            raise UsageError(f"a CARLA frame as an array is uint8 H x W x 4 (BGRA), got {image.dtype} "
                             f"{list(image.shape)}")
        return image[..., 2]
    if width is None or height is None:
        raise UsageError("CARLA's raw bytes need the frame's width and height")
    pixels = np.frombuffer(image, np.uint8)
    if pixels.size != width * height * 4:
        raise UsageError(f"a {width}x{height} CARLA frame has {width * height * 4} bytes (BGRA), got {pixels.size}")
    return pixels.reshape(height, width, 4)[..., 2]


def open_source(spec: str, label_set: LabelSet, *, resolution: tuple[int, int], frames: int = 100,
                fps: float | None = None, strict_colors: bool = False, unknown: UnknownColors | None = None,
                on_unreadable: Callable[[str], None] | None = None, label_map=None):
    """``synthetic[:HxW]``, a label video file, a folder (or object-store prefix) of label images, a glob, or one
    file (Replicator output folders too), read through ``label_map`` where given. Colour maps' pixels outside the
    palette are counted into ``unknown``, or refused with ``strict_colors``; a label file that cannot be read is
    skipped and said to ``on_unreadable``."""
    if spec.startswith("synthetic"):
        if label_map is not None:
            raise UsageError("the synthetic scene is in the artifact's own label set: drop --label-map")
        size = spec.partition(":")[2]
        from ..sizes import parse_resolution

        height, width = parse_resolution(size) if size else resolution
        return SyntheticSource(height, width, frames, fps=fps or 10.0, label_set_name=label_set)
    path = Path(spec)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if is_uri(spec):
            raise UsageError(f"{spec}: label videos are read from local files; copy it here first")
        if not path.is_file():
            raise UsageError(f"label video {path} not found")
        return VideoSource(path, label_set, strict_colors=strict_colors, unknown=unknown, label_map=label_map)
    return FolderSource(spec, label_set, fps, strict_colors=strict_colors, unknown=unknown, on_unreadable=on_unreadable,
                        label_map=label_map)


# sinks ------------------------------------------------------------------------------------------
class VideoSink:
    """Writes under a temporary name and renames on close, so the file is complete and readable."""

    def __init__(self, path: str | Path, fps: float, codec: str | None = None) -> None:
        self.path = Path(path)
        fourcc = codec or VIDEO_SUFFIXES.get(self.path.suffix.lower())
        if fourcc is None:
            raise UsageError(f"unknown video type '{self.path.suffix}': use one of {', '.join(VIDEO_SUFFIXES)}")
        self._created = ensure_writable_dir(self.path.parent)
        self.fps, self.fourcc = fps, fourcc
        self._tmp = temporary_name(self.path, self.path.suffix)  # OpenCV picks the container by extension
        self._writer = None
        self.frames = 0

    def write(self, rgb: np.ndarray, name: str | None = None) -> None:
        if self._writer is None:
            size = (rgb.shape[1], rgb.shape[0])
            register_temporary(self._tmp)
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
            if not self._writer.isOpened():
                raise UsageError(f"OpenCV cannot write {self.fourcc} video to {self.path}; try .avi or .mp4")
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)
            release_temporary(self._tmp)
        if not self.frames:
            remove_empty_folders(self._created)


class FolderSink:
    """One PNG per frame, each written whole (a local temporary renamed into place, or one object upload), into a
    local folder or an object-store prefix: under the label file's name where the source has one (a folder or glob
    of label images), else ``frame_000000.png`` onwards (videos, the synthetic scene, a simulator). Each picture
    carries ``artifact_sha256``, the artifact that painted it, where given (as ``crn-run --ray`` writes it)."""

    def __init__(self, folder: str | Path, artifact_sha256: str | None = None) -> None:
        self.artifact_sha256 = artifact_sha256
        self.store = Store(folder)
        self.folder = self.store.location
        if self.store.remote:
            self.store.check_writable()
            self._created = None
        else:
            self._created = ensure_writable_dir(Path(self.store.root))
        self.frames = 0

    def name_for(self, name: str | None) -> str:
        return f"{name}.png" if name else f"frame_{self.frames:06d}.png"

    def write(self, rgb: np.ndarray, name: str | None = None) -> None:
        self.store.write(self.name_for(name), encode_picture(rgb, artifact_sha256=self.artifact_sha256))
        self.frames += 1

    def close(self) -> None:
        if not self.frames and self._created is not None:  # a run that failed before its first picture
            remove_empty_folders(self._created)  # leaves no empty folder behind


class CallbackSink:
    """Hands every frame to a function (a simulator, a display, a network sender)."""

    def __init__(self, callback: Callable[[np.ndarray], object]) -> None:
        self.callback, self.frames = callback, 0

    def write(self, rgb: np.ndarray, name: str | None = None) -> None:
        self.callback(rgb)
        self.frames += 1

    def close(self) -> None:
        pass


def check_no_overwrite(source, sink) -> None:
    """Refuse a folder sink that would write over the label images it reads."""
    if isinstance(source, FolderSource) and isinstance(sink, FolderSink):
        inputs = {_place(source.labels.store.uri(name)) for name in source.labels.names}
        clash = [name for name in source.names if _place(sink.store.uri(sink.name_for(name))) in inputs]
        if clash:
            raise UsageError(f"--output {sink.folder} would overwrite the label image {clash[0]}.png; "
                             "write the pictures to another folder")


def _place(location: str) -> str:
    return location if is_uri(location) else os.path.realpath(location)


# Media files that crn-run cannot write: a name like these is a mistake, not a folder to create.
_UNWRITABLE_MEDIA = (".gif", ".webm", ".wmv", ".flv", ".mpg", ".mpeg", ".m4v", ".png", ".jpg", ".jpeg", ".bmp")


def open_sink(spec: str | Path, fps: float, artifact_sha256: str | None = None):
    """A video file (by suffix) or a folder (or object-store prefix) of PNGs (each carrying ``artifact_sha256``,
    where given)."""
    path = Path(spec)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if is_uri(spec):
            raise UsageError(f"--output {spec}: videos are written to local files; give a local path, or a "
                             "folder or prefix for PNG pictures")
        return VideoSink(path, fps)
    if path.suffix.lower() in _UNWRITABLE_MEDIA and not is_uri(spec) and not path.is_dir():
        raise UsageError(f"--output {path}: cannot write '{path.suffix}'; give a video ({', '.join(VIDEO_SUFFIXES)}) "
                         "or a folder for PNG pictures")
    return FolderSink(str(spec), artifact_sha256)
