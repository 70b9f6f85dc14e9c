"""SPADE's generator (Park et al., CVPR 2019; NVlabs/SPADE, "GauGAN"), torch side, as its official
``test.py`` computes it (docs/families/spade.md): the reference model, the checkpoint reader and the ONNX
graph writer. The config and presets are the contract side (``crn_deploy/families/spade.py``).

Inference semantics that decide the numbers:
- eval mode: the parameter-free batch norm uses its running statistics (eps 1e-5);
- spectral norm at inference divides ``weight_orig`` by ``sigma = u . (W v)`` with the **stored**
  ``weight_u`` / ``weight_v`` (no power iteration): folded once at load, in FP32, as torch computes it;
- every SPADE module resizes the **full-resolution** segmentation map to its input's size with torch's
  legacy ``nearest`` (source pixel ``floor(dst * in / out)``): ONNX ``Resize`` nearest, asymmetric, floor;
- input as ``Pix2PixModel.preprocess_input``: one-hot of ``label_nc`` (+1 don't-care) channels, where the
  loader's "unknown" 255 becomes the don't-care id ``label_nc``; then the instance edge map;
- output as ``util.tensor2im``: ``(x + 1) / 2 * 255``, clipped, truncated.

The reference model holds the folded weights under the official names (``fc``, ``head_0.conv_0.weight``,
``head_0.norm_0.param_free_norm.running_mean``, ``...mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``,
``conv_img``), so that graph writer and NumPy reference read one state_dict.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from functools import partial

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UsageError
from ..families import LABELS, STYLE, config_fields_from_options
from ..families.spade import SPADE, SPADEConfig
from ..graph import FLOAT, GraphBuilder, model_of
from ..precisions import Precision
from ..sizes import Sizes
from .registry import LoadRequest, ModelFamily
from .shared import (
    LEGACY_NEAREST, SPADE_LEAK, GraphWeights, Segmentation, SPADEModule, SPADEResidualBlock, instance_edges,
    instance_edges_graph, parameter_free_norm, spade_modulation, tensor2im_graph, to_uint8_images,
)
from .state import check_fits, opt_txt_near
VOID = 255  # the loader's "unknown" label, which it maps to label_nc (the don't-care channel)
LEAK = SPADE_LEAK
OFFICIAL_CROP_SIZE, OFFICIAL_ASPECT_RATIO = 512, 1.0  # options/base_options.py defaults


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


def random_init(model: SPADEGenerator, seed: int) -> SPADEGenerator:
    """Seeded weights that keep activations in range (kaiming-scaled convs, small gamma and beta so that
    the modulation stays near 1), non-zero biases, and batch-norm running statistics that differ from
    the identity (so that loading and applying them is checked)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                gain = 0.5 if name.endswith(("mlp_gamma", "mlp_beta")) else 2.0
                module.weight.normal_(0.0, (gain / module.weight[0].numel()) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 4.0, generator=generator)
                module.num_batches_tracked.fill_(1000)
    return model


# checkpoints ----------------------------------------------------------------------------------
_MOST_KEY = re.compile(r"^up_4\.")


def fold_spectral_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weight = weight_orig / sigma`` with ``sigma = u . (W_mat v)`` from the stored vectors, in FP32 as
    torch's ``spectral_norm`` computes it in eval mode; other keys pass through."""
    folded = {}
    for key, value in state.items():
        if key.endswith((".weight_u", ".weight_v")):
            continue
        if key.endswith(".weight_orig"):
            prefix = key[: -len("_orig")]
            weight = value.float()
            u, v = state[prefix + "_u"].float(), state[prefix + "_v"].float()
            sigma = torch.dot(u, torch.mv(weight.reshape(weight.shape[0], -1), v))
            folded[prefix] = weight / sigma
        else:
            folded[key] = value
    return folded


def weights_facts(state: dict[str, torch.Tensor], path: str) -> dict:
    """What an official ``latest_net_G.pth`` tells of its architecture by itself."""
    first = "head_0.conv_0.weight_orig" if "head_0.conv_0.weight_orig" in state else "head_0.conv_0.weight"
    shared = "head_0.norm_0.mlp_shared.0.weight"
    if first not in state or shared not in state or "conv_img.weight" not in state:
        raise CheckpointError(f"{path} is not a SPADE generator: no head_0.conv_0 / head_0.norm_0.mlp_shared / "
                              f"conv_img (found e.g. {', '.join(list(state)[:3])}); pass latest_net_G.pth, not the "
                              "discriminator or the encoder")
    facts = {"ngf": state[first].shape[0] // 16, "nhidden": state[shared].shape[0],
             "use_vae": state["fc.weight"].ndim == 2, "semantic_nc": state[shared].shape[1]}
    if facts["use_vae"]:
        facts["z_dim"] = state["fc.weight"].shape[1]
    if any(_MOST_KEY.match(k) for k in state):
        facts["num_upsampling_layers"] = "most"
    kind = "syncbatch" if "head_0.norm_0.param_free_norm.running_mean" in state else "instance"
    facts["norm_G"] = f"{'spectral' if first.endswith('_orig') else ''}spade{kind}{state[shared].shape[-1]}x" \
                      f"{state[shared].shape[-1]}"
    return facts


