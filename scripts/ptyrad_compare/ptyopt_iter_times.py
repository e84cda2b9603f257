"""Per-iteration wall times of a ptyopt run, as JSON (the same fields as ptyrad_iter_times.py).

    python ptyopt_iter_times.py OUTPUT [--skip K]

OUTPUT: a ptyopt result.h5 or the output folder holding it. ptyopt records, for every iteration,
history/wall_time_s = the cumulative time of the iterations (the solver's step over all batches and the
iteration-wise constraints; checkpoints, snapshots and metrics are outside it), so the time of iteration i
is the difference of consecutive values. --skip K (default 1) drops the first K iterations from the
second median (warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path)
    ap.add_argument("--skip", type=int, default=1)
    args = ap.parse_args(argv)

    import h5py
    import numpy as np

    src = args.output / "result.h5" if args.output.is_dir() else args.output
    with h5py.File(src, "r") as f:
        h = f["history"]
        wall = np.asarray(h["wall_time_s"][()], dtype=float)
        total = [float(v) for v in h["total"][()]] if "total" in h else []
    times = np.diff(np.concatenate([[0.0], wall])).tolist()
    if not times:
        print(f"no iteration times in {src}", file=sys.stderr)
        return 1
    rest = times[args.skip:] if len(times) > args.skip else times
    print(json.dumps({
        "source": str(src),
        "n_iterations": len(times),
        "s_per_iter_median": statistics.median(times),
        "s_per_iter_median_after_skip": statistics.median(rest),
        "skip": args.skip,
        "s_per_iter_all": times,
        "loss_all": total,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
