#!/usr/bin/env bash
# CPU suite: the generator families side by side at 256x512, random weights (seed 0), FP32 and FP16,
# ONNX Runtime vs the PyTorch reference in one run: CRN cityscapes-256p, pix2pixHD label2city_512p
# (the released 512p model's architecture: global generator, ngf 64) and SPADE spade_cityscapes (the
# released Cityscapes model's architecture: ngf 64, "more" upsampling, 256x512 native). Then SPADE's FP16
# error on label maps of many small classes (its modulation multiplies by 1 + gamma, which FP16 can
# amplify), with per-class figures. About 25 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-families-256x512.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-families-256x512}
py=${PYTHON:-python3}
. "$(dirname "$0")/rehearsal.sh"
presets=(cityscapes-256p label2city_512p spade_cityscapes); res=256x512; shapes=200; floor=()
if rehearsal; then presets=(tiny pix2pixhd-tiny spade-tiny); res=64x128; shapes=20; floor=("${lifted_floor[@]}"); fi
spade=${presets[2]}
mkdir -p "$results"
: > "$results/export.log"
for preset in "${presets[@]}"; do
    "$py" -m crn_deploy.cli.export --preset "$preset" --random-weights --seed 0 --res "$res" "${floor[@]}" \
        --precision fp32 --precision fp16 --out "$engines" --no-engine | tee -a "$results/export.log"
done
"$py" -m crn_deploy.cli.bench "$engines" --samples 2 --warmup 0 --iterations 2 --duration 0 \
    --json "$results/bench.json" --csv "$results/bench.csv" | tee "$results/bench.txt"
ls -l "$engines" | tee "$results/sizes.txt"

# SPADE on many small classes: 4 patchworks of 200 shapes (rehearsal: 20) over the 35 Cityscapes label ids, each shape
# its own instance, written as Cityscapes *_labelIds.png / *_instanceIds.png pairs.
small="$engines-small-classes"
mkdir -p "$small/labels"
ln -sf "$(realpath "$engines")/$spade"-seed0-* "$small/"
"$py" - "$small/labels" "$res" "$shapes" <<'PY'
import sys
import cv2
import numpy as np
from crn_deploy.data.synthetic import patchwork_scene
h, w = map(int, sys.argv[2].split("x"))
shapes = int(sys.argv[3])
for i in range(4):
    ids, instances = patchwork_scene(h, w, 35, seed=500 + i, shapes=shapes)
    cv2.imwrite(f"{sys.argv[1]}/patch_{i:06d}_000019_gtFine_labelIds.png", ids)
    cv2.imwrite(f"{sys.argv[1]}/patch_{i:06d}_000019_gtFine_instanceIds.png", instances.astype(np.uint16))
print("classes per map:", [len(np.unique(patchwork_scene(h, w, 35, seed=500 + i, shapes=shapes)[0])) for i in range(4)])
PY
"$py" -m crn_deploy.cli.bench "$small" --labels "$small/labels" --backend onnxruntime --backend torch \
    --warmup 0 --iterations 1 --duration 0 --json "$results/spade-small-classes.json" \
    | tee "$results/spade-small-classes.txt"
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines" "$small"
