"""Numerics several families share, each in its two forms (the PyTorch reference and the ONNX graph):
FP32 instance norm, the instance edge map, and the uint8 picture rule (``tensor2im``: ``(x + 1) / 2 * 255``,
clip, truncate); and weights as graph constants in the compute type."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto
from torch import nn

from ..families import IMAGE, INSTANCES
from ..graph import FLOAT, GraphBuilder, compute_types
from ..precisions import Precision

INSTANCE_NORM_EPS = 1e-5  # nn.InstanceNorm2d's default, as the official get_norm_layer('instance') uses it


class GraphWeights:
    """The checkpoint's tensors as graph constants in the compute type."""

    def __init__(self, g: GraphBuilder, weights: dict, precision: Precision) -> None:
        self.g, self.weights = g, weights
        self.compute, self.np_type = compute_types(precision)

    def __call__(self, name: str) -> str:
        return self.g.const(name, np.asarray(self.weights[name]).astype(self.np_type))

    def conv(self, x: str, prefix: str, stride: int = 1, pad: int = 0, transpose: bool = False) -> str:
        kernel = list(np.shape(self.weights[f"{prefix}.weight"])[-2:])
        inputs = [x, self(f"{prefix}.weight"), self(f"{prefix}.bias")]
        if transpose:  # doubles the size exactly: stride 2, padding 1, output_padding 1
            return self.g.op("ConvTranspose", inputs, kernel_shape=kernel, strides=[2, 2], pads=[1, 1, 1, 1],
                             output_padding=[1, 1])
        return self.g.op("Conv", inputs, kernel_shape=kernel, strides=[stride, stride], pads=[pad] * 4)


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


def tensor2im_graph(g: GraphBuilder, x: str, compute: int) -> None:
    """tensor2im: (x + 1) / 2 * 255, clip, truncate (Floor), NHWC, uint8 — in FP32."""
    x = g.op("Cast", [x], to=FLOAT) if compute != FLOAT else x
    x = g.op("Mul", [g.op("Add", [x, g.const("one", np.array(1.0, np.float32))]),
                     g.const("half_range", np.array(127.5, np.float32))])
    x = g.op("Clip", [x, g.const("black", np.array(0.0, np.float32)), g.const("white", np.array(255.0, np.float32))])
    x = g.op("Transpose", [g.op("Floor", [x])], perm=[0, 2, 3, 1])
    g.op("Cast", [x], to=TensorProto.UINT8, name=IMAGE)


# the PyTorch reference's forms -----------------------------------------------------------------
class InstanceNormFP32(nn.InstanceNorm2d):
    """``InstanceNorm2d(affine=False)`` whose statistics run in FP32 in FP16 models too (as the FP16 ONNX)."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


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
