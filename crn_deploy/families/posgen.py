"""PosGen, contract side: SPADE's residual trunk (a ``SPADEConfig``) with a pixel-wise head whose picture
may be larger than the label map. The torch side is ``crn_deploy/models/posgen.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import UsageError
from ..labels import CITYSCAPES, LabelSet
from .base import ConfigRecord, register
from .spade_trunk import SPADEConfig, SPADETrunkFamily

COORDINATE_ENCODINGS = ("xy", "fourier")
_TRUNK_DEFAULT = SPADEConfig(norm_G="spadesyncbatch3x3")
# The trunk's options a PosGen config records (flat, by SPADE's names, as manifests and checkpoints hold them)
_TRUNK_OPTIONS = ("label_nc", "contain_dontcare_label", "instances", "ngf", "num_upsampling_layers", "crop_size",
                  "aspect_ratio", "norm_G", "nhidden")


@dataclass(frozen=True)
class PosGenConfig(ConfigRecord):
    """PosGen ("Image Generation via Independent Semantic Synthesis"): SPADE's residual trunk (its options
    by the official SPADE names) turns the label map into semantic features; a small MLP shared by all
    pixels then paints each output pixel from (a) the features there, (b) Fourier features of them and
    (c) the pixel's normalized coordinates. No code or weights were released; what the description
    leaves open, and what is chosen here:

    - the features are the trunk's last block's output after SPADE's final LeakyReLU 0.2 (where
      ``conv_img`` would read them);
    - Fourier features: ``sin(B f)`` and ``cos(B f)`` with a learned bias-free projection ``B``
      [fourier_features, C], initialised N(0, fourier_scale^2) (as CIPS' learned Fourier features);
      the argument ``B f`` is computed in FP32 in every precision (large arguments lose their phase in FP16);
    - coordinates: x and y in [-1, 1] across the pixel centres, (-1, -1) the top-left pixel (CIPS'
      convention); ``fourier`` adds sin/cos of ``2^k pi x`` and ``2^k pi y`` for k < coordinate_octaves;
    - the MLP: three 1x1 layers, input -> mlp_width -> mlp_width -> 3, LeakyReLU 0.2 between, tanh after;
    - a picture larger than the label map: the features bilinearly interpolated to it (half-pixel
      centres, torch's ``align_corners=False``) and the coordinate grid enlarged;
    - in FP16 models the trunk's last ``fp32_tail_blocks`` residual blocks, the features' resize and the
      Fourier projection compute in FP32 (an FP32 island; the head's MLP is FP16): the features' FP16
      rounding, multiplied by B, can move sin/cos by 0.1 rad. crn-export raises it from 0 one block at a
      time until the FP16 graph holds the floor (docs/families/posgen.md has the figures);
    - no style VAE (``trunk.use_vae`` False), and norm_G without spectral norm by default (trained with
      regression losses here; spectral-normed checkpoints are folded at load as SPADE's)."""

    trunk: SPADEConfig = _TRUNK_DEFAULT
    fourier_features: int = 128
    fourier_scale: float = 1.0
    mlp_width: int = 256
    coordinate_encoding: str = "xy"
    coordinate_octaves: int = 4
    fp32_tail_blocks: int = 0

    def __post_init__(self) -> None:
        if self.trunk.use_vae:
            raise UsageError("a PosGen trunk takes no VAE style (use_vae False)")
        if self.coordinate_encoding not in COORDINATE_ENCODINGS:
            raise UsageError(f"coordinate_encoding must be one of {', '.join(COORDINATE_ENCODINGS)}, got "
                             f"{self.coordinate_encoding!r}")
        if (min(self.fourier_features, self.mlp_width) < 1 or self.fourier_scale <= 0
                or min(self.coordinate_octaves, self.fp32_tail_blocks) < 0):
            raise UsageError(f"malformed PosGen config {self}")

    def to_dict(self) -> dict:
        """Flat: the trunk's options by SPADE's names, then the head's."""
        head = {k: v for k, v in asdict(self).items() if k != "trunk"}
        return {**{k: getattr(self.trunk, k) for k in _TRUNK_OPTIONS}, **head}

    @classmethod
    def from_dict(cls, data: dict) -> PosGenConfig:
        trunk = SPADEConfig.from_dict({**_TRUNK_DEFAULT.to_dict(), **{k: data[k] for k in _TRUNK_OPTIONS
                                                                      if k in data}})
        head = {f.name: data[f.name] for f in fields(cls) if f.name != "trunk" and f.name in data}
        try:
            return cls(trunk=trunk, **head)
        except TypeError as e:
            raise UsageError(f"malformed PosGenConfig {data!r}: {e}") from None

    @classmethod
    def option_types(cls) -> dict[str, str]:
        trunk = SPADEConfig.option_types()
        return {**{k: trunk[k] for k in _TRUNK_OPTIONS}, **{k: v for k, v in super().option_types().items()
                                                              if k != "trunk"}}

    def with_options(self, values: dict) -> PosGenConfig:
        return type(self).from_dict({**self.to_dict(), **values})

    @property
    def feature_channels(self) -> int:
        return self.trunk.ngf // 2 if self.trunk.num_upsampling_layers == "most" else self.trunk.ngf

    @property
    def coordinate_channels(self) -> int:
        return 2 + (4 * self.coordinate_octaves if self.coordinate_encoding == "fourier" else 0)

    @property
    def head_inputs(self) -> int:
        return self.feature_channels + 2 * self.fourier_features + self.coordinate_channels

    @property
    def native_resolution(self) -> tuple[int, int]:
        return self.trunk.native_resolution


def _trunk(**options) -> SPADEConfig:
    return SPADEConfig(**{**asdict(_TRUNK_DEFAULT), **options})


class PosGenFamily(SPADETrunkFamily):
    name = "posgen"
    config_type = PosGenConfig
    decoupled_output = True
    presets = {
        # SPADE's released trunks (Cityscapes, COCO-Stuff) with the pixel-wise head
        "posgen_cityscapes": PosGenConfig(),
        "posgen_coco": PosGenConfig(_trunk(label_nc=182, contain_dontcare_label=True, num_upsampling_layers="normal",
                                           crop_size=256, aspect_ratio=1.0)),
        # what crn-train trains on the synthetic street dataset (train ids + void as don't-care), 128x256
        "posgen-demo": PosGenConfig(_trunk(label_nc=19, contain_dontcare_label=True, instances=False, ngf=16,
                                           num_upsampling_layers="normal", crop_size=256, norm_G="spadeinstance3x3",
                                           nhidden=32), fourier_features=32, mlp_width=64),
        # for tests: 32x64, batch norm (pixel-local at inference), Fourier coordinates
        "posgen-tiny": PosGenConfig(_trunk(ngf=4, num_upsampling_layers="normal", crop_size=64, nhidden=16),
                                    fourier_features=8, mlp_width=16, coordinate_encoding="fourier",
                                    coordinate_octaves=2),
    }
    presets = {name: (config, config.native_resolution) for name, config in presets.items()}
    test_preset = "posgen-tiny"
    full_preset = "posgen_cityscapes"

    def label_set_for(self, config: PosGenConfig) -> LabelSet:
        if config.trunk.label_nc == CITYSCAPES.num_classes:
            return CITYSCAPES  # the synthetic street dataset's train ids
        return super().label_set_for(config.trunk)

    def check_resolution(self, resolution, config: PosGenConfig) -> None:
        super().check_resolution(resolution, config.trunk)

    def takes_instances(self, config: PosGenConfig) -> bool:
        return config.trunk.instances

    def style_size(self, config: PosGenConfig) -> int | None:
        return None

    def more_fp32(self, config: PosGenConfig) -> tuple[PosGenConfig, str] | None:
        blocks = config.fp32_tail_blocks + 1
        if blocks > len(config.trunk.widths()):
            return None
        return replace(config, fp32_tail_blocks=blocks), f"the trunk's last {blocks} block(s) in FP32"

    def describe(self, config: PosGenConfig) -> str:
        return (f"PosGen: {super().describe(config.trunk)} trunk; pixel-wise MLP {config.head_inputs}->"
                f"{config.mlp_width}->{config.mlp_width}->3 on features, {config.fourier_features} Fourier "
                f"features and {config.coordinate_encoding} coordinates")


POSGEN = register(PosGenFamily())
