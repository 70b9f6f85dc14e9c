"""VGG-19 weight files at small widths, in the two layouts crn-train reads (the loaders take the widths from
the file): torchvision's ``vgg19`` state_dict and MatConvNet's ``imagenet-vgg-verydeep-19.mat``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crn_deploy.training.vgg import conv_indices, conv_names


def random_vgg_weights(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{conv name: (weight OIHW, bias)}: VGG-19's layers at widths 4 and 8."""
    rng = np.random.default_rng(seed)
    weights, channels = {}, 3
    for name in conv_names():
        width = 4 if name.startswith(("conv1", "conv2")) else 8
        weights[name] = (rng.normal(0, 0.1, (width, channels, 3, 3)).astype(np.float32),
                         rng.normal(0, 0.1, width).astype(np.float32))
        channels = width
    return weights


def torchvision_state(weights) -> dict[str, torch.Tensor]:
    state = {f"features.{i}.{part}": torch.from_numpy(w if part == "weight" else b)
             for name, i in zip(conv_names(), conv_indices(), strict=True)
             for part, (w, b) in [("weight", weights[name]), ("bias", weights[name])]}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    return state


def write_matconvnet(path: Path, weights) -> Path:
    """The authors' file layout: a ``layers`` cell array, conv weights HWIO with the bias as a row."""
    from scipy.io import savemat

    layers = np.empty(len(conv_names()) * 2, dtype=object)
    for i, name in enumerate(conv_names()):
        w, b = weights[name]
        cell = np.empty(2, dtype=object)
        cell[0], cell[1] = w.transpose(2, 3, 1, 0), b.reshape(1, -1)
        layers[2 * i] = {"name": name, "type": "conv", "weights": cell}
        layers[2 * i + 1] = {"name": f"relu{name[4:]}", "type": "relu", "weights": np.empty(0, dtype=object)}
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"layers": layers})
    return path
