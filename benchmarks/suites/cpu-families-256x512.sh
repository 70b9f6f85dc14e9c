#!/usr/bin/env bash
# CPU suite: the generator families side by side at 256x512, random weights (seed 0), FP32 and FP16,
# ONNX Runtime vs the PyTorch reference in one run: CRN cityscapes-256p and pix2pixHD label2city_512p
# (the released 512p model's architecture: global generator, ngf 64). About 15 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-families-256x512.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-families-256x512}
py=${PYTHON:-python3}
mkdir -p "$results"
: > "$results/export.log"
for preset in cityscapes-256p label2city_512p; do
    "$py" -m crn_deploy.cli.export --preset "$preset" --random-weights --seed 0 --res 256x512 \
        --precision fp32 --precision fp16 --out "$engines" --no-engine | tee -a "$results/export.log"
done
"$py" -m crn_deploy.cli.bench "$engines" --samples 2 --warmup 0 --iterations 2 --duration 0 \
    --json "$results/bench.json" --csv "$results/bench.csv" | tee "$results/bench.txt"
ls -l "$engines" | tee "$results/sizes.txt"
