"""OpenVINO CPU engines, with the real OpenVINO (the ``openvino`` extra): built from FP32 artifacts in FP32 or BF16,
checked against the reference on the export's label maps (kept above the floor, else refused leaving nothing),
recorded in the manifest, and run wherever an engine runs: the runtime (dispatched by file name through the
targets' table), crn-run, crn-bench, the Ray painters and Serve replicas (without Ray here; tests/test_scale.py
runs one on a local cluster), a Triton model repository (structure only: no Triton server here).

Tiny random-weight models sit below the BF16 floor (as their FP16 graphs sit below FP16's; the conformance
suite lifts it for them): tests that need a BF16 engine of one say so with ``LIFTED``. A CPU without BF16 is
modelled at one seam, OpenVINO's report of what this CPU computes in (``cpu_capabilities``)."""

from __future__ import annotations

import dataclasses

import json
import shutil
import threading

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install -e '.[test]' (or '.[openvino]')")

from crn_deploy import runtime  # noqa: E402
from crn_deploy.artifacts.openvino_build import OpenVINOBuildOptions, build_engine  # noqa: E402
from crn_deploy.backends import engine_module  # noqa: E402
from crn_deploy.backends import openvino as ov_backend  # noqa: E402
from crn_deploy.cli.bench import main as bench_main  # noqa: E402
from crn_deploy.cli.build import main as build_main  # noqa: E402
from crn_deploy.cli.export import main as export_main  # noqa: E402
from crn_deploy.data.synthetic import scenes  # noqa: E402
from crn_deploy.errors import ArtifactError  # noqa: E402
from crn_deploy.families import model_inputs  # noqa: E402
from crn_deploy.manifest import Manifest, manifest_for  # noqa: E402
from crn_deploy.measure.parity import VALIDATION_SEED, compare_images  # noqa: E402
from crn_deploy.measure.reference import load_reference  # noqa: E402
from crn_deploy.precisions import BF16, FP32  # noqa: E402
from crn_deploy.records import CpuRecord, EngineRecord  # noqa: E402
from crn_deploy.targets import OPENVINO, RTX, TENSORRT, artifact_stem_of, target_of_engine_file  # noqa: E402

LIFTED = {"min_psnr": 0.0, "max_abs": 255.0}  # tiny random weights: below the BF16 floor, as their FP16 graphs are
QUIET = {"log": lambda _: None}
HAS_BF16 = "BF16" in ov_backend.cpu_capabilities(ov.Core())
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU computes in no BF16 (no avx512_bf16 or amx_bf16)")


def _copy(manifest: Manifest, folder) -> Manifest:
    for path in (manifest.artifact_path, manifest.path):
        shutil.copy(path, folder)
    return Manifest.read(folder / manifest.path.name)


@pytest.fixture(scope="module")
def engines(tiny_artifacts, tmp_path_factory):
    """The tiny CRN's FP32 artifact with a BF16 engine (``bf16``, floor lifted) and, in another folder, with an
    FP32 engine (``fp32``, FP32's own floor), and the FP16 artifact beside the BF16 one."""
    built = {}
    for name, options in (("bf16", OpenVINOBuildOptions(BF16, threads=2, **LIFTED)),
                          ("fp32", OpenVINOBuildOptions(FP32))):
        if name == "bf16" and not HAS_BF16:
            continue
        folder = tmp_path_factory.mktemp(f"openvino-{name}")
        built[name] = build_engine(_copy(tiny_artifacts["fp32"], folder), options, **QUIET)
        if name == "bf16":
            _copy(tiny_artifacts["fp16"], folder)
    return built


def test_the_targets_table_names_the_engine_file_and_the_modules_that_build_and_run_it():
    assert target_of_engine_file("x-64x96-fp32.openvino.engine") is OPENVINO
    assert target_of_engine_file("x.rtx.engine") is RTX and target_of_engine_file("x.engine") is TENSORRT
    assert artifact_stem_of("x-64x96-fp32.openvino.engine") == "x-64x96-fp32"
    assert manifest_for("e/x-64x96-fp32.openvino.engine").name == "x-64x96-fp32.json"
    assert engine_module(OPENVINO) is ov_backend and engine_module(RTX).__name__ == "crn_deploy.backends.tensorrt"
    assert OPENVINO.device == "cpu" and OPENVINO.artifacts == ("fp32",) and OPENVINO.label == "openvino"


