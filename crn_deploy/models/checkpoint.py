"""Load CRN checkpoints as people save them; save them with their config and label set.

Never executes code from a file: ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import CRNConfig
from ..errors import CheckpointError
from ..files import atomic_path, sha256_file
from ..labels import CITYSCAPES, LabelSet
from ..records import Source
from .crn import CRN

FORMAT = "crn-deploy/checkpoint-1"
_PREFIXES = ("module.", "model.", "generator.", "netG.")
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.conv1\.weight$")


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module  # the family's reference model: uint8 ids (+ further inputs) -> uint8 RGB
    label_set: LabelSet
    source: dict  # what the manifest records as the model's origin
    family: str = "crn"

    @property
    def config(self):
        return self.model.config


def load_checkpoint(path: Path, config=None, family: str | None = None, *, instances: bool = True,
                    options: dict[str, str] | None = None) -> LoadedCheckpoint:
    """Read a checkpoint, settle its family and architecture, and return the model in eval mode (float32, CPU).

    The family is, in order: ``family``, the one the file records, the one of ``config``, or the one whose
    checkpoints look like it (pix2pixHD's official ``latest_net_G.pth``, else a CRN). ``instances``: for
    pix2pixHD checkpoints, whether the last input channel is the instance edge map (official default).
    ``options``: the training run's options by their official names (an ``opt.txt`` the caller read, and
    ``--option`` flags) for families whose weights do not record their whole architecture (SPADE); without
    them the ``opt.txt`` beside the checkpoint is read where there is one."""
    from ..models.registry import family_of_config, model_family, recognise

    path = Path(path)
    raw, meta = read_raw(path)
    stored_config = _maybe_json(meta["config"]) if "config" in meta else None
    stored_family = meta.get("family")
    if isinstance(stored_family, str) and stored_family.startswith('"'):  # safetensors metadata holds JSON
        stored_family = json.loads(stored_family)
    named = family or stored_family or (stored_config is not None and "crn")
    fam = model_family(named) if named else family_of_config(config) if config is not None else recognise(raw)
    if config is None and stored_config is not None:
        config = fam.contract.config_from_dict(stored_config)
    model = fam.load_state(raw, config, path, instances, options)
    labels = LabelSet.from_dict(_maybe_json(meta["label_set"])) if "label_set" in meta else \
        fam.contract.label_set_for(model.config)
    source = {"kind": "checkpoint", "path": str(path.resolve()), "sha256": sha256_file(path), "family": fam.name}
    return LoadedCheckpoint(model.eval(), labels, source, fam.name)


def crn_from_state(raw: dict, config: CRNConfig | None, path: Path | str = "checkpoint") -> CRN:
    state = {_strip_prefixes(k): v for k, v in raw.items()}
    config = config or infer_config(state, path)
    check_state(state, config, path)
    model = CRN(config)
    model.load_state_dict(state)
    return model


def random_model(config, seed: int, preset_name: str | None = None) -> LoadedCheckpoint:
    from ..models.registry import family_of_config

    fam = family_of_config(config)
    source = {"kind": "random", "preset": preset_name, "seed": seed, "config": config.to_dict(), "family": fam.name}
    return LoadedCheckpoint(fam.random_model(config, seed), fam.contract.label_set_for(config), source, fam.name)


def read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict as saved (wrappers like {'state_dict': ...} removed, key prefixes kept) and the
    file's metadata (config, label set, family) where it has any."""
    _check_is_file(path)
    if path.suffix == ".safetensors":
        raw, meta = _read_safetensors(path)
    else:
        raw = read_torch(path)
        meta = raw if isinstance(raw, dict) else {}
    return _unwrap_state_dict(raw, path), meta


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], CRNConfig | None, LabelSet | None]:
    """A CRN checkpoint's state dict with wrapper prefixes removed, plus any stored config and label set."""
    raw, meta = read_raw(Path(path))
    config = CRNConfig.from_dict(_maybe_json(meta["config"])) if "config" in meta else None
    labels = LabelSet.from_dict(_maybe_json(meta["label_set"])) if "label_set" in meta else None
    return {_strip_prefixes(k): v for k, v in raw.items()}, config, labels


def read_torch(path: Path):
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"checkpoint {path} cannot be loaded safely (it holds the Python object {found.group(1)}); "
                "re-save it as a plain state_dict: torch.save(model.state_dict(), path)"
            ) from None
        raise _not_a_checkpoint(path) from None
    except Exception:  # torch.load fails on foreign bytes with KeyError, IndexError, RuntimeError...
        raise _not_a_checkpoint(path) from None


