#!/usr/bin/env bash
# Run PtyRAD 1.0 on the CPU for the paired timing comparison.
#   scripts/ptyrad_compare/run_ptyrad.sh N_ITER THREADS [OUT_DIR]
# OUT_DIR defaults to /tmp/ptyrad_out (emptied first). Prints the per-iteration times as JSON at the end
# (also written to OUT_DIR/iter_times.json). Environment: PTYRAD_VENV (default /work/ptyrad_venv),
# PTYRAD_PARAMS (default ptyrad_params.yaml beside this script), SEED (default 0).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 N_ITER THREADS [OUT_DIR]" >&2
    exit 2
fi
N_ITER=$1
THREADS=$2
OUT=${3:-/tmp/ptyrad_out}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${PTYRAD_VENV:-/work/ptyrad_venv}
PARAMS=${PTYRAD_PARAMS:-$HERE/ptyrad_params.yaml}

case "$OUT" in
    /|"") echo "refusing OUT_DIR '$OUT'" >&2; exit 2 ;;
esac
rm -rf -- "$OUT"
mkdir -p -- "$OUT"

export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS NUMEXPR_NUM_THREADS=$THREADS
export MPLBACKEND=Agg
# the torchvision stand-in (only for PtyRAD runs)
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"

# PtyRAD writes its 'logs/' fallback folder into the working directory: run from OUT.
cd "$OUT"
"$VENV/bin/python" "$HERE/run_ptyrad.py" --niter "$N_ITER" --threads "$THREADS" --params "$PARAMS" \
    --out "$OUT" --seed "${SEED:-0}" 2>&1 | tee "$OUT/run.log"
"$VENV/bin/python" "$HERE/ptyrad_iter_times.py" "$OUT" | tee "$OUT/iter_times.json"
