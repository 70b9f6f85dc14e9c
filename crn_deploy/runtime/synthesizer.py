"""The synthesizer: label maps of any size in, pictures out, whatever backend runs the artifact."""

from __future__ import annotations

import numpy as np

from ..backends.base import Backend
from ..data.images import resize_image, resize_labels
from ..errors import UsageError
from ..labels import LabelSet
from ..manifest import Manifest


class Synthesizer:
    """Wraps one backend of one artifact.

    Call it with uint8 class ids ([H,W], [N,H,W] or [N,1,H,W]; ids >= the class count are void)
    or, with ``label_set=``, colour-coded maps ([H,W,3] or [N,H,W,3] RGB). It returns uint8 RGB
    [H,W,3] per map ([k,H,W,3] for k-image models), batched like the input. Maps of another size
    are resized to the artifact's resolution (nearest) and the pictures back (area/bilinear),
    unless ``output_size="engine"``.
    """

    def __init__(self, backend: Backend, manifest: Manifest) -> None:
        self.backend = backend
        self.manifest = manifest
        self.resolution = tuple(manifest.resolution)
        self.batch = manifest.batch
        self.k = manifest.config.k
        self.label_set: LabelSet = manifest.label_set
        self.precision = manifest.precision
        self._pad = np.zeros((self.batch, 1, *self.resolution), np.uint8)

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
    def __call__(self, labels, *, label_set: LabelSet | None = None, output_size: str = "input") -> np.ndarray:
        if output_size not in ("input", "engine"):
            raise UsageError(f"output_size must be 'input' or 'engine', got {output_size!r}")
        ids, single = self._as_id_batch(labels, label_set)
        size = ids.shape[-2:]
        if size != self.resolution:  # maps of the artifact's size go straight in, uncopied
            ids = np.stack([resize_labels(m, self.resolution) for m in ids[:, 0]])[:, None]
        images = self.run_ids(ids)
        if output_size == "input" and size != self.resolution:
            images = _map_images(images, lambda im: resize_image(im, size))
        return images[0] if single else images

    def from_colors(self, rgb, *, strict: bool = False, output_size: str = "input") -> np.ndarray:
        """Colour-coded maps in the artifact's own label set (unknown colours are void unless strict)."""
        ids = self.label_set.colors_to_ids(np.asarray(rgb), strict=strict)
        return self(ids, output_size=output_size)

    def run_ids(self, ids: np.ndarray) -> np.ndarray:
        """uint8 [N,1,H,W] at the artifact's resolution, any N: split into (padded) batches."""
        self.open()
        outputs = []
        for start in range(0, len(ids), self.batch):
            chunk = ids[start : start + self.batch]
            if len(chunk) < self.batch:
                padded = self._pad.copy()
                padded[: len(chunk)] = chunk
                outputs.append(self.backend.run(padded)[: len(chunk)])
            else:
                outputs.append(self.backend.run(np.ascontiguousarray(chunk)))
        return np.concatenate(outputs)

    def submit(self, ids: np.ndarray):
        """Queue one batch of uint8 ids [B,1,H,W] at the artifact's exact shape; ``.result()`` later.
        With TensorRT, frames overlap (upload, compute, download); results keep submission order."""
        self.open()
        return self.backend.submit(ids)

    def _as_id_batch(self, labels, label_set: LabelSet | None) -> tuple[np.ndarray, bool]:
        array = np.asarray(labels)
        if label_set is not None:
            array = label_set.colors_to_ids(array)
        if array.ndim == 3 and array.shape[-1] == 3:
            raise UsageError("a [H,W,3] array looks like a colour map: pass label_set= or use from_colors "
                             "(a batch of 3-pixel-wide id maps must be [N,1,H,3])")
        if array.ndim == 2:
            batch, single = array[None, None], True
        elif array.ndim == 3:
            batch, single = array[:, None], False
        elif array.ndim == 4 and array.shape[1] == 1:
            batch, single = array, False
        else:
            hint = "; colour maps need label_set= (or from_colors)" if array.shape[-1:] == (3,) else ""
            raise UsageError(
                f"label map must be [H,W], [N,H,W] or [N,1,H,W] class ids, got shape {list(array.shape)}{hint}"
            )
        if batch.size == 0:
            raise UsageError(f"label map is empty (shape {list(array.shape)})")
        return _as_uint8_ids(batch), single


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


def _map_images(images: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn`` to every [H,W,3] picture of [N,H,W,3] or [N,k,H,W,3]."""
    flat = images.reshape(-1, *images.shape[-3:])
    out = np.stack([fn(im) for im in flat])
    return out.reshape(*images.shape[:-3], *out.shape[-3:])
