"""Numerics several families share, each in its two forms (the PyTorch reference and the ONNX graph):
FP32 instance norm, the instance edge map, and the uint8 picture rule (``tensor2im``: ``(x + 1) / 2 * 255``,
clip, truncate); and weights as graph constants in the compute type."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from onnx import TensorProto
from torch import nn

from ..families import IMAGE, INSTANCES
from ..graph import FLOAT, GraphBuilder, compute_types
from ..precisions import FP32, Precision

INSTANCE_NORM_EPS = 1e-5  # nn.InstanceNorm2d's default, as the official get_norm_layer('instance') uses it
SPADE_LEAK = 0.2  # the LeakyReLU slope of SPADE's and OASIS's residual blocks
NORM_EPS = 1e-5  # BatchNorm2d / SynchronizedBatchNorm2d / InstanceNorm2d defaults, as the official code builds them


class GraphWeights:
    """The checkpoint's tensors as graph constants in the compute type."""

    def __init__(self, g: GraphBuilder, weights: dict, precision: Precision) -> None:
        self.g, self.weights = g, weights
        self.compute, self.np_type = compute_types(precision)

    def __call__(self, name: str) -> str:
        return self.g.const(name, np.asarray(self.weights[name]).astype(self.np_type))

    def in_fp32(self) -> GraphWeights:
        """The same weights as FP32 constants, for an FP32 island (each weight is used in one place only,
        so no constant is wanted in both types)."""
        return GraphWeights(self.g, self.weights, FP32)

    def conv(self, x: str, prefix: str, stride: int = 1, pad: int = 0, transpose: bool = False) -> str:
        kernel = list(np.shape(self.weights[f"{prefix}.weight"])[-2:])
        inputs = [x, self(f"{prefix}.weight"), self(f"{prefix}.bias")]
        if transpose:  # doubles the size exactly: stride 2, padding 1, output_padding 1
            return self.g.op("ConvTranspose", inputs, kernel_shape=kernel, strides=[2, 2], pads=[1, 1, 1, 1],
                             output_padding=[1, 1])
        return self.g.op("Conv", inputs, kernel_shape=kernel, strides=[stride, stride], pads=[pad] * 4)


# torch's F.interpolate(mode="nearest"): source pixel floor(dst * in / out)
LEGACY_NEAREST = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


class Segmentation:
    """The segmentation map in the compute type, resized once per size the blocks need (static sizes)."""

    def __init__(self, g: GraphBuilder, full: str, resolution: tuple[int, int], batch: int, channels: int) -> None:
        self.g, self.full, self.leading = g, full, [batch, channels]
        self.sizes = {tuple(resolution): full}

    def at(self, size: tuple[int, int]) -> str:
        if size not in self.sizes:
            sizes = self.g.const(f"seg_size_{size[0]}x{size[1]}", np.array([*self.leading, *size], np.int64))
            self.sizes[size] = self.g.op("Resize", [self.full, "", "", sizes], **LEGACY_NEAREST)
        return self.sizes[size]


def instance_edges_graph(g: GraphBuilder) -> str:
    """1 where the instance id differs from a 4-neighbour (both pixels of a pair), from static slices:
    each neighbour difference is padded back to full size on the side it belongs to, then Max."""
    sides = []
    for axis in (3, 2):
        first = g.op("Slice", [INSTANCES, g.const(f"from0_{axis}", np.array([0])),
                               g.const(f"to_{axis}", np.array([-1])), g.const(f"axis_{axis}", np.array([axis]))])
        second = g.op("Slice", [INSTANCES, g.const(f"from1_{axis}", np.array([1])),
                                g.const(f"end_{axis}", np.array([np.iinfo(np.int64).max])), f"axis_{axis}"])
        same = g.op("Cast", [g.op("Equal", [first, second])], to=FLOAT)
        differs = g.op("Sub", [g.const(f"one_{axis}", np.array(1.0, np.float32)), same])
        for before in (1, 0):
            pads = np.zeros(8, np.int64)
            pads[axis if before else axis + 4] = 1
            sides.append(g.op("Pad", [differs, g.const(f"pad_{axis}_{before}", pads)], mode="constant"))
    return g.op("Max", sides)


