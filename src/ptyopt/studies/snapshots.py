"""Score a run's snapshots (OUT/snapshots/iter_NNNN.h5) against the truth after the fact: accuracy-vs-iteration,
-time and -work curves of finished runs without rerunning them (the study report draws them when a run logged no
metrics during the run)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from ptyopt.config import ReconstructionConfig, parse_config
from ptyopt.data.dataset import Dataset4D
from ptyopt.io.result_file import SNAPSHOT_DIR, read_result
from ptyopt.problem import load_dataset
from ptyopt.reconstruct import metrics_against_truth


@lru_cache(maxsize=8)
def _run_data(config_yaml: str) -> tuple[ReconstructionConfig, Dataset4D]:
    """The run's config and its data as the run saw them (scan region and half selection applied)."""
    config = parse_config(yaml.safe_load(config_yaml))
    return config, load_dataset(config)


def snapshot_scores(run_folder: Path, metric: str) -> tuple[np.ndarray, ...] | None:
    """(iterations, loop wall times [s], metric values, forward evaluations) of every snapshot of the run, the
    metric being the one the run itself records (``reconstruct.metrics_against_truth``); None without snapshots
    or without a truth."""
    paths = sorted((run_folder / SNAPSHOT_DIR).glob("iter_*.h5"))
    if not paths:
        return None
    rows = []
    for path in paths:
        result = read_result(path)
        config, dataset = _run_data(result.config)
        if dataset.truth is None:
            return None
        values = metrics_against_truth(result.object_phase, result.occupancy, result.origin_ang, result.dx_ang,
                                       dataset, config.output.metric_margin_ang)
        history = result.history
        work = history["forward_evaluations"][-1] if "forward_evaluations" in history else np.nan
        rows.append((float(result.attrs["iteration"]), float(result.attrs["wall_time_s"]), float(values[metric]),
                     float(work)))
    rows.sort()  # by iteration (file names sort as text)
    return tuple(np.array(column) for column in zip(*rows, strict=True))
