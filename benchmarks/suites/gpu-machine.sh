#!/usr/bin/env bash
# The GPU suite as one command for the lent GPU machine: no package index there (torch with CUDA,
# cuda-bindings, CuPy, ONNX, ONNX Runtime CPU, OpenCV, NumPy, pytest are; TensorRT and google-crc32c
# are not), 15 minutes of device time per task, start-up included. Run from the repository root:
#
#     bash benchmarks/suites/gpu-machine.sh "$OUT/gpu-suite"
#
# It installs the project without the index (no dependencies, no build isolation; PYTHONPATH if even
# that fails), writes versions and the GPU's facts, runs `pytest -m gpu`, the benchmark suite
# (benchmarks/suites/gpu.sh) and the engine checks (gpu_engine_checks.py: TensorRT-RTX re-captures after
# warm-up, an engine on a second GPU, memory against cudaMemGetInfo) with a time limit each, and leaves
# everything in RESULTS_DIR. What cannot run there (TensorRT engines, ONNX Runtime on CUDA, a second GPU)
# is skipped with a line saying why.
# CRN_SUITE_SIZE=small runs the same steps on small models: the rehearsal on a machine without
# a GPU, in a venv holding only what the GPU image holds (see benchmarks/README.md).
set -uo pipefail
results=${1:?results folder}
py=${PYTHON:-python3}
mkdir -p "$results"
exec > >(tee -a "$results/run.log") 2>&1
started=$(date +%s)
step() { echo "== $(( $(date +%s) - started )) s: $*"; }

step "install crn-deploy without the package index"
if [ "${CRN_GPU_SUITE_INSTALL:-1}" = 0 ]; then
    echo "not installing (CRN_GPU_SUITE_INSTALL=0): running from the source tree"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
elif ! "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . ; then
    echo "pip could not install it here; running from the source tree (PYTHONPATH=$PWD)"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHON=$py

step "versions and GPU"
"$py" - > "$results/environment.json" <<'PY'
import importlib, json, platform, subprocess
info = {"python": platform.python_version(), "platform": platform.platform()}
for name in ("crn_deploy", "torch", "numpy", "onnx", "onnxruntime", "cv2", "cupy", "tensorrt", "pytest"):
    try:
        info[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as e:  # absent, or broken: say which
        info[name] = f"not available ({type(e).__name__})"
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)}
except Exception as e:
    info["torch_cuda"] = f"not available ({type(e).__name__})"
try:
    import onnxruntime
    info["onnxruntime_providers"] = onnxruntime.get_available_providers()
except Exception:
    pass
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired):
    info["nvidia_smi"] = "not available"
print(json.dumps(info, indent=2))
PY
cat "$results/environment.json"
"$py" -c "import tensorrt" 2>/dev/null || echo "skipped: TensorRT engines and their tests (tensorrt is not installed on this machine)"
"$py" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null \
    || echo "skipped: ONNX Runtime on CUDA (this onnxruntime offers the CPU provider only)"

step "pytest -m gpu (limit 150 s)"
timeout 150 "$py" -m pytest -q -m gpu -rs -p no:cacheprovider --junitxml="$results/pytest-gpu.xml" \
    > "$results/pytest-gpu.txt" 2>&1
echo "pytest -m gpu exit status $?"; tail -n 40 "$results/pytest-gpu.txt"

step "benchmark suite (limit 330 s)"
engines=${CRN_GPU_ENGINES:-/tmp/crn-gpu-engines}
timeout 330 bash benchmarks/suites/gpu.sh "$results" "$engines"
echo "benchmark suite exit status $?"

step "engine checks: re-captures after warm-up, a second GPU, memory against cudaMemGetInfo (limit 45 s)"
timeout 45 "$py" benchmarks/suites/gpu_engine_checks.py "$results/bench.json" "$engines" "$results/engine-checks.json"
echo "engine checks exit status $?"
"$py" benchmarks/suites/relative_paths.py "$results" "$engines"  # committed results: paths relative to their folder
step "done; results in $results"
ls -la "$results"
