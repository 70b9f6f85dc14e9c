#!/usr/bin/env bash
# CPU suite: the FP16 floor at full width. Each family's full preset (random weights, seed 0) at 256x512 is
# exported in FP16 as users export it (crn-export: ONNX Runtime against the PyTorch FP32 reference on the
# export's two synthetic layouts, PosGen keeping one more trunk block in FP32 at a time until it holds the
# floor, then a TensorRT-RTX engine built on this CPU); PosGen also with no FP32 tail (--option
# fp32_tail_blocks=0 with the floor lifted: the graph before the island) and with a tail of 5; then the
# trained demo models: the shipped CRN demo at 256x512 and, when POSGEN_DEMO names a crn-train checkpoint
# of posgen-demo, that one at 128x256 as exported and with a tail of 5. Finally every FP16 graph is timed
# on ONNX Runtime CPU (median of 3 calls after one) and one table is written from the manifests
# (floor.md). About 15 minutes on 2 cores.
# Usage: [POSGEN_DEMO=ckpt.pt] benchmarks/suites/cpu-fp16-floor.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-fp16-floor}
py=${PYTHON:-python3}
. "$(dirname "$0")/rehearsal.sh"
presets=(cityscapes-256p label2city_512p spade_cityscapes oasis_cityscapes posgen_cityscapes); res=256x512; floor=()
if rehearsal; then
    presets=(tiny pix2pixhd-tiny spade-tiny oasis-tiny posgen-tiny); res=64x128; floor=("${lifted_floor[@]}")
fi
posgen=${presets[4]}
mkdir -p "$results"
: > "$results/export.log"
export_fp16() {
    "$py" -m crn_deploy.cli.export "$@" --precision fp16 --out "$engines" --target rtx 2>&1 | tee -a "$results/export.log"
}
for preset in "${presets[@]}"; do
    export_fp16 --preset "$preset" --random-weights --seed 0 --res "$res" "${floor[@]}"
done
export_fp16 --preset "$posgen" --random-weights --seed 0 --res "$res" --name "$posgen-tail0" \
    --option fp32_tail_blocks=0 "${lifted_floor[@]}"
export_fp16 --preset "$posgen" --random-weights --seed 0 --res "$res" --name "$posgen-tail5" \
    --option fp32_tail_blocks=5 "${floor[@]}"
export_fp16 crn_deploy/assets/demo-small-256p.safetensors --res "$res" --name crn-demo
if [[ -n "${POSGEN_DEMO:-}" ]]; then
    export_fp16 "$POSGEN_DEMO" --res 128x256 --name posgen-demo --option fp32_tail_blocks=0  # as trained today
    export_fp16 "$POSGEN_DEMO" --res 128x256 --name posgen-demo-tail5 --option fp32_tail_blocks=5
fi
"$py" - "$engines" <<'PY' | tee "$results/floor.md"
"""One row per FP16 artifact: its parity as the export measured it, ONNX Runtime CPU time, the sizes."""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from crn_deploy.data.synthetic import scenes
from crn_deploy.families import model_inputs
from crn_deploy.manifest import Manifest

print("| artifact | FP32 tail blocks | PSNR dB | max levels | mean levels | ORT CPU ms | ONNX MiB | RTX plan MiB |")
print("|---|---|---|---|---|---|---|---|")
for path in sorted(Path(sys.argv[1]).glob("*-fp16.json")):
    manifest = Manifest.read(path)
    parity = manifest.parity.to_dict()
    onnx_path = path.with_suffix(".onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    h, w = manifest.resolution
    arrays = model_inputs(manifest.input_specs, *scenes(manifest.label_set, 1, h, w, seed=2000), style_seed=2000)
    feeds = dict(zip([i.name for i in session.get_inputs()], arrays, strict=True))
    session.run(None, feeds)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000)
    plan = path.with_name(path.name.replace(".json", ".rtx.engine"))
    tail = getattr(manifest.config, "fp32_tail_blocks", "-")
    print(f"| {path.stem} | {tail} | {parity['psnr_db']:.1f} | {parity['max_abs']:.0f} | {parity['mean_abs']:.4f} | "
          f"{statistics.median(times):.0f} | {onnx_path.stat().st_size / 2**20:.1f} | "
          + (f"{plan.stat().st_size / 2**20:.1f} |" if plan.exists() else "not built |"))
PY
ls -l "$engines" | tee "$results/sizes.txt"
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines"
