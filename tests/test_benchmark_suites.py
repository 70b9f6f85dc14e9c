"""Every benchmark suite's rehearsal (CRN_SUITE_SIZE=small: the same steps and files on tiny models, small sizes and
few maps) runs to the end, writes the files its README section points to, and leaves no scratch path in them.
The GPU suite's rehearsal is tests/test_gpu_suite.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "benchmarks" / "suites"
GPU_SUITES = {"gpu.sh", "gpu-machine.sh"}  # rehearsed by tests/test_gpu_suite.py

# Each suite: the files of its results that its figures come from
RESULTS = {
    "cpu-cityscapes-256p.sh": ["export.log", "bench.json", "bench.txt", "report.md"],
    "cpu-preset-parity.sh": ["preset-parity.log"],
    "cpu-families-256x512.sh": ["export.log", "bench.json", "sizes.txt", "spade-small-classes.json"],
    "cpu-fp16-floor.sh": ["export.log", "floor.md", "sizes.txt"],
    "cpu-openvino.sh": ["build.log", "bench.json", "bench-demo.json", "openvino.md", "load.txt"],
    "cpu-posgen.sh": ["export.log", "bench.json", "head-layout.txt"],
    "cpu-rtx-build.sh": ["build.log", "rtx-build.json", "rtx-build.txt"],
    "cpu-scale.sh": ["export.log", "scale.json", "scale.txt"],
    "cpu-ray-fixed-costs.sh": ["export.log", "fixed-costs.json", "fixed-costs.txt"],
    "cpu-ray-pipeline.sh": ["export.log", "ray-pipeline.json", "ray-pipeline.txt"],
    "cpu-durable-writes.sh": ["export.log", "durable-writes.json", "durable-writes.txt"],
}


def _suites() -> set[str]:
    """The runnable suites: the scripts with a shebang (the others are sourced by them)."""
    return {p.name for p in SUITES.glob("*.sh") if p.read_text().startswith("#!")} - GPU_SUITES


def test_every_suite_has_a_rehearsal_here():
    assert _suites() == set(RESULTS), "add the new suite's result files to RESULTS"


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(RESULTS))
def test_the_suites_rehearsal_runs_and_writes_its_results(suite, tmp_path):
    results, work = tmp_path / "results", tmp_path / "work"
    env = {**os.environ, "CRN_SUITE_SIZE": "small", "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(SUITES / suite), str(results), str(work)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in RESULTS[suite]:
        path = results / name
        assert path.is_file() and path.stat().st_size > 0, f"{suite} wrote no {name}"
        if path.suffix == ".json":
            json.loads(path.read_text())
    for path in results.rglob("*"):
        if path.suffix in {".txt", ".log", ".json", ".md", ".csv"}:
            text = path.read_text()
            assert str(tmp_path) not in text, f"{path.name} names a scratch path"
            assert "Traceback" not in text and "incomplete" not in text, f"{path.name}: {text[-2000:]}"
