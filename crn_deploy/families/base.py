"""What every family's contract shares: tensor specs with their roles, the config record, the ``Family``
base class, the registry, and the inputs a comparison feeds every model alike. Stdlib and NumPy only.

A family registers itself from its own module (``crn_deploy/families/<name>.py``); nothing else names it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ..errors import UsageError
from ..labels import LabelSet
from ..sizes import Sizes, did_you_mean

LABELS, INSTANCES, STYLE, IMAGE = "labels", "instances", "z", "image"  # the artifacts' tensor names


class Role:
    """What an input tensor is, so that every caller can feed it without knowing the family: the label ids
    (every model), instance ids (a map shaped like the labels), or a style / noise vector per picture."""

    LABELS = "labels"
    INSTANCES = "instances"
    STYLE = "style"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str = Role.LABELS  # inputs: a Role; the manifest keeps name, dtype and shape (the role follows the family)

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

    @classmethod
    def option_types(cls) -> dict[str, str]:
        """The official option names this config takes, with their types ("int", "bool"...)."""
        return {f.name: f.type for f in fields(cls)}

    def with_options(self, values: dict):
        """This config with some options (typed, by name) set over it."""
        return type(self).from_dict({**self.to_dict(), **values})


class Family:
    """One generator family's contract: subclasses fill in the table and override what differs."""

    name: str
    config_type: type
    presets: dict  # preset name -> (config, native resolution)
    test_preset: str  # a tiny preset of this family, for tests (the conformance suite runs it)
    full_preset: str  # a released, full-width preset (the FP16 floor is tested on it at 256x512)
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
        return config.native_resolution

    def check_resolution(self, resolution: tuple[int, int], config) -> None:
        raise NotImplementedError

    def check_sizes(self, sizes: Sizes, config) -> None:
        """Refuse sizes this model cannot paint: its label resolution's rule, and a picture of another size
        than the label map where the family has no pixel-wise head."""
        self.check_resolution(sizes.labels, config)
        if sizes.decoupled and not self.decoupled_output:
            raise UsageError(f"a {self.name} model paints pictures the size of its label map; --out-res is for "
                             "families with a pixel-wise head")

    def takes_instances(self, config) -> bool:
        return False

    def style_size(self, config) -> int | None:
        """The length of the style / noise vector each picture takes, or None where the model takes none."""
        return None

    def images_per_map(self, config) -> int:
        return 1

    def more_fp32(self, config) -> tuple[object, str] | None:
        """(the config with one more part of the model kept in FP32 in reduced-precision graphs, what is then
        FP32), where the family has such a knob and it can go further; else None. An FP16 export below the
        floor tries again with it, so each model gets the smallest FP32 island that holds the floor."""
        return None

    def inputs(self, config, resolution: tuple[int, int], batch: int) -> tuple[TensorSpec, ...]:
        h, w = resolution
        specs = [TensorSpec(LABELS, "uint8", (batch, 1, h, w), Role.LABELS)]
        if self.takes_instances(config):
            specs.append(TensorSpec(INSTANCES, "int32", (batch, 1, h, w), Role.INSTANCES))
        if self.style_size(config):
            specs.append(TensorSpec(STYLE, "float32", (batch, self.style_size(config)), Role.STYLE))
        return tuple(specs)

    def output(self, config, resolution: tuple[int, int], batch: int) -> TensorSpec:
        k = self.images_per_map(config)
        return TensorSpec(IMAGE, "uint8", (batch, *resolution, 3) if k == 1 else (batch, k, *resolution, 3), "")

    def describe(self, config) -> str:
        return f"{self.name} {config.to_dict()}"


FAMILIES: dict[str, Family] = {}  # name -> family, filled as crn_deploy.families imports each family's module


def register(fam: Family) -> Family:
    if fam.name in FAMILIES:
        raise ValueError(f"two families named {fam.name}")
    clash = set(fam.presets) & {p for other in FAMILIES.values() for p in other.presets}
    if clash:
        raise ValueError(f"preset names are unique across families: {sorted(clash)} taken")
    FAMILIES[fam.name] = fam
    return fam


def family_of_config(config) -> Family:
    for fam in FAMILIES.values():
        if type(config) is fam.config_type:
            return fam
    raise TypeError(f"no model family has config type {type(config).__name__}")


def family_of_config_dict(data: dict) -> Family:
    """The one family whose config a stored config dict is (its keys are that config's own)."""
    keys = set(data)
    fits = [fam for fam in FAMILIES.values() if keys <= set(fam.config_type.option_types())]
    if len(fits) != 1:
        raise UsageError(f"config {sorted(keys)} names no family (it fits {len(fits)}); re-export the artifact")
    return fits[0]


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
    """The arrays an artifact of these input specs takes for uint8 ids [N,1,H,W], in its order, by role: the
    ids, instance ids where taken (the ids stand in where there are none), style vectors drawn from
    ``style_seed`` where taken. For parity checks and benchmarks, where every model of a comparison must
    see the same inputs."""
    examples = {
        Role.LABELS: lambda spec: ids,
        Role.INSTANCES: lambda spec: ids.astype(np.int32) if instances is None else instances,
        Role.STYLE: lambda spec: draw_styles(len(ids), spec.shape[-1], style_seed),
    }
    return tuple(examples[spec.role](spec) for spec in specs)


def config_fields_from_options(config_type: type, opt: dict[str, str], origin: str) -> dict:
    """A training run's options by their official names (``opt.txt`` lines, ``--option KEY=VALUE``) as the
    fields of ``config_type`` they set, typed; ``no_instance`` becomes ``instances``; options that do not
    shape the generator are left out."""
    types = config_type.option_types()
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
