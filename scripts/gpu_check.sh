#!/usr/bin/env bash
# The GPU checks behind docs/performance.md's GPU numbers: `ptyopt bench` (poster and cpu-small), the CUDA tests,
# a profile of one iteration and the demo. Usage: scripts/gpu_check.sh OUT_DIR  (with ptyopt importable; each
# step has a time limit, about 7 minutes in all).
set -u
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PTYOPT_CACHE_DIR=${PTYOPT_CACHE_DIR:-/tmp/ptyopt-cache}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step() { echo "=== $1 ($(date +%T))"; }
step "bench poster"
timeout 80 $py -m ptyopt bench --preset poster --device cuda --warmup 1 --iterations 3 --json "$out/poster-cuda.json"
step "CUDA tests"
timeout 150 $py -m pytest -q -p no:cacheprovider -p no:logging -W ignore tests/test_cuda.py --tb=short \
    > "$out/cuda-tests.txt" 2>&1
tail -c 3000 "$out/cuda-tests.txt"
step "bench cpu-small on the GPU (profiled)"
timeout 45 $py -m ptyopt bench --preset cpu-small --device cuda --iterations 5 --json "$out/cpu-small-cuda.json" \
    --op-profile "$out/cpu-small-cuda-profile.txt"
step "demo on the GPU"
timeout 80 $py -m ptyopt demo --device cuda --out "$out/demo" 2>&1 | tail -3
rm -rf "$out/demo"
step "done"