def instance_norm_fp32(g: GraphBuilder, x: str, channels: int, compute: int) -> str:
    """Parameter-free InstanceNorm with FP32 statistics whatever the graph's type."""
    if compute != FLOAT:
        x = g.op("Cast", [x], to=FLOAT)
    y = g.op("InstanceNormalization", [x, g.const(f"ones_{channels}", np.ones(channels, np.float32)),
                                       g.const(f"zeros_{channels}", np.zeros(channels, np.float32))],
             epsilon=INSTANCE_NORM_EPS)
    return g.op("Cast", [y], to=compute) if compute != FLOAT else y


def param_free_norm_graph(w: GraphWeights, x: str, stats_prefix: str, kind: str, channels: int) -> str:
    """A parameter-free norm with FP32 statistics: ``kind`` "instance", or "batch" with the running statistics
    stored under ``stats_prefix`` (``BatchNormalization`` between two Casts)."""
    g = w.g
    if kind == "instance":
        return instance_norm_fp32(g, x, channels, w.compute)
    x32 = g.op("Cast", [x], to=FLOAT) if w.compute != FLOAT else x
    stats = [g.const(f"ones_{channels}", np.ones(channels, np.float32)),
             g.const(f"zeros_{channels}", np.zeros(channels, np.float32)),
             g.const(f"{stats_prefix}.running_mean", np.asarray(w.weights[f"{stats_prefix}.running_mean"], np.float32)),
             g.const(f"{stats_prefix}.running_var", np.asarray(w.weights[f"{stats_prefix}.running_var"], np.float32))]
    y = g.op("BatchNormalization", [x32, *stats], epsilon=NORM_EPS)
    return g.op("Cast", [y], to=w.compute) if w.compute != FLOAT else y


def spade_modulation(w: GraphWeights, x: str, seg: str, prefix: str, norm_key: str, norm_kind: str, pad: int) -> str:
    """The SPADE module (SPADE, PosGen's trunk, OASIS): ``norm(x) * (1 + gamma(seg)) + beta(seg)``, its weights
    under ``prefix`` (``mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``, the norm's statistics under ``norm_key``).
    The 1 is folded into mlp_gamma's bias (in FP32, before the cast), which saves a pass over the full-size
    tensor and rounds the same as adding it in FP16."""
    g = w.g
    actv = g.op("Relu", [w.conv(seg, f"{prefix}.mlp_shared.0", pad=pad)])
    kernel = list(np.shape(w.weights[f"{prefix}.mlp_gamma.weight"])[-2:])
    bias = np.asarray(w.weights[f"{prefix}.mlp_gamma.bias"], np.float32) + np.float32(1.0)
    gamma = g.op("Conv", [actv, w(f"{prefix}.mlp_gamma.weight"),
                          g.const(f"{prefix}.mlp_gamma.bias_plus_one", bias.astype(w.np_type))],
                 kernel_shape=kernel, pads=[pad] * 4)
    beta = w.conv(actv, f"{prefix}.mlp_beta", pad=pad)
    channels = np.shape(w.weights[f"{prefix}.mlp_gamma.weight"])[0]
    normalized = param_free_norm_graph(w, x, f"{prefix}.{norm_key}", norm_kind, channels)
    return g.op("Add", [g.op("Mul", [normalized, gamma]), beta])


def tensor2im_graph(g: GraphBuilder, x: str, compute: int) -> None:
    """tensor2im: (x + 1) / 2 * 255, clip, truncate (Floor), NHWC, uint8 — in FP32."""
    x = g.op("Cast", [x], to=FLOAT) if compute != FLOAT else x
    x = g.op("Mul", [g.op("Add", [x, g.const("one", np.array(1.0, np.float32))]),
                     g.const("half_range", np.array(127.5, np.float32))])
    x = g.op("Clip", [x, g.const("black", np.array(0.0, np.float32)), g.const("white", np.array(255.0, np.float32))])
    x = g.op("Transpose", [g.op("Floor", [x])], perm=[0, 2, 3, 1])
    g.op("Cast", [x], to=TensorProto.UINT8, name=IMAGE)


