"""OASIS's generator (boschresearch/OASIS, ICLR 2021), torch side, as its official ``test.py`` computes it
(docs/families/oasis.md): the reference model, the checkpoint reader and the ONNX graph writer. The config
and presets are ``crn_deploy/families/oasis.py``.

What decides the numbers:
- the input: the one-hot of the label ids (``semantic_nc`` channels, ids mapped as the dataset's loader
  maps them), and with 3D noise one z [z_dim] per picture broadcast over the map and concatenated
  **before** the one-hot; that map feeds the first resize + ``fc`` and every SPADE module;
- the first resize: legacy nearest to (H, W) / 32 (the official ``compute_latent_vector_size`` returns
  (h, w) into variables named (W, H) and passes them on as (W, H): the swaps cancel);
- six residual blocks, nearest x2 after the first five, LeakyReLU 0.2, ``conv_img``, tanh; learned 1x1
  shortcuts without bias where the width changes; spectral norm on conv_0, conv_1 and conv_s only,
  folded once from the stored u and v;
- SPADE: a parameter-free batch norm with running statistics (eps 1e-5; or instance norm), the map
  resized legacy-nearest from full resolution at every module, ``x * (1 + gamma) + beta``;
- the picture: ``(x + 1) / 2 * 255`` cast to uint8 (truncated; tanh keeps it in range).

The reference model holds the folded weights under the official names (``fc``, ``body.{i}.conv_0.weight``,
``body.{i}.norm_0.first_norm.running_mean``, ``...mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``, ``conv_img``).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UsageError
from ..families import LABELS, STYLE, config_fields_from_options
from ..families.oasis import OASIS, OASISConfig, dataset_options
from ..graph import FLOAT, GraphBuilder, model_of
from ..precisions import Precision
from ..sizes import Sizes
from .registry import LoadRequest, ModelFamily
from .shared import (
    LEGACY_NEAREST, SPADE_LEAK, GraphWeights, Segmentation, SPADEModule, SPADEResidualBlock, parameter_free_norm,
    fold_spectral_norm, spade_modulation, spade_random_init, tensor2im_graph, to_uint8_images,
)
from .state import check_fits, opt_txt_near

LEAK = SPADE_LEAK
UNKNOWN = 255  # the loaders' unknown id (COCO-Stuff files)


# reference model ------------------------------------------------------------------------------
def spade_module(config: OASISConfig, channels: int) -> SPADEModule:
    """The official ``norms.SPADE`` of this config (its norm named ``first_norm``; the map it reads holds the
    3D noise channels too)."""
    return SPADEModule(parameter_free_norm(config.param_free_norm, channels), "first_norm",
                       config.semantic_nc + config.noise_channels, config.nhidden, channels, config.spade_ks)


class OASISGenerator(nn.Module):
    """uint8 label ids [N,1,H,W] (+ float32 noise z [N, z_dim] with 3D noise) -> uint8 RGB [N,H,W,3], as the
    artifacts do; ``generate`` is the official network on its float input."""

    def __init__(self, config: OASISConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels_G
        self.fc = nn.Conv2d(config.semantic_nc + config.noise_channels, 16 * ch, 3, padding=1)
        self.body = nn.ModuleList(SPADEResidualBlock(fin, fout, partial(spade_module, config))
                                  for fin, fout in config.widths())
        self.conv_img = nn.Conv2d(ch, 3, 3, padding=1)

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        """uint8 ids [N,1,H,W] -> float one-hot [N, semantic_nc, H, W], ids mapped as the dataset's loader maps
        them; ids past the channels light none (the official scatter would fail on them)."""
        config = self.config
        ids = labels.long()
        if config.shift_ids:  # COCO-Stuff: class k is channel k + 1, the unknown id channel 0
            ids = torch.where(ids < config.label_nc, ids + 1, torch.zeros_like(ids))
        channels = torch.arange(config.semantic_nc, device=ids.device).view(1, -1, 1, 1)
        return (ids == channels).float()

    def generate(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """seg: float one-hot [N, semantic_nc, H, W]; z: [N, z_dim] with 3D noise -> tanh image [N, 3, H, W]."""
        if z is not None:
            seg = torch.cat([z[:, :, None, None].expand(-1, -1, *seg.shape[2:]), seg], dim=1)
        x = self.fc(F.interpolate(seg, size=self.config.start_size(tuple(seg.shape[2:]))))
        for i, block in enumerate(self.body):
            x = block(x, seg)
            if i < len(self.body) - 1:
                x = F.interpolate(x, scale_factor=2)
        return torch.tanh(self.conv_img(F.leaky_relu(x, LEAK)))

    def forward(self, labels: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """``inputs``: the noise z [N, z_dim] where the model was trained with 3D noise."""
        if not self.config.no_3dnoise and not inputs:
            raise ValueError("this OASIS model takes 3D noise: pass z [N, z_dim]")
        dtype = self.conv_img.weight.dtype
        z = inputs[0].to(dtype) if inputs and not self.config.no_3dnoise else None
        return to_uint8_images(self.generate(self.encode(labels).to(dtype), z).float())


def random_init(model: OASISGenerator, seed: int) -> OASISGenerator:
    """Seeded weights as SPADE's (``spade_random_init``), with smaller biases."""
    return spade_random_init(model, seed, bias_std=0.05)


