"""Per-iteration wall times of a PtyRAD run, as JSON.

    python ptyrad_iter_times.py OUTPUT [--skip K]

OUTPUT: a PtyRAD model_iterNNNN.hdf5, a reconstruction folder, or the output_dir above it (the newest
model_iter*.hdf5 found below it is read). PtyRAD stores ``iter_times`` (seconds per iteration, timed with
a device sync around forward, backward, optimiser step and the iteration-wise constraints; saving and
figures are outside it) in every saved model file. Without a model file, the log's
"Iter: N, Total Loss: ..., in [M min] S sec" lines (ptyrad_log.txt or run.log) are parsed instead.

Prints {"source", "n_iterations", "s_per_iter_median", "s_per_iter_median_after_skip", "skip",
"s_per_iter_all": [...], "loss_all": [...]}; --skip K (default 1) drops the first K iterations from the
second median (warm-up).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ITER_LINE = re.compile(
    r"Iter:\s*(\d+),\s*Total Loss:\s*([-+0-9.eE]+).*?\bin\s+"
    r"(?:(\d+)\s*day\s*)?(?:(\d+)\s*hr\s*)?(?:(\d+)\s*min\s*)?([0-9.]+)\s*sec"
)


def _from_hdf5(path: Path) -> tuple[list[float], list[float]]:
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        times = [float(t) for t in np.asarray(f["iter_times"][()]).ravel()]
        losses: list[float] = []
        if "loss_iters" in f:
            li = np.asarray(f["loss_iters"][()])
            if li.ndim == 2 and li.shape[1] >= 2:
                losses = [float(v) for v in li[:, 1]]
    return times, losses


def _from_log(path: Path) -> tuple[list[float], list[float]]:
    rows: dict[int, tuple[float, float]] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = ITER_LINE.search(line)
        if not m:
            continue
        it = int(m.group(1))
        d, h, mi = (int(g) if g else 0 for g in m.group(3, 4, 5))
        rows[it] = (float(m.group(2)), d * 86400 + h * 3600 + mi * 60 + float(m.group(6)))
    its = sorted(rows)
    return [rows[i][1] for i in its], [rows[i][0] for i in its]


def find_source(target: Path) -> Path:
    if target.is_file():
        return target
    models = sorted(target.rglob("model*_iter*.hdf5"), key=lambda p: p.stat().st_mtime)
    if models:
        return models[-1]
    logs = sorted(target.rglob("ptyrad_log*.txt"), key=lambda p: p.stat().st_mtime) or sorted(target.rglob("run.log"))
    if logs:
        return logs[-1]
    raise FileNotFoundError(f"no PtyRAD model_iter*.hdf5 or log below {target}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path)
    ap.add_argument("--skip", type=int, default=1)
    args = ap.parse_args(argv)

    src = find_source(args.output)
    times, losses = _from_hdf5(src) if src.suffix in (".hdf5", ".h5") else _from_log(src)
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
        "loss_all": losses,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
