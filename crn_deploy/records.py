"""Typed records of the manifest's sections that several layers read back: where the weights came
from (``source``) and the engines built from the artifact (``engine`` for TensorRT, ``rtx_engine`` for
TensorRT-RTX, ``openvino_engine`` for OpenVINO). Older manifests read as they were written; these classes are
how code reads and writes them. Stdlib only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from .errors import ArtifactError
from .precisions import Precision, precision


def _from_dict(cls, data: dict, where: str):
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as e:
        raise ArtifactError(f"{where} record {data!r} is malformed ({e}); re-export the artifact") from None


@dataclass(frozen=True)
class Source:
    """``checkpoint`` (path and SHA-256 of the file) or ``random`` (preset and seed of seeded weights)."""

    kind: str
    path: str | None = None
    sha256: str | None = None
    preset: str | None = None
    seed: int | None = None
    config: dict | None = None
    options_file: str | None = None  # the training run's opt.txt the architecture was read from, where one was
    options_sha256: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> Source:
        return _from_dict(cls, data, "source")


@dataclass(frozen=True)
class GpuRecord:
    name: str
    compute_capability: str
    memory_gib: float | None = None


@dataclass(frozen=True)
class CpuRecord:
    """The CPU a CPU engine was built on: its name, the instruction-set extensions that matter to inference
    (``isa``, from the kernel's CPU flags) and what the library reports it can compute in (``capabilities``)."""

    name: str
    isa: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EngineRecord:
    """An engine built from the artifact, as ``crn-build`` records it: which library made it (``target``,
    ``runtime``, ``runtime_version``), for which GPUs (TensorRT: the ``gpu`` it was built on, the only one
    it runs on; TensorRT-RTX: the ``compute_capabilities`` it was compiled for) or CPU (OpenVINO: the ``cpu``,
    the ``inference_precision`` chosen at build, the ``threads`` it was checked with, the graph's FP32 islands
    kept in FP32 and its ``parity`` against the reference), the file and the build."""

    file: str
    sha256: str
    size_bytes: int
    runtime_version: str
    target: str = "tensorrt"
    runtime: str = "TensorRT"
    gpu: GpuRecord | None = None
    compute_capabilities: list[str] | None = None
    build_seconds: float | None = None
    builder: dict = field(default_factory=dict)
    builder_warnings: list[str] = field(default_factory=list)
    convolution_weights: dict | None = None  # per weight type, from the engine inspector; None unless detailed
    inference_precision: Precision | None = None  # CPU engines: what the FP32 artifact computes in (fp32, bf16)
    threads: int | None = None  # CPU engines: the inference threads the build compiled and checked it with
    cpu: CpuRecord | None = None
    fp32_islands: list[str] | None = None  # the graph's FP32-island nodes the engine keeps in FP32
    parity: Parity | None = None  # CPU engines: against the reference on the export's label maps

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.inference_precision is not None:
            data["inference_precision"] = self.inference_precision.name
        if self.parity is not None:
            data["parity"] = self.parity.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EngineRecord:
        if "tensorrt_version" in data and "runtime_version" not in data:  # manifests before TensorRT-RTX
            data = {**data, "runtime_version": data["tensorrt_version"]}
        record = _from_dict(cls, data, "engine")
        typed = {"gpu": _typed(record.gpu, GpuRecord, "gpu"), "cpu": _typed(record.cpu, CpuRecord, "cpu"),
                 "parity": _typed(record.parity, Parity, "parity")}
        if record.inference_precision is not None:
            typed["inference_precision"] = precision(record.inference_precision)
        return replace(record, **typed)


def _typed(value, cls, where: str):
    """A nested record as its class (it reads from JSON as a dict)."""
    return _from_dict(cls, value, where) if isinstance(value, dict) else value


@dataclass(frozen=True)
class Parity:
    """How close pictures are to a reference: levels (0..255), dB (``psnr_db`` None when identical),
    SSIM, the share of values off by more than 2 levels, and non-finite values; where it was measured
    (``reference``, ``inputs``, ``samples``) and, in benchmarks, the same per semantic class."""

    max_abs: float
    mean_abs: float
    psnr_db: float | None
    ssim: float | None = None  # the first manifests did not measure it
    frac_off_gt2: float = 0.0
    nonfinite: int = 0
    reference: str | None = None
    inputs: str | None = None
    samples: int | None = None
    per_class: dict | None = None

    def passes(self, *, max_abs: float | None = None, min_psnr: float | None = None) -> bool:
        if self.nonfinite:
            return False
        if max_abs is not None and self.max_abs > max_abs:
            return False
        return min_psnr is None or self.psnr_db is None or self.psnr_db >= min_psnr

    def to_dict(self) -> dict:
        """As manifests and reports hold it (where it was measured first, then the figures)."""
        where = {k: getattr(self, k) for k in ("reference", "inputs", "samples") if getattr(self, k) is not None}
        figures = {k: v for k, v in asdict(self).items() if k not in where and k not in ("reference", "inputs",
                                                                                           "samples", "per_class")
                   and not (k == "ssim" and v is None)}
        return {**where, **figures, **({"per_class": self.per_class} if self.per_class is not None else {})}

    @classmethod
    def from_dict(cls, data: dict) -> Parity:
        return _from_dict(cls, data, "parity")
