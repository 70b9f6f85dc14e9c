"""Where label maps come from and where pictures go, for the streaming loop.

A source is an iterable of label maps (uint8 ids [H,W], or objects on the GPU for device input)
with an optional ``fps``; a sink takes RGB frames and is always finalised by ``close()``.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..errors import UsageError
from ..files import (ensure_writable_dir, register_temporary, release_temporary, remove_empty_folders,
                     temporary_name)
from ..labels import LabelSet, UnknownColors
from .images import write_image
from .label_maps import is_label_image, no_label_images, read_instance_image, read_label_image
from .synthetic import scenes

class LabelFrame(NamedTuple):
    """A label map with its instance map (for models that take one: pix2pixHD, SPADE)."""

    ids: np.ndarray
    instances: np.ndarray


VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1", ".mov": "mp4v"}


class FolderSource:
    """Label images from a folder or a glob, in name order (ids, colours, or ``*_labelIds.png``).

    ``names`` are the files' paths below the folder (or the glob's fixed leading folders), without
    suffix: a folder sink writes each picture under its label file's name, so outputs match inputs."""

    def __init__(self, pattern: str | Path, label_set: LabelSet, fps: float | None = None, *,
                 strict_colors: bool = False, unknown: UnknownColors | None = None) -> None:
        path = Path(pattern)
        if path.is_dir():
            root, candidates = path, list(path.iterdir())
        else:
            root, candidates = _glob_root(str(pattern)), [Path(p) for p in glob.glob(str(pattern), recursive=True)]
        files = sorted(p for p in candidates if is_label_image(p))
        if not files:
            raise no_label_images(pattern, candidates)
        self.files, self.label_set, self.fps = files, label_set, fps
        self.names = [str(p.relative_to(root).with_suffix("")) for p in files]
        self.strict_colors, self.unknown = strict_colors, unknown

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator:
        """uint8 [H,W] ids, or ``LabelFrame(ids, instances)`` where a ``*_instanceIds.png`` lies beside."""
        for path in self.files:
            ids = read_label_image(path, self.label_set, strict_colors=self.strict_colors, unknown=self.unknown)
            instances = read_instance_image(path)
            yield ids if instances is None else LabelFrame(ids, instances)


def _glob_root(pattern: str) -> Path:
    """The leading folders of a glob that hold no wildcard: ``data/**/*.png`` -> ``data``."""
    parts = Path(pattern).parts
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts[:-1]))
    return Path(*fixed) if fixed else Path(".")


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
                fps: float | None = None, strict_colors: bool = False, unknown: UnknownColors | None = None):
    """``synthetic[:HxW]``, a label video file, a folder of label images, or a glob. Colour maps'
    pixels outside the palette are counted into ``unknown``, or refused with ``strict_colors``."""
    if spec.startswith("synthetic"):
        size = spec.partition(":")[2]
        from ..sizes import parse_resolution

        height, width = parse_resolution(size) if size else resolution
        return SyntheticSource(height, width, frames, fps=fps or 10.0, label_set_name=label_set)
    path = Path(spec)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if not path.is_file():
            raise UsageError(f"label video {path} not found")
        return VideoSource(path, label_set, strict_colors=strict_colors, unknown=unknown)
    return FolderSource(spec, label_set, fps, strict_colors=strict_colors, unknown=unknown)


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
    """One PNG per frame, each written atomically: under the label file's name where the source has
    one (a folder or glob of label images), else ``frame_000000.png`` onwards (videos, the synthetic
    scene, a simulator)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._created = ensure_writable_dir(self.folder)
        self.frames = 0

    def path_for(self, name: str | None) -> Path:
        return self.folder / (f"{name}.png" if name else f"frame_{self.frames:06d}.png")

    def write(self, rgb: np.ndarray, name: str | None = None) -> None:
        write_image(self.path_for(name), rgb)
        self.frames += 1

    def close(self) -> None:
        if not self.frames:  # a run that failed before its first picture leaves no empty folder behind
            remove_empty_folders(self._created)


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
        inputs = {p.resolve() for p in source.files}
        clash = [name for name in source.names if sink.path_for(name).resolve() in inputs]
        if clash:
            raise UsageError(f"--output {sink.folder} would overwrite the label image {clash[0]}.png; "
                             "write the pictures to another folder")


# Media files that crn-run cannot write: a name like these is a mistake, not a folder to create.
_UNWRITABLE_MEDIA = (".gif", ".webm", ".wmv", ".flv", ".mpg", ".mpeg", ".m4v", ".png", ".jpg", ".jpeg", ".bmp")


def open_sink(spec: str | Path, fps: float):
    """A video file (by suffix) or a folder of PNGs."""
    path = Path(spec)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoSink(path, fps)
    if path.suffix.lower() in _UNWRITABLE_MEDIA and not path.is_dir():
        raise UsageError(f"--output {path}: cannot write '{path.suffix}'; give a video ({', '.join(VIDEO_SUFFIXES)}) "
                         "or a folder for PNG pictures")
    return FolderSink(path)
