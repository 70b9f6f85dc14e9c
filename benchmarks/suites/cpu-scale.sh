#!/usr/bin/env bash
# CPU suite: the overhead of the Ray paths on one machine. A small model (spade-tiny, random weights, FP32
# ONNX at 256x512, label + instance maps): Ray Data batch synthesis with 1 and 2 workers against the
# single-process loop crn-run runs, on the same 48 Cityscapes-style label files; then a Ray Serve endpoint
# (2 CPU replicas) at client concurrency 1, 2 and 4 against direct runtime calls. About 5 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-scale.sh RESULTS_DIR [WORK_DIR]
set -euo pipefail
results=${1:?results folder}
work=${2:-engines/cpu-scale}
py=${PYTHON:-python3}
. "$(dirname "$0")/rehearsal.sh"
res=256x512; maps=48; requests=40
if rehearsal; then res=64x128; maps=8; requests=8; fi
mkdir -p "$results" "$work"
"$py" -m crn_deploy.cli.export --preset spade-tiny --random-weights --res "$res" --precision fp32 \
    --out "$work/engines" --no-engine --samples 1 > "$results/export.log"
"$py" - "$work" "$results" "$res" "$maps" "$requests" <<'PY' | tee "$results/scale.txt"
import json
import platform
import shutil
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import ray

from crn_deploy import runtime
from crn_deploy.data.images import write_image
from crn_deploy.data.streams import FolderSource
from crn_deploy.data.synthetic import cityscapes_scene
from crn_deploy.scale import batch, serve
from crn_deploy.scale.client import SynthesisClient

work, results, res = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
maps, requests = int(sys.argv[4]), int(sys.argv[5])
h, w = map(int, res.split("x"))
artifact = work / "engines" / f"spade-tiny-seed0-{res}-fp32.onnx"
labels_dir = work / f"labels-{res}-{maps}" / "gtFine" / "val"
if not labels_dir.is_dir():
    for i in range(maps):
        city = labels_dir / f"city{i % 3}"
        city.mkdir(parents=True, exist_ok=True)
        ids, inst = cityscapes_scene(h, w, seed=3000 + i)
        cv2.imwrite(str(city / f"c_{i:06d}_000019_gtFine_labelIds.png"), ids)
        cv2.imwrite(str(city / f"c_{i:06d}_000019_gtFine_instanceIds.png"), inst.astype(np.uint16))
pattern = str(labels_dir / "**" / "*_labelIds.png")
report = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
          "versions": {"ray": ray.__version__}, "maps": maps, "model": f"spade-tiny {res} fp32 onnx, cpu"}


def fresh(name):
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    return out


# single process: what crn-run does for a folder (read, synthesize, write), one synthesizer
out = fresh("single")
started = time.perf_counter()
with runtime.load(artifact, device="cpu") as synth:
    for name, labels in FolderSource(pattern, synth.label_set):
        write_image(batch.picture_path(out, name), synth(labels.ids, instances=labels.instances))
single = time.perf_counter() - started
report["single_process_s"] = single
print(f"single process: {maps} maps in {single:.2f} s, {maps / single:.2f} maps/s")

started = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().enable_progress_bars = False
report["ray_init_s"] = time.perf_counter() - started
print(f"ray.init (local, 2 CPUs): {report['ray_init_s']:.2f} s")
expected = {p.relative_to(work / "single"): p.read_bytes() for p in (work / "single").rglob("*.png")}
for workers in (1, 2):
    out = fresh(f"ray{workers}")
    summary = batch.synthesize_files(artifact, pattern, out, batch.BatchOptions(workers=workers, gpus_per_worker=0),
                                     log=lambda line: None)
    same = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")} == expected
    report[f"ray_data_{workers}_workers_s"] = summary.seconds
    print(f"Ray Data, {workers} worker(s): {maps} maps in {summary.seconds:.2f} s, {maps / summary.seconds:.2f} maps/s "
          f"({single / summary.seconds:.2f}x the single process; pictures byte-identical: {same})")

scenes = [cityscapes_scene(h, w, seed=4000 + i) for i in range(requests)]
with runtime.load(artifact, device="cpu") as synth:
    synth(*scenes[0][:1], instances=scenes[0][1])
    latencies = []
    started = time.perf_counter()
    for ids, inst in scenes:
        t = time.perf_counter()
        synth(ids, instances=inst)
        latencies.append((time.perf_counter() - t) * 1000)
    direct = time.perf_counter() - started
report["direct"] = {"requests": requests, "seconds": direct, "p50_ms": float(np.percentile(latencies, 50)),
                    "p99_ms": float(np.percentile(latencies, 99))}
print(f"direct runtime calls: {requests / direct:.2f} req/s, p50 {report['direct']['p50_ms']:.1f} ms, "
      f"p99 {report['direct']['p99_ms']:.1f} ms")
with socket.socket() as probe:  # a free port: another service (or test) may hold any fixed one
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
url = serve.start(artifact, serve.ServeOptions(port=port, replicas=2, gpus_per_replica=0), log=lambda line: None)
client = SynthesisClient(url)
while not client.healthy():
    time.sleep(0.2)
client.synthesize(*scenes[0])
report["serve"] = {}
for concurrency in (1, 2, 4):
    latencies = []

    def one(scene):
        t = time.perf_counter()
        client.synthesize(*scene)
        latencies.append((time.perf_counter() - t) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, scenes))
    seconds = time.perf_counter() - started
    row = {"requests": requests, "seconds": seconds, "p50_ms": float(np.percentile(latencies, 50)),
           "p99_ms": float(np.percentile(latencies, 99))}
    report["serve"][concurrency] = row
    print(f"Ray Serve, 2 replicas, concurrency {concurrency}: {requests / seconds:.2f} req/s "
          f"({direct / seconds:.2f}x direct), p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")
serve.shutdown()
ray.shutdown()
(results / "scale.json").write_text(json.dumps(report, indent=2))
PY
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$work"
