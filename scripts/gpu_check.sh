#!/usr/bin/env bash
# The GPU checks behind docs/performance.md's GPU numbers: `ptyopt bench` (poster and cpu-small, eager and with
# CUDA graphs), the CUDA tests and a profile of one iteration. Usage: scripts/gpu_check.sh OUT_DIR
# (with ptyopt importable; each step has a time limit so that the whole fits a 7-minute GPU lease).
set -u
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PTYOPT_CACHE_DIR=${PTYOPT_CACHE_DIR:-/tmp/ptyopt-cache}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step() { echo "=== $1 ($(date +%T))"; }
step "bench poster (eager)"
timeout 80 $py -m ptyopt bench --preset poster --device cuda --warmup 1 --iterations 3 --json "$out/poster-cuda.json"
step "CUDA tests"
timeout 100 $py -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_cuda.py 2>&1 | tail -25
step "bench poster (compiled, CUDA graphs)"
timeout 110 $py -m ptyopt bench --preset poster --device cuda --compile --compile-mode reduce-overhead \
    --warmup 2 --iterations 3 --json "$out/poster-cuda-graphs.json"
step "bench cpu-small on the GPU (compiled, CUDA graphs)"
timeout 60 $py -m ptyopt bench --preset cpu-small --device cuda --compile --compile-mode reduce-overhead \
    --iterations 5 --json "$out/cpu-small-cuda-graphs.json"
step "bench cpu-small on the GPU (eager, profiled)"
timeout 45 $py -m ptyopt bench --preset cpu-small --device cuda --iterations 5 --json "$out/cpu-small-cuda.json" \
    --profile "$out/cpu-small-cuda-profile.txt"
step "done"
