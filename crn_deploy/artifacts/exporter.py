"""Export a model of any family to validated ONNX artifacts with sidecar manifests, one per size and precision.

Every artifact is checked before it is kept: onnx.checker, then ONNX Runtime against the PyTorch
FP32 reference on synthetic street layouts. It is written under a temporary name and renamed
only once it passes the parity gate.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from .. import __version__
from ..backends.onnxruntime import OnnxRuntimeBackend
from ..backends.torch_ref import TorchBackend
from ..data.synthetic import scenes
from ..errors import CrnError, ValidationError
from ..families import model_inputs
from ..files import atomic_path, ensure_writable_dir, remove_empty_folders, sha256_file
from ..graph import IR_VERSION, OPSET, write_model
from ..manifest import Manifest, artifact_stem
from ..measure.parity import VALIDATION_SEED, accept_options, compare_images, parity_text, psnr_figure, worst_class
from ..models.checkpoint import LoadedCheckpoint
from ..models.registry import model_family
from ..precisions import FP16, FP32, Precision
from ..records import Parity, Source
from ..runtime.synthesizer import Synthesizer
from ..sizes import Sizes
from ..targets import artifact_stem_of

REFERENCE = "PyTorch FP32"  # what the export compares with, as its lines name it


@dataclass
class ExportOptions:
    sizes: list[Sizes]  # label map and picture sizes, one artifact per entry and precision (checked by the caller)
    precisions: list[Precision] = field(default_factory=lambda: [FP16])
    out_dir: Path = Path("engines")
    name: str = "model"  # artifacts: <name>-<H>x<W>-<precision>.onnx
    batch: int = 1
    samples: int = 2  # synthetic layouts the parity check runs
    max_abs_fp32: float = FP32.max_levels  # levels: FP32 matches the reference to rounding
    min_psnr_fp16: float = FP16.min_psnr_db  # the FP16 floor against the FP32 reference: dB ...
    max_abs_fp16: float = FP16.max_levels  # ... and levels


def export_artifacts(source: LoadedCheckpoint, options: ExportOptions,
                     log: Callable[[str], None] = print) -> list[Manifest]:
    """Write ``<name>-<H>x<W>-<precision>.onnx/.json`` for every requested pair; return their manifests."""
    family = model_family(source.family)
    for sizes in options.sizes:
        family.contract.check_sizes(sizes, source.config)
    created = ensure_writable_dir(options.out_dir)
    try:
        return _export_all(source, family, options, log)
    except BaseException:  # a failed (or interrupted) export leaves no empty folder it created
        remove_empty_folders(created)
        raise


def _export_all(source: LoadedCheckpoint, family, options: ExportOptions, log) -> list[Manifest]:
    weights = family.weights(source.model)
    written = []
    for sizes in options.sizes:
        # the model's inputs: ids, then instance ids and style vectors where the model takes them
        specs = family.contract.inputs(source.config, sizes.labels, options.batch)
        layouts = model_inputs(specs, *scenes(source.label_set, options.samples, *sizes.labels, seed=VALIDATION_SEED),
                               style_seed=VALIDATION_SEED)
        reference = _timed(log, f"PyTorch FP32 reference at {sizes}", _reference_images, source, layouts, sizes)
        for precision in options.precisions:
            written.append(_export_one(source, weights, sizes, precision, options, layouts, reference, log))
    return written


def _export_one(source: LoadedCheckpoint, weights: dict, sizes: Sizes, precision: Precision, options: ExportOptions,
                layouts: tuple, reference: np.ndarray, log) -> Manifest:
    stem = artifact_stem(options.name, sizes, precision.name)
    final = options.out_dir / f"{stem}.onnx"
    family = model_family(source.family)
    manifest = Manifest(options.name, final.name, sizes, precision, options.batch, family.contract, source.config,
                        source.label_set, Source.from_dict(source.source))
    started = time.perf_counter()
    ids = layouts[0]
    with atomic_path(final) as tmp:
        tries, kept = [], None  # below the floor: again with more in FP32, where the family can (the smallest island)
        while True:
            images = _write_and_run(family, manifest, weights, sizes, options.batch, layouts, tmp, stem, log)
            parity = compare_images(images, reference, reference="torch-fp32", samples=len(ids),
                                    inputs=f"synthetic street layouts, seed {VALIDATION_SEED}")
            if not precision.reduced or parity.passes(max_abs=options.max_abs_fp16, min_psnr=options.min_psnr_fp16):
                break
            tries.append(_Try(parity, images, kept))
            step = family.contract.more_fp32(manifest.config)
            again = f"; again with {step[1]}" if step else ""
            log(f"{stem}: {parity_text(parity, REFERENCE)}: below the floor{again}")
            if step is None:
                best = max(tries, key=_Try.rank)
                worst = worst_class(best.images, reference, ids, source.label_set.names, best.parity,
                                    options.max_abs_fp16)
                _refuse(stem, precision, best, options, worst, len(tries))
            manifest.config, kept = step
        _gate(stem, precision, parity, options)
        manifest.parity = parity
        manifest.sections = _sections(tmp, final, options, time.perf_counter() - started)
        _settle_engines(final.with_suffix(".json"), manifest, log)
    manifest.write(final.with_suffix(".json"))
    log(f"{stem}: wrote {final} ({final.stat().st_size / 2**20:.1f} MiB) — {parity_text(parity, REFERENCE)}")
    return manifest


def _settle_engines(path: Path, manifest: Manifest, log) -> None:
    """The engines built from the artifact this export replaces: their records carried over where the new ONNX is
    the same file byte for byte, else the engines (and what lies beside them) removed, as they no longer match."""
    try:
        previous = Manifest.read(path) if path.is_file() else None
    except CrnError:
        return
    if previous is None:
        return
    same = (previous.sections.get("onnx") or {}).get("sha256") == manifest.sections["onnx"]["sha256"]
    for target, record in previous.engine_records().items():
        if same and (path.parent / record.file).is_file():
            manifest.set_engine_record(target, record)
            continue
        for name in target.file_names(artifact_stem_of(record.file)):
            (path.parent / name).unlink(missing_ok=True)
        log(f"{path.stem}: removed {record.file}, built from the artifact this export replaces; build it again: "
            f"crn-build {path.with_suffix('.onnx')} --target {target.name}")


def _write_and_run(family, manifest: Manifest, weights: dict, sizes: Sizes, batch: int, layouts: tuple, tmp: Path,
                   stem: str, log) -> np.ndarray:
    """The graph of ``manifest.config`` written to ``tmp``, checked, and run by ONNX Runtime on ``layouts``."""
    shell, tensors = _timed(log, f"{stem}: build graph", lambda: family.graph_parts(
        manifest.config, weights, sizes, manifest.precision, batch))
    _timed(log, f"{stem}: write", write_model, shell, tensors, tmp)
    del shell, tensors
    _timed(log, f"{stem}: onnx.checker", onnx.checker.check_model, str(tmp))
    with Synthesizer(OnnxRuntimeBackend(tmp, "cpu"), manifest) as synth:
        return _timed(log, f"{stem}: ONNX Runtime parity on {len(layouts[0])} layouts", synth.run_ids, *layouts)


def _reference_images(source: LoadedCheckpoint, layouts: tuple, sizes: Sizes) -> np.ndarray:
    with TorchBackend(source.model, FP32, "cpu", picture_size=sizes.picture if sizes.decoupled else None) as ref:
        return np.concatenate([ref.run(*(a[i : i + 1] for a in layouts)) for i in range(len(layouts[0]))])


@dataclass
class _Try:
    """One reduced-precision try below the floor: its parity, its pictures, and what it kept in FP32 beyond the
    first try (None for the first)."""

    parity: Parity
    images: np.ndarray
    kept: str | None

    def rank(self) -> tuple[float, float]:
        psnr = -math.inf if self.parity.nonfinite else self.parity.psnr_db
        return (math.inf if psnr is None else psnr, -self.parity.max_abs)


def _gate(stem: str, precision: Precision, parity: Parity, options: ExportOptions) -> None:
    if not precision.reduced and not parity.passes(max_abs=options.max_abs_fp32):
        raise ValidationError(
            f"{stem}: ONNX Runtime differs from the PyTorch reference by up to {parity.max_abs:.0f} levels "
            f"(gate {options.max_abs_fp32:g}); not kept. This is a bug: please report it with the checkpoint's "
            "config")


def _refuse(stem: str, precision: Precision, best: _Try, options: ExportOptions,
            worst_class: str, tries: int) -> None:
    """Below the floor on every try: the best try's figures (and what it kept in FP32, where the export made more
    than one), its worst class, and the limits that would keep it."""
    parity = best.parity
    psnr = psnr_figure(parity)
    which = f"best of {tries} tries, {'with ' + best.kept if best.kept else 'the first'}; " if tries > 1 else ""
    raise ValidationError(
        f"{stem}: {precision.name.upper()} reaches{' at best' if tries > 1 else ''} {psnr}, up to "
        f"{parity.max_abs:.0f} levels off the FP32 reference ({which}floor {options.min_psnr_fp16:g} dB, "
        f"{options.max_abs_fp16:g} levels); worst class {worst_class}; not kept. Export fp32, or accept it with "
        f"{accept_options(parity, options.min_psnr_fp16, options.max_abs_fp16)}")


def _sections(tmp: Path, final: Path, options: ExportOptions, seconds: float) -> dict:
    return {
        "onnx": {"file": final.name, "sha256": sha256_file(tmp), "size_bytes": tmp.stat().st_size,
                 "opset": OPSET, "ir_version": IR_VERSION},
        "gates": {"fp32_max_abs": options.max_abs_fp32, "fp16_min_psnr_db": options.min_psnr_fp16,
                  "fp16_max_abs": options.max_abs_fp16},
        "export": {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 2)},
        "versions": tool_versions(),
    }


def tool_versions() -> dict:
    """The versions that made an artifact, read from the installed distributions (torch is not imported here)."""
    versions = {"crn_deploy": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "onnx": onnx.__version__}
    for name in ("onnxruntime", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _timed(log, what: str, fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    log(f"{what}: {time.perf_counter() - started:.2f} s")
    return result
