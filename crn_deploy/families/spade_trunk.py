"""SPADE's generator as several families build on it (SPADE itself, PosGen's trunk), contract side: its options
by their official names (NVlabs/SPADE) and what a family of it shares (label sets, host resize, size rule, inputs).
Registers no family. The torch side is ``crn_deploy/models/spade_trunk.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from ..labels import ADE20K, CITYSCAPES_LABEL_IDS, COCO_STUFF, LabelSet, generic_label_set
from ..sizes import check_multiple
from .base import ConfigRecord, Family

_SPADE_NORM = re.compile(r"^(spectral)?spade(batch|syncbatch|instance)(\d)x\d$")
UPSAMPLING_LAYERS = {"normal": 5, "more": 6, "most": 7}


@dataclass(frozen=True)
class SPADEConfig(ConfigRecord):
    """SPADE's generator (NVlabs/SPADE options, by their official names). ``instances``: the official
    ``not no_instance``. ``nhidden``: the SPADE modules' hidden width, 128 in the official code (smaller
    only in tiny test models). ``crop_size`` and ``aspect_ratio`` give the native output size; an artifact
    of another size computes what the official code computes with ``--crop_size W --aspect_ratio W/H``."""

    label_nc: int = 35
    contain_dontcare_label: bool = False
    instances: bool = True
    ngf: int = 64
    num_upsampling_layers: str = "more"
    crop_size: int = 512
    aspect_ratio: float = 2.0
    norm_G: str = "spectralspadesyncbatch3x3"
    use_vae: bool = False
    z_dim: int = 256
    nhidden: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.label_nc + self.contain_dontcare_label <= 255:
            raise UsageError(f"label_nc must be 1..255 (uint8 label ids), got {self.label_nc}")
        if self.num_upsampling_layers not in UPSAMPLING_LAYERS:
            raise UsageError(f"num_upsampling_layers must be one of {', '.join(UPSAMPLING_LAYERS)}, got "
                             f"{self.num_upsampling_layers!r}")
        if not _SPADE_NORM.match(self.norm_G):
            raise UsageError(f"norm_G {self.norm_G!r} is not a SPADE norm (e.g. spectralspadesyncbatch3x3, "
                             "spectralspadeinstance3x3)")
        if min(self.ngf, self.z_dim, self.nhidden) < 1 or self.ngf % 2 or self.aspect_ratio <= 0:
            raise UsageError(f"malformed SPADE config {self}")
        if self.start_width < 1 or round(self.start_width / self.aspect_ratio) < 1:
            raise UsageError(f"crop_size {self.crop_size} with aspect_ratio {self.aspect_ratio} leaves no start pixel "
                             f"for 2^{self.up_layers} upsampling (num_upsampling_layers {self.num_upsampling_layers})")

    @property
    def semantic_nc(self) -> int:
        """Input channels: one-hot of label_nc (+1 don't-care), then the instance edge map."""
        return self.label_nc + int(self.contain_dontcare_label) + int(self.instances)

    @property
    def up_layers(self) -> int:
        return UPSAMPLING_LAYERS[self.num_upsampling_layers]

    @property
    def spectral(self) -> bool:
        return _SPADE_NORM.match(self.norm_G).group(1) is not None

    @property
    def param_free_norm(self) -> str:
        """batch or instance (syncbatch is batch norm at inference)."""
        kind = _SPADE_NORM.match(self.norm_G).group(2)
        return "instance" if kind == "instance" else "batch"

    @property
    def kernel_size(self) -> int:
        return int(_SPADE_NORM.match(self.norm_G).group(3))

    @property
    def start_width(self) -> int:
        return self.crop_size // 2**self.up_layers

    @property
    def native_resolution(self) -> tuple[int, int]:
        """The official ``compute_latent_vector_size``, times the upsamplings."""
        scale = 2**self.up_layers
        return round(self.start_width / self.aspect_ratio) * scale, self.start_width * scale

    def start_size(self, resolution: tuple[int, int]) -> tuple[int, int]:
        """The size the segmentation map is resized to before ``fc`` (or ``fc(z)`` is shaped to)."""
        return resolution[0] // 2**self.up_layers, resolution[1] // 2**self.up_layers

    def widths(self) -> dict[str, tuple[int, int]]:
        """Each SPADE residual block's (input, output) channels, in forward order."""
        nf = self.ngf
        blocks = {"head_0": (16 * nf, 16 * nf), "G_middle_0": (16 * nf, 16 * nf), "G_middle_1": (16 * nf, 16 * nf),
                  "up_0": (16 * nf, 8 * nf), "up_1": (8 * nf, 4 * nf), "up_2": (4 * nf, 2 * nf), "up_3": (2 * nf, nf)}
        if self.num_upsampling_layers == "most":
            blocks["up_4"] = (nf, nf // 2)
        return blocks


class SPADETrunkFamily(Family):
    """What every family built on SPADE's generator shares: its label sets, host resize, size rule, inputs and
    description (a subclass gives its name, config type and presets)."""

    config_type = SPADEConfig
    label_set = CITYSCAPES_LABEL_IDS
    label_resize = "nearest-exact"  # on the host, as SPADE's loaders resize (PIL NEAREST); inside the graph
    # each block's resize is torch's legacy nearest, as the generator's F.interpolate

    def label_set_for(self, config: SPADEConfig) -> LabelSet:
        for known in (CITYSCAPES_LABEL_IDS, ADE20K, COCO_STUFF):
            if known.num_classes == config.label_nc + config.contain_dontcare_label:
                return known
        return generic_label_set(config.label_nc + config.contain_dontcare_label)

    def check_resolution(self, resolution, config: SPADEConfig) -> None:
        if config.use_vae and tuple(resolution) != config.native_resolution:
            h, w = config.native_resolution
            raise UsageError(f"a SPADE model trained with --use_vae draws its first feature map from z at the size "
                             f"its crop_size and aspect_ratio fix: export it at --res {h}x{w}, not "
                             f"{resolution[0]}x{resolution[1]}")
        check_multiple(resolution, 2**config.up_layers, f"num_upsampling_layers {config.num_upsampling_layers}")

    def takes_instances(self, config: SPADEConfig) -> bool:
        return config.instances

    def style_size(self, config: SPADEConfig) -> int | None:
        return config.z_dim if config.use_vae else None

    def describe(self, config: SPADEConfig) -> str:
        extra = (" + don't-care" if config.contain_dontcare_label else "") + (" + instance edges" if config.instances
                                                                              else "")
        style = f", VAE style z[{config.z_dim}]" if config.use_vae else ""
        return (f"SPADE ngf {config.ngf}, {config.num_upsampling_layers} upsampling, {config.norm_G}, "
                f"{config.label_nc} labels{extra}{style}")
