"""SPADE's generator in plain NumPy, written from the official code (NVlabs/SPADE
models/networks/generator.py SPADEGenerator, architecture.py SPADEResnetBlock, normalization.py SPADE,
models/pix2pix_model.py preprocess_input / get_edges, util/util.py tensor2im) and independent of
crn_deploy. It reads a state_dict as the official trainer saves it — ``weight_orig``/``weight_u``/
``weight_v`` per spectral-normed conv, batch-norm running statistics — and computes in float64."""

from __future__ import annotations

import numpy as np

from tests.reference_pix2pixhd_numpy import conv, edges, instance_norm, tensor2im

EPS = 1e-5


def spectral_weight(p: dict, prefix: str) -> np.ndarray:
    """torch.nn.utils.spectral_norm in eval mode: W / (u . W_mat v) with the stored u and v."""
    if prefix + ".weight_orig" not in p:
        return p[prefix + ".weight"]
    w = p[prefix + ".weight_orig"]
    sigma = p[prefix + ".weight_u"] @ (w.reshape(w.shape[0], -1) @ p[prefix + ".weight_v"])
    return w / sigma


def nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """F.interpolate(mode='nearest') on [C,H,W]: source index floor(dst * in / out)."""
    h, w = x.shape[1:]
    rows = (np.arange(size[0]) * h) // size[0]
    cols = (np.arange(size[1]) * w) // size[1]
    return x[:, rows][:, :, cols]


def lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def spade(x, seg, p, prefix, norm, norm_key="param_free_norm"):
    """The SPADE module; ``norm_key``: where its norm's statistics are (OASIS names it ``first_norm``)."""
    if norm == "instance":
        normalized = instance_norm(x)
    else:
        mean = p[f"{prefix}.{norm_key}.running_mean"][:, None, None]
        var = p[f"{prefix}.{norm_key}.running_var"][:, None, None]
        normalized = (x - mean) / np.sqrt(var + EPS)
    seg = nearest(seg, x.shape[1:])  # F.interpolate(segmap, size=x.size()[2:], mode='nearest')
    ks = p[prefix + ".mlp_shared.0.weight"].shape[-1]
    actv = np.maximum(conv(seg, p[prefix + ".mlp_shared.0.weight"], p[prefix + ".mlp_shared.0.bias"], pad=ks // 2), 0)
    gamma = conv(actv, p[prefix + ".mlp_gamma.weight"], p[prefix + ".mlp_gamma.bias"], pad=ks // 2)
    beta = conv(actv, p[prefix + ".mlp_beta.weight"], p[prefix + ".mlp_beta.bias"], pad=ks // 2)
    return normalized * (1 + gamma) + beta


def resblock(x, seg, p, name, norm, norm_key="param_free_norm"):
    """SPADEResnetBlock (and OASIS's ResnetBlock_with_SPADE, with ``norm_key`` "first_norm")."""
    def sn_conv(y, conv_name, pad):
        bias = p.get(f"{name}.{conv_name}.bias")
        weight = spectral_weight(p, f"{name}.{conv_name}")
        return conv(y, weight, np.zeros(weight.shape[0]) if bias is None else bias, pad=pad)

    def modulated(y, which):
        return spade(y, seg, p, f"{name}.{which}", norm, norm_key)

    shortcut = sn_conv(modulated(x, "norm_s"), "conv_s", 0) if (
        f"{name}.conv_s.weight_orig" in p or f"{name}.conv_s.weight" in p) else x
    dx = sn_conv(lrelu(modulated(x, "norm_0")), "conv_0", 1)
    dx = sn_conv(lrelu(modulated(dx, "norm_1")), "conv_1", 1)
    return shortcut + dx


def preprocess(labels, inst, label_nc, dontcare, instances):
    """One image: [H,W] ids (255 -> label_nc, the loader's rule) -> [C,H,W] one-hot (+ edges)."""
    labels = np.where(labels == 255, label_nc, labels).astype(np.int64)
    nc = label_nc + int(dontcare)
    seg = (labels[None] == np.arange(nc)[:, None, None]).astype(np.float64)
    if instances:
        seg = np.concatenate([seg, edges(inst)[None]])
    return seg


def generator(seg, p, *, ngf, up_layers, norm, z=None, start=None):
    """seg [C,H,W] float -> tanh image [3,H,W]; ``start``: (sh, sw), the official compute_latent_vector_size."""
    x = trunk(seg, p, ngf=ngf, up_layers=up_layers, norm=norm, z=z, start=start)
    return np.tanh(conv(lrelu(x), p["conv_img.weight"], p["conv_img.bias"], pad=1))


def trunk(seg, p, *, ngf, up_layers, norm, z=None, start=None):
    """The official forward up to the last residual block's output (what conv_img reads, after lrelu)."""
    if z is not None:
        x = (p["fc.weight"] @ z + p["fc.bias"]).reshape(16 * ngf, *start)
    else:
        x = conv(nearest(seg, start), p["fc.weight"], p["fc.bias"], pad=1)

    def up(y):
        return y.repeat(2, axis=1).repeat(2, axis=2)

    x = resblock(x, seg, p, "head_0", norm)
    x = resblock(up(x), seg, p, "G_middle_0", norm)
    if up_layers >= 6:
        x = up(x)
    x = resblock(x, seg, p, "G_middle_1", norm)
    for name in ("up_0", "up_1", "up_2", "up_3"):
        x = resblock(up(x), seg, p, name, norm)
    if up_layers == 7:
        x = resblock(up(x), seg, p, "up_4", norm)
    return x


def synthesize(state: dict, labels: np.ndarray, inst: np.ndarray | None, *, label_nc: int, dontcare: bool,
               instances: bool, ngf: int, up_layers: int, norm: str = "batch", z: np.ndarray | None = None
               ) -> np.ndarray:
    """uint8 [H,W,3] for one [H,W] label map, as test.py saves it."""
    p = {k: np.asarray(v, np.float64) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    h, w = labels.shape
    start = (h // 2**up_layers, w // 2**up_layers)
    seg = preprocess(labels, inst, label_nc, dontcare, instances)
    return tensor2im(generator(seg, p, ngf=ngf, up_layers=up_layers, norm=norm, z=z, start=start))
