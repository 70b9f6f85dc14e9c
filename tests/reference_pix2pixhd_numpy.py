"""pix2pixHD's generator in plain NumPy, written from the official code (NVIDIA/pix2pixHD
models/networks.py, models/pix2pixHD_model.py get_edges, util/util.py tensor2im) and independent of
crn_deploy: the reference the PyTorch model and the ONNX graphs are checked against."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

EPS = 1e-5


def conv(x, w, b, stride=1, pad=0):
    """x [C,H,W], w [O,C,k,k] (cross-correlation, zero padding)."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # [C,Ho,Wo,k,k]
    return np.einsum("chwij,ocij->ohw", windows, w, optimize=True) + b[:, None, None]


def conv_transpose(x, w, b, stride=2, pad=1, output_pad=1):
    """x [C,H,W], w [C,O,k,k]: every input pixel scatters w into the output, then the padding is cropped."""
    c, h, wd = x.shape
    k = w.shape[-1]
    full = np.zeros((w.shape[1], (h - 1) * stride + k + output_pad, (wd - 1) * stride + k + output_pad))
    for i in range(k):
        for j in range(k):
            contribution = np.einsum("chw,co->ohw", x, w[:, :, i, j])
            full[:, i : i + stride * h : stride, j : j + stride * wd : stride] += contribution
    out_h, out_w = (h - 1) * stride - 2 * pad + k + output_pad, (wd - 1) * stride - 2 * pad + k + output_pad
    return full[:, pad : pad + out_h, pad : pad + out_w] + b[:, None, None]


def reflect(x, p):
    return np.pad(x, ((0, 0), (p, p), (p, p)), mode="reflect")


def instance_norm(x):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def relu(x):
    return np.maximum(x, 0)


def avg_pool_exclusive(x):
    """3x3, stride 2, padding 1, count_include_pad=False."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones(x.shape[1:]), 1)
    sums = sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2].sum(axis=(-1, -2))
    counts = sliding_window_view(ones, (3, 3))[::2, ::2].sum(axis=(-1, -2))
    return sums / counts


def edges(inst):
    """[H,W] instance ids -> [H,W] float: pixels whose id differs from a 4-neighbour."""
    e = np.zeros(inst.shape, bool)
    dx = inst[:, 1:] != inst[:, :-1]
    dy = inst[1:, :] != inst[:-1, :]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:, :] |= dy
    e[:-1, :] |= dy
    return e.astype(np.float64)


def encode(labels, inst, label_nc, instances):
    onehot = (labels[None] == np.arange(label_nc)[:, None, None]).astype(np.float64)
    return np.concatenate([onehot, edges(inst)[None]]) if instances else onehot


def resblock(x, p, prefix):
    y = relu(instance_norm(conv(reflect(x, 1), p[f"{prefix}.conv_block.1.weight"], p[f"{prefix}.conv_block.1.bias"])))
    y = instance_norm(conv(reflect(y, 1), p[f"{prefix}.conv_block.5.weight"], p[f"{prefix}.conv_block.5.bias"]))
    return x + y


def global_trunk(x, p, n_down, n_blocks, with_head):
    """The official GlobalGenerator, by its Sequential indices (module i has keys model.i.*)."""
    x = relu(instance_norm(conv(reflect(x, 3), p["model.1.weight"], p["model.1.bias"])))
    i = 4
    for _ in range(n_down):
        x = relu(instance_norm(conv(x, p[f"model.{i}.weight"], p[f"model.{i}.bias"], stride=2, pad=1)))
        i += 3
    for _ in range(n_blocks):
        x = resblock(x, p, f"model.{i}")
        i += 1
    for _ in range(n_down):
        x = relu(instance_norm(conv_transpose(x, p[f"model.{i}.weight"], p[f"model.{i}.bias"])))
        i += 3
    if with_head:
        x = np.tanh(conv(reflect(x, 3), p[f"model.{i + 1}.weight"], p[f"model.{i + 1}.bias"]))
    return x


def generator(x, p, n_down, n_blocks, levels, n_blocks_local):
    """[C,H,W] input -> [3,H,W] tanh image; ``levels`` local enhancers (0: global)."""
    pyramid = [x]
    for _ in range(levels):
        pyramid.append(avg_pool_exclusive(pyramid[-1]))
    out = global_trunk(pyramid[-1], p, n_down, n_blocks, with_head=not levels)
    for n in range(1, levels + 1):
        a, b = f"model{n}_1", f"model{n}_2"
        y = relu(instance_norm(conv(reflect(pyramid[levels - n], 3), p[f"{a}.1.weight"], p[f"{a}.1.bias"])))
        y = relu(instance_norm(conv(y, p[f"{a}.4.weight"], p[f"{a}.4.bias"], stride=2, pad=1)))
        y = y + out
        for j in range(n_blocks_local):
            y = resblock(y, p, f"{b}.{j}")
        j = n_blocks_local
        y = relu(instance_norm(conv_transpose(y, p[f"{b}.{j}.weight"], p[f"{b}.{j}.bias"])))
        if n == levels:
            y = np.tanh(conv(reflect(y, 3), p[f"{b}.{j + 4}.weight"], p[f"{b}.{j + 4}.bias"]))
        out = y
    return out


def tensor2im(image):
    """[3,H,W] in [-1,1] -> uint8 [H,W,3], truncating as the official util.tensor2im."""
    return np.clip((np.transpose(image, (1, 2, 0)) + 1) / 2.0 * 255.0, 0, 255).astype(np.uint8)
