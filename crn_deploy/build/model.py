"""The PyTorch reference CRN, as the paper and the authors' released code compute it (crn.md).

State-dict keys: ``blocks.{i}.conv{1,2}.weight`` [d, Cin, 3, 3], ``blocks.{i}.norm{1,2}.{weight,bias}``
[d], ``head.weight`` [3k, d, 1, 1], ``head.bias`` [3k]. Module 0 is the coarsest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CRNConfig

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
