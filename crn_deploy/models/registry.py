"""The torch side of every family, found by the family's name: ``crn_deploy/models/<name>.py`` defines
``MODEL``, a ``ModelFamily`` (reference model, random init, checkpoint recognition and loading, graph
writer). The contract side is ``crn_deploy.families``; both are keyed by the same name, and nothing here
or elsewhere branches on one.

Every reference model takes uint8 label ids [N,1,H,W] (and the family's further inputs, e.g. int32
instance ids) and returns uint8 RGB as the artifacts do, and carries its ``config``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..families import FAMILIES, Family, family, family_of_config, find_preset
from ..graph import state_to_numpy
from .state import strip_prefixes


@dataclass(frozen=True)
class LoadRequest:
    """What a family's loader knows besides the state dict: the file (for messages) and the training run's
    options by their official names (its ``opt.txt``, ``--option`` flags; empty where none was found)."""

    path: Path
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Training:
    """What ``crn-train`` can do with a family's models (their reference model has ``train_images``)."""

    # --widths W,... --k K: a custom architecture from scratch (config from module widths and images per map)
    custom_config: Callable[[tuple[int, ...], int], object] | None = None
    # --init-from CKPT --width W: progressive training, the checkpoint's model grown by one module (model, width, seed)
    grow: Callable[[torch.nn.Module, int | None, int], torch.nn.Module] | None = None


@dataclass(frozen=True)
class ForeignImport:
    """``crn-import``: checkpoints another framework wrote (the CRN authors' TensorFlow ones)."""

    framework: str
    inspect: Callable[[Path], object]  # checkpoint prefix -> its architecture (config, presets, variables, ignored)
    load: Callable[[Path], tuple]  # checkpoint prefix -> (LoadedCheckpoint, architecture)


@dataclass(frozen=True)
class ModelFamily:
    contract: Family
    build: Callable[[object], torch.nn.Module]  # config -> reference model with fresh weights
    random_init: Callable[[torch.nn.Module, int], torch.nn.Module]
    graph_parts: Callable  # (config, weights, sizes, precision, batch) -> (model shell, weight tensors)
    recognises: Callable[[dict], bool]  # whether a state_dict (wrapper prefixes not yet stripped) is this family's
    # (state_dict as saved, config or None, request) -> reference model in eval mode; infers the config if None
    load_state: Callable[[dict, object, LoadRequest], torch.nn.Module]
    # checkpoint path -> the training run's options file (opt.txt) where the family's official runs keep one
    run_options_file: Callable[[Path], Path | None] = lambda path: None
    training: Training | None = None  # crn-train trains it (None: it does not)
    foreign_import: ForeignImport | None = None  # crn-import reads another framework's checkpoints into it
    key_patterns: frozenset = field(default=frozenset(), compare=False)  # filled by the registry

    @property
    def name(self) -> str:
        return self.contract.name

    def weights(self, model: torch.nn.Module) -> dict[str, np.ndarray]:
        """The reference model's weights as float32 arrays, by the names its graph writer reads."""
        return state_to_numpy(model.state_dict())

    def random_model(self, config, seed: int) -> torch.nn.Module:
        return self.random_init(self.build(config), seed).eval()


@cache
def model_families() -> dict[str, ModelFamily]:
    """Every registered family's torch side, imported from ``crn_deploy.models.<name>``."""
    found = {}
    for name, contract in FAMILIES.items():
        module = importlib.import_module(f"{__package__}.{name}")
        model = getattr(module, "MODEL", None)
        if not isinstance(model, ModelFamily) or model.contract is not contract:
            raise TypeError(f"crn_deploy/models/{name}.py must define MODEL = ModelFamily({name}'s contract, ...)")
        found[name] = model
    return found


def model_family(name: str) -> ModelFamily:
    return model_families()[family(name).name]  # an unknown name gets the contract's near-miss message


def model_family_of(config) -> ModelFamily:
    """The torch side of the family ``config`` belongs to."""
    return model_families()[family_of_config(config).name]


def trainable_families() -> dict[str, ModelFamily]:
    return {name: fam for name, fam in model_families().items() if fam.training is not None}


def recognise(state: dict, path: Path | str = "checkpoint") -> ModelFamily:
    """The one family whose checkpoints look like this state_dict, or an error naming every family tried
    and the closest by keys."""
    matches = [fam for fam in model_families().values() if fam.recognises(state)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckpointError(f"{path} looks like a checkpoint of {' and '.join(f.name for f in matches)}; say which "
                              f"with --family")
    raise CheckpointError(f"{path} is not a checkpoint of any family crn-deploy deploys (tried "
                          f"{', '.join(model_families())}; {closest(state)}); for the "
                          "authors' TensorFlow CRN checkpoints use crn-import")


def check_recognised(fam: ModelFamily, state: dict, path: Path | str) -> None:
    """Refuse a state_dict that the family named for it (``--family``, the file) does not recognise."""
    if fam.recognises(state):
        return
    others = [f.name for f in model_families().values() if f is not fam and f.recognises(state)]
    looks = f"it looks like a {others[0]} checkpoint" if len(others) == 1 else closest(state)
    raise CheckpointError(f"{path} is not a checkpoint of family {fam.name} ({looks}; keys as stored: "
                          f"{', '.join(list(state)[:3])}); drop --family, or name the family it is")


def closest(state: dict) -> str:
    """The family whose keys (numbers aside) the state_dict's keys share most, with the share."""
    keys = {_pattern(strip_prefixes(k)) for k in state}
    scored = [(len(keys & _key_patterns(name)) / max(1, len(keys)), name) for name in model_families()]
    share, name = max(scored)
    return (f"the closest by its keys is {name}, {share:.0%} of the file's keys match" if share else
            "no key matches any family's")


def _pattern(key: str) -> str:
    return re.sub(r"\d+", "#", key)


@cache
def _key_patterns(name: str) -> frozenset[str]:
    """A family's state_dict keys with numbers generalised, from its test preset's model."""
    fam = model_families()[name]
    config = find_preset(fam.contract.test_preset)[1]
    return frozenset(_pattern(strip_prefixes(k)) for k in fam.build(config).state_dict())  # as files' keys are
