#!/usr/bin/env bash
# Run the matching ptyopt reconstruction (Adam, same data and geometry as ptyrad_params.yaml) on the CPU.
#   scripts/ptyrad_compare/run_ptyopt.sh N_ITER THREADS [OUT_DIR]
# OUT_DIR defaults to /tmp/ptyopt_out (emptied first): OUT/config_used.yaml is the config run,
# OUT/recon/ the ptyopt output (result.h5, ...). Prints the per-iteration times as JSON at the end (also
# OUT/iter_times.json). Environment: PTYOPT_VENV (default: the repository's .venv), PTYOPT_CONFIG
# (default ptyopt_config.yaml beside this script), SEED (default 0).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 N_ITER THREADS [OUT_DIR]" >&2
    exit 2
fi
N_ITER=$1
THREADS=$2
OUT=${3:-/tmp/ptyopt_out}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${PTYOPT_VENV:-$REPO/.venv}
CONFIG=${PTYOPT_CONFIG:-$HERE/ptyopt_config.yaml}

case "$OUT" in
    /|"") echo "refusing OUT_DIR '$OUT'" >&2; exit 2 ;;
esac
rm -rf -- "$OUT"
mkdir -p -- "$OUT"

export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS NUMEXPR_NUM_THREADS=$THREADS
export MPLBACKEND=Agg

# A copy of the config with the data path made absolute, compute.threads = THREADS and the iteration count
# and checkpoint interval = N_ITER (ptyopt's timing excludes checkpoint writes anyway).
"$VENV/bin/python" - "$CONFIG" "$OUT/config_used.yaml" "$N_ITER" "$THREADS" "${SEED:-0}" <<'PY'
import sys
from pathlib import Path

import yaml

src, dst, n_iter, threads, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cfg = yaml.safe_load(Path(src).read_text())
data = Path(cfg["data"]["path"])
if not data.is_absolute():
    data = (Path(src).resolve().parent / data).resolve()
cfg["data"]["path"] = str(data)
cfg["solver"]["iterations"] = n_iter
cfg.setdefault("output", {})["checkpoint_every"] = n_iter
cfg["output"]["dir"] = str(Path(dst).parent / "recon")
cfg.setdefault("compute", {})["threads"] = threads
cfg["seed"] = seed
Path(dst).write_text(yaml.safe_dump(cfg, sort_keys=False))
PY

"$VENV/bin/ptyopt" reconstruct "$OUT/config_used.yaml" --out "$OUT/recon" --device cpu 2>&1 | tee "$OUT/run.log"
"$VENV/bin/python" "$HERE/ptyopt_iter_times.py" "$OUT/recon" | tee "$OUT/iter_times.json"
