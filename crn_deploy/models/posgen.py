"""PosGen, torch side: SPADE's residual trunk, then a pixel-wise MLP instead of the last convolution (see
``crn_deploy.families.posgen.PosGenConfig`` for the architecture and the choices the description leaves
open). The reference model, our checkpoint format's reader (config stored with the weights) and the
ONNX graph writer, whose picture may be larger than its label map.

The head reads nothing but its own pixel: features, their Fourier features and coordinates. So the
trunk runs at the label resolution and only the head at the output resolution, after the features
are bilinearly interpolated to it (``Resize`` linear, half-pixel: torch's ``align_corners=False``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..families import config_fields_from_options
from ..families.posgen import POSGEN, PosGenConfig
from ..graph import FLOAT, GraphBuilder, model_of
from ..precisions import Precision
from ..sizes import Sizes
from .registry import LoadRequest, ModelFamily, Training
from .shared import GraphWeights, fold_spectral_norm, spade_random_init, tensor2im_graph, to_uint8_images
from .spade_trunk import LEAK, SPADEGenerator, last_blocks, trunk_graph
from .state import check_fits
HEAD = ("pixel_mlp.0", "pixel_mlp.2", "pixel_mlp.4")  # the three shared layers, as 1x1 convolutions


def coordinate_axes(config: PosGenConfig, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The coordinate encoding along each axis, float32: x [cx, W] and y [cy, H] with x, y in [-1, 1]
    across the pixel centres ((-1, -1) the top-left pixel); the grid's channels are x's then y's."""
    encodings = []
    for length in (size[1], size[0]):
        t = np.linspace(-1.0, 1.0, length, dtype=np.float64) if length > 1 else np.zeros(1)
        rows = [t]
        if config.coordinate_encoding == "fourier":
            for k in range(config.coordinate_octaves):
                rows += [np.sin(2.0**k * math.pi * t), np.cos(2.0**k * math.pi * t)]
        encodings.append(np.stack(rows).astype(np.float32))
    return encodings[0], encodings[1]


def coordinate_grid(config: PosGenConfig, size: tuple[int, int]) -> np.ndarray:
    """float32 [coordinate_channels, H, W]."""
    x, y = coordinate_axes(config, size)
    h, w = size
    return np.concatenate([np.broadcast_to(x[:, None, :], (len(x), h, w)),
                           np.broadcast_to(y[:, :, None], (len(y), h, w))])


