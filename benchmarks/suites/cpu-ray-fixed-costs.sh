#!/usr/bin/env bash
# CPU suite: what `crn-run --ray` costs as a whole command against single-process `crn-run`, on one machine, on
# 2,000 small Cityscapes-style label maps (64x128, label + instance files; spade-tiny, random weights, FP32 ONNX).
# Each command runs as a user runs it (a fresh process, timed from outside), alternating single-process and
# --ray --workers 1, ROUNDS times (default 3). Each run is split into start (command start -> first picture on
# disk: Python, Ray's start and the artifact's opening), steady (first -> last picture) and exit (the summary line ->
# the process gone). Ray's own fixed costs are measured beside, each in a fresh process: ray.init + one task +
# ray.shutdown, and each round Ray Data alone running a pipeline of the same shape with functions that do nothing
# (its start: to its first row), and Ray alone starting one actor that holds a CPU (to its first call's answer).
# With psutil installed, the CPU seconds of each command's whole process tree up to its first picture, by process.
# About 7 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-ray-fixed-costs.sh RESULTS_DIR [WORK_DIR]
set -euo pipefail
results=${1:?results folder}
work=${2:-engines/cpu-ray-fixed-costs}
py=${PYTHON:-python3}
. "$(dirname "$0")/small_maps.sh"  # the model and the 2,000 label maps
rounds=${ROUNDS:-3}
if rehearsal; then rounds=1; fi
ROUNDS=$rounds "$py" - "$work" "$results" "$labels" "$maps" <<'PY' | tee "$results/fixed-costs.txt"
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

work, results = Path(sys.argv[1]), Path(sys.argv[2])
artifact = work / "engines" / "spade-tiny-seed0-64x128-fp32.onnx"
labels = Path(sys.argv[3])
count = int(sys.argv[4])
pattern = str(labels / "**" / "*_labelIds.png")
crn_run = [sys.executable, "-m", "crn_deploy.cli.run", str(artifact), "--input", pattern, "--device", "cpu"]


def pictures(folder: Path) -> int:
    found = 0
    for entry in os.scandir(folder) if folder.is_dir() else ():
        if entry.is_dir():
            found += pictures(Path(entry.path))
        elif entry.name.endswith(".png") and not entry.name.startswith("."):
            found += 1
    return found


class TreeCpu:
    """The CPU seconds of a process and all its descendants, by process name, as last seen (psutil, where
    installed): sampled while the command runs, read at its first picture."""

    def __init__(self, pid: int) -> None:
        try:
            import psutil
        except ImportError:
            self.root = None
            return
        self.psutil, self.root, self.seen = psutil, psutil.Process(pid), {}

    def sample(self) -> None:
        if self.root is None:
            return
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return
        for process in processes:
            try:
                times = process.cpu_times()
                self.seen[process.pid] = (process.name(), times.user + times.system)
            except self.psutil.Error:
                continue

    def report(self) -> dict:
        if self.root is None:
            return {}
        self.sample()
        workers = [cpu for name, cpu in self.seen.values()  # Ray's agents are named ray:: too
                   if name.startswith("ray::") and not name.endswith("Agent")]
        return {"cpu_s_to_first": sum(cpu for _, cpu in self.seen.values()), "ray_workers_at_first": len(workers),
                "ray_worker_cpu_s_to_first": sum(workers),
                "cpu_s_by_process_to_first": sorted(([name, round(cpu, 2)] for name, cpu in self.seen.values()),
                                                    key=lambda item: -item[1])}


def timed(name: str, extra: list[str]) -> dict:
    """One command, from outside: (start, steady, exit) seconds and its whole wall clock."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    process = subprocess.Popen([*crn_run, "--output", str(out), *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    marks: dict = {}

    def read() -> None:
        for line in process.stdout:
            if "pictures written" in line or "frames in," in line:
                marks["summary"] = time.perf_counter()
            marks.setdefault("lines", []).append(line.rstrip())

    reader = threading.Thread(target=read)
    reader.start()
    cpu = TreeCpu(process.pid)
    while process.poll() is None:
        if "first" not in marks:
            cpu.sample()
        if "first" not in marks and pictures(out) > 0:
            marks["first"] = time.perf_counter()
            marks["cpu"] = cpu.report()
        if "last" not in marks and pictures(out) >= count:
            marks["last"] = time.perf_counter()
        time.sleep(0.02)
    ended = time.perf_counter()
    reader.join()
    assert process.returncode == 0 and pictures(out) == count, marks.get("lines", [])[-5:]
    last = marks.get("last", marks["summary"])
    return {"command": "crn-run " + " ".join(extra) if extra else "crn-run", "wall_s": ended - started,
            "start_s": marks["first"] - started, "steady_s": last - marks["first"],
            "steady_fps": (count - 1) / (last - marks["first"]), "exit_s": ended - marks["summary"], **marks["cpu"]}


def bare_ray() -> float:
    code = ("import ray; ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False); "
            "ray.get(ray.remote(lambda: 1).remote()); ray.shutdown()")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


# Ray Data's own pipeline of crn-run --ray's shape, with functions that do nothing: as many rows, in batches as
# large, a task pool of 2, an actor pool of 1 holding a CPU, a task pool of 2; read to the end
BARE_RAY_DATA = f"""
import ray, ray.data
ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().enable_progress_bars = False
class Nothing:
    def __call__(self, batch):
        return batch
