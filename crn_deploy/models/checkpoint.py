"""Checkpoints of every family: load one (settling its family and architecture), make a seeded random one,
save one with its family, config and label set, and rebuild the reference model an artifact came from.

Never executes code from a file: ``torch.load(weights_only=True)`` or safetensors (see ``state``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files import atomic_path, sha256_file
from ..labels import CITYSCAPES, LabelSet
from ..records import Source
from .registry import LoadRequest, check_recognised, model_family, model_family_of, recognise
from .state import maybe_json, read_opt_file, read_raw

FORMAT = "crn-deploy/checkpoint-1"


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module  # the family's reference model: uint8 ids (+ further inputs) -> uint8 RGB
    label_set: LabelSet
    source: dict  # what the manifest records as the model's origin
    family: str  # the family's name

    @property
    def config(self):
        return self.model.config


def load_checkpoint(path: Path, config=None, family: str | None = None, *,
                    options: dict[str, str] | None = None, options_file: Path | None = None) -> LoadedCheckpoint:
    """Read a checkpoint, settle its family and architecture, and return the model in eval mode (float32, CPU).

    The family is, in order: ``family``, the one the file records, the one of ``config``, or the one family
    whose checkpoints look like it (each recognises its own keys). ``options``: the training run's options
    by their official names (an ``opt.txt`` the caller read, ``--option`` flags: ``no_instance=True`` for a
    pix2pixHD trained without instance maps; ``options_file``: the opt.txt they came from, recorded) for families
    whose weights do not record their whole architecture; without them the training run's ``opt.txt`` is read
    where the family's runs keep one beside the checkpoint. The source record names the options file used."""
    path = Path(path)
    raw, meta = read_raw(path)
    stored_config = maybe_json(meta["config"]) if "config" in meta else None
    stored_family = meta.get("family")
    if isinstance(stored_family, str) and stored_family.startswith('"'):  # safetensors metadata holds JSON
        stored_family = json.loads(stored_family)
    named = family or stored_family
    if named:
        fam = model_family(named)
        check_recognised(fam, raw, path)
    else:
        fam = model_family_of(config) if config is not None else recognise(raw, path)
    if config is None and stored_config is not None:
        config = fam.contract.config_from_dict(stored_config)
    if options is None and options_file is None and (options_file := fam.run_options_file(path)) is not None:
        options = read_opt_file(options_file)  # the run's own opt.txt, where the caller named none
    model = fam.load_state(raw, config, LoadRequest(path, options or {}))
    labels = LabelSet.from_dict(maybe_json(meta["label_set"])) if "label_set" in meta else \
        fam.contract.label_set_for(model.config)
    source = {"kind": "checkpoint", "path": str(path.resolve()), "sha256": sha256_file(path)}
    if options_file is not None:
        source.update(options_file=str(Path(options_file).resolve()), options_sha256=sha256_file(options_file))
    return LoadedCheckpoint(model.eval(), labels, source, fam.name)


def random_model(config, seed: int, preset_name: str | None = None) -> LoadedCheckpoint:
    """The reference model of ``config`` with seeded random weights (a preset's, for benchmarks and tests)."""
    fam = model_family_of(config)
    source = {"kind": "random", "preset": preset_name, "seed": seed, "config": config.to_dict()}
    return LoadedCheckpoint(fam.random_model(config, seed), fam.contract.label_set_for(config), source, fam.name)


def save_checkpoint(path: Path, model: torch.nn.Module, label_set: LabelSet = CITYSCAPES) -> None:
    """Write state_dict + family + config + label set; ``.safetensors`` keeps the rest as metadata."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "family": model_family_of(model.config).name, "config": model.config.to_dict(),
            "label_set": label_set.to_dict()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":  # bytes into our file: save_file would replace it with a 0600 one
            from safetensors.torch import save

            tmp.write_bytes(save(state, metadata={k: json.dumps(v) for k, v in meta.items()}))
        else:
            torch.save({**meta, "state_dict": state}, tmp)


def model_from_source(source: Source | dict, config, checkpoint: Path | None = None) -> torch.nn.Module:
    """Rebuild the FP32 reference model an artifact was exported from, as its manifest records it."""
    source = Source.from_dict(source) if isinstance(source, dict) else source
    if source.kind == "random":
        return random_model(config, int(source.seed), source.preset).model
    path = Path(checkpoint or source.path or "")
    if not path.is_file():
        raise CheckpointError(
            f"the checkpoint this artifact was exported from ({source.path}) is not there; "
            "pass its new location with --checkpoint"
        )
    if sha256_file(path) != source.sha256:
        raise CheckpointError(
            f"{path} is not the checkpoint this artifact was exported from (SHA-256 differs); "
            "re-export the artifact from it, or pass the original with --checkpoint"
        )
    return load_checkpoint(path, config).model
