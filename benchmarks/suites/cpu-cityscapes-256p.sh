#!/usr/bin/env bash
# CPU suite: cityscapes-256p (random weights, seed 0) at 256x512 and 512x1024, FP32 and FP16,
# ONNX Runtime vs the PyTorch reference. About 30 minutes on 2 cores (a 512x1024 frame takes ~1 min).
# Usage: benchmarks/suites/cpu-cityscapes-256p.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
py=${PYTHON:-python3}
engines=${2:-engines/cpu-cityscapes-256p}
. "$(dirname "$0")/rehearsal.sh"
model=(--preset cityscapes-256p --res 256x512 --res 512x1024)
if rehearsal; then model=(--preset tiny --res 32x64 --res 64x128 "${lifted_floor[@]}"); fi
mkdir -p "$results"
"$py" -m crn_deploy.cli.export "${model[@]}" --random-weights --seed 0 \
    --precision fp32 --precision fp16 --out "$engines" | tee "$results/export.log"
"$py" -m crn_deploy.cli.bench "$engines" --samples 2 --warmup 0 --iterations 2 --duration 0 \
    --json "$results/bench.json" --csv "$results/bench.csv" --report "$results" | tee "$results/bench.txt"
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines"
