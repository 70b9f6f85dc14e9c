"""The reference trainer: perceptual (or image L1) and diversity losses, Adam, progressive growth.

Samples are chosen by (seed, step) alone and the checkpoint holds the optimizer state and step,
so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.images import write_image
from ..errors import CheckpointError, UsageError
from ..files import atomic_path
from ..labels import LabelSet
from ..measure.parity import psnr
from ..models.checkpoint import FORMAT, load_checkpoint
from ..models.state import read_raw
from ..models.registry import model_family_of
from .losses import perceptual_loss
from .vgg import VGG19Features


@dataclass
class TrainOptions:
    steps: int
    resolution: tuple[int, int]
    out_dir: Path
    lr: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # CUDA only: FP16 autocast with a gradient scaler (norm statistics stay FP32)
    preview_every: int = 100
    save_every: int = 500
    log_every: int = 10
    data: str = "synthetic"  # the dataset (open_dataset's spec), recorded so that a resumed run goes on with it


@dataclass
class TrainState:
    model: torch.nn.Module  # a family's reference model with ``train_images`` (CRN, PosGen)
    label_set: LabelSet
    optimizer: torch.optim.Optimizer
    step: int = 0
    trained_with: dict = field(default_factory=dict)  # a resumed run's options as its checkpoint records them


def new_state(model: torch.nn.Module, label_set: LabelSet, lr: float) -> TrainState:
    return TrainState(model, label_set, torch.optim.Adam(model.parameters(), lr=lr))


def save_training_checkpoint(path: Path, state: TrainState, options: TrainOptions) -> None:
    """Weights, config and label set (loadable by crn-export), plus optimizer state and step."""
    payload = {"format": FORMAT, "family": model_family_of(state.model.config).name,
               "config": state.model.config.to_dict(), "label_set": state.label_set.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
               "optimizer": state.optimizer.state_dict(), "step": state.step,
               "train": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                         for k, v in asdict(options).items()}}
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def resume(path: Path, lr: float) -> TrainState:
    path = Path(path)
    _, raw = read_raw(path)  # names a folder, an empty file or a foreign one as such
    if "optimizer" not in raw or "step" not in raw or "config" not in raw:
        raise CheckpointError(f"{path} is not a crn-train checkpoint (no optimizer state and step); "
                              "to fine-tune from plain weights use --init-from")
    loaded = load_checkpoint(path)
    state = new_state(loaded.model, loaded.label_set, lr)
    state.optimizer.load_state_dict(raw["optimizer"])
    state.step = int(raw["step"])
    state.trained_with = dict(raw.get("train") or {})
    return state


def sample_index(seed: int, step: int, size: int) -> int:
    """Which training pair a step uses: a function of (seed, step) only."""
    return int(np.random.default_rng([seed, step]).integers(size))


def train(state: TrainState, dataset, options: TrainOptions, vgg: VGG19Features | None = None,
          log: Callable[[str], None] = print, preview=None) -> list[float]:
    """Run until ``options.steps``; returns the loss of every step run."""
    device = torch.device(options.device)
    if options.amp and device.type != "cuda":
        raise UsageError("mixed precision (--amp) needs CUDA; drop --amp on a CPU")
    model = state.model.to(device).train()
    _optimizer_to(state.optimizer, device)
    vgg = vgg.to(device) if vgg is not None else None
    scaler = torch.amp.GradScaler("cuda", enabled=options.amp)
    losses, started = [], time.perf_counter()
    while state.step < options.steps:
        ids, photo = dataset.sample(sample_index(options.seed, state.step, len(dataset)), options.resolution)
        labels = torch.from_numpy(ids)[None, None].to(device)
        real = torch.from_numpy(photo).permute(2, 0, 1)[None].float().to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=options.amp):
            fake = model.train_images(labels)
            layout = model.layout(labels) if getattr(model.config, "k", 1) > 1 else None  # the diversity loss's
            loss = perceptual_loss(fake.float(), real, layout, vgg)
        state.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(state.optimizer)
        scaler.update()
        state.step += 1
        losses.append(float(loss.detach()))
        _report(state, options, losses, started, log, preview)
    return losses


def _report(state: TrainState, options: TrainOptions, losses: list[float], started: float, log, preview) -> None:
    step = state.step
    if step % options.log_every == 0 or step == options.steps:
        recent = losses[-options.log_every:]
        rate = len(losses) / (time.perf_counter() - started)
        log(f"step {step}/{options.steps}  loss {np.mean(recent):.3f}  {rate:.2f} steps/s")
    if preview is not None and (step % options.preview_every == 0 or step == options.steps):
        preview(state, options)
    if step % options.save_every == 0 or step == options.steps:
        save_training_checkpoint(options.out_dir / "checkpoint.pt", state, options)


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for per_param in optimizer.state.values():
        for key, value in per_param.items():
            if torch.is_tensor(value) and key != "step":
                per_param[key] = value.to(device)


def held_out_psnr(model: torch.nn.Module, dataset, resolution: tuple[int, int], count: int = 8) -> float:
    """Mean PSNR (dB) of the model's first image against the targets of held-out synthetic layouts."""
    values = []
    model.eval()
    with torch.no_grad():
        for i in range(count):
            ids, photo = dataset.sample(dataset.held_out_seed + i, resolution)
            out = model(torch.from_numpy(ids)[None, None].to(next(model.parameters()).device)).cpu().numpy()[0]
            out = out if out.ndim == 3 else out[0]
            values.append(psnr(float(np.mean((out.astype(np.float64) - photo) ** 2))))
    model.train()
    return float(np.mean(values))


def write_preview(path: Path, model: torch.nn.Module, dataset, resolution: tuple[int, int],
                  label_set: LabelSet) -> None:
    """labels | synthesized | target, for one held-out layout."""
    ids, photo = dataset.sample(getattr(dataset, "held_out_seed", 0), resolution)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(ids)[None, None].to(next(model.parameters()).device)).cpu().numpy()[0]
    model.train()
    write_image(path, np.concatenate([label_set.ids_to_colors(ids), out if out.ndim == 3 else out[0], photo], axis=1))
