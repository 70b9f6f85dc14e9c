"""The released TensorFlow graph (demo code's recursive_generator), transcribed to NumPy in its own
layouts — NHWC activations, HWIO weights, TensorFlow variable names — for checking crn-import."""

from __future__ import annotations

import numpy as np


def _conv_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [H,W,Cin], w [kh,kw,Cin,Cout] (HWIO), stride 1, SAME padding."""
    kh, kw = w.shape[:2]
    padded = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, wd = x.shape[:2]
    out = np.zeros((h, wd, w.shape[3]))
    for dy in range(kh):
        for dx in range(kw):
            out += padded[dy : dy + h, dx : dx + wd] @ w[dy, dx]
    return out


def _resize_area_half(x: np.ndarray) -> np.ndarray:
    """tf.image.resize_area to exactly half the size: the mean of each 2x2 cell."""
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


def _resize_bilinear_double_align_corners(x: np.ndarray) -> np.ndarray:
    """tf.image.resize_bilinear(..., align_corners=True) to twice the size."""
    h, w, _ = x.shape

    def coords(n):
        src = np.arange(2 * n) * ((n - 1) / (2 * n - 1)) if n > 1 else np.zeros(2 * n)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo

    y0, y1, fy = coords(h)
    x0, x1, fx = coords(w)
    rows = x[y0] * (1 - fy)[:, None, None] + x[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _slim_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """slim.layer_norm defaults: moments over all non-batch axes, variance epsilon 1e-12, params on C."""
    mean, var = x.mean(), x.var()
    return (x - mean) / np.sqrt(var + 1e-12) * gamma + beta


def _lrelu(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.2 * x, x)


def tf_generator(label: np.ndarray, variables: dict, heights: list[int]) -> np.ndarray:
    """label [H,W,C+1] one-hot + void -> images [k,H,W,3] in [0,255] (clipped, as when written)."""

    def recursive(lab, sp):
        if sp == heights[0]:
            net = lab
        else:
            coarse = recursive(_resize_area_half(lab), sp // 2)
            net = np.concatenate([_resize_bilinear_double_align_corners(coarse), lab], axis=2)
        for j in (1, 2):
            scope = f"g_{sp}_conv{j}"
            net = _conv_same(net, variables[f"{scope}/weights"])
            net = _lrelu(_slim_layer_norm(net, variables[f"{scope}/LayerNorm/gamma"],
                                          variables[f"{scope}/LayerNorm/beta"]))
        return net

    last = heights[-1]
    net = recursive(label, last)
    net = _conv_same(net, variables[f"g_{last}_conv100/weights"]) + variables[f"g_{last}_conv100/biases"]
    net = (net + 1.0) / 2.0 * 255.0
    k = net.shape[2] // 3
    # transpose [1,H,W,3k] -> [3k,H,W,1], split in 3 along axis 0, concat along the last axis
    channels_first = net.transpose(2, 0, 1)[..., None]
    images = np.concatenate(np.split(channels_first, 3, axis=0), axis=3)
    return np.clip(images if k > 1 else images[:1], 0, 255)
