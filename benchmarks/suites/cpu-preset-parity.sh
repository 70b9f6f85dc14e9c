#!/usr/bin/env bash
# Export parity of every released preset (random weights, seed 0) at its smallest valid size
# (base 1x1), FP32 and FP16, against the PyTorch FP32 reference. A few minutes on 2 cores.
# Usage: benchmarks/suites/cpu-preset-parity.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
py=${PYTHON:-python3}
engines=${2:-engines/cpu-preset-parity}
. "$(dirname "$0")/rehearsal.sh"
presets=(cityscapes-256p cityscapes-512p cityscapes-1024p gta-256p)
floor=()
if rehearsal; then presets=(tiny); floor=("${lifted_floor[@]}"); fi
mkdir -p "$results"
: > "$results/preset-parity.log"
for preset in "${presets[@]}"; do
    case $preset in cityscapes-1024p) res=256x256 ;; cityscapes-512p) res=128x128 ;; *) res=64x64 ;; esac
    "$py" -m crn_deploy.cli.export --preset "$preset" --random-weights --seed 0 --res "$res" "${floor[@]}" \
        --precision fp32 --precision fp16 --samples 4 --out "$engines" | tee -a "$results/preset-parity.log"
done
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines"
