#!/usr/bin/env bash
# CPU suite: OpenVINO CPU engines (FP32 and BF16) against ONNX Runtime FP32, in one crn-bench run. Each family's
# full preset (random weights, seed 0) and the trained demo models (the shipped CRN demo; PosGen's posgen-demo
# when POSGEN_DEMO names a crn-train checkpoint of it) are exported in FP32 at 256x512, then:
#  - crn-build --target openvino --precision bf16, as users run it (kept only above the floor: 55 dB, 4 levels
#    against the PyTorch FP32 reference on the export's two layouts); where it refuses, the refusal is logged
#    and the engine is built again with the floor lifted (--min-psnr 0 --max-abs 255), so that its time and
#    parity are measured too (the table marks it);
#  - the same ONNX under a second name (a hard link and a copy of its manifest, "<name>-ovfp32") gets the FP32
#    engine: an artifact holds one engine per target, and one crn-bench run must time both;
#  - crn-bench --backend openvino --backend onnxruntime on 2 threads (ONNX Runtime also runs the second name:
#    the same file, a second ORT FP32 row), parity against the PyTorch FP32 reference on 2 synthetic layouts
#    (seed 2000, not the build's), 3 timed calls per row after one; then the shipped demo alone, 20 timed calls
#    and at least 10 s per row after 2 s of warm-up (bench-demo.*: the issue's done-when figure);
#  - openvino.md: one row per model from bench.json (and the demo's from bench-demo.json), ratios within a run.
# The machine's load (uptime) is recorded before and after each step. About 25 minutes on 2 quiet cores (48 on
# the shared machine of the committed run: 11 for the builds, 33 for the full bench, 4 for the demo's).
# STEPS picks the steps (default "build bench demo"): STEPS="bench demo" retimes the engines already built,
# STEPS=demo the demo's run alone (then the table again from both runs' reports).
# Usage: [POSGEN_DEMO=ckpt.safetensors] [PYTHON=.venv/bin/python] benchmarks/suites/cpu-openvino.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/cpu-openvino}
py=${PYTHON:-python3}
threads=${THREADS:-2}
. "$(dirname "$0")/rehearsal.sh"
presets=(cityscapes-256p label2city_512p spade_cityscapes oasis_cityscapes posgen_cityscapes); res=256x512
bench_calls=3; demo_calls=20; demo_seconds=10; floor=()
if rehearsal; then
    presets=(tiny posgen-tiny); res=64x128  # (posgen: FP32 islands in a BF16 engine)
    bench_calls=1; demo_calls=2; demo_seconds=0; floor=("${lifted_floor[@]}")
fi
mkdir -p "$results" "$engines"
steps=" ${STEPS:-build bench demo} "
echo "start ($steps): $(uptime)" >> "$results/load.txt"

export_fp32() {
    "$py" -m crn_deploy.cli.export "$@" --res "$res" "${floor[@]}" --precision fp32 --out "$engines" --no-engine 2>&1 \
        | tee -a "$results/export.log"
}
build() {
    "$py" -m crn_deploy.cli.build "$@" --target openvino --threads "$threads" 2>&1 | tee -a "$results/build.log"
}
second_name() {  # <engines>/<stem>.onnx -> <engines>/<stem>-ovfp32.onnx (hard link) with its manifest
    "$py" - "$1" <<'PY'
import os, sys
from pathlib import Path
from crn_deploy.manifest import Manifest
source = Manifest.read(Path(sys.argv[1]).with_suffix(".json"))
stem = Path(source.artifact).stem
name = f"{stem}-ovfp32.onnx"
target = source.artifact_path.with_name(name)
if not target.exists():
    os.link(source.artifact_path, target)
source.name, source.artifact = f"{source.name}-ovfp32", name
source.engines = {}  # the second name gets its own engine
source.sections["onnx"] = {**source.sections["onnx"], "file": name}
source.write(target.with_suffix(".json"))
print(target)
PY
}
cpu_engines() {  # the FP32 artifact's BF16 engine (the floor lifted where it refuses) and its second name's FP32 one
    local onnx=$1
    if ! build "$onnx" --precision bf16; then
        echo "(refused above; built again with the floor lifted, to measure it)" | tee -a "$results/build.log"
        build "$onnx" --precision bf16 --min-psnr 0 --max-abs 255
    fi
    build "$(second_name "$onnx")" --precision fp32
}

