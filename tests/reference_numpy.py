"""An independent NumPy forward of the released CRN graph (docs/families/crn.md), for checking the PyTorch model."""

from __future__ import annotations

import numpy as np


def one_hot(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """ids [H,W] -> [C+1,H,W]; ids >= num_classes light the void channel."""
    clamped = np.minimum(ids.astype(np.int64), num_classes)
    return (clamped[None] == np.arange(num_classes + 1)[:, None, None]).astype(np.float64)


def area_down(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def bilinear_up_align_corners(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape

    def axis_weights(n):
        pos = np.arange(2 * n) * ((n - 1) / (2 * n - 1) if n > 1 else 0.0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, pos - lo

    ylo, yhi, fy = axis_weights(h)
    xlo, xhi, fx = axis_weights(w)
    top = x[:, ylo][:, :, xlo] * (1 - fx) + x[:, ylo][:, :, xhi] * fx
    bottom = x[:, yhi][:, :, xlo] * (1 - fx) + x[:, yhi][:, :, xhi] * fx
    return top * (1 - fy)[None, :, None] + bottom * fy[None, :, None]


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Same-padded stride-1 convolution; weight [O, I, kh, kw]."""
    kh, kw = weight.shape[2:]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    h, w = x.shape[1:]
    out = np.zeros((weight.shape[0], h, w))
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("oi,ihw->ohw", weight[:, :, dy, dx], padded[:, dy : dy + h, dx : dx + w])
    return out if bias is None else out + bias[:, None, None]


def slim_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean, var = x.mean(), x.var()
    return (x - mean) / np.sqrt(var + eps) * gamma[:, None, None] + beta[:, None, None]


def lrelu(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.2 * x, x)


def crn_forward(ids: np.ndarray, weights: dict, num_modules: int, num_classes: int, k: int,
                eps: float = 1e-12) -> np.ndarray:
    """ids [H,W] -> float images [k,H,W,3] in [0,255] (clipped)."""
    pyramid = [one_hot(ids, num_classes)]
    for _ in range(num_modules - 1):
        pyramid.append(area_down(pyramid[-1]))
    pyramid = pyramid[::-1]
    x = None
    for i in range(num_modules):
        x = pyramid[i] if i == 0 else np.concatenate([bilinear_up_align_corners(x), pyramid[i]])
        for j in (1, 2):
            x = conv(x, weights[f"blocks.{i}.conv{j}.weight"])
            gamma, beta = weights[f"blocks.{i}.norm{j}.weight"], weights[f"blocks.{i}.norm{j}.bias"]
            x = lrelu(slim_layer_norm(x, gamma, beta, eps))
    out = (conv(x, weights["head.weight"], weights["head.bias"]) + 1.0) / 2.0 * 255.0
    # Released order: image j's colour c is channel k*c + j.
    images = np.stack([np.stack([out[k * c + j] for c in range(3)], axis=-1) for j in range(k)])
    return np.clip(images, 0, 255)
