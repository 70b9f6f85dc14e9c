"""SPADE checkpoints written the way NVlabs/SPADE's trainer writes them, for tests: the generator's
convs wrapped in torch's ``spectral_norm`` (as ``SPADEResnetBlock`` does when ``norm_G`` says
spectral), batch norms whose running statistics come from train-mode forward passes, then
``torch.save(netG.state_dict(), 'latest_net_G.pth')`` (``BaseModel.save_network``) and the run's
options in ``opt.txt`` (``BaseOptions.save_options``: right-aligned keys, ``[default: ...]`` notes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crn_deploy.data.synthetic import patchwork_scene
from crn_deploy.families.spade import SPADEConfig
from crn_deploy.models import spade, spade_trunk


def official_state(config: SPADEConfig, seed: int = 0, steps: int = 3) -> dict[str, torch.Tensor]:
    """A trained-looking state_dict: ``weight_orig``/``weight_u``/``weight_v`` after ``steps`` power
    iterations (so the stored u, v are not the converged singular vectors), running statistics
    after ``steps`` momentum updates. spectral_norm draws its first u and v from torch's global generator:
    seeded here, in a forked state, so that the checkpoint does not depend on what ran before."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _trained_state(config, seed, steps)


def _trained_state(config: SPADEConfig, seed: int, steps: int) -> dict[str, torch.Tensor]:
    model = spade.MODEL.random_init(spade_trunk.SPADEGenerator(config), seed)
    if config.spectral:
        for name in config.widths():
            block = getattr(model, name)
            for conv in ("conv_0", "conv_1", "conv_s"):
                if hasattr(block, conv):
                    setattr(block, conv, torch.nn.utils.spectral_norm(getattr(block, conv)))
    model.train()
    generator = torch.Generator().manual_seed(seed)
    h, w = config.native_resolution
    with torch.no_grad():
        for step in range(steps):
            ids, inst = patchwork_scene(h, w, config.label_nc, seed=seed * 100 + step)
            seg = model.encode(torch.from_numpy(ids)[None, None], torch.from_numpy(inst)[None, None])
            z = torch.randn(1, config.z_dim, generator=generator) if config.use_vae else None
            model.generate(torch.cat([seg, seg.flip(-1)]), None if z is None else torch.cat([z, -z]))
    return {k: v.clone() for k, v in model.state_dict().items()}


def opt_lines(config: SPADEConfig, name: str = "run") -> str:
    """opt.txt as SPADE's BaseOptions.save_options formats it (with some options that do not shape G)."""
    options = {"name": name, "batchSize": 16, "dataset_mode": "custom", "label_nc": config.label_nc,
               "contain_dontcare_label": config.contain_dontcare_label, "no_instance": not config.instances,
               "ngf": config.ngf, "num_upsampling_layers": config.num_upsampling_layers,
               "crop_size": config.crop_size, "aspect_ratio": config.aspect_ratio, "norm_G": config.norm_G,
               "use_vae": config.use_vae, "z_dim": config.z_dim, "netG": "spade", "gpu_ids": "0"}
    lines = []
    for key, value in sorted(options.items()):
        comment = "\t[default: 64]" if key == "ngf" and value != 64 else ""
        lines.append(f"{key:>25}: {str(value):<30}{comment}")
    return "\n".join(lines) + "\n"


def write_run(folder: Path, config: SPADEConfig, seed: int = 0, with_opt: bool = True) -> Path:
    """checkpoints/<run>/latest_net_G.pth (+ opt.txt), as a SPADE training run leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(official_state(config, seed), folder / "latest_net_G.pth")
    if with_opt:
        (folder / "opt.txt").write_text(opt_lines(config))
    return folder / "latest_net_G.pth"


def numpy_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in state.items()}
