"""The Cascaded Refinement Network (Chen & Koltun, ICCV 2017), torch side: the PyTorch reference as the
paper and the authors' released code compute it (docs/families/crn.md), our checkpoints' reader, and the
ONNX graph writer. The contract side is ``crn_deploy/families/crn.py``.

State-dict keys: ``blocks.{i}.conv{1,2}.weight`` [d, Cin, 3, 3], ``blocks.{i}.norm{1,2}.{weight,bias}``
[d], ``head.weight`` [3k, d, 1, 1], ``head.bias`` [3k]. Module 0 is the coarsest.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto
from torch import nn

from ..errors import CheckpointError, UsageError
from ..families import IMAGE, LABELS
from ..families.crn import CRN as CRN_FAMILY
from ..families.crn import CRNConfig
from ..graph import FLOAT, GraphBuilder, compute_types, model_of
from ..precisions import Precision
from ..sizes import Sizes
from ..labels import CITYSCAPES
from .registry import ForeignImport, LoadRequest, ModelFamily, Training
from .state import check_fits, strip_prefixes
from .tf_import import import_tf_checkpoint, inspect_tf_checkpoint

SLIM_LAYER_NORM_EPS = 1e-12
LEAKY_SLOPE = 0.2


class SlimLayerNorm(nn.Module):
    """TF-slim layer norm: statistics over C, H and W at once, per-channel scale and shift.

    Statistics always run in float32: in FP16 the 1e-12 epsilon underflows and the sums overflow.
    """

    keep_fp32 = True  # FP16 models keep this module's parameters in FP32 (as the FP16 ONNX does)

    def __init__(self, channels: int, eps: float = SLIM_LAYER_NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x.float(), 1, self.weight.float(), self.bias.float(), self.eps)
        return y.to(x.dtype)


class RefinementModule(nn.Module):
    """(conv 3x3 without bias -> layer norm -> LeakyReLU 0.2) twice."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.norm1 = SlimLayerNorm(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = SlimLayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(self.conv1(x)), LEAKY_SLOPE)
        return F.leaky_relu(self.norm2(self.conv2(x)), LEAKY_SLOPE)


class CRN(nn.Module):
    """uint8 class ids [N,1,H,W] -> uint8 RGB [N,H,W,3] (k > 1: [N,k,H,W,3])."""

    def __init__(self, config: CRNConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            RefinementModule(config.module_in_channels(i), width) for i, width in enumerate(config.widths)
        )
        self.head = nn.Conv2d(config.widths[-1], config.out_channels, 1, bias=True)

    def layout(self, labels: torch.Tensor) -> torch.Tensor:
        """One-hot over the classes plus a void channel (ids >= num_classes), float32 [N,C+1,H,W]."""
        if labels.dtype != torch.uint8 or labels.dim() != 4 or labels.shape[1] != 1:
            raise ValueError(f"labels must be uint8 [N,1,H,W], got {labels.dtype} {list(labels.shape)}")
        ids = labels.long().clamp(max=self.config.num_classes)
        channels = torch.arange(self.config.layout_channels, device=labels.device).view(1, -1, 1, 1)
        return (ids == channels).float()

    def layout_pyramid(self, layout: torch.Tensor) -> list[torch.Tensor]:
        """The layout at every module's resolution, coarsest first, by repeated 2x2 area averaging."""
        levels = [layout]
        for _ in range(self.config.num_modules - 1):
            levels.append(F.avg_pool2d(levels[-1], 2))
        return levels[::-1]

    def features(self, labels: torch.Tensor) -> torch.Tensor:
        """Head output before scaling: [N, 3k, H, W] in the model's dtype."""
        dtype = self.head.weight.dtype
        pyramid = [level.to(dtype) for level in self.layout_pyramid(self.layout(labels))]
        x = self.blocks[0](pyramid[0])
        for block, level in zip(self.blocks[1:], pyramid[1:], strict=True):
            x = F.interpolate(x, size=level.shape[-2:], mode="bilinear", align_corners=True)
            x = block(torch.cat([x, level], dim=1))  # features first, then the layout
        return self.head(x)

    def forward_float(self, labels: torch.Tensor) -> torch.Tensor:
        """Float32 images in [0, 255], laid out like ``forward``'s output: for analysis."""
        x = (self.features(labels).float() + 1.0) * 127.5
        return self.to_images(x.clamp(0.0, 255.0))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.round(self.forward_float(labels)).to(torch.uint8)

    def train_images(self, labels: torch.Tensor) -> torch.Tensor:
        """[N*k,3,H,W] in [0,255], unclipped so gradients flow everywhere (as the released code trains; crn-train)."""
        x = (self.features(labels).float() + 1.0) * 127.5  # [N,3k,H,W]
        n, _, h, w = x.shape
        return x.view(n, 3, self.config.k, h, w).permute(0, 2, 1, 3, 4).reshape(-1, 3, h, w)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3k, H, W] -> [N, H, W, 3] or [N, k, H, W, 3].

        The released code's channel order: image j's colour c is channel ``k*c + j``.
        """
        n, _, h, w = x.shape
        k = self.config.k
        images = x.view(n, 3, k, h, w).permute(0, 2, 3, 4, 1)
        return images[:, 0] if k == 1 else images


def random_init(model: CRN, seed: int) -> CRN:
    """Seeded random weights that exercise every path: convs, a non-trivial norm affine, the head."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            for conv in (block.conv1, block.conv2):
                fan_in = conv.weight[0].numel()
                conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            for norm in (block.norm1, block.norm2):
                norm.weight.uniform_(0.5, 1.5, generator=generator)
                norm.bias.normal_(0.0, 0.2, generator=generator)
        fan_in = model.head.weight[0].numel()
        model.head.weight.normal_(0.0, 0.5 / fan_in**0.5, generator=generator)
        model.head.bias.normal_(0.0, 0.1, generator=generator)
    return model