if [[ $steps == *" build "* ]]; then
    : > "$results/export.log"
    : > "$results/build.log"
    for preset in "${presets[@]}"; do
        export_fp32 --preset "$preset" --random-weights --seed 0
        cpu_engines "$engines/$preset-seed0-$res-fp32.onnx"
    done
    export_fp32 crn_deploy/assets/demo-small-256p.safetensors --name crn-demo
    cpu_engines "$engines/crn-demo-$res-fp32.onnx"
    if [[ -n "${POSGEN_DEMO:-}" ]]; then
        export_fp32 "$POSGEN_DEMO" --name posgen-demo
        cpu_engines "$engines/posgen-demo-$res-fp32.onnx"
    fi
fi

bench() {  # FOLDER NAME WARMUP_S ITERATIONS DURATION_S
    echo "$2 start: $(uptime)" >> "$results/load.txt"
    "$py" -m crn_deploy.cli.bench "$1" --backend openvino --backend onnxruntime --threads "$threads" --samples 2 \
        --warmup "$3" --iterations "$4" --duration "$5" --json "$results/$2.json" | tee "$results/$2.txt"
    echo "$2 end: $(uptime)" >> "$results/load.txt"
}
if [[ $steps == *" bench "* ]]; then
    bench "$engines" bench 0 "$bench_calls" 0
fi
if [[ $steps == *" demo "* ]]; then
    demo="$engines-demo"  # the shipped demo's files alone (hard links), for a longer run
    mkdir -p "$demo"
    ln -f "$engines/crn-demo-$res-fp32"* "$demo/"
    bench "$demo" bench-demo 2 "$demo_calls" "$demo_seconds"
fi

"$py" - "$results" "$engines" <<'PY' | tee "$results/openvino.md"
"""One row per model and bench run: ONNX Runtime FP32, OpenVINO FP32 and BF16 p50 in that run (and, in brackets,
the fastest call: the least disturbed by other work on a shared machine), the ratios, and parity against the
PyTorch FP32 reference (bench layouts); the BF16 build's own parity on the export's layouts, and whether the build
kept it at the floor or it was built with the floor lifted."""
import json
import sys
from pathlib import Path

from crn_deploy.manifest import Manifest
from crn_deploy.targets import OPENVINO

by_model = {}
for run in ("bench", "bench-demo"):
    for row in json.loads((Path(sys.argv[1]) / f"{run}.json").read_text())["rows"]:
        model = f"{row['name'].removesuffix('-ovfp32')} ({run}.json)"
        by_model.setdefault(model, {})[(row["backend"], row["precision"], row["name"].endswith("-ovfp32"))] = row


def cell(row):
    parity = row.get("parity") or {}
    psnr = "identical" if parity and parity.get("psnr_db") is None else f"{parity.get('psnr_db', float('nan')):.1f}"
    latency = row["latency_ms"]
    return (f"{latency['p50'] / 1000:.3f} s ({latency['min'] / 1000:.3f})",
            f"{psnr} dB / {parity.get('max_abs', float('nan')):.0f}")


def ratio(slow, fast):
    a, b = slow["latency_ms"], fast["latency_ms"]
    return f"{a['p50'] / b['p50']:.2f}x ({a['min'] / b['min']:.2f}x)"


print("| model, 256x512 (run) | ORT FP32 p50 (min) | OpenVINO FP32 | OpenVINO BF16 | FP32 vs ORT | BF16 vs ORT | "
      "BF16 vs PyTorch FP32 (bench maps) | BF16 build: parity on the export's maps | kept at the floor |")
print("|---|---|---|---|---|---|---|---|---|")
for model, found in sorted(by_model.items()):
    ort, fp32, bf16 = (found.get(key) for key in (("onnxruntime-cpu", "fp32", False), ("openvino", "fp32", True),
                                                    ("openvino", "bf16", False)))
    if not (ort and fp32 and bf16) or "latency_ms" not in bf16:
        print(f"| {model} | incomplete: see bench.txt |")
        continue
    manifest = Manifest.read(Path(sys.argv[2]) / bf16["artifact"].replace(".openvino.engine", ".json"))
    record = manifest.engine_record(OPENVINO)
    build = record.parity
    kept = "yes" if record.builder["floor"]["min_psnr_db"] == 55.0 else "no: refused, built with the floor lifted"
    print(f"| {model} | {cell(ort)[0]} | {cell(fp32)[0]} | {cell(bf16)[0]} | {ratio(ort, fp32)} | {ratio(ort, bf16)} | "
          f"{cell(bf16)[1]} | {build.psnr_db:.1f} dB / {build.max_abs:.0f} | {kept} |")
PY
ls -l "$engines" | awk '{print $5, $9}' | tee "$results/sizes.txt"
# committed results name paths relative to their own folder
"$py" "$(dirname "$0")/relative_paths.py" "$results" "$engines" "$engines-demo"
