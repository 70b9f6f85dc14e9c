"""The synthesizer: label maps of any size in, pictures out, whatever backend runs the artifact."""

from __future__ import annotations

import warnings
from enum import Enum

import numpy as np

from ..backends.base import Backend
from ..data.images import resize_image, resize_labels
from ..data.label_maps import label_batch
from ..errors import UsageError
from ..families import Role, draw_styles
from ..labels import LabelSet, UnknownColors
from ..manifest import Manifest


class OutputSize(str, Enum):
    """The size of a synthesizer's pictures: that of the label map as given (``INPUT``: maps of another size are
    resized in and pictures back out), or the artifact's own output resolution (``ENGINE``)."""

    INPUT = "input"
    ENGINE = "engine"

    @classmethod
    def of(cls, value: OutputSize | str) -> OutputSize:
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"output size must be one of {', '.join(m.value for m in cls)}, got {value!r}") from None


class Synthesizer:
    """Wraps one backend of one artifact.

    Call it with class ids ([H,W], [H,W,1], [N,H,W] or [N,1,H,W]; ids >= the class count are void) or
    colour-coded maps (uint8 [H,W,3|4] or [N,H,W,3|4], RGB or RGBA, in the artifact's palette unless
    ``label_set=`` names another; see ``from_colors`` for unknown colours). It returns uint8 RGB
    [H,W,3] per map ([k,H,W,3] for k-image models), batched like the input. Maps of another size
    are resized to the artifact's resolution (nearest) and the pictures back (area/bilinear),
    unless ``output_size="engine"``.

    Models with a style input (SPADE trained with ``--use_vae``) take ``z`` [N, z_dim] or [z_dim] per
    call; without one, every map gets the synthesizer's ``style`` (drawn once from ``style_seed``), so
    the style holds across the frames of a video. ``set_style`` changes it.
    """

    def __init__(self, backend: Backend, manifest: Manifest, *, style_seed: int = 0) -> None:
        self.backend = backend
        self.manifest = manifest
        self.resolution = tuple(manifest.resolution)
        self.output_resolution = tuple(manifest.output_resolution)  # the picture's size (PosGen: may be larger)
        self.batch = manifest.batch
        self.k = manifest.images_per_map
        self.label_set: LabelSet = manifest.label_set
        self.precision = manifest.precision
        roles = {spec.role: spec for spec in manifest.input_specs}  # what the family declares it takes
        self.takes_instances = Role.INSTANCES in roles
        self.z_dim = roles[Role.STYLE].shape[-1] if Role.STYLE in roles else None
        self.style = None if self.z_dim is None else draw_styles(1, self.z_dim, style_seed)[0]
        self.label_resize = manifest.family.label_resize
        self._pads = [np.zeros(spec.shape, np.dtype(spec.dtype)) for spec in manifest.input_specs]
        self._warned_no_instances = False
        self.unknown_colors = UnknownColors()  # colour maps' pixels outside the palette, over this synthesizer's life

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> Synthesizer:
        self.backend.open()
        return self

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Synthesizer:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # inference -------------------------------------------------------------------------------
    def __call__(self, labels, *, instances=None, z=None, label_set: LabelSet | None = None,
                 output_size: OutputSize | str = OutputSize.INPUT, strict: bool = False) -> np.ndarray:
        """``instances``: instance ids shaped like the label maps (Cityscapes ``*_instanceIds.png``), used by
        artifacts that take them (the others leave them aside). ``z``: style vectors, for artifacts that take
        them (default: ``style``). ``output_size``: ``OutputSize`` (or its value). ``strict``: colours
        outside the palette, or ids past the label set (other than 255, void), are an error; without it they
        light nothing and are warned of past 1% of a map's pixels."""
        output_size = OutputSize.of(output_size)
        ids, single = self._as_id_batch(labels, label_set, strict)
        extra = self._instance_batch(instances, ids)
        size = ids.shape[-2:]
        if size != self.resolution:  # maps of the artifact's size go straight in, uncopied
            ids, *extra = [np.stack([resize_labels(m, self.resolution, self.label_resize) for m in a[:, 0]])[:, None]
                           for a in (ids, *extra)]
        images = self.run_ids(ids, *extra, z=z)
        if output_size is OutputSize.INPUT and size != self.resolution:
            target = self.picture_size(size)
            images = _map_images(images, lambda im: resize_image(im, target))
        return images[0] if single else images

    def picture_size(self, label_size: tuple[int, int]) -> tuple[int, int]:
        """The size of the picture painted for a label map of ``label_size`` (with output_size "input"): the
        same, or scaled as the artifact's output resolution is to its label resolution."""
        (h, w), (eh, ew), (oh, ow) = label_size, self.resolution, self.output_resolution
        return max(1, round(h * oh / eh)), max(1, round(w * ow / ew))

    def from_colors(self, rgb, *, strict: bool = False, output_size: OutputSize | str = OutputSize.INPUT) -> np.ndarray:
        """Colour-coded maps ([H,W,3|4] or [N,H,W,3|4], alpha ignored) in the artifact's own label set.
        Unknown colours are void, counted in ``unknown_colors`` and warned of past 1% of a map's pixels
        (``UnknownColorsWarning``); with ``strict`` they are an error."""
        return self(rgb, label_set=self.label_set, output_size=output_size, strict=strict)

    def set_style(self, z=None, *, seed: int | None = None) -> None:
        """The style every map gets where a call passes none: ``z`` [z_dim], or one drawn from ``seed``."""
        if self.z_dim is None:
            raise UsageError(f"{self.manifest.artifact} takes no style vector (its model has no VAE)")
        self.style = draw_styles(1, self.z_dim, seed)[0] if z is None else self._style_batch(z, 1)[0]

    def run_ids(self, ids: np.ndarray, *extra: np.ndarray, z=None) -> np.ndarray:
        """uint8 [N,1,H,W] at the artifact's resolution, any N, split into (padded) batches; ``extra``: the
        artifact's further inputs in its order — int32 instance ids shaped alike (the label ids stand in
        where none are given), then style vectors [N, z_dim] (``z``, else ``style``, where none are given)."""
        self.open()
        extra = self._complete(ids, extra, z)
        outputs = []
        for start in range(0, len(ids), self.batch):
            chunks = [a[start : start + self.batch] for a in (ids, *extra)]
            if len(chunks[0]) < self.batch:
                padded = [pad.copy() for pad in self._pads]
                for target, chunk in zip(padded, chunks, strict=True):
                    target[: len(chunk)] = chunk
                outputs.append(self.backend.run(*padded)[: len(chunks[0])])
            else:
                outputs.append(self.backend.run(*(np.ascontiguousarray(c) for c in chunks)))
        return np.concatenate(outputs)

    def submit(self, ids: np.ndarray, *extra: np.ndarray, z=None):
        """Queue one batch of uint8 ids [B,1,H,W] (and instance ids and style vectors, where taken, as
        ``run_ids``) at the artifact's exact shape; ``.result()`` later. With TensorRT, frames overlap
        (upload, compute, download); results keep submission order."""
        self.open()
        return self.backend.submit(ids, *self._complete(ids, extra, z))

    def _complete(self, ids: np.ndarray, extra: tuple, z) -> tuple[np.ndarray, ...]:
        """The artifact's further inputs: those given, then default instances and styles for the rest."""
        extra = list(extra)
        if self.takes_instances and not extra:
            extra = list(self._instance_batch(None, ids))
        if self.z_dim is not None and len(extra) < len(self.manifest.input_specs) - 1:
            extra.append(self._style_batch(z, len(ids)))
        elif z is not None:
            raise UsageError(f"{self.manifest.artifact} takes no style vector z (its model has no VAE)"
                             if self.z_dim is None else "pass z= or the style input among the arrays, not both")
        return tuple(extra)

    def _style_batch(self, z, count: int) -> np.ndarray:
        """float32 [count, z_dim] from z ([z_dim], [1, z_dim] or [count, z_dim]) or the held style."""
        array = np.asarray(self.style if z is None else z)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise UsageError(f"a style vector z must hold numbers, got {array.dtype}")
        if array.shape not in ((self.z_dim,), (1, self.z_dim), (count, self.z_dim)):
            raise UsageError(f"z must be [{self.z_dim}] or [{count}, {self.z_dim}] for {count} map(s), got "
                             f"{list(array.shape)}")
        return np.ascontiguousarray(np.broadcast_to(array.astype(np.float32).reshape(-1, self.z_dim),
                                                    (count, self.z_dim)))

    def submit_device(self, labels, *extra, output: str = "host"):
        """Label maps (and instance maps) already in device memory, at the artifact's exact shape: the
        backend reads them in place where it can (TensorRT, ONNX Runtime on CUDA), else says so."""
        self.open()
        return self.backend.submit_device(labels, *extra, output=output)

    def _instance_batch(self, instances, ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """() for artifacts without an instance input (instance maps a source has are not used); else int32
        [N,1,H,W] shaped like ``ids``. Without instance maps each label region counts as one instance (edges
        at class boundaries only, which loses those between touching cars or people): warned of once."""
        if not self.takes_instances:
            return ()
        if instances is None:
            if not self._warned_no_instances:
                self._warned_no_instances = True
                warnings.warn(NoInstancesWarning(
                    f"{self.manifest.artifact} takes an instance map as well (Cityscapes *_instanceIds.png); "
                    "without one each label region counts as one instance, so touching objects of one class "
                    "merge: pass instances="), stacklevel=3)
            return (ids.astype(np.int32),)
        array = np.asarray(instances)
        if not np.issubdtype(array.dtype, np.integer):
            raise UsageError(f"instance maps must hold integer ids, got {array.dtype}")
        (n, _, h, w), shape = ids.shape, array.shape
        if shape not in (ids.shape, (h, w), (h, w, 1), (n, h, w), (n, h, w, 1)) or array.size != ids.size:
            raise UsageError(f"the instance map's shape {list(shape)} does not match the label map's "
                             f"{list(ids.shape)}")
        if not np.can_cast(array.dtype, np.int32) and (array.min() < np.iinfo(np.int32).min
                                                       or array.max() > np.iinfo(np.int32).max):
            raise UsageError("instance ids must fit in int32")
        return (array.reshape(ids.shape).astype(np.int32, copy=False),)

    def _as_id_batch(self, labels, label_set: LabelSet | None, strict: bool) -> tuple[np.ndarray, bool]:
        return label_batch(labels, self.label_set, palette=label_set, strict=strict, unknown=self.unknown_colors)


class NoInstancesWarning(UserWarning):
    """An artifact that takes instance maps was given label maps only."""


def _map_images(images: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn`` to every [H,W,3] picture of [N,H,W,3] or [N,k,H,W,3]."""
    flat = images.reshape(-1, *images.shape[-3:])
    out = np.stack([fn(im) for im in flat])
    return out.reshape(*images.shape[:-3], *out.shape[-3:])
