#!/usr/bin/env bash
# CPU suite: TensorRT-RTX engine builds on a machine without a GPU. For each family's full preset at 256x512
# (CRN cityscapes-256p, pix2pixHD label2city_512p, SPADE spade_cityscapes, PosGen posgen_cityscapes) and CRN
# cityscapes-1024p at 1024x2048, random weights (seed 0), FP32 and FP16: the ONNX graph is written as
# crn-export writes it (without crn-export's parity run, which takes minutes per full-size model on a CPU),
# then `crn-build --target rtx` builds it for TensorRT-RTX's default targets. Records build time, engine size
# and the graph's weight bytes. About 2 minutes on 2 cores.
# Usage: benchmarks/suites/cpu-rtx-build.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-rtx-build}
py=${PYTHON:-python3}
. "$(dirname "$0")/rehearsal.sh"
mkdir -p "$results" "$engines"
models=("cityscapes-256p 256x512" "label2city_512p 256x512" "spade_cityscapes 256x512" "posgen_cityscapes 256x512"
        "cityscapes-1024p 1024x2048")
if rehearsal; then
    models=("tiny 64x128" "pix2pixhd-tiny 64x128" "spade-tiny 64x128" "posgen-tiny 64x128" "tiny 128x256")
fi
: > "$results/build.log"
for model in "${models[@]}"; do
    read -r preset res <<< "$model"
    for precision in fp32 fp16; do
        onnx=$("$py" - "$preset" "$res" "$precision" "$engines" <<'PY'
"""Write one artifact's graph and manifest as crn-export does, without its parity run; print the ONNX path."""
import sys
from pathlib import Path

from crn_deploy.artifacts.exporter import tool_versions
from crn_deploy.graph import write_model
from crn_deploy.precisions import precision as as_precision
from crn_deploy.sizes import Sizes, parse_resolution
from crn_deploy.families import find_preset
from crn_deploy.manifest import Manifest, artifact_stem
from crn_deploy.records import Source
from crn_deploy.models.checkpoint import random_model
from crn_deploy.models.registry import model_family

preset, resolution, precision, folder = sys.argv[1], parse_resolution(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
source = random_model(find_preset(preset)[1], 0, preset)
family = model_family(source.family)
stem = artifact_stem(f"{preset}-seed0", Sizes.same(resolution), precision)
shell, tensors = family.graph_parts(source.config, family.weights(source.model), Sizes.same(resolution),
                                    as_precision(precision), 1)
write_model(shell, tensors, folder / f"{stem}.onnx")
manifest = Manifest(f"{preset}-seed0", f"{stem}.onnx", Sizes.same(resolution), as_precision(precision), 1,
                    family.contract, source.config, source.label_set, Source.from_dict(source.source),
                    sections={"versions": tool_versions()})
manifest.write(folder / f"{stem}.json")
print(folder / f"{stem}.onnx")
PY
)
        "$py" -m crn_deploy.cli.build "$onnx" --target rtx | tee -a "$results/build.log"
    done
done
"$py" - "$engines" <<'PY' | tee "$results/rtx-build.txt"
"""The table: per artifact, the ONNX weights, the engine, their ratio, the build time; FP16 against FP32."""
import json
import platform
import sys
from pathlib import Path

import onnx

from crn_deploy.manifest import find_manifests
from crn_deploy.targets import RTX

rows = []
for m in find_manifests(Path(sys.argv[1])):
    record = m.engine_record(RTX)
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(m.artifact_path)).graph.initializer)
    rows.append({"artifact": m.artifact, "family": m.family_name, "resolution": "x".join(map(str, m.resolution)),
                 "precision": m.precision.name, "weights_mib": weights / 2**20, "engine_mib": record.size_bytes / 2**20,
                 "build_s": record.build_seconds, "warnings": len(record.builder_warnings),
                 "runtime": f"{record.runtime} {record.runtime_version}", "targets": record.compute_capabilities})
print(f"{rows[0]['runtime']} on {platform.processor() or platform.machine()}, no GPU; targets {rows[0]['targets']}")
print(f"{'artifact':48} {'weights MiB':>11} {'engine MiB':>10} {'engine/weights':>14} {'build s':>7} {'warnings':>8}")
for r in rows:
    print(f"{r['artifact']:48} {r['weights_mib']:11.1f} {r['engine_mib']:10.1f} "
          f"{r['engine_mib'] / r['weights_mib']:14.3f} {r['build_s']:7.2f} {r['warnings']:8d}")
by_key = {(r["family"], r["resolution"], r["precision"]): r for r in rows}
print("FP16 / FP32:")
for (family, resolution, precision), r in sorted(by_key.items()):
    if precision == "fp16" and (family, resolution, "fp32") in by_key:
        base = by_key[(family, resolution, "fp32")]
        print(f"  {family} {resolution}: engine size {r['engine_mib'] / base['engine_mib']:.3f}x, "
              f"build time {r['build_s'] / base['build_s']:.2f}x")
Path(sys.argv[1], "rtx-build.json").write_text(json.dumps(rows, indent=1))
PY
cp "$engines/rtx-build.json" "$results/"
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines"
