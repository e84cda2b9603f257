"""Run a study's runs in local processes or on a Dask cluster; finished runs are never repeated.

A run is finished when OUT/runs/<key>/row.json exists (written atomically after its outputs); restarting
a study skips those and continues interrupted runs from their checkpoints.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ptyopt.errors import ConfigError
from ptyopt.studies.spec import RunSpec, StudySpec

ROW_NAME = "row.json"


def run_dir(out_dir: Path, run: RunSpec) -> Path:
    return out_dir / "runs" / run.key


def is_finished(out_dir: Path, run: RunSpec) -> bool:
    return (run_dir(out_dir, run) / ROW_NAME).exists()


def execute_run(run: RunSpec, out_dir: str, threads: int) -> dict[str, Any]:
    """Run one reconstruction (in whatever process calls this) and write its row.json; returns the row."""
    import torch

    from ptyopt.config import parse_config
    from ptyopt.io.checkpoint import CHECKPOINT_NAME
    from ptyopt.reconstruct import run_reconstruction

    torch.set_num_threads(threads)
    folder = run_dir(Path(out_dir), run)
    config = parse_config(run.config)
    resume = (folder / CHECKPOINT_NAME).exists()
    start = time.perf_counter()
    # the runner owns its run folders: one without a checkpoint (killed before the first, or cleaned) starts over
    output = run_reconstruction(config, out_dir=folder, resume=resume, overwrite=not resume, show_progress=False)
    history = output.result.history
    row = {
        "key": run.key,
        "setting": run.setting,
        "seed": run.seed,
        **{f"param:{k}": json.dumps(v) if isinstance(v, dict | list) else v for k, v in run.values.items()},
        **{k: v for k, v in (output.metrics or {}).items()
           if isinstance(v, int | float) and k not in ("iterations", "wall_time_s")},
        "final_loss": float(history["total"][-1]) if "total" in history else None,
        "iterations": int(history["iteration"][-1]) if "iteration" in history else 0,
        "loop_time_s": float(history["wall_time_s"][-1]) if "wall_time_s" in history else None,
        "forward_evaluations": (float(history["forward_evaluations"][-1])
                                if "forward_evaluations" in history else None),
        "process_time_s": time.perf_counter() - start,
    }
    tmp = folder / (ROW_NAME + ".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    os.replace(tmp, folder / ROW_NAME)
    return row


def _local(runs: list[RunSpec], out_dir: Path, workers: int, threads: int) -> Iterable[dict[str, Any]]:
    if workers == 1:
        for run in runs:
            yield execute_run(run, str(out_dir), threads)
        return
    # spawn: a fresh interpreter per worker; forking a process that already runs torch threads is unsafe
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(execute_run, run, str(out_dir), threads) for run in runs]
        for future in as_completed(futures):
            yield future.result()


def _dask(runs: list[RunSpec], out_dir: Path, address: str, threads: int) -> Iterable[dict[str, Any]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("--scheduler needs dask distributed: pip install 'distributed'") from None
    try:
        client = Client(address, timeout="20s")
    except OSError as err:
        raise ConfigError(f"cannot reach the Dask scheduler at {address} ({err})") from None
    try:
        futures = [client.submit(execute_run, run, str(out_dir), threads, key=f"ptyopt-{run.key}", pure=False)
                   for run in runs]
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()


def run_study(spec: StudySpec, runs: list[RunSpec], out_dir: Path, *, workers: int = 1, scheduler: str | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run what is not finished yet, then return every row in the study's order (and write results.csv)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [run for run in runs if not is_finished(out_dir, run)]
    rows = _dask(todo, out_dir, scheduler, spec.threads_per_run) if scheduler else _local(
        todo, out_dir, workers, spec.threads_per_run)
    for row in rows:
        if on_row is not None:
            on_row(row)
    all_rows = [json.loads((run_dir(out_dir, run) / ROW_NAME).read_text()) for run in runs]
    write_csv(out_dir / "results.csv", all_rows)
    return all_rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