@needs_bf16
def test_a_bf16_engine_is_recorded_typed_and_its_numbers_stay_numbers(engines):
    manifest = engines["bf16"]
    record = Manifest.read(manifest.path).engine_record(OPENVINO)
    assert record.inference_precision is BF16 and isinstance(record.cpu, CpuRecord)
    assert record.runtime == "OpenVINO" and record.runtime_version == ov.__version__ and record.threads == 2
    assert (manifest.path.parent / record.file).stat().st_size == record.size_bytes
    assert record.parity.reference == "torch-fp32" and record.parity.samples == manifest.parity.samples
    assert "avx512_bf16" in record.cpu.isa or "amx_bf16" in record.cpu.isa
    on_disk = json.loads(manifest.path.read_text())["openvino_engine"]
    assert on_disk["inference_precision"] == "bf16" and isinstance(on_disk["threads"], int)
    assert isinstance(on_disk["size_bytes"], int) and isinstance(on_disk["parity"]["psnr_db"], float)
    assert EngineRecord.from_dict(on_disk) == record


@needs_bf16
def test_the_runtime_opens_the_engine_by_its_name_in_the_precision_it_was_built_in(engines):
    """The engine imported by the runtime paints what the build measured: BF16, not an FP32 recompile."""
    manifest = engines["bf16"]
    record = manifest.engine_record(OPENVINO)
    ids, instances = scenes(manifest.label_set, record.parity.samples, *manifest.resolution, seed=VALIDATION_SEED)
    inputs = model_inputs(manifest.input_specs, ids, instances, style_seed=VALIDATION_SEED)
    with runtime.load(manifest.path.parent / record.file) as synth, load_reference(manifest.path) as reference:
        assert isinstance(synth.backend, ov_backend.OpenVINOBackend) and synth.backend.device == "cpu"
        pictures, expected = synth.run_ids(*inputs), reference.run_ids(*inputs)
    assert compare_images(pictures, expected).psnr_db == pytest.approx(record.parity.psnr_db)
    fp32 = engines["fp32"]
    with runtime.load(fp32.path.parent / fp32.engine_record(OPENVINO).file) as synth:
        assert compare_images(synth.run_ids(*inputs), expected).max_abs <= 1 < record.parity.max_abs


def test_an_fp32_engine_holds_fp32s_floor(engines):
    record = engines["fp32"].engine_record(OPENVINO)
    assert record.inference_precision is FP32 and record.parity.max_abs <= 1
    assert record.builder["floor"] == {"min_psnr_db": None, "max_abs": 1.0}


@needs_bf16
def test_maps_painted_at_once_from_threads_equal_maps_painted_one_by_one(engines):
    manifest = engines["bf16"]
    maps = [scenes(manifest.label_set, 1, *manifest.resolution, seed=s)[0][0, 0] for s in range(4)]
    engine = manifest.path.parent / manifest.engine_record(OPENVINO).file
    with runtime.load(engine, threads=1) as synth:
        serial = [synth(m) for m in maps]
    with runtime.load(engine, threads=1, concurrent=2) as synth:
        results = [None] * len(maps)

        def paint(i):
            results[i] = synth(maps[i])

        workers = [threading.Thread(target=paint, args=(i,)) for i in range(len(maps))]
        [w.start() for w in workers]
        [w.join() for w in workers]
    assert all(np.array_equal(a, b) for a, b in zip(serial, results, strict=True))


