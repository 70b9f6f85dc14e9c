"""The artifact contract: tensor names and shapes, precisions, and the sidecar JSON manifest.

Every exported artifact ``<name>-<H>x<W>-<precision>.onnx`` has ``<same stem>.json`` beside it
saying what it is (model config, label set, I/O), where it came from and how faithful it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArtifactError, UsageError
from .families import IMAGE, LABELS, Family, TensorSpec, family
from .files import check_file_matches, write_json_atomic
from .labels import LabelSet
from .precisions import Precision, precision
from .records import EngineRecord, Parity, Source
from .sizes import format_resolution
from .targets import TARGETS, EngineTarget, artifact_stem_of

SCHEMA = "crn-deploy/artifact"
SCHEMA_VERSION = 1

INPUT_NAME = LABELS
OUTPUT_NAME = IMAGE


def artifact_stem(name: str, resolution: tuple[int, int], precision: str,
                  output_resolution: tuple[int, int] | None = None) -> str:
    """``name-HxW-precision``; ``name-HxW-outH'xW'-precision`` where the picture has another size."""
    out = f"-out{format_resolution(output_resolution)}" if output_resolution and \
        tuple(output_resolution) != tuple(resolution) else ""
    return f"{name}-{format_resolution(resolution)}{out}-{precision}"


@dataclass
class Manifest:
    name: str
    artifact: str  # file name of the artifact, relative to the manifest's folder
    resolution: tuple[int, int]
    precision: Precision
    batch: int
    config: object  # the family's config type (CRNConfig, Pix2PixHDConfig)
    label_set: LabelSet
    source: dict  # {"kind": "checkpoint", "path", "sha256"} or {"kind": "random", "preset", "seed", "config"}
    sections: dict = field(default_factory=dict)  # onnx, parity, versions, export timings, ...
    path: Path | None = None  # where this manifest lives on disk, once written or read
    family_name: str = "crn"  # the one place the family is named; manifests written before families are CRN's
    output_resolution: tuple[int, int] | None = None  # the picture's size where it is not the label map's

    def __post_init__(self) -> None:
        self.precision = precision(self.precision)
        self.source = {k: v for k, v in self.source.items() if k != "family"}  # named once: family_name
        self.resolution = tuple(self.resolution)
        self.output_resolution = tuple(self.output_resolution or self.resolution)

    @property
    def family(self) -> Family:
        return family(self.family_name)

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """labels, then (for families that take them) instances: the order backends take arrays in."""
        return self.family.inputs(self.config, self.resolution, self.batch)

    @property
    def input_spec(self) -> TensorSpec:
        return self.input_specs[0]

    @property
    def output_spec(self) -> TensorSpec:
        return self.family.output(self.config, self.output_resolution, self.batch)

    @property
    def images_per_map(self) -> int:
        return self.family.images_per_map(self.config)

    def engine_record(self, target: EngineTarget) -> EngineRecord | None:
        """The engine built for ``target`` from this artifact, where one was."""
        data = self.sections.get(target.manifest_key)
        return EngineRecord.from_dict(data) if data else None

    def set_engine_record(self, target: EngineTarget, record: EngineRecord) -> None:
        self.sections[target.manifest_key] = record.to_dict()

    def engine_records(self) -> dict[EngineTarget, EngineRecord]:
        """Every engine built from this artifact, by target (TensorRT's and TensorRT-RTX's may lie side by side)."""
        return {t: r for t in TARGETS.values() if (r := self.engine_record(t)) is not None}

    @property
    def parity(self) -> Parity | None:
        """The export's parity against the PyTorch FP32 reference."""
        data = self.sections.get("parity")
        return Parity.from_dict(data) if data else None

    @property
    def source_record(self) -> Source:
        return Source.from_dict(self.source)

    @property
    def artifact_path(self) -> Path:
        if self.path is None:
            raise ArtifactError(f"manifest for {self.artifact} has not been written or read from disk")
        return self.path.parent / self.artifact

    def reexport_command(self) -> str:
        """The crn-export command that writes this artifact again (from its checkpoint, or seeded weights)."""
        source = self.source_record
        origin = (f"{source.path} --family {self.family_name}" if source.kind == "checkpoint" else
                  f"--random-weights --preset {source.preset} --seed {source.seed}")
        picture = format_resolution(self.output_resolution)
        out = "" if self.output_resolution == self.resolution else f" --out-res {picture}"
        return (f"crn-export {origin} --res {format_resolution(self.resolution)}{out} --precision {self.precision}"
                f" --batch {self.batch} --name {self.name} --out {self.path.parent if self.path else 'engines'}")

    def check_artifact(self, data: bytes | None = None) -> None:
        """Refuse an ONNX file that is not the one exported (size always; SHA-256 from ``data`` or once per
        file), naming the command that writes it again. Manifests without an onnx record pass."""
        record = self.sections.get("onnx") or {}
        path = self.artifact_path
        fix = f"re-export it with: {self.reexport_command()}"
        if not path.is_file():
            raise ArtifactError(f"{path} is missing beside its manifest {self.path}; {fix}")
        if "size_bytes" in record:
            check_file_matches(path, record["size_bytes"], record.get("sha256"), fix, data)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "family": self.family_name,
            "name": self.name,
            "artifact": self.artifact,
            "resolution": list(self.resolution),
            "output_resolution": list(self.output_resolution),
            "precision": self.precision.name,
            "batch": self.batch,
            "inputs": [spec.to_dict() for spec in self.input_specs],
            "outputs": [self.output_spec.to_dict()],
            "config": self.config.to_dict(),
            "label_set": self.label_set.to_dict(),
            "source": {**self.source, "family": self.family_name},  # as manifests have always held it
            **self.sections,
        }

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())
        self.path = Path(path)

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> Manifest:
        where = path or "manifest"
        if data.get("schema") != SCHEMA:
            raise ArtifactError(f"{where} is not a crn-deploy manifest (schema {data.get('schema')!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"{where} has manifest schema version {data.get('schema_version')}, this crn-deploy reads "
                f"{SCHEMA_VERSION}; re-export the artifact with this version's crn-export"
            )
        known = {"schema", "schema_version", "family", "name", "artifact", "resolution", "output_resolution",
                 "precision", "batch", "inputs", "outputs", "config", "label_set", "source"}
        try:
            fam = family(data.get("family", "crn"))
            return cls(
                name=data["name"],
                artifact=data["artifact"],
                resolution=tuple(data["resolution"]),
                precision=precision(data["precision"]),
                batch=int(data["batch"]),
                config=fam.config_from_dict(data["config"]),
                label_set=LabelSet.from_dict(data["label_set"]),
                source=data["source"],
                sections={k: v for k, v in data.items() if k not in known},
                path=path,
                family_name=fam.name,
                output_resolution=tuple(data.get("output_resolution") or data["resolution"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{where} is missing or has a bad field {e}; re-export the artifact") from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"manifest {path} not found; export the artifact with crn-export") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"manifest {path} is unreadable ({e}); re-export the artifact") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"manifest {path} is not a JSON object; re-export the artifact")
        return cls.from_dict(data, path)


def manifest_for(artifact: Path) -> Path:
    """The sidecar manifest path of an artifact or engine file (or the manifest itself)."""
    artifact = Path(artifact)
    return artifact if artifact.suffix == ".json" else artifact.with_name(f"{artifact_stem_of(artifact.name)}.json")


def find_manifests(folder: Path) -> list[Manifest]:
    """Every crn-deploy manifest in a folder (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; pass the folder crn-export wrote (default engines/)")
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            found.append(Manifest.from_dict(data, path))
    return found
