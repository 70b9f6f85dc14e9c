"""Checks of the engine runtime on the GPU machine, after the benchmark suite (gpu-machine.sh runs it):

1. TensorRT-RTX captures no CUDA graph while the timed frames run: each "+graph" TensorRT-RTX row of
   bench.json says how many it captured (0 expected once warmed up).
3. An engine opened on the second GPU, where there is one, runs its frames from a worker thread (CUDA's
   current device is per thread, 0 until set) and gives the pictures it gives on the first GPU.
7. The GPU memory each engine row reports (weights, scratch, I/O buffers) against what opening the engine
   took as cudaMemGetInfo saw it.

Usage: python benchmarks/suites/gpu_engine_checks.py BENCH_JSON ENGINES_DIR OUT_JSON
One line per check: "ok", "FAILED" or "skipped: why"; all of them in OUT_JSON; exit status 1 if any FAILED.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np

# What a library may hold beyond the weights, scratch and buffers it reports (its kernels' code, handles), and
# the driver's allocation granularity: a report this much under cudaMemGetInfo still passes.
MEMORY_SLACK_MIB = 64
MEMORY_SLACK_SHARE = 0.10
PAGE_MIB = 2


def skipped(check: str, why: str) -> dict:
    return {"check": check, "verdict": f"skipped: {why}"}


def capture_checks(rows: list[dict]) -> list[dict]:
    graphs = [r for r in rows if r["backend"] == "tensorrt-rtx+graph" and "latency_ms" in r]
    if not graphs:
        return [skipped("1 re-captures after warm-up", "no TensorRT-RTX row ran with CUDA graphs here")]
    results = []
    for row in graphs:
        captures = row.get("graph_captures")
        verdict = ("ok" if captures == 0 else "FAILED" if captures else
                   "skipped: TensorRT-RTX ran this engine without graphs (not stream capturable)")
        results.append({"check": "1 re-captures after warm-up", "row": f"{row['artifact']} [{row['backend']}]",
                        "graph_captures": captures, "verdict": verdict})
    return results


def memory_checks(rows: list[dict]) -> list[dict]:
    engines = [r for r in rows if r["backend"].startswith("tensorrt") and r.get("device_memory_measured_mib")]
    if not engines:
        return [skipped("7 memory against cudaMemGetInfo", "no engine row ran here")]
    results = []
    for row in engines:
        reported, measured = row["device_memory_mib"], row["device_memory_measured_mib"]
        unreported = measured - reported
        ok = -PAGE_MIB <= unreported <= max(MEMORY_SLACK_MIB, MEMORY_SLACK_SHARE * measured)
        results.append({"check": "7 memory against cudaMemGetInfo", "row": f"{row['artifact']} [{row['backend']}]",
                        "reported_mib": round(reported, 1), "measured_mib": round(measured, 1),
                        "unreported_mib": round(unreported, 1), "verdict": "ok" if ok else "FAILED"})
    return results


def gpu_count() -> int:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return count if err == cudart.cudaError_t.cudaSuccess else 0


def second_gpu_check(engines_dir: Path) -> dict:
    check = "3 an engine on the second GPU, frames from a worker thread"
    if gpu_count() < 2:
        return skipped(check, f"{gpu_count()} GPU(s) here")
    from crn_deploy import runtime
    from crn_deploy.data.synthetic import street_layouts
    from crn_deploy.errors import CrnError

    engines = sorted(engines_dir.glob("*-fp16*.engine"), key=lambda p: p.stat().st_size)
    if not engines:
        return skipped(check, f"no FP16 engine in {engines_dir}")
    engine = engines[0]
    try:
        with runtime.load(engine, gpu=0) as synth:
            ids = street_layouts(1, *synth.manifest.resolution, seed=30)[0, 0]
            first = synth(ids)
        with runtime.load(engine, gpu=1) as synth:
            second, failures = [], []

            def worker():
                try:
                    second.append(synth(ids))
                except CrnError as e:
                    failures.append(str(e))

            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
    except CrnError as e:  # e.g. the second GPU is another kind than the one the engine was built on
        return skipped(check, f"{engine.name}: {e}")
    if failures:
        return {"check": check, "engine": engine.name, "error": failures[0], "verdict": "FAILED"}
    differ = int(np.abs(first.astype(np.int16) - second[0].astype(np.int16)).max())
    return {"check": check, "engine": engine.name, "max_abs_difference": differ,
            "verdict": "ok" if differ <= 1 else "FAILED"}


def main(argv: list[str]) -> int:
    bench_json, engines_dir, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    rows = json.loads(bench_json.read_text())["rows"] if bench_json.is_file() else []
    results = [*capture_checks(rows), second_gpu_check(engines_dir), *memory_checks(rows)]
    out.write_text(json.dumps(results, indent=2) + "\n")
    for result in results:
        detail = ", ".join(f"{k} {v}" for k, v in result.items() if k not in ("check", "verdict"))
        print(f"check {result['check']}: {result['verdict']}" + (f" ({detail})" if detail else ""))
    return 1 if any(r["verdict"] == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