@needs_bf16
def test_a_bf16_build_below_the_floor_says_why_in_one_line_and_leaves_nothing(tmp_path, capsys):
    """posgen-tiny's random weights reach about 36 dB in BF16, far below 55."""
    assert export_main(["--preset", "posgen-tiny", "--random-weights", "--precision", "fp32", "--out", str(tmp_path),
                        "--no-engine"]) == 0
    onnx = tmp_path / "posgen-tiny-seed0-32x64-fp32.onnx"
    before = sorted(p.name for p in tmp_path.iterdir()), onnx.with_suffix(".json").read_bytes()
    capsys.readouterr()
    assert build_main([str(onnx), "--target", "openvino", "--precision", "bf16"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert "BF16 on OpenVINO reaches" in line and "floor 55 dB, 4 levels" in line and "worst class" in line
    assert "--precision fp32" in line and "--min-psnr" in line and "nothing was written" in line
    assert (sorted(p.name for p in tmp_path.iterdir()), onnx.with_suffix(".json").read_bytes()) == before


@needs_bf16
def test_the_graphs_fp32_islands_stay_fp32_in_a_bf16_engine(tmp_path):
    """PosGen's Fourier projection is an FP32 island: OpenVINO would compute it in BF16 unless it is marked."""
    assert export_main(["--preset", "posgen-tiny", "--random-weights", "--precision", "fp32", "--out", str(tmp_path),
                        "--no-engine"]) == 0
    manifest = build_engine(Manifest.read(tmp_path / "posgen-tiny-seed0-32x64-fp32.json"),
                            OpenVINOBuildOptions(BF16, **LIFTED), **QUIET)
    islands = manifest.engine_record(OPENVINO).fp32_islands
    assert islands and all("fp32island" in name for name in islands)
    core = ov.Core()
    unmarked = core.compile_model(core.read_model(str(manifest.artifact_path)), "CPU",
                                  ov_backend.compile_config(BF16))
    assert ov_backend.islands_not_in_fp32(unmarked, islands)  # without the mark: BF16
    with runtime.load(manifest.artifact_path.with_name(manifest.engine_record(OPENVINO).file)) as synth:
        assert ov_backend.islands_not_in_fp32(synth.backend._compiled, islands) == []


def test_an_fp16_artifact_is_refused_naming_the_fp32_one(tiny_artifacts, tmp_path, capsys):
    manifest = _copy(tiny_artifacts["fp16"], tmp_path)
    assert build_main([str(manifest.artifact_path), "--target", "openvino"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiny-64x96-fp32.onnx --target openvino" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-64x96-fp16.json", "tiny-64x96-fp16.onnx"]


@pytest.mark.parametrize("args, flag", [(["--target", "openvino", "--workspace", "1G"], "--workspace"),
                                        (["--target", "openvino", "--tf32"], "--tf32"),
                                        (["--target", "rtx", "--precision", "bf16"], "--precision"),
                                        (["--threads", "2"], "--threads")])
def test_a_builder_option_of_another_kind_of_target_is_refused(tiny_artifacts, args, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_main([str(tiny_artifacts["fp32"].artifact_path), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{flag} applies to" in err


def test_without_bf16_the_default_is_fp32_and_bf16_is_refused_naming_the_cpu_feature(tiny_artifacts, tmp_path,
                                                                                      monkeypatch, capsys):
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda core: ["FP32", "INT8", "EXPORT_IMPORT"])
    manifest = _copy(tiny_artifacts["fp32"], tmp_path)
    before = manifest.path.read_bytes()
    assert build_main([str(manifest.artifact_path), "--target", "openvino", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "avx512_bf16" in err and "--precision fp32" in err
    assert manifest.path.read_bytes() == before and not list(tmp_path.glob("*.engine"))
    assert build_main([str(manifest.artifact_path), "--target", "openvino"]) == 0
    assert Manifest.read(manifest.path).engine_record(OPENVINO).inference_precision is FP32


@needs_bf16
def test_a_bf16_engine_on_a_cpu_without_bf16_or_another_openvino_is_refused_with_the_fix(engines, tmp_path,
                                                                                        monkeypatch):
    manifest = _copy(engines["bf16"], tmp_path)
    record = manifest.engine_record(OPENVINO)
    shutil.copy(engines["bf16"].path.parent / record.file, tmp_path)
    engine = tmp_path / record.file
    with monkeypatch.context() as patch:
        patch.setattr(ov_backend, "cpu_capabilities", lambda core: ["FP32"])
        with pytest.raises(ArtifactError, match="has no avx512_bf16.*--target openvino --precision fp32"):
            runtime.load(engine)
    manifest.set_engine_record(OPENVINO, dataclasses.replace(record, runtime_version="2025.1.0"))
    manifest.write(manifest.path)
    with pytest.raises(ArtifactError, match="built by OpenVINO 2025.1.0 .* --precision bf16"):
        runtime.load(engine)


@needs_bf16
def test_crn_bench_times_the_engine_beside_onnx_runtime_with_the_same_parity_columns(engines, tmp_path):
    folder = engines["bf16"].path.parent
    report = tmp_path / "bench.json"
    assert bench_main([str(folder), "--backend", "openvino", "--backend", "onnxruntime", "--warmup", "0",
                       "--iterations", "1", "--duration", "0", "--samples", "2", "--threads", "1",
                       "--json", str(report)]) == 0
    rows = {(r["backend"], r["precision"]): r for r in json.loads(report.read_text())["rows"]}
    assert set(rows) == {("openvino", "bf16"), ("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "fp16")}
    ov_row = rows[("openvino", "bf16")]
    assert ov_row["artifact"].endswith(".openvino.engine") and ov_row["status"] == "ok" and ov_row["device"] == "cpu"
    assert set(ov_row["parity"]) >= {"max_abs", "psnr_db", "ssim", "per_class"} and ov_row["latency_ms"]["p50"] > 0


@needs_bf16
def test_a_ray_painter_and_a_serve_replica_paint_with_the_engine_as_the_runtime_does(engines):
    from crn_deploy.scale.batch import Painter, runs_on_cpu
    from crn_deploy.scale.serve import Replica

    manifest = engines["bf16"]
    engine = str(manifest.path.parent / manifest.engine_record(OPENVINO).file)
    maps = [scenes(manifest.label_set, 1, *manifest.resolution, seed=s)[0][0, 0] for s in range(3)]
    with runtime.load(engine, threads=1) as synth:
        expected = [synth(m) for m in maps]
    painter = Painter(engine, device="cpu", threads=1, at_once=2)
    assert painter.pool is not None and runs_on_cpu(engine) and not runs_on_cpu(manifest.artifact_path)
    column = np.empty(len(maps), dtype=object)
    column[:] = maps
    painted = painter({"labels": column, "name": np.array(["a", "b", "c"])})["image"]
    assert all(np.array_equal(a, b) for a, b in zip(painted, expected, strict=True))
    replica = Replica(engine, "cpu", 1)
    assert all(np.array_equal(a, b) for a, b in zip(replica.paint([(m, None) for m in maps]), expected, strict=True))


@needs_bf16
def test_a_triton_model_for_triton_s_openvino_backend(engines, tmp_path):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient is not installed: pip install -e '.[test]'")
    from google.protobuf import text_format

    from crn_deploy.artifacts.triton import write_model

    folder = write_model(tmp_path / "repo", engines["bf16"], "openvino", 2)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.backend == "openvino" and not config.platform and config.max_batch_size == 0
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert config.parameters["HINT_BF16"].string_value == "YES"
    assert config.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    model = ov.Core().read_model(str(folder / "1" / "model.xml"))  # the IR and its weights, as Triton reads them
    assert [p.get_any_name() for p in model.inputs] == ["labels"]
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model.bin", "model.xml"]


def test_crn_build_triton_writes_the_openvino_model_of_what_it_built(tiny_artifacts, tmp_path):
    manifest = _copy(tiny_artifacts["fp32"], tmp_path)
    repo = tmp_path / "repo"
    assert build_main([str(manifest.artifact_path), "--target", "openvino", "--precision", "fp32", "--triton",
                       str(repo)]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["tiny-64x96-fp32-openvino"]
    config = (repo / "tiny-64x96-fp32-openvino" / "config.pbtxt").read_text()
    assert 'backend: "openvino"' in config and "HINT_BF16" not in config  # an FP32 engine: no BF16 hint


def test_crn_export_builds_openvino_engines_from_its_fp32_artifacts_only(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--preset", "tiny", "--random-weights", "--precision", "fp16", "--target", "openvino",
                     "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "add --precision fp32" in capsys.readouterr().err
    assert export_main(["--preset", "tiny", "--random-weights", "--precision", "fp32", "--precision", "fp16",
                        "--target", "openvino", "--min-psnr", "0", "--max-abs", "255", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.engine")) == ["tiny-seed0-32x64-fp32.openvino.engine"]
    assert "no OpenVINO engine (OpenVINO engines are built from the fp32 artifact)" in capsys.readouterr().out


@pytest.mark.slow
@needs_bf16
def test_random_full_width_spade_is_refused_in_bf16_in_one_line_leaving_nothing(tmp_path, capsys):
    """The issue's example: spade_cityscapes with random weights at 256x512 reaches about 38 dB in BF16."""
    assert export_main(["--preset", "spade_cityscapes", "--random-weights", "--res", "256x512", "--precision", "fp32",
                        "--out", str(tmp_path), "--no-engine"]) == 0
    onnx = tmp_path / "spade_cityscapes-seed0-256x512-fp32.onnx"
    before = sorted(p.name for p in tmp_path.iterdir()), onnx.with_suffix(".json").read_bytes()
    capsys.readouterr()
    assert build_main([str(onnx), "--target", "openvino", "--precision", "bf16"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "worst class" in lines[0] and "--precision fp32" in lines[0]
    assert (sorted(p.name for p in tmp_path.iterdir()), onnx.with_suffix(".json").read_bytes()) == before


@pytest.mark.slow
@needs_bf16
def test_the_shipped_demo_in_bf16_holds_the_floor_at_256x512(tmp_path):
    from crn_deploy.cli.demo import DEMO_MODEL

    assert export_main([str(DEMO_MODEL), "--res", "256x512", "--precision", "fp32", "--name", "crn-demo",
                        "--out", str(tmp_path), "--no-engine"]) == 0
    manifest = build_engine(Manifest.read(tmp_path / "crn-demo-256x512-fp32.json"), OpenVINOBuildOptions(BF16),
                            **QUIET)
    parity = manifest.engine_record(OPENVINO).parity
    assert parity.psnr_db >= 55 and parity.max_abs <= 4
