import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest

from crn_deploy.cli.bench import main as bench_main
from crn_deploy.data.synthetic import street_layout
from crn_deploy.labels import CITYSCAPES
from crn_deploy.records import EngineRecord
from crn_deploy.targets import TENSORRT

FAST = ["--warmup", "0", "--iterations", "2", "--duration", "0", "--samples", "2"]


@pytest.fixture()
def engines(tmp_path, tiny_artifacts):
    folder = tmp_path / "engines"
    folder.mkdir()
    for manifest in tiny_artifacts.values():
        shutil.copy(manifest.artifact_path, folder)
        shutil.copy(manifest.path, folder)
    return folder


def test_bench_reports_latency_and_parity_per_artifact_and_backend(engines, tmp_path, capsys):
    assert bench_main([str(engines), *FAST, "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["artifact"], r["backend"]): r for r in report["rows"]}
    assert set(rows) == {("tiny-64x96-fp32.onnx", "onnxruntime-cpu"), ("tiny-64x96-fp16.onnx", "onnxruntime-cpu"),
                         ("tiny (PyTorch)", "torch-cpu")}
    for row in rows.values():
        assert row["latency_ms"]["p50"] > 0 and row["fps"] > 0 and row["latency_ms"]["count"] >= 2
        assert {"max_abs", "mean_abs", "psnr_db"} <= set(row["parity"]) and row["resolution"] == "64x96"
    assert rows[("tiny (PyTorch)", "torch-cpu")]["parity"]["max_abs"] == 0  # the reference itself
    assert rows[("tiny-64x96-fp16.onnx", "onnxruntime-cpu")]["parity"]["psnr_db"] >= 40
    assert rows[("tiny-64x96-fp32.onnx", "onnxruntime-cpu")]["speedup_reference"] == "torch-cpu fp32"
    assert {"cpu", "logical_cores"} <= set(report["machine"]) and "onnxruntime" in report["versions"]
    table = capsys.readouterr().out
    assert "tiny-64x96-fp16.onnx" in table and "PSNR dB" in table and "logical cores" in table


def test_gates_fail_the_run_with_exit_1(engines, capsys):
    assert bench_main([str(engines), *FAST, "--backend", "onnxruntime", "--min-psnr", "40"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert bench_main([str(engines), *FAST, "--backend", "onnxruntime", "--max-abs", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out.splitlines()[-1]


def test_bench_on_user_label_images(engines, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    ids = street_layout(128, 192, seed=4)
    cv2.imwrite(str(labels / "a_ids.png"), ids)
    cv2.imwrite(str(labels / "b_color.png"), CITYSCAPES.ids_to_colors(ids)[..., ::-1])
    label_ids = np.full_like(ids, 26)  # Cityscapes "car" label id -> train id 13
    cv2.imwrite(str(labels / "c_gtFine_labelIds.png"), label_ids)
    out = tmp_path / "r.json"
    assert bench_main([str(engines), *FAST, "--labels", str(labels), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert str(labels) in report["settings"]["inputs"]
    assert [row["parity"]["samples"] for row in report["rows"]] == [3, 3, 3]


def test_empty_folder_and_bad_labels_are_usage_errors(tmp_path, engines, capsys):
    assert bench_main([str(tmp_path)]) == 2
    assert "run crn-export first" in capsys.readouterr().err
    assert bench_main([str(engines), "--labels", str(tmp_path / "none")]) == 2
    assert "none: no such folder or file" in capsys.readouterr().err


def test_pytorch_fp16_on_cpu_is_opt_in(engines, tmp_path):
    out = tmp_path / "r.json"
    assert bench_main([str(engines), *FAST, "--backend", "torch", "--torch-cpu-fp16", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["torch_cpu_fp16"] is True
    assert sorted(r["precision"] for r in report["rows"]) == ["fp16", "fp32"]
    fp16 = next(r for r in report["rows"] if r["precision"] == "fp16")
    assert fp16["speedup_reference"] == "torch-cpu fp16" and fp16["parity"]["psnr_db"] >= 40


def _with_fake_engine(engines):
    from crn_deploy.manifest import Manifest

    from .fake_gpu import fake_plan

    manifest = Manifest.read(engines / "tiny-64x96-fp16.json")
    plan = fake_plan(manifest.input_spec.shape, manifest.output_spec.shape)
    (engines / "tiny-64x96-fp16.engine").write_bytes(plan)
    manifest.set_engine_record(TENSORRT, EngineRecord.from_dict({
        "file": "tiny-64x96-fp16.engine", "sha256": hashlib.sha256(plan).hexdigest(), "size_bytes": len(plan),
        "tensorrt_version": "11.4.0.106", "gpu": {"name": "Fake GPU", "compute_capability": "9.0"}}))
    manifest.write(manifest.path)


def test_engines_are_skipped_with_the_reason_where_tensorrt_is_absent(engines, tmp_path):
    _with_fake_engine(engines)
    out = tmp_path / "r.json"
    assert bench_main([str(engines), *FAST, "--backend", "tensorrt", "--backend", "onnxruntime",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["rows"]} == {"onnxruntime-cpu"}
    assert len(report["skipped"]) == 1 and report["skipped"][0].startswith("tiny-64x96-fp16.engine: ")


def test_fake_engine_rows_are_measured_like_the_others(engines, tmp_path, monkeypatch):
    from crn_deploy.backends import cuda as cuda_module
    from crn_deploy.backends import tensorrt as trt_module

    from .fake_gpu import FakeCudart, FakeTensorRT

    _with_fake_engine(engines)
    cudart = FakeCudart()
    monkeypatch.setattr(trt_module, "import_engine_library", lambda target=None: FakeTensorRT(cudart))
    monkeypatch.setattr(cuda_module, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_module, "why_engine_cannot_run_here", lambda manifest, target: None)  # via the table
    out = tmp_path / "r.json"
    assert bench_main([str(engines), *FAST, "--backend", "tensorrt", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["cuda_graphs"]) for r in rows] == [("tensorrt+graph", True), ("tensorrt", False)]
    for row in rows:
        assert row["device"] == "cuda" and row["latency_ms"]["count"] >= 2 and row["throughput_fps"] > 0
        assert row["parity"]["max_abs"] > 0  # the fake kernel is not the model: parity is really computed
        # trtexec's split from CUDA events (the fake's events all read 1 ms) and the host enqueue time
        assert {k: v["mean"] for k, v in row["breakdown_ms"].items() if k != "enqueue"} == \
            {"h2d": 1.0, "compute": 1.0, "d2h": 1.0}
        assert row["breakdown_ms"]["enqueue"]["count"] == row["latency_ms"]["count"]


@pytest.mark.parametrize("capturable", [True, False])
def test_fake_rtx_engine_rows_count_graph_captures_and_memory_with_the_weights(engines, tmp_path, monkeypatch,
                                                                              capturable):
    from crn_deploy.backends import cuda as cuda_module
    from crn_deploy.backends import tensorrt as trt_module
    from crn_deploy.manifest import Manifest
    from crn_deploy.records import EngineRecord
    from crn_deploy.targets import RTX

    from .fake_gpu import FakeCudart, FakeTensorRTRTX, fake_plan

    manifest = Manifest.read(engines / "tiny-64x96-fp16.json")
    plan = fake_plan(manifest.input_spec.shape, manifest.output_spec.shape)
    engine = engines / RTX.engine_name(manifest.artifact_path.stem)
    engine.write_bytes(plan)
    manifest.set_engine_record(RTX, EngineRecord(engine.name, hashlib.sha256(plan).hexdigest(), len(plan), "1.7.1.116",
                                                 "rtx", "TensorRT-RTX", compute_capabilities=["8.9"]))
    manifest.write(manifest.path)
    cudart = FakeCudart(compute_capability=(8, 9))
    monkeypatch.setattr(trt_module, "import_engine_library",
                        lambda target=None: FakeTensorRTRTX(cudart, capturable=capturable))
    monkeypatch.setattr(cuda_module, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_module, "why_engine_cannot_run_here", lambda manifest, target: None)
    out = tmp_path / "r.json"
    assert bench_main([str(engines), *FAST, "--backend", "tensorrt", "--json", str(out)]) == 0
    graphs, plain = json.loads(out.read_text())["rows"]
    assert (graphs["backend"], plain["backend"]) == ("tensorrt-rtx+graph", "tensorrt-rtx")
    assert graphs["cuda_graphs"] is capturable and plain["cuda_graphs"] is False  # what ran, not what was asked
    assert graphs.get("graph_captures") == (0 if capturable else None) and "graph_captures" not in plain
    for row in (graphs, plain):  # the weights are on the GPU too, as cudaMemGetInfo sees
        assert row["device_memory_mib"] == row["device_memory_measured_mib"] > FakeTensorRTRTX.WEIGHTS_BYTES / 2**20


def test_csv_and_report_outputs(engines, tmp_path):
    import csv

    out = tmp_path / "report"
    assert bench_main([str(engines), *FAST, "--csv", str(tmp_path / "r.csv"), "--report", str(out)]) == 0
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 3 and {r["backend"] for r in rows} == {"onnxruntime-cpu", "torch-cpu"}
    assert all(float(r["p50_ms"]) > 0 and r["status"] == "ok" for r in rows)
    assert float(next(r for r in rows if r["precision"] == "fp16")["ssim"]) > 0.99
    markdown = (out / "report.md").read_text()
    for image in ("grid-64x96.png", "latency.png", "parity-per-class.png"):
        assert f"]({image})" in markdown and (out / image).stat().st_size > 1000
    grid = cv2.imread(str(out / "grid-64x96.png"))
    assert grid.shape == (3 * 64, 4 * 96, 3)  # a row per backend: labels, reference, output, error
    assert "Where errors concentrate" in markdown


def test_devices_that_are_not_here_are_skipped_with_a_note(engines, tmp_path):
    out = tmp_path / "r.json"
    assert bench_main([str(engines), *FAST, "--device", "cuda", "--device", "cpu", "--backend", "onnxruntime",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["rows"]} == {"onnxruntime-cpu"}
    assert report["skipped"] == ["onnxruntime on cuda: not available here"]


@pytest.mark.parametrize("offered, devices, expected, skipped", [
    (["cpu"], (), ["cpu"], []),
    (["cpu", "cuda", "tensorrt"], (), ["cpu", "cuda", "tensorrt"], []),
    (["cpu", "cuda", "tensorrt"], ("cuda",), ["cuda", "tensorrt"], []),  # the TensorRT provider runs on cuda
    (["cpu", "cuda", "tensorrt"], ("cpu",), ["cpu"], []),
    (["cpu"], ("cuda",), [], ["onnxruntime on cuda: not available here"]),
])
def test_onnxruntime_providers_measured_on_each_device(monkeypatch, offered, devices, expected, skipped):
    from crn_deploy.backends import onnxruntime as ort_module
    from crn_deploy.measure.bench import BenchOptions, ort_providers

    monkeypatch.setattr(ort_module, "available_devices", lambda: offered)
    notes: list[str] = []
    assert ort_providers(BenchOptions(devices=devices), notes) == expected
    assert notes == skipped


def test_every_artifact_must_load_before_anything_is_timed(engines, capsys):
    broken = engines / "tiny-64x96-fp16.onnx"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated by a failed copy
    assert bench_main([str(engines), *FAST]) == 2
    out, err = capsys.readouterr()
    assert "tiny-64x96-fp16.onnx" in err and "nothing was timed" in err and "re-export" in err
    assert "p50" not in out  # no row was measured first


def test_colour_label_images_outside_the_palette_warn_or_fail(engines, tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    colors = CITYSCAPES.ids_to_colors(street_layout(64, 96, seed=9))[..., ::-1]
    cv2.imwrite(str(labels / "saved-as-jpeg.png"), cv2.imdecode(cv2.imencode(".jpg", colors)[1], cv2.IMREAD_COLOR))
    report = tmp_path / "r.json"
    assert bench_main([str(engines), "--labels", str(labels), "--backend", "onnxruntime", *FAST,
                       "--json", str(report)]) == 0
    assert "outside the 'cityscapes' palette" in json.loads(report.read_text())["warnings"][0]
    capsys.readouterr()
    assert bench_main([str(engines), "--labels", str(labels), "--strict-colors", *FAST]) == 2
    assert "saved-as-jpeg.png" in capsys.readouterr().err


def test_label_ids_past_the_label_set_are_reported_once_or_refused(engines, tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    ids = street_layout(64, 96, seed=9)
    ids[:20] = 50  # no class 50 in a 19-class model
    cv2.imwrite(str(labels / "other-space.png"), ids)
    report = tmp_path / "r.json"
    assert bench_main([str(engines), "--labels", str(labels), "--backend", "onnxruntime", *FAST,
                       "--json", str(report)]) == 0
    said = "".join(capsys.readouterr())
    assert said.count("past the 'cityscapes' label set") == 1 and "id 50 on" in said
    assert "id 50 on" in json.loads(report.read_text())["warnings"][0]
    assert bench_main([str(engines), "--labels", str(labels), "--strict-labels", *FAST]) == 2
    assert "other-space.png" in capsys.readouterr().err
