"""Score a run's snapshots (OUT/snapshots/iter_NNNN.h5) against the truth after the fact: accuracy-vs-iteration,
-time and -work curves of finished runs without rerunning them (the study report draws them when a run logged no
metrics during the run)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.dataset_file import read_dataset
from ptyopt.io.result_file import SNAPSHOT_DIR, read_result


@lru_cache(maxsize=8)
def _dataset(path: str) -> Dataset4D:
    return read_dataset(path)


def snapshot_scores(run_folder: Path, metric: str) -> tuple[np.ndarray, ...] | None:
    """(iterations, loop wall times [s], metric values, forward evaluations) of every snapshot of the run, the
    metric being the one the run itself records (slice-summed phase vs truth over the scanned region minus
    output.metric_margin_ang); None without snapshots or without a truth."""
    from ptyopt.evaluate.phase_metrics import phase_metrics

    paths = sorted((run_folder / SNAPSHOT_DIR).glob("iter_*.h5"))
    if not paths:
        return None
    rows = []
    for path in paths:
        result = read_result(path)
        config = yaml.safe_load(result.config)
        dataset = _dataset(str(config["data"]["path"]))
        if dataset.truth is None:
            return None
        occupancy = result.occupancy / result.occupancy.sum()
        values = phase_metrics(result.object_phase, result.origin_ang, result.dx_ang, dataset.truth,
                               dataset.positions_ang, config["output"]["metric_margin_ang"], occupancy=occupancy)
        history = result.history
        work = history["forward_evaluations"][-1] if "forward_evaluations" in history else np.nan
        rows.append((float(result.attrs["iteration"]), float(result.attrs["wall_time_s"]), float(values[metric]),
                     float(work)))
    rows.sort()  # by iteration (file names sort as text)
    return tuple(np.array(column) for column in zip(*rows, strict=True))