def nothing(batch):
    return batch
tasks = dict(batch_size=64, num_cpus=0.5, compute=ray.data.TaskPoolStrategy(size=2))
rows = ray.data.from_items([{{"name": f"{{i:06d}}"}} for i in range({count})]).map_batches(nothing, **tasks)
rows = rows.map_batches(Nothing, batch_size=64, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=1))
for i, _ in enumerate(rows.map_batches(nothing, **tasks).iter_rows()):
    if i == 0:
        print("first", flush=True)
print("last", flush=True)
ray.shutdown()
"""


# Ray alone: ray.init and one actor holding a CPU, to its first call's answer (the floor of crn-run --ray's start:
# what it adds is opening the artifact in the actor and painting and writing the first maps)
BARE_ACTOR = """
import ray
ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
class Nothing:
    def __call__(self):
        return 1
ray.get(ray.remote(num_cpus=1)(Nothing).remote().__call__.remote())
print("first", flush=True)
ray.shutdown()
print("last", flush=True)
"""


def bare(code: str) -> dict:
    """Ray's own start (to the first row or answer) and whole run for ``code``, from outside."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    marks: dict = {}
    cpu = TreeCpu(process.pid)

    def read() -> None:
        for line in process.stdout:
            marks[line.strip()] = time.perf_counter()
            if line.strip() == "first":
                marks["cpu"] = cpu.report()

    reader = threading.Thread(target=read)
    reader.start()
    while process.poll() is None and "first" not in marks:
        cpu.sample()
        time.sleep(0.02)
    reader.join()
    assert process.wait() == 0 and "first" in marks, marks
    return {"start_s": marks["first"] - started, "wall_s": time.perf_counter() - started, **marks["cpu"]}


rows = []
for round_ in range(int(os.environ.get("ROUNDS", 3))):
    single = timed("single", [])
    ray_run = timed("ray", ["--ray", "--workers", "1"])
    ray_run["vs_single"] = single["wall_s"] / ray_run["wall_s"]
    rows += [{**single, "round": round_}, {**ray_run, "round": round_}]
    rows.append({"command": "Ray Data alone, same shape", **bare(BARE_RAY_DATA), "round": round_})
    rows.append({"command": "Ray alone, one actor", **bare(BARE_ACTOR), "round": round_})
bare_ray_s = bare_ray()
load = os.getloadavg()
print(f"{count} maps 64x128 (spade-tiny FP32 ONNX, labels + instances), {platform.processor() or platform.machine()}, "
      f"{os.cpu_count()} logical cores; load average at the end {load[0]:.2f}")
print(f"{'round':>5} {'command':30} {'wall s':>7} {'start s':>8} {'steady s':>9} {'pictures/s':>11} {'exit s':>7}"
      f" {'whole-command vs single':>24}")
for row in rows:
    ratio = f"{row['vs_single']:.2f}x" if "vs_single" in row else ""
    steady = f"{row['steady_s']:9.1f} {row['steady_fps']:11.1f} {row['exit_s']:7.2f}" if "steady_s" in row else \
        f"{'':9} {'':11} {'':7}"
    print(f"{row['round']:>5} {row['command']:30} {row['wall_s']:7.1f} {row['start_s']:8.1f} {steady} {ratio:>24}")
print("CPU seconds of each command's whole process tree up to its first picture (Ray Data alone: its first row; "
      "Ray alone: its actor's first answer):")
for row in rows:
    if "cpu_s_to_first" in row:
        print(f"{row['round']:>5} {row['command']:30} {row['cpu_s_to_first']:6.1f} s, of which "
              f"{row['ray_worker_cpu_s_to_first']:.1f} s in {row['ray_workers_at_first']} Ray worker processes "
              f"({', '.join(f'{name} {cpu:.2f}' for name, cpu in row['cpu_s_by_process_to_first'][:14])})")
print(f"Ray's own fixed cost (fresh process: import, ray.init, one task, ray.shutdown): {bare_ray_s:.1f} s")
(results / "fixed-costs.json").write_text(json.dumps({"rows": rows, "bare_ray_s": bare_ray_s, "maps": count,
                                                       "load_average": load}, indent=1))
PY
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$work"
