"""OASIS ("You Only Need Adversarial Supervision for Semantic Image Synthesis", Schönfeld, Sushko et al.,
ICLR 2021; boschresearch/OASIS), contract side: the generator's options by their official names, the
released models (Cityscapes, ADE20K, COCO-Stuff) as presets with what each dataset loader sets, the inputs
(label ids and, with 3D noise, one noise vector z [64] per picture) and sizes. The torch side is
``crn_deploy/models/oasis.py``; what the official code computes is in docs/families/oasis.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..labels import ADE20K, ADE20K_NAMES, CITYSCAPES_LABEL_IDS, COCO_STUFF, LabelSet, generic_label_set
from ..sizes import check_multiple
from .base import ConfigRecord, Family, register

NORMS = ("syncbatch", "batch", "instance")
OFFICIAL_BLOCKS = 6  # the generator's channel list has seven entries: six residual blocks, no other count runs

# What each official dataset loader sets (dataloaders/*Dataset.py), over the command-line options: the label
# count, the don't-care channel, the crop and aspect, and how its label files' ids become channels.
DATASETS = {
    "cityscapes": {"label_nc": 34, "contain_dontcare_label": True, "crop_size": 512, "aspect_ratio": 2.0,
                   "shift_ids": False},
    "ade20k": {"label_nc": 150, "contain_dontcare_label": True, "crop_size": 256, "aspect_ratio": 1.0,
               "shift_ids": False},
    "coco": {"label_nc": 182, "contain_dontcare_label": True, "crop_size": 256, "aspect_ratio": 1.0,
             "shift_ids": True},
}

# ADE20K annotation PNGs as OASIS reads them: id k lights channel k, 0 ("other") the unknown channel 0.
ADE20K_ANNOTATIONS = LabelSet("ade20k-annotations", ("other (unknown)", *ADE20K_NAMES),
                              (ADE20K.colors[-1], *ADE20K.colors[:-1]))


@dataclass(frozen=True)
class OASISConfig(ConfigRecord):
    """OASIS's generator (boschresearch/OASIS ``OASIS_Generator``), by the official option names.
    ``shift_ids``: the COCO-Stuff loader's rule (a file's id k lights channel k + 1, its unknown 255 channel 0);
    otherwise id k lights channel k (Cityscapes labelIds; ADE20K annotations, 0 the unknown "other") and
    ids past the channels light none. ``nhidden``: the SPADE modules' hidden width, 128 in the official code
    (smaller only in tiny test models). ``crop_size`` and ``aspect_ratio`` give the native output size; an
    artifact of another size computes what the official code computes with ``--crop_size W --aspect_ratio W/H``."""

    label_nc: int = 34
    contain_dontcare_label: bool = True
    shift_ids: bool = False
    channels_G: int = 64
    num_res_blocks: int = OFFICIAL_BLOCKS
    param_free_norm: str = "syncbatch"
    spade_ks: int = 3
    no_3dnoise: bool = False
    z_dim: int = 64
    crop_size: int = 512
    aspect_ratio: float = 2.0
    nhidden: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.semantic_nc <= 256:
            raise UsageError(f"label_nc must be 1..255 (uint8 label ids), got {self.label_nc}")
        if self.param_free_norm not in NORMS:
            raise UsageError(f"param_free_norm must be one of {', '.join(NORMS)}, got {self.param_free_norm!r}")
        if self.num_res_blocks != OFFICIAL_BLOCKS:
            raise UsageError(f"OASIS's generator has {OFFICIAL_BLOCKS} residual blocks (its channel list fixes them); "
                             f"num_res_blocks {self.num_res_blocks} does not run in the official code")
        if min(self.channels_G, self.z_dim, self.nhidden, self.spade_ks) < 1 or self.spade_ks % 2 == 0 or \
                self.aspect_ratio <= 0:
            raise UsageError(f"malformed OASIS config {self}")
        if self.start_width < 1 or round(self.start_width / self.aspect_ratio) < 1:
            raise UsageError(f"crop_size {self.crop_size} with aspect_ratio {self.aspect_ratio} leaves no start pixel")

    @property
    def semantic_nc(self) -> int:
        """The one-hot's channels: label_nc, plus the unknown / don't-care channel."""
        return self.label_nc + int(self.contain_dontcare_label)

    @property
    def noise_channels(self) -> int:
        return 0 if self.no_3dnoise else self.z_dim

    @property
    def scale(self) -> int:
        return 2 ** (self.num_res_blocks - 1)

    @property
    def start_width(self) -> int:
        return self.crop_size // self.scale

    @property
    def native_resolution(self) -> tuple[int, int]:
        """The official ``compute_latent_vector_size`` (whose two swapped names cancel), times the upsamplings."""
        return round(self.start_width / self.aspect_ratio) * self.scale, self.start_width * self.scale

    def start_size(self, resolution: tuple[int, int]) -> tuple[int, int]:
        return resolution[0] // self.scale, resolution[1] // self.scale

    def widths(self) -> list[tuple[int, int]]:
        """Each residual block's (input, output) channels: [16, 16, 16, 8, 4, 2, 1] x channels_G."""
        ch = [16, 16, 16, 8, 4, 2, 1]
        return [(ch[i] * self.channels_G, ch[i + 1] * self.channels_G) for i in range(self.num_res_blocks)]


def dataset_options(mode: str) -> dict:
    """The options an official dataset loader sets (``dataset_mode``), or a refusal naming the known ones."""
    try:
        return dict(DATASETS[mode])
    except KeyError:
        raise UsageError(f"dataset_mode {mode!r} has no official OASIS loader; pass --option label_nc=N (its "
                         f"labels, the unknown channel added) instead, or one of {', '.join(DATASETS)}") from None


class OASISFamily(Family):
    name = "oasis"
    config_type = OASISConfig
    presets = {
        # The released models (the official README's checkpoints), with what their dataset loaders set.
        "oasis_cityscapes": OASISConfig(**DATASETS["cityscapes"]),
        "oasis_ade20k": OASISConfig(**DATASETS["ade20k"]),
        "oasis_coco": OASISConfig(**DATASETS["coco"]),
        # A few hundred kilobytes, for tests: every kind of block (learned shortcuts) at 32x64, with noise.
        "oasis-tiny": OASISConfig(channels_G=2, crop_size=64, nhidden=8, z_dim=8),
    }
    presets = {name: (config, config.native_resolution) for name, config in presets.items()}
    test_preset = "oasis-tiny"
    full_preset = "oasis_cityscapes"
    label_set = CITYSCAPES_LABEL_IDS
    label_resize = "nearest-exact"  # the official loaders resize label maps with PIL's NEAREST

    def label_set_for(self, config: OASISConfig) -> LabelSet:
        known = {(34, False): CITYSCAPES_LABEL_IDS, (150, False): ADE20K_ANNOTATIONS, (182, True): COCO_STUFF}
        return known.get((config.label_nc, config.shift_ids), generic_label_set(config.semantic_nc))

    def check_resolution(self, resolution, config: OASISConfig) -> None:
        check_multiple(resolution, config.scale, f"{config.num_res_blocks - 1} upsamplings")

    def style_size(self, config: OASISConfig) -> int | None:
        return None if config.no_3dnoise else config.z_dim

    def describe(self, config: OASISConfig) -> str:
        noise = "no 3D noise" if config.no_3dnoise else f"3D noise z[{config.z_dim}]"
        return (f"OASIS channels_G {config.channels_G}, {config.param_free_norm} norm, {config.label_nc} labels + "
                f"unknown, {noise}")


OASIS = register(OASISFamily())
