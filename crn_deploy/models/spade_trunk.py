"""SPADE's generator as several families build on it, torch side: the official network (NVlabs/SPADE ``models/
networks/generator.py``: its segmentation encoding, ``fc`` start, SPADE residual blocks and ``conv_img`` head) as
the reference model SPADE deploys and PosGen takes its trunk from, and the trunk's ONNX graph. Registers no family;
the contract side is ``crn_deploy/families/spade_trunk.py``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..families import LABELS, STYLE
from ..families.spade_trunk import SPADEConfig
from ..graph import FLOAT, GraphBuilder
from .shared import (
    LEGACY_NEAREST, SPADE_LEAK, GraphWeights, Segmentation, SPADEModule, SPADEResidualBlock, instance_edges,
    instance_edges_graph, parameter_free_norm, spade_modulation, to_uint8_images,
)

VOID = 255  # the loader's "unknown" label, which it maps to label_nc (the don't-care channel)
LEAK = SPADE_LEAK


# reference model ------------------------------------------------------------------------------
def spade_module(config: SPADEConfig, channels: int) -> SPADEModule:
    """The official ``SPADE`` module of this config, for ``channels`` channels."""
    return SPADEModule(parameter_free_norm(config.param_free_norm, channels), "param_free_norm", config.semantic_nc,
                       config.nhidden, channels, config.kernel_size)


def upsampled_after(config: SPADEConfig) -> set[str]:
    """The blocks whose input is first upsampled x2 (nearest), in the official forward."""
    ups = {"G_middle_0", "up_0", "up_1", "up_2", "up_3", "up_4"}
    return ups | {"G_middle_1"} if config.num_upsampling_layers in ("more", "most") else ups


class SPADEGenerator(nn.Module):
    """uint8 label ids [N,1,H,W] (+ int32 instance ids) (+ float32 style z [N, z_dim]) -> uint8 RGB
    [N,H,W,3], as the artifacts do; ``generate`` is the official network on its float input."""

    def __init__(self, config: SPADEConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk_config = config  # what the residual trunk reads (PosGen's config holds one)
        nf = config.ngf
        if config.use_vae:
            sh, sw = config.start_size(config.native_resolution)
            self.fc = nn.Linear(config.z_dim, 16 * nf * sh * sw)
        else:
            self.fc = nn.Conv2d(config.semantic_nc, 16 * nf, 3, padding=1)
        for name, (fin, fout) in config.widths().items():
            setattr(self, name, SPADEResidualBlock(fin, fout, partial(spade_module, config)))
        self.conv_img = nn.Conv2d(nf // 2 if config.num_upsampling_layers == "most" else nf, 3, 3, padding=1)

    def generate(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """seg: float [N, semantic_nc, H, W]; z: [N, z_dim] for VAE models -> tanh image [N, 3, H, W]."""
        return torch.tanh(self.conv_img(F.leaky_relu(self.features(seg, z), LEAK)))

    def features(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The last residual block's output [N, ngf (ngf/2 for most), H, W], before the final LeakyReLU."""
        config = self.trunk_config
        start = config.start_size(tuple(seg.shape[2:]))
        if config.use_vae:
            x = self.fc(z).view(-1, 16 * config.ngf, *start)
        else:
            x = self.fc(F.interpolate(seg, size=start))
        upsampled = upsampled_after(config)
        for name in config.widths():
            if name in upsampled:
                x = F.interpolate(x, scale_factor=2)
            block = getattr(self, name)
            dtype = block.conv_0.weight.dtype  # FP32 for a block kept FP32 in an FP16 model (PosGen's tail)
            x = block(x.to(dtype), seg.to(dtype))
        return x

    def encode(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ids [N,1,H,W] (+ integer instance ids) -> float [N, semantic_nc, H, W]: one-hot, with the
        loader's unknown 255 as the don't-care id where the model has that channel; other ids >= the
        channel count light none (the official scatter would fail on them)."""
        config = self.trunk_config
        ids = labels.long()
        if config.contain_dontcare_label:
            ids = torch.where(ids == VOID, config.label_nc, ids)
        channels = torch.arange(config.label_nc + config.contain_dontcare_label, device=ids.device).view(1, -1, 1, 1)
        x = (ids == channels).float()
        if config.instances:
            x = torch.cat([x, instance_edges(labels.int() if instances is None else instances)], dim=1)
        return x

    def forward(self, labels: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """``inputs``: the artifact's further inputs in its order — instance ids where the model takes them
        (the label ids stand in where absent), then z where it has a VAE."""
        inputs = list(inputs)
        instances = inputs.pop(0) if self.config.instances and inputs else None
        z = inputs.pop(0) if self.config.use_vae and inputs else None
        if self.config.use_vae and z is None:
            raise ValueError("this SPADE model was trained with --use_vae: pass its style vector z [N, z_dim]")
        dtype = self.conv_img.weight.dtype
        seg = self.encode(labels, instances).to(dtype)
        image = self.generate(seg, None if z is None else z.to(dtype)).float()
        return to_uint8_images(image)


# ONNX graph -------------------------------------------------------------------------------------
def trunk_graph(g: GraphBuilder, w: GraphWeights, config: SPADEConfig, resolution: tuple[int, int],
                batch: int, fp32_tail: int = 0) -> str:
    """From the inputs to the last residual block's output, in the compute type (PosGen's trunk too).

    ``fp32_tail``: the last so many residual blocks compute in FP32 whatever the precision, as an FP32 island
    (the output is then FP32)."""
    compute = w.compute
    encoded = _encode(g, config, compute)
    seg = Segmentation(g, encoded, resolution, batch, config.semantic_nc)
    start = config.start_size(resolution)
    if config.use_vae:
        z = g.op("Cast", [STYLE], to=compute) if compute != FLOAT else STYLE
        x = g.op("Gemm", [z, w("fc.weight"), w("fc.bias")], transB=1)
        x = g.op("Reshape", [x, g.const("start_shape", np.array([batch, 16 * config.ngf, *start], np.int64))])
    else:
        x = w.conv(seg.at(start), "fc", pad=1)
    names = list(config.widths())
    split = len(names) - len(last_blocks(config, fp32_tail if compute != FLOAT else 0))
    x, size = _blocks(g, w, x, seg, names[:split], start, config)
    if split < len(names):
        with g.fp32_island():  # the one-hot map is exact in any type: its FP16 form is cast
            seg = Segmentation(g, g.op("Cast", [encoded], to=FLOAT), resolution, batch, config.semantic_nc)
            x, size = _blocks(g, w.in_fp32(), g.op("Cast", [x], to=FLOAT), seg, names[split:], size, config)
    return x


def last_blocks(config: SPADEConfig, count: int) -> list[str]:
    """The names of the trunk's last ``count`` residual blocks (every block where it has fewer)."""
    names = list(config.widths())
    return names[max(0, len(names) - count):]


