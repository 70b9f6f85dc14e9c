"""Where label maps come from and where pictures go, for the streaming loop.

A source is an iterable of label maps (uint8 ids [H,W], or objects on the GPU for device input)
with an optional ``fps``; a sink takes RGB frames and is always finalised by ``close()``.
"""

from __future__ import annotations

import os
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
from .storage import Store, is_uri
from .label_maps import find_label_files
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
    cannot be read is skipped: it is said (``on_unreadable``) and listed in ``unreadable``."""

    def __init__(self, pattern: str | Path, label_set: LabelSet, fps: float | None = None, *,
                 strict_colors: bool = False, unknown: UnknownColors | None = None,
                 on_unreadable: Callable[[str], None] | None = None) -> None:
        self.labels = find_label_files(pattern)
        self.label_set, self.fps = label_set, fps
        self.names = [name.rsplit(".", 1)[0] for name in self.labels.names]
        self.strict_colors, self.unknown = strict_colors, unknown
        self.on_unreadable = on_unreadable
        self.unreadable: list[str] = []  # one line per label file skipped

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Named]:
        for file, name in zip(self.labels.names, self.names, strict=True):
            try:
                ids = self.labels.read(file, self.label_set, strict_colors=self.strict_colors, unknown=self.unknown)
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

    def __init__(self, path: str | Path, label_set: LabelSet, *, strict_colors: bool = False,
                 unknown: UnknownColors | None = None) -> None:
        self.path, self.label_set = Path(path), label_set
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
                yield self.label_set.colors_to_ids(np.ascontiguousarray(bgr[..., ::-1]), strict=self.strict_colors,
                                                   unknown=self.unknown)
        finally:
            capture.release()


class SyntheticSource:
    """The synthetic street scene, animated: cars and people move from frame to frame."""

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


def open_source(spec: str, label_set: LabelSet, *, resolution: tuple[int, int], frames: int = 100,
                fps: float | None = None, strict_colors: bool = False, unknown: UnknownColors | None = None,
                on_unreadable: Callable[[str], None] | None = None):
    """``synthetic[:HxW]``, a label video file, a folder (or object-store prefix) of label images, a glob, or one
    file. Colour maps' pixels outside the palette are counted into ``unknown``, or refused with
    ``strict_colors``; a label file that cannot be read is skipped and said to ``on_unreadable``."""
    if spec.startswith("synthetic"):
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
        return VideoSource(path, label_set, strict_colors=strict_colors, unknown=unknown)
    return FolderSource(spec, label_set, fps, strict_colors=strict_colors, unknown=unknown, on_unreadable=on_unreadable)


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