# ONNX graph ---------------------------------------------------------------------------------------
# The precision of every tensor, decided here:
#   - uint8 ids -> one-hot + void (Min/Equal) and the area pyramid (AveragePool) in FP32, each
#     level cast once to the compute type (k/4^n fractions need more than FP16's 11 bits);
#   - Conv, Resize, Concat, LeakyRelu in the compute type;
#   - every layer norm in FP32 (Cast up, LayerNormalization(axis=1) with [C,1,1] scale/shift, Cast
#     down): TensorRT maps it to its native normalization layer, and no [C,H,W] constant is made
#     (torch's exporter would make one per layer, hundreds of MB);
#   - the output tail ((x+1)*127.5, Clip, Round, to NHWC, uint8) in FP32 on 3k channels.

def graph_parts(config: CRNConfig, weights: dict[str, np.ndarray], sizes: Sizes, precision: Precision,
                batch: int = 1, eps: float = SLIM_LAYER_NORM_EPS) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The network without its weights, and the weights: ``write_model`` writes them as one file."""
    compute_type, np_type = compute_types(precision)
    resolution = sizes.labels
    g = GraphBuilder()
    levels = _layout_pyramid(g, config, compute_type)
    x = levels[0]
    scales = g.const("upsample_scales", np.array([1, 1, 2, 2], np.float32))
    for i in range(config.num_modules):
        if i:
            up = g.op("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="align_corners")
            x = g.op("Concat", [up, levels[i]], axis=1)  # features first, then the layout
        for j in (1, 2):
            prefix = f"blocks.{i}.conv{j}"
            conv = g.op("Conv", [x, g.const(f"{prefix}.weight", weights[f"{prefix}.weight"].astype(np_type))],
                        kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x = g.op("LeakyRelu", [_fp32_norm(g, conv, f"blocks.{i}.norm{j}", weights, compute_type, eps)], alpha=0.2)
    head = g.op("Conv", [x, g.const("head.weight", weights["head.weight"].astype(np_type)),
                         g.const("head.bias", weights["head.bias"].astype(np_type))], kernel_shape=[1, 1])
    _to_uint8_images(g, head, config, resolution, batch, compute_type)
    return model_of(g, f"crn_{resolution[0]}x{resolution[1]}_{precision.name}",
                    CRN_FAMILY.inputs(config, resolution, batch), CRN_FAMILY.output(config, resolution, batch)), \
        g.initializers


def _layout_pyramid(g: GraphBuilder, config: CRNConfig, compute_type: int) -> list[str]:
    """One-hot + void at full resolution, then 2x2 averages; coarsest first, in the compute type."""
    ids = g.op("Cast", [LABELS], to=FLOAT)
    clamped = g.op("Min", [ids, g.const("void_id", np.array(config.num_classes, np.float32))])
    classes = np.arange(config.layout_channels, dtype=np.float32).reshape(1, -1, 1, 1)
    hot = g.op("Equal", [clamped, g.const("class_ids", classes)])
    level = g.op("Cast", [hot], to=FLOAT, name="layout")
    levels = [level]
    for _ in range(config.num_modules - 1):
        level = g.op("AveragePool", [level], kernel_shape=[2, 2], strides=[2, 2])
        levels.append(level)
    if compute_type != FLOAT:
        levels = [g.op("Cast", [lv], to=compute_type) for lv in levels]
    return levels[::-1]


def _fp32_norm(g: GraphBuilder, x: str, prefix: str, weights: dict, compute_type: int, eps: float) -> str:
    """Slim layer norm over C,H,W with per-channel affine, computed in FP32 whatever the graph's type."""
    gamma = weights[f"{prefix}.weight"].astype(np.float32).reshape(-1, 1, 1)
    beta = weights[f"{prefix}.bias"].astype(np.float32).reshape(-1, 1, 1)
    if compute_type != FLOAT:
        x = g.op("Cast", [x], to=FLOAT)
    y = g.op("LayerNormalization", [x, g.const(f"{prefix}.weight", gamma), g.const(f"{prefix}.bias", beta)],
             axis=1, epsilon=eps)
    return g.op("Cast", [y], to=compute_type) if compute_type != FLOAT else y


