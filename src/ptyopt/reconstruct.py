"""``ptyopt reconstruct``: config -> problem -> engine -> result.h5, config.yaml, metrics.json, TIFF and PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from rich.console import Console

from ptyopt.config import ReconstructionConfig, dump_config
from ptyopt.engine import Engine, IterationCallback
from ptyopt.io.result_file import RESULT_NAME, ReconstructionResult, write_result
from ptyopt.problem import Problem, build_problem
from ptyopt.solvers.checks import check_config


@dataclass
class RunOutput:
    out_dir: Path
    result: ReconstructionResult
    metrics: dict[str, float] | None
    files: dict[str, Path]


def result_from_state(problem: Problem, state: dict[str, torch.Tensor], history: dict[str, list[float]],
                      config_yaml: str) -> ReconstructionResult:
    geometry = problem.geometry
    offsets_ang = state["position_offsets_px"].detach().cpu().double().numpy() * geometry.dx_ang
    occupancy = state["occupancy"].detach().abs().cpu().numpy()
    return ReconstructionResult(
        object_phase=state["object_phase"].detach().cpu().numpy(),
        object_amplitude=state["object_amplitude"].detach().cpu().numpy(),
        occupancy=occupancy / occupancy.sum(),
        probe=state["probe"].detach().cpu().numpy(),
        positions_ang=geometry.nominal_positions_ang + offsets_ang,
        nominal_positions_ang=geometry.nominal_positions_ang,
        tilts_mrad=state["tilts_mrad"].detach().cpu().numpy(),
        slice_thickness_ang=state["slice_thickness_ang"].detach().cpu().numpy(),
        dx_ang=geometry.dx_ang,
        origin_ang=geometry.origin_ang,
        history={key: np.asarray(values) for key, values in history.items()},
        config=config_yaml,
        seed=problem.config.seed,
    )


def truth_metrics_fn(problem: Problem):
    """Metrics of the slice-summed phase against the truth, or None when the data carry no truth."""
    truth = problem.dataset.truth
    if truth is None:
        return None
    from ptyopt.evaluate.phase_metrics import phase_metrics

    margin = problem.config.output.metric_margin_ang

    def metrics(state: dict[str, torch.Tensor]) -> dict[str, float]:
        phase = state["object_phase"].detach().cpu().numpy()
        occupancy = state["occupancy"].detach().abs().cpu().numpy()
        return phase_metrics(phase, problem.geometry.origin_ang, problem.geometry.dx_ang, truth,
                             problem.dataset.positions_ang, margin, occupancy=occupancy / occupancy.sum())

    return metrics


def write_outputs(problem: Problem, result: ReconstructionResult, out_dir: Path,
                  metrics: dict[str, float] | None) -> dict[str, Path]:
    from ptyopt.io import result_figures as figs

    files = {"result": write_result(out_dir / RESULT_NAME, result)}
    files["config"] = out_dir / "config.yaml"
    files["config"].write_text(result.config)
    files["phase_sum_tiff"] = out_dir / "phase_sum.tif"
    tifffile.imwrite(files["phase_sum_tiff"], result.phase_sum.astype(np.float32))
    files["phase_stack_tiff"] = out_dir / "phase_stack.tif"
    tifffile.imwrite(files["phase_stack_tiff"], result.object_phase[0].astype(np.float32), photometric="minisblack")
    dataset = problem.dataset
    mrad_per_px = dataset.wavelength_ang / (result.probe.shape[-1] * result.dx_ang) * 1e3
    files["object_png"] = figs.save_object_figure(out_dir / "object_phase.png", result.phase_sum, result.dx_ang,
                                                  result.nominal_positions_ang, result.origin_ang)
    files["probe_png"] = figs.save_probe_figure(out_dir / "probe.png", result.probe, result.dx_ang, mrad_per_px)
    truth_positions = dataset.truth.positions_ang if dataset.truth is not None else None
    files["positions_png"] = figs.save_positions_figure(out_dir / "positions.png", result.nominal_positions_ang,
                                                        result.positions_ang, truth_positions)
    loss_keys = [k for k in result.history if k == "total" or k in problem.config.loss]
    files["loss_png"] = figs.save_loss_figure(out_dir / "loss.png", {k: list(result.history[k]) for k in loss_keys},
                                              list(result.history.get("iteration", [])))
    if metrics is not None:
        files["metrics"] = out_dir / "metrics.json"
        files["metrics"].write_text(json.dumps(metrics, indent=2))
    return files


def run_reconstruction(config: ReconstructionConfig, *, out_dir: Path | None = None, resume: bool = False,
                       show_progress: bool = True, callbacks: list[IterationCallback] | None = None) -> RunOutput:
    """Run (or resume) a reconstruction and write every output; the truth metrics when a truth is known."""
    check_config(config)  # what the solvers would refuse fails before any data is read or folder made
    torch.manual_seed(config.seed)
    out = Path(out_dir or config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    problem = build_problem(config)
    if show_progress:
        Console(stderr=True).print(problem.memory.describe())
    metrics_fn = truth_metrics_fn(problem)
    engine = Engine(problem, out, callbacks=callbacks, metrics_fn=metrics_fn)
    config_yaml = dump_config(config)
    (out / "config.yaml").write_text(config_yaml)
    if resume:
        engine.resume()
    engine.run(show_progress=show_progress)
    result = result_from_state(problem, engine.state, engine.loop.history, config_yaml)
    metrics = metrics_fn(engine.state) if metrics_fn is not None else None
    if metrics is not None:
        metrics = {**metrics, "iterations": engine.loop.iteration, "wall_time_s": engine.loop.elapsed_s}
    files = write_outputs(problem, result, out, metrics)
    return RunOutput(out, result, metrics, files)
