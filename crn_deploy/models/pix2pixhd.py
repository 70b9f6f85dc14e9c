"""pix2pixHD's generator (Wang et al., CVPR 2018; NVIDIA/pix2pixHD), torch side, as its official code
computes it at inference (docs/families/pix2pixhd.md): the reference model, the checkpoint reader and the
ONNX graph writer. The config and presets are ``crn_deploy/families/pix2pixhd.py``.

The reference model is laid out module for module like the official ``nn.Sequential`` models, so
``latest_net_G.pth`` (``torch.save(net.state_dict())``: keys ``model.1.weight`` ... and, for the local
enhancer, ``model1_1.*`` / ``model1_2.*``) loads with ``load_state_dict`` as it is.

Input as the official ``encode_input`` builds it: one-hot of ``label_nc`` label ids (Cityscapes
``labelIds``, 0..33, not train ids), then the instance edge map as the last channel. Ids >= label_nc
(the official code would fail on them) give an all-zero one-hot. Output as the official
``tensor2im``: ``(x + 1) / 2 * 255``, clipped, then **truncated** to uint8.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..families import LABELS
from ..families.pix2pixhd import PIX2PIXHD, Pix2PixHDConfig
from ..graph import FLOAT, GraphBuilder, compute_types, model_of
from ..precisions import Precision
from ..sizes import Sizes
from .registry import LoadRequest, ModelFamily
from .shared import (
    INSTANCE_NORM_EPS, GraphWeights, InstanceNormFP32, instance_edges, instance_edges_graph, instance_norm_fp32,
    tensor2im_graph, to_uint8_images,
)
from .state import check_fits, opt_txt_near


# reference model ------------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """``x + [ReflectionPad(1), Conv3x3, IN, ReLU, ReflectionPad(1), Conv3x3, IN](x)``; keys conv_block.{1,5}."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _norm(channels: int) -> nn.Module:
    return InstanceNormFP32(channels, affine=False, eps=INSTANCE_NORM_EPS)


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    """Conv3x3 stride 2, zero padding 1, IN, ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _norm(c_out), nn.ReLU(True)]


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    """ConvTranspose3x3 stride 2, padding 1, output_padding 1 (doubles the size exactly), IN, ReLU."""
    return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1), _norm(c_out), nn.ReLU(True)]


def _head(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, 7)]


def global_layers(input_nc: int, ngf: int, n_down: int, n_blocks: int) -> list[nn.Module]:
    """The official GlobalGenerator's ``model`` list, index for index."""
    layers = [*_head(input_nc, ngf), _norm(ngf), nn.ReLU(True)]
    for i in range(n_down):
        layers += _down(ngf << i, ngf << (i + 1))
    layers += [ResnetBlock(ngf << n_down) for _ in range(n_blocks)]
    for i in range(n_down, 0, -1):
        layers += _up(ngf << i, ngf << (i - 1))
    return layers + [*_head(ngf, 3), nn.Tanh()]


