"""OASIS checkpoints written the way boschresearch/OASIS's trainer writes them, for tests: conv_0, conv_1 and
conv_s wrapped in torch's ``spectral_norm`` (norms.get_spectral_norm), batch norms whose running statistics come
from train-mode passes, ``torch.save(netEMA.state_dict(), 'checkpoints/<name>/models/latest_EMA.pth')``
(utils.save_networks) and the run's ``checkpoints/<name>/opt.txt`` (config.save_options: right-aligned keys,
``[default: ...]`` notes; written before the dataset loader sets label_nc, so it holds none)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from crn_deploy.data.synthetic import patchwork_scene
from crn_deploy.families.oasis import OASISConfig
from crn_deploy.models import oasis


def official_state(config: OASISConfig, seed: int = 0, steps: int = 3) -> dict[str, torch.Tensor]:
    """A trained-looking state_dict (208 keys at every width): ``weight_orig``/``weight_u``/``weight_v`` after
    ``steps`` power iterations, running statistics after ``steps`` momentum updates. spectral_norm draws its
    first u and v from torch's global generator: seeded here in a forked state."""
    # The weights' shapes do not depend on the crop size: warmed up at 128 at most (a 512 crop paints 256x512)
    config = replace(config, crop_size=min(config.crop_size, 128))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = oasis.random_init(oasis.OASISGenerator(config), seed)
        for block in model.body:
            for name in ("conv_0", "conv_1", "conv_s"):
                if hasattr(block, name):
                    setattr(block, name, torch.nn.utils.spectral_norm(getattr(block, name)))
        model.train()
        h, w = config.native_resolution
        with torch.no_grad():
            for step in range(steps):
                ids, _ = patchwork_scene(h, w, config.semantic_nc, seed=seed * 100 + step)
                seg = model.encode(torch.from_numpy(ids)[None, None])
                z = None if config.no_3dnoise else torch.randn(2, config.z_dim)
                model.generate(torch.cat([seg, seg.flip(-1)]), z)
        return {k: v.clone() for k, v in model.state_dict().items()}


def opt_lines(config: OASISConfig, dataset_mode: str, name: str = "oasis_run") -> str:
    """opt.txt as OASIS's config.save_options formats it (with options that do not shape the generator)."""
    options = {"name": name, "batch_size": 20, "dataset_mode": dataset_mode, "gpu_ids": "0,1,2,3", "seed": 42,
               "channels_G": config.channels_G, "num_res_blocks": config.num_res_blocks,
               "param_free_norm": config.param_free_norm, "spade_ks": config.spade_ks, "no_EMA": False,
               "EMA_decay": 0.999, "no_3dnoise": config.no_3dnoise, "z_dim": config.z_dim, "phase": "train",
               "lr_g": 0.0004, "no_spectral_norm": False}
    lines = []
    for key, value in sorted(options.items()):
        comment = "\t[default: 64]" if key == "channels_G" and value != 64 else ""
        lines.append(f"{key:>25}: {str(value):<30}{comment}")
    return "\n".join(lines) + "\n"


def write_run(root: Path, config: OASISConfig, dataset_mode: str | None, seed: int = 0,
              checkpoint: str = "latest_EMA.pth", name: str = "oasis_run") -> Path:
    """root/<name>/models/<checkpoint> (+ root/<name>/opt.txt where ``dataset_mode`` is given)."""
    models = root / name / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.save(official_state(config, seed), models / checkpoint)
    if dataset_mode is not None:
        (root / name / "opt.txt").write_text(opt_lines(config, dataset_mode, name))
    return models / checkpoint


def numpy_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in state.items()}