def _blocks(g: GraphBuilder, w: GraphWeights, x: str, seg: Segmentation, names: list[str], size: tuple[int, int],
            config: SPADEConfig) -> tuple[str, tuple[int, int]]:
    """These residual blocks in order, each after its x2 upsampling where it has one; the output and its size."""
    upsampled = upsampled_after(config)
    for name in names:
        if name in upsampled:
            size = (size[0] * 2, size[1] * 2)
            x = g.op("Resize", [x, "", g.const("twice", np.array([1, 1, 2, 2], np.float32))], **LEGACY_NEAREST)
        x = _resblock(g, w, x, seg.at(size), name, config)
    return x, size


def _encode(g: GraphBuilder, config: SPADEConfig, compute: int) -> str:
    """One-hot (+ don't-care: ids label_nc and 255) (+ instance edges), FP32, then cast to the compute type."""
    ids = g.op("Cast", [LABELS], to=FLOAT)
    classes = g.const("class_ids", np.arange(config.label_nc, dtype=np.float32).reshape(1, -1, 1, 1))
    channels = [g.op("Cast", [g.op("Equal", [ids, classes])], to=FLOAT)]
    if config.contain_dontcare_label:
        dontcare = [g.op("Cast", [g.op("Equal", [ids, g.const(f"id_{i}", np.array(i, np.float32))])], to=FLOAT)
                    for i in (config.label_nc, VOID)]
        channels.append(g.op("Max", dontcare))
    if config.instances:
        channels.append(instance_edges_graph(g))
    seg = g.op("Concat", channels, axis=1) if len(channels) > 1 else channels[0]
    return g.op("Cast", [seg], to=compute) if compute != FLOAT else seg


def _spade(w: GraphWeights, x: str, seg: str, prefix: str, config: SPADEConfig) -> str:
    return spade_modulation(w, x, seg, prefix, "param_free_norm", config.param_free_norm, config.kernel_size // 2)


def _resblock(g: GraphBuilder, w: GraphWeights, x: str, seg: str, name: str, config: SPADEConfig) -> str:
    if f"{name}.conv_s.weight" in w.weights:
        shortcut = g.op("Conv", [_spade(w, x, seg, f"{name}.norm_s", config), w(f"{name}.conv_s.weight")],
                        kernel_shape=[1, 1])
    else:
        shortcut = x
    dx = w.conv(g.op("LeakyRelu", [_spade(w, x, seg, f"{name}.norm_0", config)], alpha=LEAK), f"{name}.conv_0",
                pad=1)
    dx = w.conv(g.op("LeakyRelu", [_spade(w, dx, seg, f"{name}.norm_1", config)], alpha=LEAK), f"{name}.conv_1",
                pad=1)
    return g.op("Add", [shortcut, dx])
