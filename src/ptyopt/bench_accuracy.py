"""`ptyopt bench --time-to-accuracy CONFIG`: how long a reconstruction takes to reach given accuracies.

Time per iteration says little about a method on its own: a solver that is three times slower per iteration but
needs ten times fewer iterations wins. This mode runs a config whose data carry a ground truth (``ptyopt
simulate``), scores the object against the truth after every iteration, and reports, for each threshold of the
Pearson r of the slice-summed phase, the first iteration at which it is reached and the solver's time until then
(the engine's loop time: iterations only, not the scoring, checkpoints or start-up).

JSON schema (``--json FILE``; ``schema_version`` changes only when a field changes meaning or is removed):
``{"schema_version": 1, "mode": "time-to-accuracy", "config": str, "data": str, "solver": str, "device": str,
"threads": int, "torch_version": str, "ptyopt_version": str, "iterations": int, "loop_time_s": float,
"final_pearson_r": float, "best_pearson_r": float, "thresholds": [{"pearson_r": float, "iteration": int | null,
"time_s": float | null, "forward_evaluations": float | null}], "history": {"iteration": [int], "time_s": [float],
"forward_evaluations": [float], "pearson_r": [float]}}``; ``iteration``, ``time_s`` and ``forward_evaluations``
(the solver's work until then, in patterns evaluated: a cost that does not depend on the machine) are null for a
threshold the run never reached.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptyopt.errors import ConfigError

SCHEMA_VERSION = 1
DEFAULT_THRESHOLDS = (0.98, 0.985, 0.99)


def first_reached(iterations: np.ndarray, times_s: np.ndarray, values: np.ndarray, threshold: float,
                  higher_is_better: bool = True) -> tuple[int | None, float | None]:
    """(iteration, time) of the first value at or beyond threshold (>= when higher is better, else <=), or
    (None, None) when none is."""
    values = np.asarray(values, dtype=float)
    reached = np.flatnonzero(values >= threshold if higher_is_better else values <= threshold)
    if reached.size == 0:
        return None, None
    k = int(reached[0])
    return int(iterations[k]), float(times_s[k])


@dataclass
class TimeToAccuracy:
    config: str
    data: str
    solver: str
    device: str
    threads: int
    torch_version: str
    ptyopt_version: str
    iterations: int
    loop_time_s: float
    final_pearson_r: float
    best_pearson_r: float
    thresholds: list[dict[str, Any]]
    history: dict[str, list[float]]

    def to_json(self) -> str:
        return json.dumps({"schema_version": SCHEMA_VERSION, "mode": "time-to-accuracy", **asdict(self)}, indent=1)


def run_time_to_accuracy(config_path: Path, thresholds: list[float], *, iterations: int | None = None,
                         threads: int | None = None, device: str | None = None,
                         show_progress: bool = True) -> TimeToAccuracy:
    """Run the config (scored every iteration, outputs in a temporary folder) and time each r threshold."""
    from ptyopt import __version__
    from ptyopt.config import load_config
    from ptyopt.data import has_truth
    from ptyopt.reconstruct import run_reconstruction

    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise ConfigError(f"--r takes Pearson r thresholds in (0, 1], e.g. 0.98,0.99; got {thresholds}")
    config = load_config(config_path)
    if not has_truth(config.data.path):  # the run reads the data; here only whether a truth is there
        raise ConfigError(f"{config.data.path} holds no ground truth; time-to-accuracy needs one (make the data "
                          "with `ptyopt simulate`)")
    overrides: dict[str, Any] = {"output.metrics_every": 1, "output.snapshot_every": 0}
    if iterations is not None:
        overrides["solver.iterations"] = iterations
    if threads is not None:
        overrides["compute.threads"] = threads
    if device is not None:
        overrides["device"] = device
    with tempfile.TemporaryDirectory(prefix="ptyopt-tta-") as tmp:
        overrides["output.dir"] = str(Path(tmp) / "run")
        overrides["output.checkpoint_every"] = iterations or config.solver.iterations  # only the last
        config = load_config(config_path, overrides)
        run = run_reconstruction(config, overwrite=True, show_progress=show_progress)
    history = run.result.history
    its = np.asarray(history["metric_iteration"], dtype=int)
    times = np.asarray(history["metric_wall_time_s"], dtype=float)
    r = np.asarray(history["metric_pearson_r"], dtype=float)
    work_by_iteration = dict(zip(np.asarray(history["iteration"], dtype=int).tolist(),
                                 np.asarray(history["forward_evaluations"], dtype=float).tolist(), strict=True))
    work = [work_by_iteration.get(int(i), math.nan) for i in its]
    rows = []
    for threshold in sorted(thresholds):
        iteration, time_s = first_reached(its, times, r, threshold)
        rows.append({"pearson_r": threshold, "iteration": iteration, "time_s": time_s,
                     "forward_evaluations": None if iteration is None else work_by_iteration.get(iteration)})
    return TimeToAccuracy(
        config=str(config_path), data=str(config.data.path), solver=config.solver.name, device=str(config.device),
        threads=torch.get_num_threads(), torch_version=torch.__version__, ptyopt_version=__version__,
        iterations=int(its[-1]) if its.size else 0, loop_time_s=float(history["wall_time_s"][-1]),
        final_pearson_r=float(r[-1]), best_pearson_r=float(np.nanmax(r)), thresholds=rows,
        history={"iteration": its.tolist(), "time_s": times.tolist(), "forward_evaluations": work,
                 "pearson_r": r.tolist()})
