"""Map the authors' released TensorFlow CRN variables onto the reference model (docs/families/crn.md).

``g_{sp}_conv{1,2}/weights`` [3,3,Cin,d] (HWIO) -> ``blocks.{i}.conv{1,2}.weight`` [d,Cin,3,3];
``g_{sp}_conv{1,2}/LayerNorm/{gamma,beta}`` -> ``blocks.{i}.norm{1,2}.{weight,bias}``;
``g_{last}_conv100/{weights,biases}`` -> ``head.{weight,bias}``. The input channel order
(features, then layout) and the 3k output channel order (image j's colour c at k*c+j) are the
released code's and ours alike, so no channel is permuted. Adam slots and the optimizer's
power accumulators are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..families.crn import BASE_RESOLUTION, CRN, PRESETS, RELEASED_PRESETS, CRNConfig
from ..errors import CheckpointError
from .registry import LoadRequest
from .tf_bundle import TensorBundle, TensorInfo

_CRN_VARIABLE = re.compile(r"^g_(\d+)_conv(1|2|100)/(weights|biases|LayerNorm/gamma|LayerNorm/beta)$")


@dataclass
class TFArchitecture:
    config: CRNConfig
    presets: list[str]  # released presets this architecture is
    variables: list[TensorInfo]  # the CRN's own variables, in module order
    ignored: list[TensorInfo]  # optimizer slots and the like


def crn_variables(bundle: TensorBundle) -> tuple[dict[str, TensorInfo], list[TensorInfo]]:
    ours = {name: info for name, info in bundle.tensors.items() if _CRN_VARIABLE.match(name)}
    ignored = [info for name, info in bundle.tensors.items() if name not in ours]
    return ours, ignored


def infer_architecture(bundle: TensorBundle) -> TFArchitecture:
    """Module heights, widths, classes and k from the variables' shapes (reads the index only)."""
    ours, ignored = crn_variables(bundle)
    heights = sorted(int(m.group(1)) for name in ours if (m := _CRN_VARIABLE.match(name)) and m.group(2) == "1"
                     and m.group(3) == "weights")
    heads = [name for name in ours if name.endswith("_conv100/weights")]
    if not heights or len(heads) != 1:
        raise CheckpointError(f"{bundle.index_path} is not a CRN checkpoint: no g_<sp>_conv1/weights and "
                              f"g_<sp>_conv100/weights variables (it holds e.g. {', '.join(list(bundle.tensors)[:4])})")
    expected = [heights[0] << i for i in range(len(heights))]
    if heights != expected or heights[0] != BASE_RESOLUTION[0]:
        raise CheckpointError(f"{bundle.index_path}: module heights {heights} are not {BASE_RESOLUTION[0]}, 8, 16, ...")
    widths = tuple(ours[f"g_{sp}_conv1/weights"].shape[3] for sp in heights)
    layout_channels = ours[f"g_{heights[0]}_conv1/weights"].shape[2]
    out_channels = ours[heads[0]].shape[3]
    if out_channels % 3:
        raise CheckpointError(f"{bundle.index_path}: {heads[0]} has {out_channels} output channels, not 3k")
    config = CRNConfig(num_classes=layout_channels - 1, widths=widths, k=out_channels // 3)
    order = [f"g_{sp}_conv{j}/{part}" for sp in heights for j in (1, 2)
             for part in ("weights", "LayerNorm/gamma", "LayerNorm/beta")]
    order += [heads[0], heads[0].replace("/weights", "/biases")]
    missing = [name for name in order if name not in ours]
    if missing:
        raise CheckpointError(f"{bundle.index_path} lacks CRN variables: {', '.join(missing[:6])}")
    presets = [name for name in RELEASED_PRESETS if PRESETS[name] == config]
    return TFArchitecture(config, presets, [ours[name] for name in order], ignored)


def state_dict_from_bundle(bundle: TensorBundle, arch: TFArchitecture) -> dict[str, np.ndarray]:
    """Read every CRN variable (checksums verified) in the reference model's names and layouts."""
    state = {}
    heights = [BASE_RESOLUTION[0] << i for i in range(arch.config.num_modules)]
    for i, sp in enumerate(heights):
        for j in (1, 2):
            scope = f"g_{sp}_conv{j}"
            state[f"blocks.{i}.conv{j}.weight"] = bundle.read(f"{scope}/weights").transpose(3, 2, 0, 1)
            state[f"blocks.{i}.norm{j}.weight"] = bundle.read(f"{scope}/LayerNorm/gamma")
            state[f"blocks.{i}.norm{j}.bias"] = bundle.read(f"{scope}/LayerNorm/beta")
    head = f"g_{heights[-1]}_conv100"
    state["head.weight"] = bundle.read(f"{head}/weights").transpose(3, 2, 0, 1)
    state["head.bias"] = bundle.read(f"{head}/biases")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def import_tf_checkpoint(prefix: Path):
    """The released checkpoint as a ``LoadedCheckpoint`` (torch model, Cityscapes label set)."""
    import torch

    from ..labels import CITYSCAPES
    from .checkpoint import LoadedCheckpoint
    from .registry import model_family

    crn = model_family(CRN.name)
    bundle = TensorBundle(prefix)
    arch = infer_architecture(bundle)
    state = {k: torch.from_numpy(v) for k, v in state_dict_from_bundle(bundle, arch).items()}
    model = crn.load_state(state, arch.config, LoadRequest(Path(bundle.index_path)))
    source = {"kind": "tensorflow", "prefix": str(Path(bundle.prefix).resolve())}
    return LoadedCheckpoint(model.eval(), CITYSCAPES, source, CRN.name), arch


def inspect_tf_checkpoint(prefix: Path) -> TFArchitecture:
    """The architecture a released checkpoint holds, from its index alone."""
    return infer_architecture(TensorBundle(prefix))
