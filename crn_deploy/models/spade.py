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

import onnx
import torch

from ..errors import CheckpointError, UsageError
from ..families import config_fields_from_options
from ..families.spade import SPADE, SPADEConfig
from ..graph import GraphBuilder, model_of
from ..precisions import Precision
from ..sizes import Sizes
from .registry import LoadRequest, ModelFamily
from .shared import GraphWeights, fold_spectral_norm, spade_random_init, tensor2im_graph
from .spade_trunk import LEAK, SPADEGenerator, trunk_graph
from .state import check_fits, opt_txt_near

OFFICIAL_CROP_SIZE, OFFICIAL_ASPECT_RATIO = 512, 1.0  # options/base_options.py defaults


# checkpoints ----------------------------------------------------------------------------------
_MOST_KEY = re.compile(r"^up_4\.")


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


MODEL = ModelFamily(SPADE, SPADEGenerator, spade_random_init, graph_parts, recognises, load_state, opt_txt_near)
