#!/usr/bin/env bash
# CPU suite: cityscapes-256p (random weights, seed 0) at 256x512, FP32 and FP16,
# ONNX Runtime vs the PyTorch reference. About 10 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-cityscapes-256p.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-cityscapes-256p}
mkdir -p "$results"
crn-export --preset cityscapes-256p --random-weights --seed 0 --res 256x512 \
    --precision fp32 --precision fp16 --out "$engines" | tee "$results/export.log"
crn-bench "$engines" --samples 2 --warmup 0 --iterations 3 --duration 0 \
    --json "$results/bench.json" | tee "$results/bench.txt"
