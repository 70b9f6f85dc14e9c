"""pix2pixHD checkpoints written the way NVIDIA/pix2pixHD's trainer writes them, for tests:
``torch.save(netG.cpu().state_dict(), 'latest_net_G.pth')`` (``BaseModel.save_network``): no prefix, no buffers."""

from __future__ import annotations

from pathlib import Path

import torch

from crn_deploy.families.pix2pixhd import Pix2PixHDConfig
from crn_deploy.models import pix2pixhd as p2p


def official_state(config: Pix2PixHDConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    model = p2p.random_init(p2p.Pix2PixHDGenerator(config), seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_checkpoint(path: Path, config: Pix2PixHDConfig, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_state(config, seed), path)
    return path