def _to_uint8_images(g: GraphBuilder, head: str, config: CRNConfig, resolution, batch: int, compute_type: int) -> None:
    """(x + 1) * 127.5 -> clip -> round (half to even) -> NHWC -> uint8, all in FP32."""
    x = g.op("Cast", [head], to=FLOAT) if compute_type != FLOAT else head
    x = g.op("Add", [x, g.const("one", np.array(1.0, np.float32))])
    x = g.op("Mul", [x, g.const("half_range", np.array(127.5, np.float32))])
    x = g.op("Clip", [x, g.const("black", np.array(0.0, np.float32)), g.const("white", np.array(255.0, np.float32))])
    x = g.op("Round", [x])
    if config.k == 1:
        x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    else:  # image j's colour c is channel k*c + j (the released code's order)
        split = np.array([batch, 3, config.k, *resolution], np.int64)
        x = g.op("Reshape", [x, g.const("split_images", split)])
        x = g.op("Transpose", [x], perm=[0, 2, 3, 4, 1])
    g.op("Cast", [x], to=TensorProto.UINT8, name=IMAGE)


# progressive training (crn-train --init-from): the authors grew 512p and 1024p from the lower model ----------
def grow_by_one(lower: torch.nn.Module, width: int | None = None, seed: int = 0) -> CRN:
    """A CRN with one more module (of ``width``, default the last one's) grown from ``lower``."""
    if not isinstance(lower, CRN):
        raise UsageError("progressive training (--init-from) grows a CRN by one module; this checkpoint is a "
                         f"{type(lower).__name__}")
    c = lower.config
    return grow(lower, CRNConfig(c.num_classes, (*c.widths, width or c.widths[-1]), c.base, c.k), seed)


def grow(lower: CRN, config: CRNConfig, seed: int = 0) -> CRN:
    """Progressive training: a model with more modules, starting from a lower-resolution one.

    The lower model's modules are copied; the new modules and the head start from seeded random
    weights (the head's input width changes with the last module)."""
    n = lower.config.num_modules
    if config.num_modules <= n or config.widths[:n] != lower.config.widths or \
            (config.num_classes, config.k) != (lower.config.num_classes, lower.config.k):
        raise UsageError(f"cannot grow widths {list(lower.config.widths)} into {list(config.widths)}: the new "
                         "model must start with the same modules, classes and k, and add at least one module")
    model = random_init(CRN(config), seed)
    with torch.no_grad():
        for mine, theirs in zip(model.blocks[:n], lower.blocks, strict=True):
            mine.load_state_dict(theirs.state_dict())
    return model


# checkpoints ----------------------------------------------------------------------------------------
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.conv1\.weight$")


def load_state(raw: dict, config: CRNConfig | None, request: LoadRequest) -> CRN:
    """Our CRN checkpoints (and crn-import's): wrapper prefixes stripped, the config inferred where not given."""
    state = {strip_prefixes(k): v for k, v in raw.items()}
    config = config or infer_config(state, request.path)
    check_state(state, config, request.path)
    model = CRN(config)
    model.load_state_dict(state)
    return model.eval()


def recognises(state: dict) -> bool:
    keys = {strip_prefixes(k) for k in state}
    return "head.weight" in keys and any(_BLOCK_KEY.match(k) for k in keys)


def infer_config(state: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> CRNConfig:
    """Module count, widths, classes and k from tensor shapes (the base stays 4x8)."""
    indices = sorted(int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)))
    if not indices or indices != list(range(len(indices))) or "head.weight" not in state:
        raise CheckpointError(
            f"{path} is not a crn-deploy CRN checkpoint: expected keys blocks.0.conv1.weight ... and head.weight "
            f"(found e.g. {', '.join(list(state)[:3])}); for the authors' TensorFlow checkpoints use crn-import"
        )
    widths = tuple(state[f"blocks.{i}.conv1.weight"].shape[0] for i in indices)
    layout_channels = state["blocks.0.conv1.weight"].shape[1]
    out_channels = state["head.weight"].shape[0]
    if out_channels % 3:
        raise CheckpointError(f"{path}: head.weight has {out_channels} output channels, not a multiple of 3")
    return CRNConfig(num_classes=layout_channels - 1, widths=widths, k=out_channels // 3)


def check_state(state: dict[str, torch.Tensor], config: CRNConfig, path: Path | str = "checkpoint") -> None:
    check_fits(state, CRN(config), f"the CRN config {config.to_dict()}", path,
               "Pick the matching --preset, or drop --preset to infer the architecture from the checkpoint")


def custom_config(widths: tuple[int, ...], k: int) -> CRNConfig:
    """crn-train --widths: module widths, coarsest first, on Cityscapes' train ids (the synthetic data's)."""
    return CRNConfig(CITYSCAPES.num_classes, widths, k=k)


MODEL = ModelFamily(CRN_FAMILY, CRN, random_init, graph_parts, recognises, load_state,
                    training=Training(custom_config=custom_config, grow=grow_by_one),
                    foreign_import=ForeignImport("TensorFlow", inspect_tf_checkpoint, import_tf_checkpoint))