def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(f"{path} is not a PyTorch checkpoint: it is {describe_file(path)}; pass a .pt/.pth "
                           "written by torch.save, or a .safetensors file")


def describe_file(path: Path) -> str:
    """What a file that should have been a checkpoint looks like, in a few words."""
    head = path.read_bytes()[:512] if path.is_file() else b""
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip archive (torch.save writes zips: re-download or re-save it)"
    if head[:1] == b"\x80":
        return "a Python pickle, not one written by torch.save"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras?)"
    if head[8:9] == b"{":
        return "a .safetensors file with another suffix (rename it to .safetensors)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data of an unknown kind"


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint; pass the .pt/.pth/.safetensors file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the path of a .pt/.pth/.safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint; re-download or re-save it")


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CheckpointError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: it is {describe_file(path)} ({e}); "
                              "re-download or re-save it") from None


def _maybe_json(value):
    return json.loads(value) if isinstance(value, str) else value


def _unwrap_state_dict(raw, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, dict):
        for key in ("state_dict", "model", "generator"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(
            f"checkpoint {path} holds {_kind(raw)}, not a state_dict of tensors (expected a state_dict, "
            "{'state_dict': ...} or {'model': ...})"
        )
    return raw


def _kind(value) -> str:
    if isinstance(value, dict):
        kinds = sorted({type(v).__name__ for v in value.values()})
        return f"a dict of {', '.join(kinds)}" if kinds else "an empty dict"
    return f"a {type(value).__name__}"


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def infer_config(state: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> CRNConfig:
    """Module count, widths, classes and k from tensor shapes (the base stays 4x8)."""
    indices = sorted(int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)))
    if not indices or indices != list(range(len(indices))) or "head.weight" not in state:
        raise CheckpointError(
            f"{path} is not a crn-deploy CRN checkpoint: expected keys blocks.0.conv1.weight ... and head.weight "
            f"(found e.g. {', '.join(list(state)[:3])}); for the authors' TensorFlow checkpoints use crn-import"
        )
    widths = tuple(state[f"blocks.{i}.conv1.weight"].shape[0] for i in indices)
    layout_channels = state["blocks.0.conv1.weight"].shape[1]
    out_channels = state["head.weight"].shape[0]
    if out_channels % 3:
        raise CheckpointError(f"{path}: head.weight has {out_channels} output channels, not a multiple of 3")
    return CRNConfig(num_classes=layout_channels - 1, widths=widths, k=out_channels // 3)


def check_state(state: dict[str, torch.Tensor], config: CRNConfig, path: Path | str = "checkpoint") -> None:
    check_fits(state, CRN(config), f"the CRN config {config.to_dict()}", path,
               "Pick the matching --preset, or drop --preset to infer the architecture from the checkpoint")


def check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, what: str, path: Path | str,
               fix: str = "") -> None:
    """One error naming every missing, unexpected and wrongly-shaped key of ``state`` for ``model``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} != {list(s)}" for k, s in expected.items()
             if k in state and tuple(state[k].shape) != s]
    if missing or unexpected or wrong:
        parts = [f"{label}: {_short(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
        raise CheckpointError(f"{path} does not fit {what} — {'; '.join(parts)}" + (f". {fix}" if fix else ""))


def read_opt_file(path: Path) -> dict[str, str]:
    """The options an official pix2pixHD or SPADE trainer writes to ``opt.txt`` (``key: value`` lines;
    SPADE right-aligns the keys and appends ``\t[default: ...]`` where a value differs). The ``opt.pkl``
    beside it is never read: unpickling it would run code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"options file {path} not found; pass the opt.txt the training run wrote "
                              "beside its checkpoints")
    found = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.strip() and not key.startswith("-"):
            found[key.strip()] = value.split("\t[default:")[0].strip()
    return found


def _short(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def save_checkpoint(path: Path, model: torch.nn.Module, label_set: LabelSet = CITYSCAPES) -> None:
    """Write state_dict + family + config + label set; ``.safetensors`` keeps the rest as metadata."""
    from ..models.registry import family_of_config

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "family": family_of_config(model.config).name, "config": model.config.to_dict(),
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
    return load_checkpoint(path, config, source.family).model
