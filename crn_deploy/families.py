"""The generator families as data: what the contract layer (manifest, runtime, benchmark) must know of
each — its config type and presets, which sizes it runs at, the tensors its artifacts take and give,
its label set. Stdlib and NumPy only; the torch side of a family (reference model, checkpoint reader,
graph writer) lives in ``crn_deploy.models`` and is looked up by the same name.

No layer branches on a family's name: it asks the family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import PRESETS as CRN_PRESETS
from .config import CRNConfig, check_multiple, check_resolution, did_you_mean
from .errors import UsageError
from .labels import CITYSCAPES, CITYSCAPES_LABEL_IDS, LabelSet

LABELS, INSTANCES, IMAGE = "labels", "instances", "image"  # the artifacts' tensor names


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Pix2PixHDConfig:
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Pix2PixHDConfig:
        try:
            return cls(**{k: data[k] for k in asdict(cls()) if k in data})
        except TypeError as e:
            raise UsageError(f"malformed pix2pixHD config {data!r}: {e}") from None


class Family:
    """One generator family's contract: subclasses fill in the table."""

    name: str
    config_type: type
    presets: dict  # preset name -> (config, native resolution)
    label_set: LabelSet
    # How label maps are resized on the host: "nearest" (OpenCV, source pixel floor(y * in / out)) or
    # "nearest-exact" (PIL's NEAREST, floor((y + 0.5) * in / out), as pix2pixHD's loaders resize).
    label_resize: str = "nearest"

    def config_from_dict(self, data: dict):
        return self.config_type.from_dict(data)

    def native_resolution(self, config) -> tuple[int, int]:
        raise NotImplementedError

    def check_resolution(self, resolution: tuple[int, int], config) -> None:
        raise NotImplementedError

    def takes_instances(self, config) -> bool:
        return False

    def images_per_map(self, config) -> int:
        return 1

    def inputs(self, config, resolution: tuple[int, int], batch: int) -> tuple[TensorSpec, ...]:
        h, w = resolution
        labels = TensorSpec(LABELS, "uint8", (batch, 1, h, w))
        return (labels, TensorSpec(INSTANCES, "int32", (batch, 1, h, w))) if self.takes_instances(config) else \
            (labels,)

    def output(self, config, resolution: tuple[int, int], batch: int) -> TensorSpec:
        k = self.images_per_map(config)
        return TensorSpec(IMAGE, "uint8", (batch, *resolution, 3) if k == 1 else (batch, k, *resolution, 3))

    def describe(self, config) -> str:
        return f"{self.name} {config.to_dict()}"


class CRNFamily(Family):
    name = "crn"
    config_type = CRNConfig
    presets = {name: (config, config.native_resolution) for name, config in CRN_PRESETS.items()}
    label_set = CITYSCAPES

    def native_resolution(self, config: CRNConfig) -> tuple[int, int]:
        return config.native_resolution

    def check_resolution(self, resolution, config: CRNConfig) -> None:
        check_resolution(resolution, config)

    def images_per_map(self, config: CRNConfig) -> int:
        return config.k

    def describe(self, config: CRNConfig) -> str:
        return (f"{config.num_modules} modules, widths {list(config.widths)}, k={config.k}, "
                f"{config.num_parameters():,} parameters")


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


FAMILIES: dict[str, Family] = {f.name: f for f in (CRNFamily(), Pix2PixHDFamily())}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UsageError(f"unknown model family '{name}': {did_you_mean(name, FAMILIES)}choose one of "
                         f"{', '.join(FAMILIES)}") from None


def find_preset(name: str) -> tuple[Family, object]:
    """(family, config) of a preset name; preset names are unique across families."""
    for fam in FAMILIES.values():
        if name in fam.presets:
            return fam, fam.presets[name][0]
    every = [p for fam in FAMILIES.values() for p in fam.presets]
    raise UsageError(f"unknown preset '{name}': {did_you_mean(name, every)}choose one of {', '.join(every)}")
