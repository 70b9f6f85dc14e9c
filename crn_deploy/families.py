"""The generator families as data: what the contract layer (manifest, runtime, benchmark) must know of
each — its config type and presets, which sizes it runs at, the tensors its artifacts take and give,
its label set. Stdlib and NumPy only; the torch side of a family (reference model, checkpoint reader,
graph writer) lives in ``crn_deploy.models`` and is looked up by the same name.

No layer branches on a family's name: it asks the family.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from .config import PRESETS as CRN_PRESETS
from .config import CRNConfig, check_multiple, check_resolution, did_you_mean
from .errors import UsageError
from .labels import ADE20K, CITYSCAPES, CITYSCAPES_LABEL_IDS, COCO_STUFF, LabelSet, generic_label_set

LABELS, INSTANCES, STYLE, IMAGE = "labels", "instances", "z", "image"  # the artifacts' tensor names


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


class ConfigRecord:
    """``to_dict`` / ``from_dict`` of the families' frozen dataclass configs (unknown keys ignored)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        try:
            return cls(**{k: data[k] for k in asdict(cls()) if k in data})
        except TypeError as e:
            raise UsageError(f"malformed {cls.__name__} {data!r}: {e}") from None


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


class Family:
    """One generator family's contract: subclasses fill in the table."""

    name: str
    config_type: type
    presets: dict  # preset name -> (config, native resolution)
    label_set: LabelSet
    # How label maps are resized on the host: "nearest" (OpenCV, source pixel floor(y * in / out)) or
    # "nearest-exact" (PIL's NEAREST, floor((y + 0.5) * in / out), as pix2pixHD's loaders resize).
    label_resize: str = "nearest"
    # Whether an artifact's picture may have another size than its label map (PosGen's pixel-wise head).
    decoupled_output: bool = False

    def config_from_dict(self, data: dict):
        return self.config_type.from_dict(data)

    def label_set_for(self, config) -> LabelSet:
        """The label set a model of this config was trained on (where its checkpoint records none)."""
        return self.label_set

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


class SPADEFamily(Family):
    name = "spade"
    config_type = SPADEConfig
    presets = {
        # The released models (the official README's checkpoints.tar.gz) with their test-time options.
        "spade_cityscapes": SPADEConfig(),
        "spade_ade20k": SPADEConfig(label_nc=150, contain_dontcare_label=True, instances=False,
                                    num_upsampling_layers="normal", crop_size=256, aspect_ratio=1.0),
        "spade_coco": SPADEConfig(label_nc=182, contain_dontcare_label=True, num_upsampling_layers="normal",
                                  crop_size=256, aspect_ratio=1.0),
        # A few hundred kilobytes, for tests: every kind of block (learned shortcuts) at 32x64.
        "spade-tiny": SPADEConfig(ngf=4, num_upsampling_layers="normal", crop_size=64, nhidden=16),
    }
    presets = {name: (config, config.native_resolution) for name, config in presets.items()}
    label_set = CITYSCAPES_LABEL_IDS
    label_resize = "nearest-exact"  # on the host, as SPADE's loaders resize (PIL NEAREST); inside the graph
    # each block's resize is torch's legacy nearest, as the generator's F.interpolate

    def label_set_for(self, config: SPADEConfig) -> LabelSet:
        for known in (CITYSCAPES_LABEL_IDS, ADE20K, COCO_STUFF):
            if known.num_classes == config.label_nc + config.contain_dontcare_label:
                return known
        return generic_label_set(config.label_nc + config.contain_dontcare_label)

    def native_resolution(self, config: SPADEConfig) -> tuple[int, int]:
        return config.native_resolution

    def check_resolution(self, resolution, config: SPADEConfig) -> None:
        if config.use_vae and tuple(resolution) != config.native_resolution:
            h, w = config.native_resolution
            raise UsageError(f"a SPADE model trained with --use_vae draws its first feature map from z at the size "
                             f"its crop_size and aspect_ratio fix: export it at --res {h}x{w}, not "
                             f"{resolution[0]}x{resolution[1]}")
        check_multiple(resolution, 2**config.up_layers, f"num_upsampling_layers {config.num_upsampling_layers}")

    def takes_instances(self, config: SPADEConfig) -> bool:
        return config.instances

    def inputs(self, config: SPADEConfig, resolution: tuple[int, int], batch: int) -> tuple[TensorSpec, ...]:
        specs = super().inputs(config, resolution, batch)
        return (*specs, TensorSpec(STYLE, "float32", (batch, config.z_dim))) if config.use_vae else specs

    def describe(self, config: SPADEConfig) -> str:
        extra = (" + don't-care" if config.contain_dontcare_label else "") + (" + instance edges" if config.instances
                                                                              else "")
        style = f", VAE style z[{config.z_dim}]" if config.use_vae else ""
        return (f"SPADE ngf {config.ngf}, {config.num_upsampling_layers} upsampling, {config.norm_G}, "
                f"{config.label_nc} labels{extra}{style}")


