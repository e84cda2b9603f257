"""Summarise paired_timing.sh runs: per pair, each side's median s/iteration over iterations SKIP+1..N and
the ratio PtyRAD / ptyopt; over all pairs, the median of the per-pair ratios and of each side's medians.

    python summarise_pairs.py RESULTS_DIR [--skip K] [--from-iter I]

--from-iter I (1-based) keeps only iterations >= I (e.g. 10, where both codes start refining positions and
tilts), overriding --skip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--skip", type=int, default=1)
    ap.add_argument("--from-iter", type=int, default=None)
    args = ap.parse_args(argv)
    first = (args.from_iter - 1) if args.from_iter else args.skip

    pairs = []
    for a in sorted(args.results.glob("*_ptyrad.json"), key=lambda p: int(p.name.split("_")[0])):
        k = a.name.split("_")[0]
        b = args.results / f"{k}_ptyopt.json"
        if not b.exists():
            continue
        ta = json.loads(a.read_text())["s_per_iter_all"][first:]
        tb = json.loads(b.read_text())["s_per_iter_all"][first:]
        if not ta or not tb:
            continue
        ma, mb = statistics.median(ta), statistics.median(tb)
        pairs.append({"pair": int(k), "ptyrad_s_per_iter": ma, "ptyopt_s_per_iter": mb,
                      "ratio_ptyrad_over_ptyopt": ma / mb, "n_iterations_used": [len(ta), len(tb)]})
    if not pairs:
        print("no complete pairs", file=sys.stderr)
        return 1
    print(json.dumps({
        "first_iteration_used": first + 1,
        "pairs": pairs,
        "median_ptyrad_s_per_iter": statistics.median(p["ptyrad_s_per_iter"] for p in pairs),
        "median_ptyopt_s_per_iter": statistics.median(p["ptyopt_s_per_iter"] for p in pairs),
        "median_ratio_ptyrad_over_ptyopt": statistics.median(p["ratio_ptyrad_over_ptyopt"] for p in pairs),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