class Pix2PixHDGenerator(nn.Module):
    """uint8 label ids [N,1,H,W] (+ integer instance ids) -> uint8 RGB [N,H,W,3], as the artifacts do;
    ``generate`` is the official network itself: float input [N, input_nc, H, W] (one-hot + edges) ->
    tanh image [N, 3, H, W]."""

    def __init__(self, config: Pix2PixHDConfig) -> None:
        super().__init__()
        self.config = config
        c, levels = config, config.n_local_enhancers
        layers = global_layers(c.input_nc, c.ngf << levels, c.n_downsample_global, c.n_blocks_global)
        self.model = nn.Sequential(*(layers[:-3] if levels else layers))  # the enhancers replace the head
        for n in range(1, levels + 1):
            width = c.ngf << (levels - n)
            setattr(self, f"model{n}_1", nn.Sequential(*_head(c.input_nc, width), _norm(width), nn.ReLU(True),
                                                       *_down(width, width * 2)))
            upsample = [*(ResnetBlock(width * 2) for _ in range(c.n_blocks_local)), *_up(width * 2, width)]
            if n == levels:
                upsample += [*_head(c.ngf, 3), nn.Tanh()]
            setattr(self, f"model{n}_2", nn.Sequential(*upsample))

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.config.n_local_enhancers
        pyramid = [x]
        for _ in range(levels):  # average-pooled input pyramid, padding not counted
            pyramid.append(F.avg_pool2d(pyramid[-1], 3, stride=2, padding=1, count_include_pad=False))
        out = self.model(pyramid[-1])
        for n in range(1, levels + 1):
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(pyramid[levels - n]) + out)
        return out

    def encode(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ids [N,1,H,W] (+ integer instance ids [N,1,H,W]) -> float [N, input_nc, H, W]."""
        channels = torch.arange(self.config.label_nc, device=labels.device).view(1, -1, 1, 1)
        x = (labels.long() == channels).float()
        if self.config.instances:
            if instances is None:
                raise ValueError("this pix2pixHD model takes an instance map as well as the label map")
            x = torch.cat([x, instance_edges(instances)], dim=1)
        return x

    def forward(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """Without an instance map each label region is one instance (as the runtime does)."""
        if self.config.instances and instances is None:
            instances = labels.int()
        image = self.generate(self.encode(labels, instances).to(self.model[1].weight.dtype)).float()
        return to_uint8_images(image)


def random_init(model: Pix2PixHDGenerator, seed: int) -> Pix2PixHDGenerator:
    """Seeded weights that keep activations in range through many normalized layers (kaiming), with
    non-zero biases so that loading them is checked (they cancel in IN but not in the heads)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.weight[:, 0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
    return model


# checkpoints ----------------------------------------------------------------------------------
_GLOBAL_CONV = re.compile(r"^model\.(\d+)\.weight$")
_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.1\.weight$")
_ENHANCER = re.compile(r"^model(\d+)_1\.")
_UNSUPPORTED = {"netE": "--instance_feat / --label_feat feature encoder"}


def infer_config(state: dict[str, torch.Tensor], *, instances: bool = True,
                 path: str = "checkpoint") -> Pix2PixHDConfig:
    """global vs local, ngf, downsampling and block counts from the keys and shapes of an official
    ``latest_net_G.pth``. Whether the last input channel is the instance edge map cannot be read from
    the weights: ``instances`` says (the official default, on)."""
    if "model.1.weight" not in state:
        raise CheckpointError(f"{path} is not a pix2pixHD generator: no model.1.weight (found e.g. "
                              f"{', '.join(list(state)[:3])}); pass latest_net_G.pth, not the discriminator")
    levels = len({int(m.group(1)) for k in state if (m := _ENHANCER.match(k))})
    blocks = sorted(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    if not blocks:
        raise CheckpointError(f"{path}: no residual blocks (model.N.conv_block.1.weight) in a pix2pixHD generator")
    convs = {int(m.group(1)): state[k] for k in state if (m := _GLOBAL_CONV.match(k))}
    n_down = sum(1 for i, w in convs.items() if i < blocks[0] and w.shape[2:] == (3, 3))
    first = state["model1_1.1.weight"] if levels else state["model.1.weight"]
    input_nc = first.shape[1]
    label_nc = input_nc - int(instances)
    local_blocks = len({k.split(".")[1] for k in state if k.startswith(f"model{levels}_2.")
                        and k.endswith("conv_block.1.weight")}) if levels else 3
    return Pix2PixHDConfig(label_nc=label_nc, instances=instances, ngf=state["model.1.weight"].shape[0] >> levels,
                           n_downsample_global=n_down, n_blocks_global=len(blocks), n_local_enhancers=levels,
                           n_blocks_local=local_blocks)


def check_state(state: dict[str, torch.Tensor], config: Pix2PixHDConfig, path: str = "checkpoint") -> None:
    check_fits(state, Pix2PixHDGenerator(config), f"the pix2pixHD config {config.to_dict()}", path)


def refuse_feature_encoder(checkpoint: Path, opt: dict[str, str]) -> None:
    """The optional feature encoder (--instance_feat / --label_feat) feeds the generator encoded features
    as extra input channels: not supported, and its checkpoint would otherwise pass for more labels."""
    encoder = Path(checkpoint).with_name("latest_net_E.pth")
    flags = [f"--{k}" for k in ("instance_feat", "label_feat") if opt.get(k) == "True"]
    if flags or encoder.is_file():
        why = " and ".join(flags) if flags else f"{encoder.name} lies beside it"
        raise CheckpointError(f"{checkpoint} was trained with pix2pixHD's feature encoder ({why}), which crn-deploy "
                              "does not deploy; export a generator trained without --instance_feat/--label_feat")


def load_state(raw: dict[str, torch.Tensor], config: Pix2PixHDConfig | None, request: LoadRequest
               ) -> Pix2PixHDGenerator:
    """The reference model (eval, float32) from an official generator state_dict. The run's options
    (``request.options``: its opt.txt as load_checkpoint read it, --option flags) say whether instance maps were
    used (``no_instance``)."""
    path = Path(request.path)
    opt = request.options
    refuse_feature_encoder(path, opt)
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    config = config or infer_config(state, instances=opt.get("no_instance") != "True", path=str(path))
    check_state(state, config, str(path))
    model = Pix2PixHDGenerator(config)
    model.load_state_dict(state)
    return model.eval()


# Sequential indices, as the official trainer saves them: model.1.weight, model1_1.4.bias
_KEY = re.compile(r"^(module\.)?model(\d+_\d+)?\.\d+\.")


def recognises(state: dict) -> bool:
    return all(_KEY.match(k) for k in state)


# ONNX graph -------------------------------------------------------------------------------------


def graph_parts(config: Pix2PixHDConfig, weights: dict, sizes: Sizes, precision: Precision,
                batch: int = 1) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The generator as one static ONNX graph (weights apart, as ``graph.write_model`` and ``assemble`` take them):
    uint8 ``labels`` [N,1,H,W] (+ int32 ``instances`` [N,1,H,W]) in, uint8 RGB ``image`` [N,H,W,3] out.

    The one-hot, the instance edges and the local enhancer's input pyramid in FP32 (cast once per level);
    convolutions, padding, ReLU and tanh in the compute type; every InstanceNormalization in FP32 (its
    statistics run over up to 2 M pixels per channel), with [C] scale and bias, the op TensorRT's parser
    maps to its native normalization layer; the ``tensor2im`` tail in FP32. ``weights``: name -> array."""
    resolution = sizes.labels
    compute = compute_types(precision)[0]
    g = GraphBuilder()
    levels = config.n_local_enhancers
    pyramid = [_encode(g, config)]
    for _ in range(levels):
        pyramid.append(g.op("AveragePool", [pyramid[-1]], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                            count_include_pad=0))
    pyramid = [g.op("Cast", [level], to=compute) if compute != FLOAT else level for level in pyramid]
    w = GraphWeights(g, weights, precision)
    x = _global_trunk(g, w, pyramid[-1], config, with_head=not levels)
    for n in range(1, levels + 1):
        y = _conv_norm_relu(g, w, _reflect(g, pyramid[levels - n], 3), f"model{n}_1.1")
        y = g.op("Add", [_conv_norm_relu(g, w, y, f"model{n}_1.4", stride=2, pad=1), x])
        for j in range(config.n_blocks_local):
            y = _resblock(g, w, y, f"model{n}_2.{j}")
        x = _conv_norm_relu(g, w, y, f"model{n}_2.{config.n_blocks_local}", transpose=True)
        if n == levels:
            x = g.op("Tanh", [w.conv(_reflect(g, x, 3), f"model{n}_2.{config.n_blocks_local + 4}")])
    tensor2im_graph(g, x, compute)
    name = f"pix2pixhd_{resolution[0]}x{resolution[1]}_{precision.name}"
    return model_of(g, name, PIX2PIXHD.inputs(config, resolution, batch),
                    PIX2PIXHD.output(config, resolution, batch)), g.initializers


def _encode(g: GraphBuilder, config: Pix2PixHDConfig) -> str:
    """One-hot of the label ids (ids >= label_nc light no channel), then the instance edges; FP32."""
    ids = g.op("Cast", [LABELS], to=FLOAT)
    classes = g.const("class_ids", np.arange(config.label_nc, dtype=np.float32).reshape(1, -1, 1, 1))
    onehot = g.op("Cast", [g.op("Equal", [ids, classes])], to=FLOAT)
    if not config.instances:
        return onehot
    return g.op("Concat", [onehot, instance_edges_graph(g)], axis=1)


def _reflect(g: GraphBuilder, x: str, p: int) -> str:
    return g.op("Pad", [x, g.const(f"reflect_{p}", np.array([0, 0, p, p, 0, 0, p, p], np.int64))], mode="reflect")


def _conv_norm_relu(g: GraphBuilder, w: GraphWeights, x: str, prefix: str, *, stride: int = 1, pad: int = 0,
                    transpose: bool = False, relu: bool = True) -> str:
    channels = np.shape(w.weights[f"{prefix}.weight"])[1 if transpose else 0]
    y = instance_norm_fp32(g, w.conv(x, prefix, stride, pad, transpose), channels, w.compute)
    return g.op("Relu", [y]) if relu else y


def _resblock(g: GraphBuilder, w: GraphWeights, x: str, prefix: str) -> str:
    y = _conv_norm_relu(g, w, _reflect(g, x, 1), f"{prefix}.conv_block.1")
    y = _conv_norm_relu(g, w, _reflect(g, y, 1), f"{prefix}.conv_block.5", relu=False)
    return g.op("Add", [x, y])


def _global_trunk(g: GraphBuilder, w: GraphWeights, x: str, config: Pix2PixHDConfig, with_head: bool) -> str:
    """The official GlobalGenerator by its Sequential indices (module i holds keys model.i.*)."""
    x = _conv_norm_relu(g, w, _reflect(g, x, 3), "model.1")
    i = 4
    for _ in range(config.n_downsample_global):
        x = _conv_norm_relu(g, w, x, f"model.{i}", stride=2, pad=1)
        i += 3
    for _ in range(config.n_blocks_global):
        x = _resblock(g, w, x, f"model.{i}")
        i += 1
    for _ in range(config.n_downsample_global):
        x = _conv_norm_relu(g, w, x, f"model.{i}", transpose=True)
        i += 3
    return g.op("Tanh", [w.conv(_reflect(g, x, 3), f"model.{i + 1}")]) if with_head else x


MODEL = ModelFamily(PIX2PIXHD, Pix2PixHDGenerator, random_init, graph_parts, recognises, load_state, opt_txt_near)
