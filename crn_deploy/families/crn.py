"""The Cascaded Refinement Network (Chen & Koltun, ICCV 2017), contract side: the architecture as data
(``CRNConfig``), the authors' released models and smaller ones as presets, and which sizes it runs at.
The torch side (reference model, checkpoints, graph writer) is ``crn_deploy/models/crn.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UsageError
from ..labels import CITYSCAPES
from ..sizes import check_multiple
from .base import ConfigRecord, Family, register

BASE_RESOLUTION = (4, 8)  # height x width of module 0 in the released models


@dataclass(frozen=True)
class CRNConfig(ConfigRecord):
    """One CRN generator: a cascade of refinement modules, coarsest first.

    ``widths[i]`` is the feature width of module ``i``; module ``i`` runs at
    ``base * 2**i``. ``k`` is the number of images emitted (3k output channels).
    """

    num_classes: int = 19
    widths: tuple[int, ...] = ()
    base: tuple[int, int] = BASE_RESOLUTION
    k: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "base", tuple(int(b) for b in self.base))
        if not self.widths or min(self.widths) < 1:
            raise UsageError(f"a CRN needs at least one module of positive width, got widths {self.widths}")
        if self.num_classes < 1 or self.num_classes > 254:
            raise UsageError(f"num_classes must be 1..254 (uint8 ids, 255 = void), got {self.num_classes}")
        if self.k < 1:
            raise UsageError(f"k (images per label map) must be >= 1, got {self.k}")

    @property
    def num_modules(self) -> int:
        return len(self.widths)

    @property
    def layout_channels(self) -> int:
        """One-hot classes plus the void channel."""
        return self.num_classes + 1

    @property
    def out_channels(self) -> int:
        return 3 * self.k

    @property
    def scale(self) -> int:
        """Output size / base size: each module after the first doubles both sides."""
        return 2 ** (self.num_modules - 1)

    @property
    def native_resolution(self) -> tuple[int, int]:
        return (self.base[0] * self.scale, self.base[1] * self.scale)

    def module_in_channels(self, i: int) -> int:
        return self.layout_channels + (self.widths[i - 1] if i else 0)

    def base_for(self, resolution: tuple[int, int]) -> tuple[int, int]:
        """The base resolution that makes the last module emit ``resolution``."""
        CRN.check_resolution(resolution, self)
        return (resolution[0] // self.scale, resolution[1] // self.scale)

    def macs(self, resolution: tuple[int, int]) -> int:
        """Multiply-accumulates of one forward pass at ``resolution``."""
        h, w = self.base_for(resolution)
        total = 0
        for i, width in enumerate(self.widths):
            pixels = (h << i) * (w << i)
            total += pixels * 9 * width * (self.module_in_channels(i) + width)
        return total + resolution[0] * resolution[1] * self.widths[-1] * self.out_channels

    def num_parameters(self) -> int:
        convs = sum(9 * w * (self.module_in_channels(i) + w) + 4 * w for i, w in enumerate(self.widths))
        return convs + self.widths[-1] * self.out_channels + self.out_channels

    def to_dict(self) -> dict:
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["base"] = list(self.base)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CRNConfig:
        try:
            return cls(
                num_classes=int(data["num_classes"]),
                widths=tuple(data["widths"]),
                base=tuple(data.get("base", BASE_RESOLUTION)),
                k=int(data.get("k", 1)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"malformed CRN config {data!r}: {e}") from None


def released_widths(num_modules: int, last_override: dict[int, int] | None = None) -> tuple[int, ...]:
    """Feature widths of the authors' models by module height ``sp`` (docs/families/crn.md)."""
    widths = []
    for i in range(num_modules):
        sp = BASE_RESOLUTION[0] << i
        width = 1024 if sp <= 64 else 512 if sp <= 256 else 128 if sp == 512 else 32
        widths.append((last_override or {}).get(sp, width))
    return tuple(widths)


def _scaled(widths: tuple[int, ...], divisor: int) -> tuple[int, ...]:
    return tuple(max(4, w // divisor) for w in widths)


PRESETS: dict[str, CRNConfig] = {
    "cityscapes-256p": CRNConfig(19, released_widths(7), k=9),
    "cityscapes-512p": CRNConfig(19, released_widths(8)),
    "cityscapes-1024p": CRNConfig(19, released_widths(9)),
    "gta-256p": CRNConfig(19, released_widths(7), k=9),
    # Same cascade as cityscapes-256p at 1/8 of the widths: fast on a CPU, for demos.
    "small-256p": CRNConfig(19, _scaled(released_widths(7), 8)),
    # A few kilobytes of weights: for tests.
    "tiny": CRNConfig(19, (16, 16, 12, 8), base=(4, 8), k=1),
}

RELEASED_PRESETS = ("cityscapes-256p", "cityscapes-512p", "cityscapes-1024p", "gta-256p")


class CRNFamily(Family):
    name = "crn"
    config_type = CRNConfig
    presets = {name: (config, config.native_resolution) for name, config in PRESETS.items()}
    test_preset = "tiny"
    full_preset = "cityscapes-256p"
    label_set = CITYSCAPES

    def check_resolution(self, resolution, config: CRNConfig) -> None:
        check_multiple(resolution, config.scale,
                       f"{config.num_modules} modules halve it {config.num_modules - 1} times")

    def images_per_map(self, config: CRNConfig) -> int:
        return config.k

    def describe(self, config: CRNConfig) -> str:
        return (f"{config.num_modules} modules, widths {list(config.widths)}, k={config.k}, "
                f"{config.num_parameters():,} parameters")


CRN = register(CRNFamily())
