"""VGG-19 features for the perceptual loss, without torchvision (there is no CPU build of it here).

Weights come from a file the user points to — nothing is downloaded:
  - torchvision's state_dict layout (``features.{i}.weight/bias``, e.g. vgg19-dcbb9e9d.pth);
  - MatConvNet's ``imagenet-vgg-verydeep-19.mat``, the file the authors used (conv weights HWIO).
Each layout expects its own input scaling, applied here, so the loss sees the same features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError

# (name, out_channels) per conv; "pool" between blocks. Indices follow torchvision's features list.
_LAYERS = [("conv1_1", 64), ("conv1_2", 64), "pool", ("conv2_1", 128), ("conv2_2", 128), "pool",
           ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256), "pool",
           ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), ("conv4_4", 512), "pool",
           ("conv5_1", 512), ("conv5_2", 512)]
TAPS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
IMAGENET_MEAN_255 = (123.68, 116.779, 103.939)  # RGB, the released code's
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """conv1_1 .. conv5_2 with ReLU after every conv (the released code taps post-ReLU activations)."""

    def __init__(self, layout: str = "matconvnet", widths: dict[str, int] | None = None) -> None:
        super().__init__()
        self.layout = layout
        self.names, layers, channels = [], [], 3
        for layer in _LAYERS:
            if layer == "pool":
                layers.append(nn.AvgPool2d(2))  # the released code average-pools (tf.nn.avg_pool)
                self.names.append("pool")
            else:
                name, width = layer[0], (widths or {}).get(layer[0], layer[1])
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
                self.names += [name, f"relu_{name}"]
                channels = width
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)

    def forward(self, images_255: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB [N,3,H,W] in [0,255] -> the input (mean-subtracted, as the loss's first term) and each tap."""
        x = self.preprocess(images_255)
        taps = {"input": images_255 - _mean(images_255)}
        for name, layer in zip(self.names, self.features, strict=True):
            x = layer(x)
            if name.startswith("relu_") and name[5:] in TAPS:
                taps[name[5:]] = x
                if name[5:] == TAPS[-1]:
                    break
        return taps

    def preprocess(self, images_255: torch.Tensor) -> torch.Tensor:
        if self.layout == "matconvnet":
            return images_255 - _mean(images_255)
        mean = torch.tensor(TORCHVISION_MEAN, device=images_255.device).view(1, 3, 1, 1)
        std = torch.tensor(TORCHVISION_STD, device=images_255.device).view(1, 3, 1, 1)
        return (images_255 / 255.0 - mean) / std


def _mean(images: torch.Tensor) -> torch.Tensor:
    return torch.tensor(IMAGENET_MEAN_255, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)


def conv_names() -> list[str]:
    return [layer[0] for layer in _LAYERS if layer != "pool"]


def conv_indices() -> list[int]:
    """Positions of the convolutions in torchvision's ``features`` Sequential."""
    index, positions = 0, []
    for layer in _LAYERS:
        if layer == "pool":
            index += 1
        else:
            positions.append(index)
            index += 2
    return positions


def load_vgg19(path: Path) -> VGG19Features:
    """VGG-19 features from a torchvision state_dict (.pth) or MatConvNet's .mat file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"VGG-19 weights {path} not found: pass torchvision's vgg19 .pth or MatConvNet's "
                              "imagenet-vgg-verydeep-19.mat (crn-deploy downloads nothing); or train without "
                              "--vgg for an image-space L1 loss")
    weights = _read_matconvnet(path) if path.suffix == ".mat" else _read_torchvision(path)
    widths = {name: int(w.shape[0]) for name, (w, _) in weights.items()}  # VGG-19 is 64..512; tests use less
    model = VGG19Features("matconvnet" if path.suffix == ".mat" else "torchvision", widths)
    state = {}
    for name, index in zip(conv_names(), conv_indices(), strict=True):
        if name not in weights:
            raise CheckpointError(f"{path} has no {name} weights: not a VGG-19 file")
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weights[name]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit VGG-19: {str(e).splitlines()[-1].strip()}") from None
    return model.eval()


def _read_torchvision(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"{path} is not a readable torchvision VGG-19 state_dict ({type(e).__name__})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return {name: (state[f"features.{i}.weight"], state[f"features.{i}.bias"])
            for name, i in zip(conv_names(), conv_indices(), strict=True)
            if f"features.{i}.weight" in state and f"features.{i}.bias" in state}


def _read_matconvnet(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """imagenet-vgg-verydeep-19.mat: a cell array of layer structs with 'name' and 'weights' {W HWIO, b}."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise CheckpointError("reading MatConvNet .mat files needs scipy: pip install scipy") from None
    try:
        layers = loadmat(str(path), squeeze_me=True, struct_as_record=False)["layers"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not MatConvNet's VGG-19 .mat ({e})") from None
    found = {}
    for layer in np.atleast_1d(layers):
        name = str(getattr(layer, "name", ""))
        if name.startswith("conv"):
            w, b = layer.weights
            weight = torch.from_numpy(np.asarray(w, np.float32).transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
            found[name] = (weight, torch.from_numpy(np.asarray(b, np.float32).reshape(-1).copy()))
    return found
