"""The training losses of the paper and the released code (docs/families/crn.md).

Perceptual: L1 between VGG-19 activations of the synthesized and the real image at the input
(mean-subtracted pixels) and conv1_2 .. conv5_2, weighted 1, 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5.
Diversity (k images): each layer's error is averaged over channels, masked by every class's layout
channel (area-downsampled to the layer's resolution) and averaged over pixels, giving a
[k, classes] table; the loss takes, per class, the best of the k images:
``0.999 * sum_c min_k + 0.001 * sum_c mean_k`` (the released code's mix, which keeps every image
learning a little).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .vgg import TAPS, VGG19Features

LAYER_WEIGHTS = {"input": 1.0, "conv1_2": 1 / 2.6, "conv2_2": 1 / 4.8, "conv3_2": 1 / 3.7, "conv4_2": 1 / 5.6,
                 "conv5_2": 10 / 1.5}
BEST_OF_K, MEAN_OF_K = 0.999, 0.001


def masked_errors(fake: torch.Tensor, real: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """[k,C,h,w] features vs [1,C,h,w] -> [k, classes]: channel-mean |error| under each class's mask."""
    error = (fake - real).abs().mean(dim=1, keepdim=True)  # [k,1,h,w]
    mask = F.adaptive_avg_pool2d(layout, error.shape[-2:])  # [1,classes,h,w], class fractions
    return (error * mask).mean(dim=(2, 3))


def diversity_loss(per_class: torch.Tensor) -> torch.Tensor:
    """[k, classes] errors -> scalar: the best image per class (plus a little of the mean)."""
    return BEST_OF_K * per_class.min(dim=0).values.sum() + MEAN_OF_K * per_class.mean(dim=0).sum()


def perceptual_loss(fake: torch.Tensor, real: torch.Tensor, layout: torch.Tensor,
                    vgg: VGG19Features | None) -> torch.Tensor:
    """fake [k,3,H,W] and real [1,3,H,W] in [0,255], layout [1,classes,H,W].

    k == 1: the plain weighted L1 over layers; k > 1: the diversity loss. Without VGG weights only
    the pixel term is used (an image-space L1 loss)."""
    fake_taps = vgg(fake) if vgg is not None else {"input": fake}
    real_taps = vgg(real) if vgg is not None else {"input": real}
    names = ["input", *TAPS] if vgg is not None else ["input"]
    if fake.shape[0] == 1:
        return sum(LAYER_WEIGHTS[n] * (fake_taps[n] - real_taps[n]).abs().mean() for n in names)
    table = sum(LAYER_WEIGHTS[n] * masked_errors(fake_taps[n], real_taps[n], layout) for n in names)
    return diversity_loss(table)
