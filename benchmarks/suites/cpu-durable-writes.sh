#!/usr/bin/env bash
# CPU suite: what durable writes cost (each picture's data synced before its rename, its folder after:
# crn_deploy.files; CRN_DEPLOY_FSYNC=0 turns it off), with fsync on and off in the same run, alternating:
#  - the writes alone: 2,000 pictures of 64x128 (the PNGs crn-run writes for the suite's maps), written one per
#    call as single-process crn-run writes them, and in batches of 64 as crn-run --ray's writing tasks do (one
#    folder sync per batch);
#  - end to end on 2,000 Cityscapes-style label + instance maps at 64x128 (spade-tiny, random weights, FP32 ONNX):
#    single-process crn-run, and crn-run --ray with 1 worker on a local Ray instance.
# About 5 minutes on 2 cores. Usage: benchmarks/suites/cpu-durable-writes.sh RESULTS_DIR [WORK_DIR]
set -euo pipefail
results=${1:?results folder}
work=${2:-engines/cpu-durable-writes}
py=${PYTHON:-python3}
. "$(dirname "$0")/small_maps.sh"  # the model and the 2,000 label maps
rounds=2
if rehearsal; then rounds=1; fi
ROUNDS=$rounds "$py" - "$work" "$results" "$labels" "$maps" <<'PY' | tee "$results/durable-writes.txt"
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crn_deploy.cli.run import main as run_main
from crn_deploy.files import FSYNC_SWITCH, write_bytes_atomic, write_files_atomic
from crn_deploy.scale import batch
from crn_deploy.scale.cluster import quiet_ray

work, results = Path(sys.argv[1]), Path(sys.argv[2])
artifact = work / "engines" / "spade-tiny-seed0-64x128-fp32.onnx"
labels = Path(sys.argv[3])
count, rounds = int(sys.argv[4]), int(os.environ["ROUNDS"])
pattern = str(labels / "**" / "*_labelIds.png")
rows = []


def fresh(name):
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    return out


def durable(on):
    os.environ[FSYNC_SWITCH] = "1" if on else "0"  # read at each write; a local Ray started after inherits it
    return "fsync on" if on else "fsync off"


# The writes alone: the pictures single-process crn-run wrote for these maps, written again
reference = fresh("reference")
assert run_main([str(artifact), "--input", pattern, "--output", str(reference), "--device", "cpu"]) == 0
pictures = [(p.relative_to(reference), p.read_bytes()) for p in sorted(reference.rglob("*.png"))]
for round_ in range(rounds):
    for on in (True, False):
        setting = durable(on)
        for way in ("one per call", "batches of 64"):
            out = fresh("writes")
            started = time.perf_counter()
            if way == "one per call":
                for name, data in pictures:
                    write_bytes_atomic(out / name, data)
            else:
                for at in range(0, len(pictures), 64):
                    write_files_atomic([(out / name, data) for name, data in pictures[at:at + 64]])
            seconds = time.perf_counter() - started
            rows.append({"what": f"writes alone, {way}", "fsync": on, "round": round_ + 1, "seconds": seconds,
                         "ms_per_picture": 1000 * seconds / len(pictures)})

# End to end
for round_ in range(rounds):
    for on in (True, False):
        setting = durable(on)
        started = time.perf_counter()
        assert run_main([str(artifact), "--input", pattern, "--output", str(fresh("single")), "--device", "cpu"]) == 0
        seconds = time.perf_counter() - started
        rows.append({"what": "crn-run, single process", "fsync": on, "round": round_ + 1, "seconds": seconds,
                     "ms_per_picture": 1000 * seconds / count})
        with quiet_ray("ray.data"):
            summary = batch.synthesize_files(artifact, pattern, fresh("ray"), batch.BatchOptions(
                workers=1, gpus_per_worker=0), log=lambda line: None)
        assert summary.written == count, summary
        rows.append({"what": "crn-run --ray, 1 worker", "fsync": on, "round": round_ + 1, "seconds": summary.seconds,
                     "ms_per_picture": 1000 * summary.seconds / count})

fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
load = os.getloadavg()
print(f"{count} pictures 64x128 (spade-tiny FP32 ONNX, labels + instances), {platform.machine()}, "
      f"{os.cpu_count()} CPUs, filesystem {fs}; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
for row in rows:
    print(f"{row['what']:34} round {row['round']} fsync {'on ' if row['fsync'] else 'off'}: {row['seconds']:7.2f} s, "
          f"{row['ms_per_picture']:6.2f} ms/picture")
print("cost of fsync (on - off, per picture, each round):")
for what in dict.fromkeys(r["what"] for r in rows):
    for round_ in range(1, rounds + 1):
        on, off = (next(r for r in rows if r["what"] == what and r["round"] == round_ and r["fsync"] == f)
                   for f in (True, False))
        print(f"  {what:34} round {round_}: {on['ms_per_picture'] - off['ms_per_picture']:+6.2f} ms/picture "
              f"({on['seconds'] / off['seconds']:.2f}x the time)")
(results / "durable-writes.json").write_text(json.dumps({"filesystem": fs, "load_average": load, "rows": rows},
                                                         indent=1))
PY
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$work"
