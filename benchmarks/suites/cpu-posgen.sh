#!/usr/bin/env bash
# CPU suite: PosGen (posgen_cityscapes: SPADE's Cityscapes trunk + the pixel-wise head; random weights,
# seed 0) from 256x512 label maps at 1x (256x512) and 2x (512x1024) output, FP32 and FP16, ONNX Runtime
# vs the PyTorch reference; then the head written as 1x1 convolutions vs MatMuls, timed on ONNX Runtime
# on the same inputs. About 10 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-posgen.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-posgen}
py=${PYTHON:-python3}
. "$(dirname "$0")/rehearsal.sh"
preset=posgen_cityscapes; res=256x512; outs=(256x512 512x1024); floor=()
if rehearsal; then preset=posgen-tiny; res=64x128; outs=(64x128 128x256); floor=("${lifted_floor[@]}"); fi
mkdir -p "$results"
: > "$results/export.log"
for out in "${outs[@]}"; do
    "$py" -m crn_deploy.cli.export --preset "$preset" --random-weights --seed 0 --res "$res" --out-res "$out" \
        "${floor[@]}" --precision fp32 --precision fp16 --out "$engines" --no-engine | tee -a "$results/export.log"
done
"$py" -m crn_deploy.cli.bench "$engines" --samples 2 --warmup 0 --iterations 2 --duration 0 \
    --json "$results/bench.json" --csv "$results/bench.csv" | tee "$results/bench.txt"
ls -l "$engines" | tee "$results/sizes.txt"
"$py" - "$preset" "$res" "${outs[1]}" <<'PY' | tee "$results/head-layout.txt"
"""The pixel-wise head as 1x1 convolutions (NCHW) or as MatMuls on [N, H'W', C]: same weights, same
inputs, ONNX Runtime CPU, FP32 and FP16, labels -> pictures of twice their size; median of 3 calls after one."""
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

from crn_deploy.graph import assemble
from crn_deploy.data.synthetic import cityscapes_scene
from crn_deploy.families import find_preset
from crn_deploy.models import posgen
from crn_deploy.models.registry import model_family
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes, parse_resolution

preset, labels_size, picture_size = sys.argv[1], parse_resolution(sys.argv[2]), parse_resolution(sys.argv[3])
config = find_preset(preset)[1]
model = model_family("posgen").random_model(config, 0)
weights = {k: v.numpy() for k, v in model.state_dict().items()}
ids, inst = cityscapes_scene(*labels_size, seed=2000)
feeds = {"labels": ids[None, None], "instances": inst[None, None]}
for precision in ("fp32", "fp16"):
    outputs = {}
    for head in ("conv", "matmul"):
        graph = assemble(*posgen.graph_parts(config, weights, Sizes(labels_size, picture_size), as_precision(precision),
                                             1, head))
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs[head] = session.run(["image"], feeds)[0]
        times = []
        for _ in range(3):
            started = time.perf_counter()
            session.run(["image"], feeds)
            times.append((time.perf_counter() - started) * 1000)
        print(f"{precision} head={head}: median {statistics.median(times):.0f} ms over {times}")
    diff = np.abs(outputs["conv"].astype(int) - outputs["matmul"].astype(int)).max()
    print(f"{precision}: conv vs matmul pictures differ by at most {diff} level(s)")
PY
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines"
