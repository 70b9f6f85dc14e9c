#!/usr/bin/env bash
# CPU suite: the pipelined Ray path (read/decode tasks -> synthesis actors -> encode/write tasks) against
# single-process crn-run on 2,000 small Cityscapes-style label maps (64x128, label + instance files; spade-tiny,
# random weights, FP32 ONNX). One machine: crn-run, then crn-run --ray with 1 worker (a local Ray instance);
# then a two-node cluster on loopback (ray.cluster_utils.Cluster: two raylets of one CPU each) with 1 and 2
# workers. Throughput = pictures / the run's own seconds (after Ray is up and the files are listed; Ray's
# start-up is reported apart). About 6 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-ray-pipeline.sh RESULTS_DIR [WORK_DIR]
set -euo pipefail
results=${1:?results folder}
work=${2:-engines/cpu-ray-pipeline}
py=${PYTHON:-python3}
. "$(dirname "$0")/small_maps.sh"  # the model and the 2,000 label maps
"$py" - "$work" "$results" "$labels" "$maps" <<'PY' | tee "$results/ray-pipeline.txt"
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import ray

from crn_deploy.cli.run import main as run_main
from crn_deploy.scale import batch

work, results = Path(sys.argv[1]), Path(sys.argv[2])
artifact = work / "engines" / "spade-tiny-seed0-64x128-fp32.onnx"
labels = Path(sys.argv[3])
count = int(sys.argv[4])
pattern = str(labels / "**" / "*_labelIds.png")
rows = []


def fresh(name):
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    return out


started = time.perf_counter()
assert run_main([str(artifact), "--input", pattern, "--output", str(fresh("single")), "--device", "cpu"]) == 0
single = time.perf_counter() - started
rows.append({"path": "crn-run, single process", "workers": 1, "nodes": 1, "seconds": single, "fps": count / single})


def ray_run(name, workers, address=None, nodes=1):
    started = time.perf_counter()
    summary = batch.synthesize_files(artifact, pattern, fresh(name), batch.BatchOptions(
        workers=workers, gpus_per_worker=0, address=address), log=lambda line: None)
    assert summary.written == count, summary
    total = time.perf_counter() - started
    rows.append({"path": f"--ray, {workers} worker(s)", "workers": workers, "nodes": nodes, "seconds": summary.seconds,
                 "fps": count / summary.seconds, "with_start_s": total})


ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().enable_progress_bars = False
ray_run("ray1", 1)
ray.shutdown()

from ray.cluster_utils import Cluster  # noqa: E402

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().enable_progress_bars = False
for workers in (1, 2):
    ray_run(f"two-nodes-{workers}", workers, cluster.address, nodes=2)
ray.shutdown()
cluster.shutdown()

print(f"{count} maps 64x128 (spade-tiny FP32 ONNX, labels + instances), {platform.processor() or platform.machine()}, "
      f"ray {ray.__version__}")
for row in rows:
    extra = f" (with Ray's start {row['with_start_s']:.1f} s)" if "with_start_s" in row else ""
    print(f"{row['path']:32} nodes {row['nodes']}: {row['seconds']:7.1f} s, {row['fps']:6.1f} pictures/s, "
          f"{row['fps'] / rows[0]['fps']:.2f}x single process{extra}")
(results / "ray-pipeline.json").write_text(json.dumps(rows, indent=1))
PY
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$work"