# the PyTorch reference's forms -----------------------------------------------------------------
class BatchNormFP32(nn.BatchNorm2d):
    """Parameter-free ``BatchNorm2d`` whose statistics run in FP32 in FP16 models too (as the FP16 ONNX)."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class InstanceNormFP32(nn.InstanceNorm2d):
    """``InstanceNorm2d(affine=False)`` whose statistics run in FP32 in FP16 models too (as the FP16 ONNX)."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def parameter_free_norm(kind: str, channels: int) -> nn.Module:
    """``kind`` "instance", else batch norm with running statistics ("batch", "syncbatch": the same at
    inference); without affine parameters, FP32 statistics."""
    norm = InstanceNormFP32 if kind == "instance" else BatchNormFP32
    return norm(channels, affine=False, eps=NORM_EPS)


class SPADEModule(nn.Module):
    """The SPADE module (SPADE, PosGen's trunk, OASIS): ``norm(x) * (1 + gamma(seg)) + beta(seg)``, ``seg``
    resized (legacy nearest) to ``x``'s size; the norm held under the name its official code gives it
    (``param_free_norm``, OASIS's ``first_norm``), so that state_dict keys are the official ones."""

    def __init__(self, norm: nn.Module, norm_key: str, inputs: int, hidden: int, channels: int, ks: int) -> None:
        super().__init__()
        self.norm_key = norm_key
        setattr(self, norm_key, norm)
        self.mlp_shared = nn.Sequential(nn.Conv2d(inputs, hidden, ks, padding=ks // 2), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, ks, padding=ks // 2)
        self.mlp_beta = nn.Conv2d(hidden, channels, ks, padding=ks // 2)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return getattr(self, self.norm_key)(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResidualBlock(nn.Module):
    """SPADE's ``SPADEResnetBlock`` and OASIS's ``ResnetBlock_with_SPADE``: shortcut (learned where the width
    changes: ``conv_s(norm_s(x))``, 1x1, no bias) plus ``conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x))))))``,
    LeakyReLU 0.2; ``modulation(channels)`` makes each SPADE module; the convs hold spectral-norm-folded weights."""

    def __init__(self, fin: int, fout: int, modulation: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        middle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, middle, 3, padding=1)
        self.conv_1 = nn.Conv2d(middle, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
            self.norm_s = modulation(fin)
        self.norm_0 = modulation(fin)
        self.norm_1 = modulation(middle)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), SPADE_LEAK))
        return shortcut + self.conv_1(F.leaky_relu(self.norm_1(dx, seg), SPADE_LEAK))


def instance_edges(instances: torch.Tensor) -> torch.Tensor:
    """1 where a pixel's instance id differs from its left, right, upper or lower neighbour (both pixels
    of a differing pair), 0 elsewhere; float [N,1,H,W]. The official ``get_edges``."""
    edge = torch.zeros_like(instances, dtype=torch.bool)
    horizontal = instances[..., :, 1:] != instances[..., :, :-1]
    vertical = instances[..., 1:, :] != instances[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def to_uint8_images(image: torch.Tensor) -> torch.Tensor:
    """tanh [N,3,H,W] -> uint8 [N,H,W,3]: ``(x + 1) / 2 * 255``, clip, truncate (the official tensor2im)."""
    return ((image + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0).floor().to(torch.uint8).permute(0, 2, 3, 1)


# weights ----------------------------------------------------------------------------------------
def spade_random_init(model: nn.Module, seed: int, bias_std: float = 0.1) -> nn.Module:
    """Seeded weights for a network of SPADE blocks that keep activations in range (kaiming-scaled convs and
    linear layers, small gamma and beta so that the modulation stays near 1), non-zero biases, and batch-norm
    running statistics that differ from the identity (so that loading and applying them is checked)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                gain = 0.5 if name.endswith(("mlp_gamma", "mlp_beta")) else 2.0
                module.weight.normal_(0.0, (gain / module.weight[0].numel()) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, bias_std, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 4.0, generator=generator)
                module.num_batches_tracked.fill_(1000)
    return model


def fold_spectral_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weight = weight_orig / sigma`` with ``sigma = u . (W_mat v)`` from the stored vectors, in FP32 as
    torch's ``spectral_norm`` computes it in eval mode; other keys pass through."""
    folded = {}
    for key, value in state.items():
        if key.endswith((".weight_u", ".weight_v")):
            continue
        if key.endswith(".weight_orig"):
            prefix = key[: -len("_orig")]
            weight = value.float()
            u, v = state[prefix + "_u"].float(), state[prefix + "_v"].float()
            sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
            folded[prefix] = weight / sigma
        else:
            folded[key] = value
    return folded
