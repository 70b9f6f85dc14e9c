#!/usr/bin/env bash
# GPU suite: cityscapes-512p at 512x1024 and cityscapes-1024p at 1024x2048 (random weights, seed 0),
# FP16 and FP32: TensorRT engines (where TensorRT is installed; crn-export builds them), ONNX Runtime
# (on CUDA where its CUDA provider is installed), TensorRT-RTX engines (where it is installed and the GPU is one
# of its targets: not H100/H200), and the PyTorch reference on CUDA with CUDA graphs on
# and off; then the streaming loop (crn-run) on the synthetic scene against the engine alone.
# Needs the export extra and a CUDA torch; add the tensorrt extra for engines. A step that cannot run
# here says why and the suite goes on. CRN_SUITE_SIZE=small: the same steps on small-256p.
# On the lent GPU machine, run benchmarks/suites/gpu-machine.sh instead: it installs and calls this.
# Usage: benchmarks/suites/gpu.sh RESULTS_DIR [ENGINES_DIR]
set -uo pipefail
results=${1:?results folder}
engines=${2:-engines/gpu}
py=${PYTHON:-python3}
crn() { "$py" -m "crn_deploy.cli.$1" "${@:2}"; }
mkdir -p "$results"
. "$(dirname "$0")/rehearsal.sh"
if rehearsal; then
    models=("small-256p 256x512"); frames=20; iterations=3; duration=0
else
    models=("cityscapes-512p 512x1024" "cityscapes-1024p 1024x2048"); frames=200; iterations=20; duration=3
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$results/gpu.txt" 2>&1 \
    || echo "skipped: nvidia-smi (not found)" | tee "$results/gpu.txt"
for model in "${models[@]}"; do
    read -r preset res <<< "$model"
    crn export --preset "$preset" --random-weights --seed 0 --res "$res" --precision fp16 --precision fp32 \
        --samples 1 --out "$engines" 2>&1 | tee -a "$results/export.log" || echo "crn-export of $preset failed"
done
# TensorRT-RTX rows where TensorRT-RTX is installed and this GPU is one of its targets (RTX-class GPUs, A100);
# Hopper and datacenter Blackwell (H100, H200, B200) are not: they get one line saying so.
rtx_skip=$("$py" -c "from crn_deploy.backends.tensorrt import target_unavailable_here as why
from crn_deploy.targets import RTX
print(why(RTX) or '')" 2>&1)
if [ -n "$rtx_skip" ]; then
    echo "skipped: TensorRT-RTX rows ($rtx_skip)" | tee -a "$results/export.log"
else
    crn build "$engines"/*.onnx --target rtx 2>&1 | tee -a "$results/export.log" || echo "crn-build --target rtx failed"
fi
crn bench "$engines" --device cuda --samples 2 --warmup 1 --iterations "$iterations" --duration "$duration" \
    --json "$results/bench.json" --csv "$results/bench.csv" --report "$results" 2>&1 | tee "$results/bench.txt" \
    || echo "crn-bench ended with an error (see bench.txt)"
# The streaming loop against the engine alone: sustained fps of crn-run on the synthetic scene.
ort_cuda=$("$py" -c "import onnxruntime as o; print(int('CUDAExecutionProvider' in o.get_available_providers()))" 2>/dev/null || echo 0)
torch_cuda=$("$py" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
for artifact in "$engines"/*-fp16.engine "$engines"/*-fp16.onnx; do
    [ -e "$artifact" ] || continue
    name=$(basename "$artifact")
    case "$artifact" in
        *.engine)
            crn run "$artifact" --input synthetic --frames "$frames" --output "$results/stream-$name.mp4" ;;
        *.onnx)
            if [ "$ort_cuda" = 1 ]; then
                crn run "$artifact" --input synthetic --frames "$frames" --device cuda --output "$results/stream-$name.mp4"
            else
                echo "skipped: crn-run $name on ONNX Runtime CUDA (this onnxruntime has the CPU provider only)"
            fi
            if [ "$torch_cuda" = 1 ]; then
                crn run "$artifact" --reference --input synthetic --frames "$frames" --device cuda \
                    --output "$results/stream-torch-$name.mp4"
            else
                echo "skipped: crn-run --reference $name on CUDA (this torch sees no CUDA GPU)"
            fi ;;
    esac
done 2>&1 | tee -a "$results/stream.txt"
