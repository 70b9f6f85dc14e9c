"""State dicts as people save them: reading a checkpoint file without executing code from it
(``torch.load(weights_only=True)`` or safetensors), unwrapping it, describing a file that is not one,
wrapper prefixes, the one check that a state dict fits a model, and official training runs' ``opt.txt``.
Every family's loader uses these; none of them knows a family.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from ..errors import CheckpointError

PREFIXES = ("module.", "model.", "generator.", "netG.")


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
    if head[8:9] == b"{":  # a safetensors header (its length in the first 8 bytes may look like a pickle's)
        if path.suffix == ".safetensors":
            return _describe_safetensors(path)
        return "a .safetensors file with another suffix (rename it to .safetensors)"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip archive (torch.save writes zips: re-download or re-save it)"
    if head[:1] == b"\x80":
        return "a Python pickle, not one written by torch.save"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras?)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data of an unknown kind"


def _describe_safetensors(path: Path) -> str:
    """A damaged .safetensors file: truncated where its header names more bytes than the file holds."""
    data = path.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_size])
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError):
        return "a .safetensors file whose header is damaged or cut short"
    expected = 8 + header_size + max(ends, default=0)
    if len(data) < expected:
        return f"a truncated .safetensors file ({len(data):,} of its {expected:,} bytes)"
    return "a damaged .safetensors file"


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


def maybe_json(value):
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


def strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


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


def opt_txt_near(checkpoint: Path, levels_up: int = 0) -> Path | None:
    """The ``opt.txt`` an official trainer wrote in the checkpoint's folder, or up to ``levels_up`` folders above."""
    folder = Path(checkpoint).resolve().parent
    for candidate in [folder, *folder.parents][: levels_up + 1]:
        if (candidate / "opt.txt").is_file():
            return candidate / "opt.txt"
    return None


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
