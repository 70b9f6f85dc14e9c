"""Build OpenVINO CPU engines from FP32 artifacts: OpenVINO compiles the ONNX graph for this CPU in FP32 or
BF16 (``INFERENCE_PRECISION_HINT``) and the compiled model is exported (``export_model``) as
``<stem>.openvino.engine`` beside the ONNX, with its record in the manifest. Needs OpenVINO, not torch.

Precision by measurement, as for FP16 artifacts: every engine is run on the export's label maps and compared
with the reference (the PyTorch FP32 model where torch and the weights are here, else the FP32 artifact on
ONNX Runtime); a BF16 engine is kept only above the reduced-precision floor (55 dB, 4 levels, or the
``min_psnr``/``max_abs`` given), an FP32 one within FP32's (1 level). Nodes the graph marks as FP32 islands
(``..._fp32island``, as the FP16 graph keeps them) stay FP32 in a BF16 engine through OpenVINO's own per-node
precision attribute. Below the floor nothing is written: one line names the worst class and what to type.
"""

from __future__ import annotations

import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ..backends.openvino import (DEVICE, OpenVINOBackend, compile_config, cpu_record, default_precision,
                                 import_openvino, island_names, islands_not_in_fp32, missing_cpu_feature,
                                 rebuild_command)
from ..data.synthetic import scenes
from ..errors import CrnError, UsageError, ValidationError
from ..families import model_inputs
from ..files import atomic_path, sha256_file
from ..manifest import Manifest
from ..measure.parity import VALIDATION_SEED, accept_options, compare_images, parity_text, psnr_figure, worst_class
from ..measure.reference import fp32_pictures
from ..precisions import FP32, Precision, precision
from ..records import EngineRecord, Parity
from ..runtime.synthesizer import Synthesizer
from ..targets import OPENVINO, EngineTarget

# OpenVINO's per-node precision attribute in its IR: the node keeps its original (FP32) precision whatever the
# inference precision. The CPU plugin honours it for BF16 as for FP16 (checked with OpenVINO 2026.4).
KEEP_PRECISION = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:f16"}
DEFAULT_SAMPLES = 2  # the export's default, for manifests that do not say how many maps it checked


@dataclass(frozen=True)
class OpenVINOBuildOptions:
    precision: Precision | None = None  # None: BF16 where this CPU computes in it, else FP32
    threads: int | None = None  # inference threads to compile and check with (None: OpenVINO's choice)
    min_psnr: float | None = None  # a reduced precision's floor (None: the precision's own, 55 dB ...
    max_abs: float | None = None  # ... and 4 levels); FP32 engines keep FP32's (1 level)
    target: EngineTarget = OPENVINO
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision.name not in self.target.precisions:
            raise UsageError(f"--precision {self.precision} is not an {self.target.runtime} inference precision: "
                             f"choose {' or '.join(self.target.precisions)}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")

    def floor(self, computes_in: Precision) -> tuple[float | None, float]:
        """(least PSNR in dB or None, most levels off) an engine computing in ``computes_in`` must hold."""
        if not computes_in.reduced:
            return None, FP32.max_levels
        return (computes_in.min_psnr_db if self.min_psnr is None else self.min_psnr,
                computes_in.max_levels if self.max_abs is None else self.max_abs)

    def to_record(self, computes_in: Precision) -> dict:
        min_psnr, max_abs = self.floor(computes_in)
        return {"precision_requested": self.precision.name if self.precision else "default",
                "threads": self.threads, "floor": {"min_psnr_db": min_psnr, "max_abs": max_abs}}


def build_engine(manifest: Manifest, options: OpenVINOBuildOptions = OpenVINOBuildOptions(),
                 log: Callable[[str], None] = print) -> Manifest:
    """Write ``<stem>.openvino.engine`` beside the FP32 ONNX and record it in the manifest, if it holds the
    floor; else refuse in one line and leave the engines folder and the manifest as they were."""
    target = options.target
    check_buildable(manifest, target)
    ov = import_openvino(target)
    core = ov.Core()
    computes_in = options.precision or precision(default_precision(core, target))
    missing = missing_cpu_feature(computes_in, core)
    if missing:
        raise UsageError(f"--precision {computes_in} needs {missing}, which this CPU "
                         f"({core.get_property(DEVICE, 'FULL_DEVICE_NAME')}) lacks; build --precision fp32 here, or "
                         "build on a CPU that has it")
    manifest.check_artifact()
    onnx_path = manifest.artifact_path
    engine_path = onnx_path.with_name(target.engine_name(Path(manifest.artifact).stem))
    started = time.perf_counter()
    with model_with_fp32_islands(ov, core, onnx_path) as (model, islands):
        compiled = core.compile_model(model, DEVICE, compile_config(computes_in, options.threads))
    seconds = time.perf_counter() - started
    wrong = islands_not_in_fp32(compiled, islands)
    if wrong:
        raise CrnError(f"{target.runtime} {ov.__version__} did not keep {onnx_path.name}'s FP32 islands in FP32 "
                       f"({'; '.join(wrong[:3])}); nothing was written")
    blob = compiled.export_model().getvalue()
    threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    del compiled
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(blob)
        record = EngineRecord(
            file=engine_path.name, sha256=sha256_file(tmp), size_bytes=len(blob), runtime_version=ov.__version__,
            target=target.name, runtime=target.runtime, build_seconds=round(seconds, 2),
            builder=options.to_record(computes_in), inference_precision=computes_in, threads=threads,
            cpu=cpu_record(core), fp32_islands=islands or None)
        parity = check_parity(manifest, tmp, record, options, log)
        record = replace(record, parity=parity)
    manifest.set_engine_record(target, record)
    manifest.write(manifest.path)
    log(f"{engine_path.name}: built in {seconds:.1f} s with {target.runtime} {ov.__version__} for {record.cpu.name} "
        f"({', '.join(record.cpu.isa) or 'ISA unknown'}), {computes_in} on {threads} thread(s)"
        f"{_islands_note(islands)}; {parity_text(parity, parity.reference)} ({len(blob) / 2**20:.1f} MiB)")
    return manifest


