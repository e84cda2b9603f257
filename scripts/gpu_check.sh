#!/usr/bin/env bash
# The GPU checks behind docs/performance.md's GPU numbers: CUDA tests, `ptyopt bench` (poster and cpu-small,
# eager and compiled) and the demo on a GPU. Usage: scripts/gpu_check.sh OUT_DIR  (needs ptyopt importable)
set -u
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PTYOPT_CACHE_DIR=${PTYOPT_CACHE_DIR:-/tmp/ptyopt-cache}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c "import torch, ptyopt; print('torch', torch.__version__, 'ptyopt', ptyopt.__version__, torch.cuda.get_device_name())"
step() { echo "=== $1 ($(date +%T))"; }
step "CUDA tests"
timeout 120 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15
step "bench poster (eager)"
timeout 180 $py -m ptyopt bench --preset poster --device cuda --json "$out/poster-cuda.json" \
    --profile "$out/poster-cuda-profile.txt"
step "bench cpu-small on the GPU"
timeout 50 $py -m ptyopt bench --preset cpu-small --device cuda --iterations 10 --json "$out/cpu-small-cuda.json"
step "demo on the GPU"
timeout 80 $py -m ptyopt demo --device cuda --out "$out/demo" 2>&1 | tail -4
rm -rf "$out/demo"
step "bench poster (compiled)"
timeout 100 $py -m ptyopt bench --preset poster --device cuda --compile --warmup 2 --iterations 3 \
    --json "$out/poster-cuda-compile.json"
step "done"
