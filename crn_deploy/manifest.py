"""The artifact contract: tensor names and shapes, precisions, and the sidecar JSON manifest.

Every exported artifact ``<name>-<H>x<W>-<precision>.onnx`` has ``<same stem>.json`` beside it
saying what it is (model config, label set, I/O), where it came from and how faithful it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArtifactError, UsageError
from .families import IMAGE, LABELS, Family, TensorSpec, family, family_of_config_dict
from .files import check_file_matches, write_json_atomic
from .labels import LabelSet
from .precisions import Precision, precision
from .records import EngineRecord, Parity, Source
from .sizes import Sizes, format_resolution
from .targets import TARGETS, EngineTarget, artifact_stem_of

SCHEMA = "crn-deploy/artifact"
SCHEMA_VERSION = 1

INPUT_NAME = LABELS
OUTPUT_NAME = IMAGE


def artifact_stem(name: str, sizes: Sizes, precision: str) -> str:
    """``name-HxW-precision``; ``name-HxW-outH'xW'-precision`` where the picture has another size."""
    out = f"-out{format_resolution(sizes.picture)}" if sizes.decoupled else ""
    return f"{name}-{format_resolution(sizes.labels)}{out}-{precision}"


@dataclass
class Manifest:
    """An artifact's manifest as typed values, parsed once from its JSON (``from_dict``) and written back
    (``to_dict``): its sizes, precision, family and config, label set, the weights' source, the engines built from
    it by target, and its export parity; ``sections`` keeps the rest (onnx, gates, versions, export) as written."""

    name: str
    artifact: str  # file name of the artifact, relative to the manifest's folder
    sizes: Sizes  # the label map it takes and the picture it paints
    precision: Precision
    batch: int
    family: Family
    config: object  # the family's config type
    label_set: LabelSet
    source: Source
    engines: dict[EngineTarget, EngineRecord] = field(default_factory=dict)  # built from this artifact, by target
    parity: Parity | None = None  # the export's parity against the PyTorch FP32 reference
    sections: dict = field(default_factory=dict)  # onnx, gates, versions, export timings, ...
    path: Path | None = None  # where this manifest lives on disk, once written or read

    @property
    def resolution(self) -> tuple[int, int]:
        return self.sizes.labels

    @property
    def output_resolution(self) -> tuple[int, int]:
        return self.sizes.picture

    @property
    def family_name(self) -> str:
        return self.family.name

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
        return self.engines.get(target)

    def set_engine_record(self, target: EngineTarget, record: EngineRecord) -> None:
        self.engines[target] = record

    def engine_records(self) -> dict[EngineTarget, EngineRecord]:
        """Every engine built from this artifact, by target (several targets' may lie side by side)."""
        return dict(self.engines)

    @property
    def artifact_path(self) -> Path:
        if self.path is None:
            raise ArtifactError(f"manifest for {self.artifact} has not been written or read from disk")
        return self.path.parent / self.artifact

    def reexport_command(self) -> str:
        """The crn-export command that writes this artifact again (from its checkpoint, or seeded weights)."""
        source = self.source
        origin = (f"{source.path} --family {self.family.name}" if source.kind == "checkpoint" else
                  f"--random-weights --preset {source.preset} --seed {source.seed}")
        out = f" --out-res {format_resolution(self.sizes.picture)}" if self.sizes.decoupled else ""
        return (f"crn-export {origin} --res {format_resolution(self.sizes.labels)}{out} --precision {self.precision}"
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
            "family": self.family.name,
            "name": self.name,
            "artifact": self.artifact,
            "resolution": list(self.sizes.labels),
            "output_resolution": list(self.sizes.picture),
            "precision": self.precision.name,
            "batch": self.batch,
            "inputs": [spec.to_dict() for spec in self.input_specs],
            "outputs": [self.output_spec.to_dict()],
            "config": self.config.to_dict(),
            "label_set": self.label_set.to_dict(),
            "source": {**self.source.to_dict(), "family": self.family.name},  # as manifests have always held it
            **self.sections,
            **({"parity": self.parity.to_dict()} if self.parity is not None else {}),
            **{target.manifest_key: record.to_dict() for target, record in self.engines.items()},
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
        engine_keys = {t.manifest_key: t for t in TARGETS.values()}
        try:
            # the first manifests, written before there were families, name none: their config tells whose it is
            fam = family(data["family"]) if "family" in data else family_of_config_dict(data["config"])
            resolution = tuple(data["resolution"])
            return cls(
                name=data["name"],
                artifact=data["artifact"],
                sizes=Sizes(resolution, tuple(data.get("output_resolution") or resolution)),
                precision=precision(data["precision"]),
                batch=int(data["batch"]),
                family=fam,
                config=fam.config_from_dict(data["config"]),
                label_set=LabelSet.from_dict(data["label_set"]),
                source=Source.from_dict({k: v for k, v in data["source"].items() if k != "family"}),
                engines={target: EngineRecord.from_dict(data[key]) for key, target in engine_keys.items()
                         if data.get(key)},
                parity=Parity.from_dict(data["parity"]) if data.get("parity") else None,
                sections={k: v for k, v in data.items() if k not in _TYPED and k not in engine_keys},
                path=path,
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


# the keys from_dict turns into typed values (the engine records' keys come from the targets table)
_TYPED = {"schema", "schema_version", "family", "name", "artifact", "resolution", "output_resolution", "precision",
          "batch", "inputs", "outputs", "config", "label_set", "source", "parity"}


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
