"""pix2pixHD (Wang et al., CVPR 2018; NVIDIA/pix2pixHD), contract side: the generator's options as a
config, the two released Cityscapes models as presets, its inputs (label ids, and instance ids where it
was trained with them) and sizes. The torch side is ``crn_deploy/models/pix2pixhd.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..labels import CITYSCAPES_LABEL_IDS
from ..sizes import check_multiple
from .base import ConfigRecord, Family, register


@dataclass(frozen=True)
class Pix2PixHDConfig(ConfigRecord):
    """pix2pixHD's generator (NVIDIA/pix2pixHD options). ``n_local_enhancers`` 0 is the official
    ``--netG global``; 1 or more ``--netG local``."""

    label_nc: int = 35
    instances: bool = True  # the instance edge map as an extra input channel (the official default)
    ngf: int = 64
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 0
    n_blocks_local: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.label_nc <= 255:
            raise UsageError(f"label_nc must be 1..255 (uint8 label ids), got {self.label_nc}")
        if min(self.ngf, self.n_downsample_global) < 1 or min(self.n_blocks_global, self.n_blocks_local,
                                                              self.n_local_enhancers) < 0:
            raise UsageError(f"malformed pix2pixHD config {self}")

    @property
    def input_nc(self) -> int:
        return self.label_nc + int(self.instances)

    @property
    def scale(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (self.n_downsample_global + self.n_local_enhancers)


class Pix2PixHDFamily(Family):
    name = "pix2pixhd"
    config_type = Pix2PixHDConfig
    presets = {
        # The two released Cityscapes models (scripts/test_512p.sh, test_1024p.sh), with their native size.
        "label2city_512p": (Pix2PixHDConfig(), (512, 1024)),
        "label2city_1024p": (Pix2PixHDConfig(ngf=32, n_local_enhancers=1), (1024, 2048)),
        # A few hundred kilobytes: for tests. Local, so the enhancer's paths are exercised too.
        "pix2pixhd-tiny": (Pix2PixHDConfig(ngf=4, n_downsample_global=2, n_blocks_global=2, n_local_enhancers=1,
                                           n_blocks_local=1), (32, 64)),
    }
    test_preset = "pix2pixhd-tiny"
    full_preset = "label2city_512p"
    label_set = CITYSCAPES_LABEL_IDS
    label_resize = "nearest-exact"

    def native_resolution(self, config: Pix2PixHDConfig) -> tuple[int, int]:
        for preset_config, resolution in self.presets.values():
            if preset_config == config:
                return resolution
        return (config.scale * 32, config.scale * 64)  # a 1:2 street aspect at a modest size

    def check_resolution(self, resolution, config: Pix2PixHDConfig) -> None:
        check_multiple(resolution, config.scale, f"{config.n_downsample_global} downsamplings, "
                                                 f"{config.n_local_enhancers} local enhancers")

    def takes_instances(self, config: Pix2PixHDConfig) -> bool:
        return config.instances

    def describe(self, config: Pix2PixHDConfig) -> str:
        kind = f"local ({config.n_local_enhancers} enhancer)" if config.n_local_enhancers else "global"
        return (f"pix2pixHD {kind}, ngf {config.ngf}, {config.n_downsample_global} downsamplings, "
                f"{config.n_blocks_global}+{config.n_blocks_local if config.n_local_enhancers else 0} residual "
                f"blocks, {config.label_nc} labels{' + instance edges' if config.instances else ''}")


PIX2PIXHD = register(Pix2PixHDFamily())