# checkpoints ----------------------------------------------------------------------------------
_BLOCK = re.compile(r"^body\.(\d+)\.")


def recognises(state: dict) -> bool:
    """OASIS's generator keys: a ``body`` list of SPADE blocks whose norms are ``first_norm`` ... or, for
    instance norm (no statistics), ``body.N.norm_0.mlp_shared`` beside ``conv_img``."""
    keys = {k.removeprefix("module.") for k in state}
    return "conv_img.weight" in keys and any(k.startswith("body.0.norm_0.mlp_shared.") for k in keys)


def weights_facts(state: dict[str, torch.Tensor], path: str) -> dict:
    """What an official ``*_EMA.pth`` / ``*_G.pth`` tells of its architecture by itself."""
    shared = "body.0.norm_0.mlp_shared.0.weight"
    if shared not in state or "fc.weight" not in state or "conv_img.weight" not in state:
        raise CheckpointError(f"{path} is not an OASIS generator: no fc / body.0.norm_0.mlp_shared / conv_img (found "
                              f"e.g. {', '.join(list(state)[:3])}); pass latest_EMA.pth, not the discriminator")
    blocks = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    kind = "syncbatch" if "body.0.norm_0.first_norm.running_mean" in state else "instance"
    return {"channels_G": state["fc.weight"].shape[0] // 16, "num_res_blocks": blocks, "param_free_norm": kind,
            "spade_ks": state[shared].shape[-1], "nhidden": state[shared].shape[0],
            "inputs": state["fc.weight"].shape[1]}


def config_from(state: dict[str, torch.Tensor], options: dict, path: str) -> OASISConfig:
    """The config from the weights and the run's options; what neither says is refused, not guessed."""
    facts = weights_facts(state, path)
    inputs = facts.pop("inputs")
    given = {**facts, **options}
    fix = ("pass the run's opt.txt (--opt; read by itself when it lies beside the checkpoint's models/ folder), a "
           f"--preset ({', '.join(OASIS.presets)}), or --option {{}}")
    if "label_nc" not in given:
        raise UsageError(f"{path}: its {inputs} input channels do not say how many are labels and how many noise; "
                         + fix.format("dataset_mode=cityscapes|ade20k|coco (or label_nc=N)"))
    defaults = OASISConfig()
    config = OASISConfig(**{k: given.get(k, getattr(defaults, k)) for k in asdict(defaults)})
    noise = inputs - config.semantic_nc  # with the label count known, the shapes settle what the options leave open
    if "no_3dnoise" not in given and noise >= 0:
        settled = {"no_3dnoise": noise == 0, **({"z_dim": noise} if noise and "z_dim" not in given else {})}
        config = OASISConfig(**{**asdict(config), **settled})
    if config.semantic_nc + config.noise_channels != inputs:
        raise CheckpointError(f"{path}: fc takes {inputs} channels, but {config.semantic_nc} labels "
                              f"{'without noise' if config.no_3dnoise else f'and z_dim {config.z_dim}'} make "
                              f"{config.semantic_nc + config.noise_channels}; "
                              + fix.format("no_3dnoise=True|False --option z_dim=N"))
    return config


def run_options_file(path: Path) -> Path | None:
    """The training run's opt.txt: OASIS keeps it in ``checkpoints/<name>/``, its weights in ``models/`` below."""
    return opt_txt_near(path, levels_up=1)


def load_state(raw: dict[str, torch.Tensor], config: OASISConfig | None, request: LoadRequest) -> OASISGenerator:
    """The reference model (eval, float32) from an official generator state_dict (``latest_EMA.pth``, the one
    test.py loads; ``latest_G.pth`` with ``--no_EMA``)."""
    path = str(request.path)
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    if config is None:
        options = config_fields_from_options(OASISConfig, _official(request.options), "opt.txt/--opt/--option")
        config = config_from(state, options, path)
    folded = fold_spectral_norm(state)
    check_fits(folded, OASISGenerator(config), f"the OASIS config {config.to_dict()}", path,
               "Check the --preset / --opt / --option values against the run that trained it")
    model = OASISGenerator(config)
    model.load_state_dict(folded)
    return model.eval()