COORDINATE_ENCODINGS = ("xy", "fourier")


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
    - no style VAE, and norm_G without spectral norm by default (trained with regression losses here;
      spectral-normed checkpoints are folded at load as SPADE's)."""

    label_nc: int = 35
    contain_dontcare_label: bool = False
    instances: bool = True
    ngf: int = 64
    num_upsampling_layers: str = "more"
    crop_size: int = 512
    aspect_ratio: float = 2.0
    norm_G: str = "spadesyncbatch3x3"
    nhidden: int = 128
    fourier_features: int = 128
    fourier_scale: float = 1.0
    mlp_width: int = 256
    coordinate_encoding: str = "xy"
    coordinate_octaves: int = 4

    def __post_init__(self) -> None:
        _ = self.trunk  # builds (and so validates) the SPADE trunk
        if self.coordinate_encoding not in COORDINATE_ENCODINGS:
            raise UsageError(f"coordinate_encoding must be one of {', '.join(COORDINATE_ENCODINGS)}, got "
                             f"{self.coordinate_encoding!r}")
        if min(self.fourier_features, self.mlp_width) < 1 or self.fourier_scale <= 0 or self.coordinate_octaves < 0:
            raise UsageError(f"malformed PosGen config {self}")

    @property
    def trunk(self) -> SPADEConfig:
        names = {f.name for f in fields(SPADEConfig)}
        return SPADEConfig(**{k: v for k, v in asdict(self).items() if k in names})

    @property
    def feature_channels(self) -> int:
        return self.ngf // 2 if self.num_upsampling_layers == "most" else self.ngf

    @property
    def coordinate_channels(self) -> int:
        return 2 + (4 * self.coordinate_octaves if self.coordinate_encoding == "fourier" else 0)

    @property
    def head_inputs(self) -> int:
        return self.feature_channels + 2 * self.fourier_features + self.coordinate_channels

    @property
    def native_resolution(self) -> tuple[int, int]:
        return self.trunk.native_resolution


class PosGenFamily(SPADEFamily):
    name = "posgen"
    config_type = PosGenConfig
    decoupled_output = True
    presets = {
        # SPADE's released trunks (Cityscapes, COCO-Stuff) with the pixel-wise head
        "posgen_cityscapes": PosGenConfig(),
        "posgen_coco": PosGenConfig(label_nc=182, contain_dontcare_label=True, num_upsampling_layers="normal",
                                    crop_size=256, aspect_ratio=1.0),
        # what crn-train trains on the synthetic street dataset (train ids + void as don't-care), 128x256
        "posgen-demo": PosGenConfig(label_nc=19, contain_dontcare_label=True, instances=False, ngf=16,
                                    num_upsampling_layers="normal", crop_size=256, norm_G="spadeinstance3x3",
                                    nhidden=32, fourier_features=32, mlp_width=64),
        # for tests: 32x64, batch norm (pixel-local at inference), Fourier coordinates
        "posgen-tiny": PosGenConfig(ngf=4, num_upsampling_layers="normal", crop_size=64, nhidden=16,
                                    fourier_features=8, mlp_width=16, coordinate_encoding="fourier",
                                    coordinate_octaves=2),
    }
    presets = {name: (config, config.native_resolution) for name, config in presets.items()}

    def label_set_for(self, config: PosGenConfig) -> LabelSet:
        if config.label_nc == CITYSCAPES.num_classes:
            return CITYSCAPES  # the synthetic street dataset's train ids
        return super().label_set_for(config)

    def check_resolution(self, resolution, config: PosGenConfig) -> None:
        super().check_resolution(resolution, config.trunk)

    def inputs(self, config: PosGenConfig, resolution: tuple[int, int], batch: int) -> tuple[TensorSpec, ...]:
        return Family.inputs(self, config, resolution, batch)

    def describe(self, config: PosGenConfig) -> str:
        return (f"PosGen: {super().describe(config.trunk)} trunk; pixel-wise MLP {config.head_inputs}->"
                f"{config.mlp_width}->{config.mlp_width}->3 on features, {config.fourier_features} Fourier "
                f"features and {config.coordinate_encoding} coordinates")


FAMILIES: dict[str, Family] = {f.name: f for f in (CRNFamily(), Pix2PixHDFamily(), SPADEFamily(), PosGenFamily())}


def draw_styles(count: int, z_dim: int, seed: int) -> np.ndarray:
    """float32 [count, z_dim] style vectors from N(0, 1), as SPADE samples z at test time (its own draw
    uses torch's generator; a seed here fixes a style across frames and runs)."""
    return np.random.default_rng(seed).standard_normal((count, z_dim)).astype(np.float32)


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


def model_inputs(specs: tuple[TensorSpec, ...], ids: np.ndarray, instances: np.ndarray | None = None,
                 style_seed: int = 0) -> tuple[np.ndarray, ...]:
    """The arrays an artifact of these input specs takes for uint8 ids [N,1,H,W], in its order: the ids,
    instance ids where taken (the ids stand in where there are none), style vectors drawn from
    ``style_seed`` where taken. For parity checks and benchmarks, where every model of a comparison must
    see the same inputs."""
    arrays = []
    for spec in specs:
        if spec.name == LABELS:
            arrays.append(ids)
        elif spec.name == INSTANCES:
            arrays.append(ids.astype(np.int32) if instances is None else instances)
        elif spec.name == STYLE:
            arrays.append(draw_styles(len(ids), spec.shape[-1], style_seed))
        else:
            raise ValueError(f"no example input for the tensor {spec.name}")
    return tuple(arrays)


def config_fields_from_options(config_type: type, opt: dict[str, str], origin: str) -> dict:
    """A training run's options by their official names (``opt.txt`` lines, ``--option KEY=VALUE``) as the
    fields of ``config_type`` they set, typed; ``no_instance`` becomes ``instances``; options that do not
    shape the generator are left out."""
    types = {f.name: f.type for f in fields(config_type)}
    parsed = {}
    for key, text in opt.items():
        name = "instances" if key == "no_instance" else key
        if name not in types:
            continue
        try:
            value = _typed(types[name], str(text))
        except ValueError:
            raise UsageError(f"{origin}: option {key}={text!r} is not a valid {types[name]}") from None
        parsed[name] = not value if key == "no_instance" else value
    return parsed


def _typed(kind: str, text: str):
    if kind == "bool":
        if text not in ("True", "False", "true", "false", "1", "0"):
            raise ValueError(text)
        return text in ("True", "true", "1")
    return int(text) if kind == "int" else float(text) if kind == "float" else text
