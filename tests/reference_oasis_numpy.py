"""OASIS's generator in plain NumPy, written from the official code (boschresearch/OASIS at aeb875f:
models/generator.py OASIS_Generator and ResnetBlock_with_SPADE, models/norms.py SPADE,
models/models.py preprocess_input, dataloaders/*Dataset.py, utils/utils.py tens_to_im and
results_saver) and independent of crn_deploy. It reads a state_dict as the official trainer saves it —
``weight_orig``/``weight_u``/``weight_v`` for conv_0, conv_1 and conv_s, ``first_norm`` running
statistics — and computes in float64."""

from __future__ import annotations

import numpy as np

from tests.reference_pix2pixhd_numpy import conv
from tests.reference_spade_numpy import lrelu, nearest, resblock



def loader_ids(labels: np.ndarray, dataset: str) -> np.ndarray:
    """The label file's ids as the dataset's loader hands them to preprocess_input: Cityscapes labelIds and
    ADE20K annotations as they are; COCO-Stuff ``label * 255 + 1`` with 256 (the file's 255) set to 0."""
    labels = labels.astype(np.int64)
    if dataset == "coco":
        labels = labels + 1
        labels[labels == 256] = 0
    return labels


def preprocess(ids: np.ndarray, semantic_nc: int) -> np.ndarray:
    """``input_label.scatter_(1, label_map, 1.0)``: [H,W] ids -> [semantic_nc, H, W] one-hot."""
    return (ids[None] == np.arange(semantic_nc)[:, None, None]).astype(np.float64)


def generator(seg, p, *, crop_size, aspect_ratio, num_res_blocks=6, norm="batch", z=None):
    """The official forward on one [C,H,W] one-hot: the noise concatenated first, the first resize to
    compute_latent_vector_size's (h, w) — returned as (h, w), stored as (init_W, init_H), passed as
    size=(init_W, init_H) — then the blocks; tanh image [3,H,W]."""
    if z is not None:
        seg = np.concatenate([np.broadcast_to(z[:, None, None], (len(z), *seg.shape[1:])), seg])
    w = crop_size // (2 ** (num_res_blocks - 1))
    h = round(w / aspect_ratio)
    init_W, init_H = h, w  # noqa: N806 - the official names, swapped as the official code swaps them
    x = conv(nearest(seg, (init_W, init_H)), p["fc.weight"], p["fc.bias"], pad=1)
    for i in range(num_res_blocks):
        x = resblock(x, seg, p, f"body.{i}", norm, norm_key="first_norm")
        if i < num_res_blocks - 1:
            x = x.repeat(2, axis=1).repeat(2, axis=2)  # nn.Upsample(scale_factor=2), nearest
    return np.tanh(conv(lrelu(x), p["conv_img.weight"], p["conv_img.bias"], pad=1))


def tens_to_im(image: np.ndarray) -> np.ndarray:
    """utils.tens_to_im then results_saver: ``(x + 1) / 2`` (its ``clamp`` result is discarded), ``* 255``,
    ``astype(np.uint8)`` (truncation)."""
    return ((np.transpose(image, (1, 2, 0)) + 1) / 2 * 255).astype(np.uint8)


def synthesize(state: dict, labels: np.ndarray, *, dataset: str, semantic_nc: int, crop_size: int,
               aspect_ratio: float, norm: str = "batch", z: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H,W,3] for one [H,W] label file, as test.py saves it; ``crop_size`` and ``aspect_ratio`` as the
    loader sets them for a map of this size."""
    p = {k: np.asarray(v, np.float64) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    seg = preprocess(loader_ids(labels, dataset), semantic_nc)
    return tens_to_im(generator(seg, p, crop_size=crop_size, aspect_ratio=aspect_ratio, norm=norm, z=z))