def check_buildable(manifest: Manifest, target: EngineTarget) -> None:
    """An OpenVINO engine is built from the FP32 artifact; an FP16 one is refused, naming what to pass."""
    if manifest.precision.name not in target.artifacts:
        fp32 = Path(manifest.artifact).name.replace(f"-{manifest.precision}.onnx", "-fp32.onnx")
        raise UsageError(f"{manifest.artifact} is an {manifest.precision} artifact; {target.runtime} engines are "
                         f"built from the FP32 artifact of the same model, in the precision --precision names: "
                         f"crn-build {manifest.artifact_path.with_name(fp32)} --target {target.name} (export it with "
                         "crn-export ... --precision fp32)")


@contextmanager
def model_with_fp32_islands(ov, core, onnx_path: Path):
    """(the OpenVINO model of ``onnx_path``, the graph's FP32-island node names), each island node marked with
    OpenVINO's keep-precision attribute. The attribute travels through OpenVINO's IR: the model is written as IR,
    marked and read back (valid inside the block, where its weights file still exists)."""
    model = core.read_model(str(onnx_path))
    islands = island_names(op.get_friendly_name() for op in model.get_ordered_ops())
    if not islands:
        yield model, []
        return
    with tempfile.TemporaryDirectory(prefix="crn-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        write_ir(ov, model, islands, xml)
        yield core.read_model(str(xml)), islands


def write_ir(ov, model, islands: list[str], xml: Path) -> None:
    """``model`` as OpenVINO IR (``xml`` and the weights beside it, FP32), the layers of ``islands`` marked to
    keep their precision."""
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if not islands:
        return
    tree = ET.parse(xml)
    for layer in tree.getroot().iter("layer"):
        if layer.get("name", "").split("/")[0] in islands:
            info = layer.find("rt_info")
            if info is None:
                info = ET.Element("rt_info")
                layer.insert(1 if layer.find("data") is not None else 0, info)
            ET.SubElement(info, "attribute", KEEP_PRECISION)
    tree.write(xml, encoding="utf-8", xml_declaration=True)


def check_parity(manifest: Manifest, engine: Path, record: EngineRecord, options: OpenVINOBuildOptions,
                 log: Callable[[str], None]) -> Parity:
    """The engine at ``engine`` run on the export's label maps against the reference; a ValidationError where it
    misses its precision's floor."""
    samples = (manifest.parity.samples if manifest.parity and manifest.parity.samples else None) or DEFAULT_SAMPLES
    ids, instances = scenes(manifest.label_set, samples, *manifest.resolution, seed=VALIDATION_SEED)
    inputs = model_inputs(manifest.input_specs, ids, instances, style_seed=VALIDATION_SEED)
    reference, expected = fp32_pictures(manifest, inputs, threads=options.threads, log=log)
    backend = OpenVINOBackend(engine, manifest, record=record, threads=options.threads, target=options.target)
    with Synthesizer(backend, manifest) as synth:
        pictures = synth.run_ids(*inputs)
    parity = compare_images(pictures, expected, reference=reference, samples=samples,
                            inputs=f"synthetic street layouts, seed {VALIDATION_SEED}")
    computes_in = record.inference_precision
    min_psnr, max_abs = options.floor(computes_in)
    if parity.passes(max_abs=max_abs, min_psnr=min_psnr):
        return parity
    psnr = psnr_figure(parity)
    floor = f"{min_psnr:g} dB, {max_abs:g} levels" if min_psnr is not None else f"{max_abs:g} level(s)"
    worst = worst_class(pictures, expected, ids, manifest.label_set.names, parity, max_abs)
    instead = (f"build fp32 ({rebuild_command(manifest, options.target, 'fp32')}), or accept it with "
               f"{accept_options(parity, min_psnr, max_abs)}" if computes_in.reduced else
               "this is a bug: please report it with the artifact's manifest")
    raise ValidationError(f"{record.file}: {computes_in.name.upper()} on {record.runtime} reaches {psnr}, up to "
                          f"{parity.max_abs:.0f} levels off {reference} (floor {floor}); worst class {worst}"
                          f"{_islands_note(record.fp32_islands or [])}; nothing was written. Instead: {instead}")


def _islands_note(islands: list[str]) -> str:
    return f"; {len(islands)} FP32-island node(s) kept in FP32" if islands else ""


