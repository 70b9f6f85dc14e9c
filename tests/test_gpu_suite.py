"""The GPU suite's one command (benchmarks/suites/gpu-machine.sh), rehearsed here on small models:
everything up to the first CUDA call runs, and what needs a GPU, TensorRT or ONNX Runtime's CUDA
provider is skipped with a line saying why. On the lent GPU machine the same command runs it all."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _engine_checks():
    spec = importlib.util.spec_from_file_location("gpu_engine_checks", ROOT / "benchmarks/suites/gpu_engine_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(backend, **fields):
    return {"artifact": "x-fp16.rtx.engine", "backend": backend, "latency_ms": {"p50": 1.0}, **fields}


def test_engine_checks_judge_the_bench_rows_of_a_gpu_machine(tmp_path, capsys):
    checks = _engine_checks()
    rows = [_row("tensorrt-rtx+graph", graph_captures=0, device_memory_mib=300.0, device_memory_measured_mib=310.0),
            _row("tensorrt-rtx+graph", graph_captures=20, device_memory_mib=100.0, device_memory_measured_mib=400.0),
            _row("tensorrt-rtx", device_memory_mib=300.0, device_memory_measured_mib=300.0),
            _row("onnxruntime-cuda")]
    assert [r["verdict"] for r in checks.capture_checks(rows)] == ["ok", "FAILED"]  # one capture per frame fails
    memory = checks.memory_checks(rows)
    assert [(r["unreported_mib"], r["verdict"]) for r in memory] == [(10.0, "ok"), (300.0, "FAILED"), (0.0, "ok")]
    (tmp_path / "bench.json").write_text(json.dumps({"rows": rows}))
    assert checks.main([str(tmp_path / "bench.json"), str(tmp_path), str(tmp_path / "checks.json")]) == 1
    said = capsys.readouterr().out
    assert "check 1 re-captures after warm-up: FAILED (row x-fp16.rtx.engine [tensorrt-rtx+graph], graph_captures 20)" \
        in said
    assert "check 3 an engine on the second GPU, frames from a worker thread: skipped:" in said  # no second GPU here
    assert len(json.loads((tmp_path / "checks.json").read_text())) == 6
    nothing = checks.main([str(tmp_path / "missing.json"), str(tmp_path), str(tmp_path / "none.json")])
    assert nothing == 0 and all(r["verdict"].startswith("skipped: ") for r in json.loads((tmp_path / "none.json")
                                                                                          .read_text()))


@pytest.mark.slow
def test_the_gpu_machine_command_runs_end_to_end_without_a_gpu(tmp_path):
    results = tmp_path / "results"
    # No install here: pip must not rewrite the environment the tests run in (the install step was
    # rehearsed in a venv of the GPU image's packages: benchmarks/README.md).
    env = {**os.environ, "CRN_SUITE_SIZE": "small", "PYTHON": sys.executable, "CRN_GPU_SUITE_INSTALL": "0",
           "CRN_GPU_ENGINES": str(tmp_path / "engines")}
    run = subprocess.run(["bash", str(ROOT / "benchmarks/suites/gpu-machine.sh"), str(results)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = (results / "run.log").read_text()
    assert "pytest -m gpu exit status 0" in log and "benchmark suite exit status 0" in log
    assert "engine checks exit status 0" in log and "check 1 re-captures after warm-up: skipped:" in log
    if importlib.util.find_spec("tensorrt") is None:
        assert "skipped: TensorRT engines and their tests (tensorrt is not installed on this machine)" in log
    environment = json.loads((results / "environment.json").read_text())
    assert environment["crn_deploy"] and environment["torch"]
    assert "skipped" in (results / "pytest-gpu.txt").read_text()
    assert json.loads((results / "bench.json").read_text())["settings"]["artifacts"]
    assert "wrote" in (results / "export.log").read_text()