class FourierFP32(nn.Conv2d):
    """The learned projection B whose product ``B f`` (the sin/cos argument) stays FP32 in FP16 models."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = super().forward(x.float())
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=1).to(x.dtype)


class PosGenGenerator(SPADEGenerator):
    """uint8 label ids [N,1,H,W] (+ int32 instance ids) -> uint8 RGB [N,H',W',3] with (H', W') =
    ``picture_size`` (default: the label map's size)."""

    def __init__(self, config: PosGenConfig) -> None:
        super().__init__(config.trunk)
        del self.conv_img
        self.config = config
        channels = config.feature_channels
        self.fourier = FourierFP32(channels, config.fourier_features, 1, bias=False)
        self.pixel_mlp = nn.Sequential(
            nn.Conv2d(config.head_inputs, config.mlp_width, 1), nn.LeakyReLU(LEAK),
            nn.Conv2d(config.mlp_width, config.mlp_width, 1), nn.LeakyReLU(LEAK),
            nn.Conv2d(config.mlp_width, 3, 1), nn.Tanh())
        for name in last_blocks(config.trunk, config.fp32_tail_blocks):  # as the FP16 graph's island: these
            getattr(self, name).keep_fp32 = True  # blocks stay FP32 in an FP16 model

    def semantic_features(self, seg: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The trunk's features [N, C, H, W] (after the LeakyReLU), interpolated to ``size`` if given."""
        features = F.leaky_relu(self.features(seg), LEAK)
        if size is not None and tuple(size) != tuple(features.shape[2:]):
            features = F.interpolate(features, size=tuple(size), mode="bilinear", align_corners=False)
        return features

    def render(self, features: torch.Tensor, coordinates: torch.Tensor | None = None) -> torch.Tensor:
        """The pixel-wise head: features [N, C, H, W] (+ coordinates [N or 1, cc, H, W], default the grid of
        this size) -> tanh image [N, 3, H, W]. Each output pixel reads its own pixel only."""
        head = self.pixel_mlp[0].weight.dtype  # the features may be FP32 (the FP32 tail) in an FP16 model
        if coordinates is None:
            grid = coordinate_grid(self.config, tuple(features.shape[2:]))
            coordinates = torch.from_numpy(grid)[None].to(features)
        coordinates = coordinates.to(head).expand(features.shape[0], -1, -1, -1)
        return self.pixel_mlp(torch.cat([features.to(head), self.fourier(features).to(head), coordinates], dim=1))

    def generate(self, seg: torch.Tensor, z: torch.Tensor | None = None,
                 picture_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.render(self.semantic_features(seg, picture_size))

    def train_images(self, labels: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in [0,255], unclipped so that gradients flow everywhere (for crn-train)."""
        return (self.generate(self.encode(labels).to(self.fourier.weight.dtype)).float() + 1.0) * 127.5

    def forward(self, labels: torch.Tensor, *inputs: torch.Tensor,
                picture_size: tuple[int, int] | None = None) -> torch.Tensor:
        instances = inputs[0] if self.config.trunk.instances and inputs else None
        dtype = self.pixel_mlp[0].weight.dtype
        return to_uint8_images(self.generate(self.encode(labels, instances).to(dtype), None, picture_size).float())


def random_init(model: PosGenGenerator, seed: int) -> PosGenGenerator:
    """The trunk as SPADE's random init; B from N(0, fourier_scale^2), as its init."""
    spade_random_init(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.fourier.weight.normal_(0.0, model.config.fourier_scale, generator=generator)
    return model


def load_state(state: dict[str, torch.Tensor], config: PosGenConfig | None, request: LoadRequest) -> PosGenGenerator:
    """Our checkpoint format holds the config beside the weights; PosGen has no official format."""
    path = str(request.path)
    if config is None:
        raise CheckpointError(f"{path} is a PosGen state_dict without its config; save it with crn-train (or "
                              "save_checkpoint), or pass --preset NAME")
    if request.options:  # over the stored config: a deployment choice (fp32_tail_blocks); weights are checked below
        config = config.with_options(config_fields_from_options(type(config), request.options, "--option"))
    folded = fold_spectral_norm({k.removeprefix("module."): v for k, v in state.items()})
    check_fits(folded, PosGenGenerator(config), f"the PosGen config {config.to_dict()}", path,
               "Pick the matching --preset")
    model = PosGenGenerator(config)
    model.load_state_dict(folded)
    return model.eval()


def recognises(state: dict) -> bool:
    return any(k.removeprefix("module.").startswith("pixel_mlp.") for k in state)


# ONNX graph -------------------------------------------------------------------------------------
def graph_parts(config: PosGenConfig, weights: dict, sizes: Sizes, precision: Precision, batch: int = 1,
                head: str = "conv") -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """uint8 ``labels`` [N,1,H,W] (+ int32 ``instances``) in, uint8 RGB ``image`` [N,H',W',3] out.

    The trunk as SPADE's graph at (H, W), its last ``fp32_tail_blocks`` blocks in FP32 in reduced
    precisions; the features bilinearly resized to (H', W') in the trunk's output type; the Fourier
    projection and its sin/cos in FP32; the coordinate grid from two tiny per-axis
    constants expanded in the graph (no [H',W'] constant); the pixel-wise MLP as 1x1 convolutions
    (``head="conv"``, the default: NCHW throughout, bias and activation fused by TensorRT into its
    convolution kernels) or MatMuls on [N, H'W', C] (``head="matmul"``: two more transposes)."""
    resolution, out = sizes.labels, sizes.picture
    g = GraphBuilder()
    w = GraphWeights(g, weights, precision)
    tail = config.fp32_tail_blocks if w.compute != FLOAT else 0
    trunk = trunk_graph(g, w, config.trunk, resolution, batch, fp32_tail=tail)
    with g.fp32_island() if tail else nullcontext():  # the features stay FP32 up to the head where the tail is
        features = _features(g, trunk, config, sizes, batch)
        fourier = _fourier(g, w, features, from_fp32=bool(tail))
        if tail:
            features = g.op("Cast", [features], to=w.compute)
    x = g.op("Concat", [features, fourier, _coordinates(g, w, config, out, batch)], axis=1)
    x = _mlp_conv(g, w, x) if head == "conv" else _mlp_matmul(g, w, x, config, out, batch)
    tensor2im_graph(g, x, w.compute)
    name = f"posgen_{resolution[0]}x{resolution[1]}_to_{out[0]}x{out[1]}_{precision.name}"
    return model_of(g, name, POSGEN.inputs(config, resolution, batch), POSGEN.output(config, out, batch)), \
        g.initializers


def _features(g: GraphBuilder, trunk: str, config: PosGenConfig, sizes: Sizes, batch: int) -> str:
    """The trunk's output after the LeakyReLU, bilinearly resized to the picture's size where that differs."""
    features = g.op("LeakyRelu", [trunk], alpha=LEAK)
    if not sizes.decoupled:
        return features
    target = g.const("output_size", np.array([batch, config.feature_channels, *sizes.picture], np.int64))
    return g.op("Resize", [features, "", "", target], mode="linear", coordinate_transformation_mode="half_pixel")


def _fourier(g: GraphBuilder, w: GraphWeights, features: str, from_fp32: bool) -> str:
    """sin and cos of B f, with B f in FP32 (an argument of 100 has an FP16 spacing of 0.06 rad)."""
    x = g.op("Cast", [features], to=FLOAT) if w.compute != FLOAT and not from_fp32 else features
    weight = g.const("fourier.weight", np.asarray(w.weights["fourier.weight"], np.float32))
    projected = g.op("Conv", [x, weight], kernel_shape=[1, 1], fp32_island=True)
    y = g.op("Concat", [g.op("Sin", [projected]), g.op("Cos", [projected])], axis=1)
    return g.op("Cast", [y], to=w.compute) if w.compute != FLOAT else y


def _coordinates(g: GraphBuilder, w: GraphWeights, config: PosGenConfig, size: tuple[int, int], batch: int) -> str:
    x_axis, y_axis = coordinate_axes(config, size)
    h, wd = size
    xs = g.const("coordinates_x", x_axis[None, :, None, :].astype(w.np_type))  # [1, cx, 1, W]
    ys = g.const("coordinates_y", y_axis[None, :, :, None].astype(w.np_type))  # [1, cy, H, 1]
    grid_x = g.op("Expand", [xs, g.const("grid_x_shape", np.array([batch, len(x_axis), h, wd], np.int64))])
    grid_y = g.op("Expand", [ys, g.const("grid_y_shape", np.array([batch, len(y_axis), h, wd], np.int64))])
    return g.op("Concat", [grid_x, grid_y], axis=1)


def _mlp_conv(g: GraphBuilder, w: GraphWeights, x: str) -> str:
    for i, name in enumerate(HEAD):
        x = w.conv(x, name)
        x = g.op("LeakyRelu", [x], alpha=LEAK) if i < len(HEAD) - 1 else g.op("Tanh", [x])
    return x


def _mlp_matmul(g: GraphBuilder, w: GraphWeights, x: str, config: PosGenConfig, size: tuple[int, int],
                batch: int) -> str:
    """The same MLP as MatMuls on [N, H'W', C]; returns NCHW again, for the shared tail."""
    h, wd = size
    x = g.op("Transpose", [g.op("Reshape", [x, g.const("flat_in", np.array([batch, config.head_inputs, h * wd],
                                                                           np.int64))])], perm=[0, 2, 1])
    for i, name in enumerate(HEAD):
        weight = np.asarray(w.weights[f"{name}.weight"])[:, :, 0, 0].T  # [C_in, C_out]
        x = g.op("MatMul", [x, g.const(f"{name}.matrix", weight.astype(w.np_type))])
        x = g.op("Add", [x, w(f"{name}.bias")])
        x = g.op("LeakyRelu", [x], alpha=LEAK) if i < len(HEAD) - 1 else g.op("Tanh", [x])
    x = g.op("Transpose", [x], perm=[0, 2, 1])
    return g.op("Reshape", [x, g.const("image_shape", np.array([batch, 3, h, wd], np.int64))])


MODEL = ModelFamily(POSGEN, PosGenGenerator, random_init, graph_parts, recognises, load_state, training=Training())
