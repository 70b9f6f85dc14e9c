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


@pytest.mark.slow
def test_the_gpu_machine_command_runs_end_to_end_without_a_gpu(tmp_path):
    results = tmp_path / "results"
    # No install here: pip must not rewrite the environment the tests run in (the install step was
    # rehearsed in a venv of the GPU image's packages: benchmarks/README.md).
    env = {**os.environ, "CRN_GPU_SUITE_SIZE": "small", "PYTHON": sys.executable, "CRN_GPU_SUITE_INSTALL": "0",
           "CRN_GPU_ENGINES": str(tmp_path / "engines")}
    run = subprocess.run(["bash", str(ROOT / "benchmarks/suites/gpu-machine.sh"), str(results)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = (results / "run.log").read_text()
    assert "pytest -m gpu exit status 0" in log and "benchmark suite exit status 0" in log
    if importlib.util.find_spec("tensorrt") is None:
        assert "skipped: TensorRT engines and their tests (tensorrt is not installed on this machine)" in log
    environment = json.loads((results / "environment.json").read_text())
    assert environment["crn_deploy"] and environment["torch"]
    assert "skipped" in (results / "pytest-gpu.txt").read_text()
    assert json.loads((results / "bench.json").read_text())["settings"]["artifacts"]
    assert "wrote" in (results / "export.log").read_text()
