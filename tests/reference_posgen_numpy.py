"""PosGen in plain NumPy, from the description (issue 14 / crn_deploy.families.posgen.PosGenConfig's stated
choices) on the SPADE trunk of ``reference_spade_numpy`` and independent of crn_deploy: features after
LeakyReLU, bilinearly interpolated (half-pixel centres) to the output size; per pixel
[features, sin(B f), cos(B f), coordinates] through three shared layers; float64 throughout."""

from __future__ import annotations

import numpy as np

from tests.reference_pix2pixhd_numpy import tensor2im
from tests.reference_spade_numpy import lrelu, preprocess, trunk


def bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[C,H,W] -> [C,h,w]: torch's bilinear with align_corners=False (source (d + 0.5) * in / out - 0.5,
    clamped at 0; the neighbour index clamped at the last pixel)."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    r0, r1, wr = axis(x.shape[1], size[0])
    c0, c1, wc = axis(x.shape[2], size[1])
    rows = x[:, r0] * (1 - wr)[None, :, None] + x[:, r1] * wr[None, :, None]
    return rows[:, :, c0] * (1 - wc)[None, None, :] + rows[:, :, c1] * wc[None, None, :]


def coordinates(size: tuple[int, int], octaves: int | None) -> np.ndarray:
    """[cc, H, W]: x then y in [-1, 1] over the pixel centres (-1 at the top-left pixel); with ``octaves``,
    sin and cos of 2^k pi x (then of y) after each axis."""
    h, w = size
    grids = []
    for t, shape in ((np.linspace(-1, 1, w)[None, :], (h, w)), (np.linspace(-1, 1, h)[:, None], (h, w))):
        channels = [t]
        for k in range(octaves or 0):
            channels += [np.sin(2**k * np.pi * t), np.cos(2**k * np.pi * t)]
        grids += [np.broadcast_to(c, shape) for c in channels]
    return np.stack(grids)


def head(features: np.ndarray, coords: np.ndarray, p: dict) -> np.ndarray:
    """The pixel-wise MLP: [C,H,W] features + [cc,H,W] coordinates -> tanh [3,H,W]."""
    b = p["fourier.weight"][:, :, 0, 0]
    projected = np.einsum("nc,chw->nhw", b, features)
    x = np.concatenate([features, np.sin(projected), np.cos(projected), coords])
    for i, name in enumerate(("pixel_mlp.0", "pixel_mlp.2", "pixel_mlp.4")):
        x = np.einsum("oc,chw->ohw", p[f"{name}.weight"][:, :, 0, 0], x) + p[f"{name}.bias"][:, None, None]
        x = lrelu(x) if i < 2 else np.tanh(x)
    return x


def synthesize(state: dict, labels: np.ndarray, inst: np.ndarray | None, config, out_size=None) -> np.ndarray:
    """uint8 [H',W',3] for one [H,W] label map."""
    p = {k: np.asarray(v, np.float64) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    h, w = labels.shape
    t = config.trunk
    seg = preprocess(labels, inst, t.label_nc, t.contain_dontcare_label, t.instances)
    k = {"normal": 5, "more": 6, "most": 7}[t.num_upsampling_layers]
    norm = "instance" if "instance" in t.norm_G else "batch"
    features = lrelu(trunk(seg, p, ngf=t.ngf, up_layers=k, norm=norm, start=(h // 2**k, w // 2**k)))
    out = tuple(out_size or (h, w))
    if out != (h, w):
        features = bilinear(features, out)
    octaves = config.coordinate_octaves if config.coordinate_encoding == "fourier" else None
    return tensor2im(head(features, coordinates(out, octaves), p))
