#!/usr/bin/env bash
# Paired per-iteration timing: PtyRAD and ptyopt run back to back, alternating, REPEATS times.
#   scripts/ptyrad_compare/paired_timing.sh N_ITER THREADS [REPEATS] [RESULTS_DIR]
# REPEATS defaults to 3, RESULTS_DIR to /tmp/ptyrad_compare_runs (emptied first). Each pair k writes
# RESULTS_DIR/k_ptyrad.json and RESULTS_DIR/k_ptyopt.json (the iter_times JSON of each side; PtyRAD runs first
# in odd pairs, ptyopt in even ones); the summary (summarise_pairs.py; SKIP iterations dropped, default 1) is
# printed and written to RESULTS_DIR/summary.json. Run it on an otherwise idle machine.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 N_ITER THREADS [REPEATS] [RESULTS_DIR]" >&2
    exit 2
fi
N_ITER=$1
THREADS=$2
REPEATS=${3:-3}
RES=${4:-/tmp/ptyrad_compare_runs}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
case "$RES" in
    /|"") echo "refusing RESULTS_DIR '$RES'" >&2; exit 2 ;;
esac
rm -rf -- "$RES"
mkdir -p -- "$RES"

run_side() {  # side pair
    if [ "$1" = ptyrad ]; then
        "$HERE/run_ptyrad.sh" "$N_ITER" "$THREADS" /tmp/ptyrad_out > "$RES/$2_ptyrad.log" 2>&1
        cp /tmp/ptyrad_out/iter_times.json "$RES/$2_ptyrad.json"
    else
        "$HERE/run_ptyopt.sh" "$N_ITER" "$THREADS" /tmp/ptyopt_out > "$RES/$2_ptyopt.log" 2>&1
        cp /tmp/ptyopt_out/iter_times.json "$RES/$2_ptyopt.json"
    fi
    echo "pair $2: $1 done ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"
}

for k in $(seq 1 "$REPEATS"); do
    if [ $((k % 2)) -eq 1 ]; then run_side ptyrad "$k"; run_side ptyopt "$k"
    else run_side ptyopt "$k"; run_side ptyrad "$k"; fi
done
"$REPO/.venv/bin/python" "$HERE/summarise_pairs.py" "$RES" --skip "${SKIP:-1}" | tee "$RES/summary.json"
