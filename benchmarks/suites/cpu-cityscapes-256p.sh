#!/usr/bin/env bash
# CPU suite: cityscapes-256p (random weights, seed 0) at 256x512 and 512x1024, FP32 and FP16,
# ONNX Runtime vs the PyTorch reference. About 30 minutes on 2 cores (a 512x1024 frame takes ~1 min).
# Usage: benchmarks/suites/cpu-cityscapes-256p.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
py=${PYTHON:-python3}
engines=${2:-engines/cpu-cityscapes-256p}
mkdir -p "$results"
crn-export --preset cityscapes-256p --random-weights --seed 0 --res 256x512 --res 512x1024 \
    --precision fp32 --precision fp16 --out "$engines" | tee "$results/export.log"
crn-bench "$engines" --samples 2 --warmup 0 --iterations 2 --duration 0 \
    --json "$results/bench.json" --csv "$results/bench.csv" --report "$results" | tee "$results/bench.txt"
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines"
