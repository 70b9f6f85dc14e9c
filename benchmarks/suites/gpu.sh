#!/usr/bin/env bash
# GPU suite: cityscapes-512p at 512x1024 and cityscapes-1024p at 1024x2048 (random weights, seed 0),
# FP16 and FP32: TensorRT engines (where TensorRT is installed; crn-export builds them), ONNX Runtime,
# and the PyTorch reference on CUDA with CUDA graphs on and off. Needs the export extra and a CUDA
# torch; add the tensorrt extra for engines.
# Usage: benchmarks/suites/gpu.sh RESULTS_DIR [ENGINES_DIR]
set -euo pipefail
results=${1:?results folder}
engines=${2:-engines/gpu}
mkdir -p "$results"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$results/gpu.txt" || true
crn-export --preset cityscapes-512p --random-weights --seed 0 --res 512x1024 \
    --precision fp16 --precision fp32 --samples 1 --out "$engines" | tee "$results/export.log"
crn-export --preset cityscapes-1024p --random-weights --seed 0 --res 1024x2048 \
    --precision fp16 --precision fp32 --samples 1 --out "$engines" | tee -a "$results/export.log"
crn-bench "$engines" --device cuda --samples 2 --warmup 1 --iterations 20 --duration 3 \
    --json "$results/bench.json" --csv "$results/bench.csv" --report "$results" | tee "$results/bench.txt"
# The streaming loop against the engine alone (issue 6): sustained fps of crn-run on the synthetic
# scene, for the fp16 engines, ONNX files and the PyTorch CUDA reference.
for artifact in "$engines"/*-fp16.engine "$engines"/*-fp16.onnx; do
    [ -e "$artifact" ] || continue
    name=$(basename "$artifact")
    crn-run "$artifact" --input synthetic --frames 200 --device cuda --output "$results/stream-$name.mp4" \
        | tee -a "$results/stream.txt"
    case "$artifact" in *.onnx)
        crn-run "$artifact" --reference --input synthetic --frames 200 --device cuda \
            --output "$results/stream-torch-$name.mp4" | tee -a "$results/stream.txt" ;;
    esac
done