def config_from(state: dict[str, torch.Tensor], options: dict, path: str) -> SPADEConfig:
    """The config from the weights and the run's options; what neither says is refused, not guessed."""
    facts = weights_facts(state, path)
    given = {**{k: v for k, v in facts.items() if k != "semantic_nc"}, **options}
    fix = ("pass the run's opt.txt (--opt; read by itself when it lies beside the checkpoint), a --preset "
           f"({', '.join(SPADE.presets)}), or --option {{}}")
    if given.get("num_upsampling_layers", "most") != "most" and facts.get("num_upsampling_layers") == "most":
        raise CheckpointError(f"{path} has an up_4 block (num_upsampling_layers most), its options say "
                              f"{given['num_upsampling_layers']}")
    if "num_upsampling_layers" not in given:
        raise UsageError(f"{path}: SPADE's num_upsampling_layers (normal or more) is not recorded in the weights; "
                         + fix.format("num_upsampling_layers=normal|more"))
    if not {"label_nc", "contain_dontcare_label", "instances"} <= set(given):
        missing = ", ".join(k if k != "instances" else "no_instance" for k in
                            ("label_nc", "contain_dontcare_label", "instances") if k not in given)
        raise UsageError(f"{path}: its {facts['semantic_nc']} input channels do not say how many are labels, "
                         f"don't-care and instance edges ({missing} unknown); "
                         + fix.format("label_nc=N --option contain_dontcare_label=True|False --option "
                                      "no_instance=True|False"))
    if facts["use_vae"] and not {"crop_size", "aspect_ratio"} <= set(given):
        raise UsageError(f"{path}: a --use_vae model's output size is fixed by crop_size and aspect_ratio, which "
                         "the weights do not record; " + fix.format("crop_size=W --option aspect_ratio=W/H"))
    if not facts["use_vae"]:  # they only choose the default --res: the official option defaults
        given.setdefault("crop_size", OFFICIAL_CROP_SIZE)
        given.setdefault("aspect_ratio", OFFICIAL_ASPECT_RATIO)
    defaults = SPADEConfig()
    return SPADEConfig(**{k: given.get(k, getattr(defaults, k)) for k in asdict(defaults)})


def check_state(state: dict[str, torch.Tensor], config: SPADEConfig, path: str = "checkpoint") -> None:
    check_fits(state, SPADEGenerator(config), f"the SPADE config {config.to_dict()}", path,
               "Check the --preset / --opt / --option values against the run that trained it")


def load_state(state: dict[str, torch.Tensor], config: SPADEConfig | None, request: LoadRequest) -> SPADEGenerator:
    """The reference model (eval, float32) from an official generator state_dict (``module.`` stripped).
    ``request.options``: official option names and values (the run's ``opt.txt``, ``--option`` flags)."""
    path = str(request.path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if config is None:
        options = config_fields_from_options(SPADEConfig, request.options, "opt.txt/--opt/--option")
        config = config_from(state, options, path)
    folded = fold_spectral_norm(state)
    check_state(folded, config, path)
    model = SPADEGenerator(config)
    model.load_state_dict(folded)
    return model.eval()


def recognises(state: dict) -> bool:
    """SPADE's generator keys; a pixel-wise head instead of ``conv_img`` is PosGen's."""
    keys = {k.removeprefix("module.") for k in state}
    return "conv_img.weight" in keys and any(k.startswith("head_0.norm_0.mlp_shared.") for k in keys) and \
        not any(k.startswith("pixel_mlp.") for k in keys)


# ONNX graph -------------------------------------------------------------------------------------
def graph_parts(config: SPADEConfig, weights: dict, sizes: Sizes, precision: Precision,
                batch: int = 1) -> tuple[onnx.ModelProto, list[onnx.TensorProto]]:
    """The generator as one static ONNX graph (weights apart): uint8 ``labels`` [N,1,H,W] (+ int32
    ``instances``) (+ float32 ``z`` [N, z_dim]) in, uint8 RGB ``image`` [N,H,W,3] out.

    The one-hot and edges in FP32, cast once; every resize of the segmentation map and of the features
    (static sizes), the convolutions, the modulation and the activations in the compute type; each
    batch norm's running statistics applied in FP32 (``BatchNormalization`` between two Casts; instance
    norm likewise); the ``tensor2im`` tail in FP32. The weights arrive spectral-norm-folded (FP32)."""
    resolution = sizes.labels
    g = GraphBuilder()
    w = GraphWeights(g, weights, precision)
    x = trunk_graph(g, w, config, resolution, batch)
    x = g.op("Tanh", [w.conv(g.op("LeakyRelu", [x], alpha=LEAK), "conv_img", pad=1)])
    tensor2im_graph(g, x, w.compute)
    name = f"spade_{resolution[0]}x{resolution[1]}_{precision.name}"
    return model_of(g, name, SPADE.inputs(config, resolution, batch), SPADE.output(config, resolution, batch)), \
        g.initializers


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


MODEL = ModelFamily(SPADE, SPADEGenerator, random_init, graph_parts, recognises, load_state, opt_txt_near)