def _official(options: dict[str, str]) -> dict[str, str]:
    """The run's options with what its ``dataset_mode``'s loader sets (label count, crop, aspect, id mapping)
    added where the options do not say otherwise."""
    fields = {k: v for k, v in options.items() if k != "dataset_mode"}
    if "dataset_mode" in options:
        fields.update({k: str(v) for k, v in dataset_options(options["dataset_mode"]).items() if k not in fields})
    return fields


# ONNX graph -------------------------------------------------------------------------------------
def graph_parts(config: OASISConfig, weights: dict, sizes: Sizes, precision: Precision,
                batch: int = 1) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The generator as one static ONNX graph (weights apart): uint8 ``labels`` [N,1,H,W] (+ float32 noise ``z``
    [N, z_dim]) in, uint8 RGB ``image`` [N,H,W,3] out.

    The one-hot in FP32, the noise broadcast over the map (Expand) and concatenated first, cast once; every
    resize (static sizes, legacy nearest), convolution, modulation and activation in the compute type; each
    norm's statistics in FP32 between two Casts; the picture tail in FP32. Weights arrive folded (FP32)."""
    resolution = sizes.labels
    g = GraphBuilder()
    w = GraphWeights(g, weights, precision)
    channels = config.semantic_nc + config.noise_channels
    seg = Segmentation(g, _encode(g, config, batch, resolution, w.compute), resolution, batch, channels)
    size = config.start_size(resolution)
    x = w.conv(seg.at(size), "fc", pad=1)
    twice = g.const("twice", np.array([1, 1, 2, 2], np.float32))
    for i in range(config.num_res_blocks):
        x = _resblock(w, x, seg.at(size), f"body.{i}", config)
        if i < config.num_res_blocks - 1:
            size = (size[0] * 2, size[1] * 2)
            x = g.op("Resize", [x, "", twice], **LEGACY_NEAREST)
    x = g.op("Tanh", [w.conv(g.op("LeakyRelu", [x], alpha=LEAK), "conv_img", pad=1)])
    tensor2im_graph(g, x, w.compute)
    name = f"oasis_{resolution[0]}x{resolution[1]}_{precision.name}"
    return model_of(g, name, OASIS.inputs(config, resolution, batch), OASIS.output(config, resolution, batch)), \
        g.initializers


def _encode(g: GraphBuilder, config: OASISConfig, batch: int, resolution: tuple[int, int], compute: int) -> str:
    """[noise broadcast,] one-hot of the (loader-mapped) ids, FP32, then cast to the compute type."""
    ids = g.op("Cast", [LABELS], to=FLOAT)
    if config.shift_ids:  # class k to channel k + 1, ids past the labels (the unknown 255) to channel 0
        shifted = g.op("Add", [ids, g.const("one_id", np.array(1.0, np.float32))])
        known = g.op("Clip", [g.op("Sub", [g.const("past_labels", np.array(config.label_nc + 1, np.float32)), shifted]),
                              g.const("zero_id", np.array(0.0, np.float32)), "one_id"])  # 1 for a class, else 0
        ids = g.op("Mul", [shifted, known])
    classes = g.const("class_ids", np.arange(config.semantic_nc, dtype=np.float32).reshape(1, -1, 1, 1))
    seg = g.op("Cast", [g.op("Equal", [ids, classes])], to=FLOAT)
    if not config.no_3dnoise:
        z = g.op("Reshape", [STYLE, g.const("z_column", np.array([batch, config.z_dim, 1, 1], np.int64))])
        shape = g.const("noise_shape", np.array([batch, config.z_dim, *resolution], np.int64))
        seg = g.op("Concat", [g.op("Expand", [z, shape]), seg], axis=1)
    return g.op("Cast", [seg], to=compute) if compute != FLOAT else seg


def _resblock(w: GraphWeights, x: str, seg: str, name: str, config: OASISConfig) -> str:
    g, pad = w.g, config.spade_ks // 2
    kind = "instance" if config.param_free_norm == "instance" else "batch"

    def spade(y: str, norm: str) -> str:
        return spade_modulation(w, y, seg, f"{name}.{norm}", "first_norm", kind, pad)

    if f"{name}.conv_s.weight" in w.weights:
        shortcut = g.op("Conv", [spade(x, "norm_s"), w(f"{name}.conv_s.weight")], kernel_shape=[1, 1])
    else:
        shortcut = x
    dx = w.conv(g.op("LeakyRelu", [spade(x, "norm_0")], alpha=LEAK), f"{name}.conv_0", pad=1)
    dx = w.conv(g.op("LeakyRelu", [spade(dx, "norm_1")], alpha=LEAK), f"{name}.conv_1", pad=1)
    return g.op("Add", [shortcut, dx])


MODEL = ModelFamily(OASIS, OASISGenerator, random_init, graph_parts, recognises, load_state, run_options_file)
