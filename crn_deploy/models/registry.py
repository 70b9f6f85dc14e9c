"""The torch side of each family, looked up by the family's name (``crn_deploy.families`` holds the
contract side): which checkpoints it recognises, how to load and randomly initialise its reference
model, and its ONNX graph writer. The exporter, ``load_checkpoint`` and the benchmark's reference
rows go through this table; none of them branches on a family's name.

Every reference model takes uint8 label ids [N,1,H,W] (and the family's further inputs, e.g. int32
instance ids) and returns uint8 RGB as the artifacts do, and carries its ``config``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..artifacts.onnx_graph import state_to_numpy
from . import crn as crn_model
from ..families import FAMILIES, Family, family
from . import pix2pixhd, posgen, spade
from .checkpoint import crn_from_state


@dataclass(frozen=True)
class ModelFamily:
    contract: Family
    recognises: Callable[[dict], bool]  # on a state_dict's keys, wrapper prefixes not yet stripped
    build: Callable[[object], torch.nn.Module]  # config -> reference model with fresh weights
    random_init: Callable[[torch.nn.Module, int], torch.nn.Module]
    graph_parts: Callable  # (config, weights, resolution, precision, batch) -> (model shell, tensors)
    # (state_dict as saved, config or None, path, instances, options) -> reference model; infers the config
    # if None. ``options``: the training run's options by their official names (opt.txt, --option), or None
    load_state: Callable

    @property
    def name(self) -> str:
        return self.contract.name

    def weights(self, model: torch.nn.Module) -> dict[str, np.ndarray]:
        """The reference model's weights as float32 arrays, by the names its graph writer reads."""
        return state_to_numpy(model.state_dict())

    def random_model(self, config, seed: int) -> torch.nn.Module:
        return self.random_init(self.build(config), seed).eval()


# Sequential indices, as the official trainer saves them: model.1.weight, model1_1.4.bias
_PIX2PIXHD_KEY = re.compile(r"^(module\.)?model(\d+_\d+)?\.\d+\.")

MODEL_FAMILIES: dict[str, ModelFamily] = {
    "pix2pixhd": ModelFamily(FAMILIES["pix2pixhd"], lambda state: all(_PIX2PIXHD_KEY.match(k) for k in state),
                             pix2pixhd.Pix2PixHDGenerator, pix2pixhd.random_init, pix2pixhd.graph_parts,
                             lambda state, config, path, instances, options: pix2pixhd.load_state(
                                 {k.removeprefix("module."): v for k, v in state.items()}, config,
                                 instances=instances, path=str(path), options=options)),
    "posgen": ModelFamily(FAMILIES["posgen"], posgen.recognises, posgen.PosGenGenerator, posgen.random_init,
                          posgen.graph_parts,
                          lambda state, config, path, instances, options: posgen.load_state(state, config, str(path))),
    "spade": ModelFamily(FAMILIES["spade"], spade.recognises, spade.SPADEGenerator, spade.random_init,
                         spade.graph_parts,
                         lambda state, config, path, instances, options: spade.load_state(
                             state, config, path=str(path), options=options)),
    "crn": ModelFamily(FAMILIES["crn"], lambda state: True, crn_model.CRN, crn_model.random_init,
                       crn_model.crn_graph_parts,
                       lambda state, config, path, instances, options: crn_from_state(state, config, path)),
}


def model_family(name: str) -> ModelFamily:
    return MODEL_FAMILIES[family(name).name]  # an unknown name gets the contract's near-miss message


def family_of_config(config) -> ModelFamily:
    for fam in MODEL_FAMILIES.values():
        if isinstance(config, fam.contract.config_type):
            return fam
    raise TypeError(f"no model family has config type {type(config).__name__}")


def recognise(state: dict) -> ModelFamily:
    """The family whose checkpoints look like this state_dict (CRN, the oldest, last)."""
    return next(fam for fam in MODEL_FAMILIES.values() if fam.recognises(state))
