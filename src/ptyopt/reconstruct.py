"""``ptyopt reconstruct``: config -> problem -> engine -> result.h5, config.yaml, metrics.json, TIFF and PNG, and
the dashboard report.html (rewritten at each checkpoint)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tifffile
import torch
from rich.console import Console

from ptyopt.config import ReconstructionConfig, dump_config
from ptyopt.data.dataset import Dataset4D
from ptyopt.engine import Engine, IterationCallback
from ptyopt.errors import ConfigError, PtyoptError
from ptyopt.io.checkpoint import CHECKPOINT_NAME, require_checkpoint
from ptyopt.io.integrity import file_sha256, write_atomically
from ptyopt.io.result_file import (
    REPORT_NAME,
    RESULT_NAME,
    SNAPSHOT_DIR,
    GlobalScan,
    ReconstructionResult,
    snapshot_path,
    write_result,
)
from ptyopt.problem import Problem, build_problem
from ptyopt.solvers.checks import check_config


@dataclass
class RunOutput:
    out_dir: Path
    result: ReconstructionResult
    metrics: dict[str, float] | None
    files: dict[str, Path]


def refined_positions_ang(problem: Problem, state: dict[str, torch.Tensor]) -> np.ndarray:
    """The state's probe positions (N, 2) (y, x) [Å]: nominal + global scan model + offsets, as the model uses them."""
    geometry = problem.geometry
    with torch.no_grad():
        moved_px = problem.model.scan.total_displacement_px(state).cpu().double().numpy()
    return geometry.nominal_positions_ang + moved_px * geometry.dx_ang


def result_from_state(problem: Problem, state: dict[str, torch.Tensor], history: dict[str, list[float]],
                      config_yaml: str) -> ReconstructionResult:
    geometry = problem.geometry
    scan = problem.model.scan
    with torch.no_grad():
        drift = scan.drift_terms(state["scan_drift_px"]).cpu().double().numpy() * geometry.dx_ang
        deformation = state["scan_affine"].cpu().double().numpy()
        indices = torch.arange(len(geometry.nominal_positions_ang), device=problem.device)
        global_ang = scan.displacement(state, indices).cpu().double().numpy() * geometry.dx_ang
    centre_ang = geometry.nominal_positions_ang.mean(axis=0)
    occupancy = state["occupancy"].detach().abs().cpu().numpy()
    return ReconstructionResult(
        object_phase=state["object_phase"].detach().cpu().numpy(),
        object_amplitude=state["object_amplitude"].detach().cpu().numpy(),
        occupancy=occupancy / occupancy.sum(),
        probe=state["probe"].detach().cpu().numpy(),
        positions_ang=refined_positions_ang(problem, state),
        nominal_positions_ang=geometry.nominal_positions_ang,
        tilts_mrad=state["tilts_mrad"].detach().cpu().numpy(),
        slice_thickness_ang=state["slice_thickness_ang"].detach().cpu().numpy(),
        dx_ang=geometry.dx_ang,
        origin_ang=geometry.origin_ang,
        history={key: np.asarray(values) for key, values in history.items()},
        config=config_yaml,
        seed=problem.config.seed,
        scan=GlobalScan(affine_matrix=np.eye(2) + deformation, drift_ang=drift, centre_ang=centre_ang,
                        displacement_ang=global_ang, acquisition_time=geometry.acquisition_time),
    )


def metrics_against_truth(phase_slices: np.ndarray, occupancy: np.ndarray, origin_ang: tuple[float, float],
                          dx_ang: float, dataset: Dataset4D, margin_ang: float,
                          experiment=None) -> dict[str, float]:
    """The run's truth metrics (metrics.json, the metric_* history, snapshot scores): the slice-summed phase
    (omode, S, Y, X) [rad], weighted by the |occupancy| of its object modes, against dataset.truth over the
    scanned region minus margin_ang [Å]; with a detector rotated or transposed against the scan
    (``experiment``), the truth is taken into the model's frame."""
    from ptyopt.data.detector_errors import detector_map, to_detector_frame
    from ptyopt.evaluate.phase_metrics import phase_metrics

    occupancy = np.abs(occupancy)
    positions, frame = dataset.positions_ang, None
    if experiment is not None and (experiment.detector_rotation_deg != 0 or experiment.detector_transpose):
        centre = positions.mean(axis=0)
        frame = (detector_map(experiment.detector_rotation_deg, experiment.detector_transpose), centre)
        positions = to_detector_frame(positions, experiment.detector_rotation_deg, experiment.detector_transpose,
                                      centre)
    return phase_metrics(phase_slices, origin_ang, dx_ang, dataset.truth, positions, margin_ang,
                         occupancy=occupancy / occupancy.sum(), frame=frame)


def truth_metrics_fn(problem: Problem):
    """Metrics of the slice-summed phase against the truth (and of the positions, when the truth holds them), or
    None when the data carry no truth."""
    from ptyopt.evaluate.probe_positions import position_errors

    if problem.dataset.truth is None:
        return None
    geometry, margin = problem.geometry, problem.config.output.metric_margin_ang

    true_positions = problem.dataset.truth.positions_ang
    if true_positions is not None and len(true_positions) != len(geometry.nominal_positions_ang):
        true_positions = None
    exp = problem.config.experiment
    if true_positions is not None and (exp.detector_rotation_deg != 0 or exp.detector_transpose):
        from ptyopt.data.detector_errors import to_detector_frame

        true_positions = to_detector_frame(true_positions, exp.detector_rotation_deg, exp.detector_transpose,
                                           problem.dataset.positions_ang.mean(axis=0))

    def metrics(state: dict[str, torch.Tensor]) -> dict[str, float]:
        values = metrics_against_truth(state["object_phase"].detach().cpu().numpy(),
                                       state["occupancy"].detach().cpu().numpy(), geometry.origin_ang,
                                       geometry.dx_ang, problem.dataset, margin, problem.config.experiment)
        if true_positions is not None:  # the refined positions' errors (translation / best affine removed)
            errors = position_errors(refined_positions_ang(problem, state), true_positions)
            values.update({k: errors[k] for k in ("position_rms_error_centred_ang", "position_rms_error_affine_ang")})
        return values

    return metrics


def write_outputs(problem: Problem, result: ReconstructionResult, out_dir: Path,
                  metrics: dict[str, float] | None) -> dict[str, Path]:
    from ptyopt.io import result_figures as figs

    files = {label: out_dir / name for label, name in SUMMARY_FILES.items()}
    files = {"result": write_result(out_dir / RESULT_NAME, result), **files}
    files["config"].write_text(result.config)
    tifffile.imwrite(files["phase_sum_tiff"], result.phase_sum.astype(np.float32))
    tifffile.imwrite(files["phase_stack_tiff"], result.object_phase[0].astype(np.float32), photometric="minisblack")
    dataset = problem.dataset
    mrad_per_px = dataset.wavelength_ang / (result.probe.shape[-1] * result.dx_ang) * 1e3
    figs.save_object_figure(files["object_png"], result.phase_sum, result.dx_ang, result.nominal_positions_ang,
                            result.origin_ang)
    figs.save_probe_figure(files["probe_png"], result.probe, result.dx_ang, mrad_per_px)
    truth_positions = dataset.truth.positions_ang if dataset.truth is not None else None
    figs.save_positions_figure(files["positions_png"], result.nominal_positions_ang, result.positions_ang,
                               truth_positions)
    figs.save_scan_model_figure(files["scan_model_png"], result.nominal_positions_ang, result.scan)
    loss_keys = [k for k in result.history if k == "total" or k in problem.config.loss]
    figs.save_loss_figure(files["loss_png"], {k: list(result.history[k]) for k in loss_keys},
                          list(result.history.get("iteration", [])))
    if metrics is not None:
        files["metrics"].write_text(json.dumps(metrics, indent=2))
    else:
        del files["metrics"]
    return files


RUN_FILES = (RESULT_NAME, CHECKPOINT_NAME)  # a folder holding one of these holds a run
# what write_outputs writes beside result.h5 (label -> file name); --overwrite removes these and report.html, nothing
# else
SUMMARY_FILES = {"config": "config.yaml", "phase_sum_tiff": "phase_sum.tif", "phase_stack_tiff": "phase_stack.tif",
                 "object_png": "object_phase.png", "probe_png": "probe.png", "positions_png": "positions.png",
                 "scan_model_png": "scan_model.png", "loss_png": "loss.png", "metrics": "metrics.json"}
OUTPUT_NAMES = (*RUN_FILES, *(f"{name}.sha256" for name in (*RUN_FILES, REPORT_NAME)), *SUMMARY_FILES.values(),
                REPORT_NAME)


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """ConfigError unless ``out`` may receive this run: a folder (or nothing yet) that holds no earlier run,
    unless the run continues it (resume) or replaces it (overwrite)."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the output folder and --overwrite replaces it; give one")
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"the output folder {out} cannot be made: {folder} is a file; give a folder with --out")
    if resume:
        require_checkpoint(out / CHECKPOINT_NAME)
    held = [name for name in RUN_FILES if (out / name).exists()]
    if any((out / SNAPSHOT_DIR).glob("iter_*.h5")):
        held.append(f"{SNAPSHOT_DIR}/")
    if held and not resume and not overwrite:
        raise ConfigError(f"{out} already holds a run ({', '.join(held)}); continue it with --resume, write to "
                          "another folder with --out, or replace it with --overwrite")


def clear_run(out: Path) -> None:
    """Remove an earlier run's outputs and snapshots (``--overwrite``, after every check has passed)."""
    for name in OUTPUT_NAMES:
        for path in (out / name, out / f"{name}.tmp", out / f"{name}.sha256.tmp"):
            path.unlink(missing_ok=True)
    for path in (out / SNAPSHOT_DIR).glob("iter_*"):  # only snapshots: a user's own files there stay
        path.unlink()


def provenance(config: ReconstructionConfig, device: torch.device, started: str) -> dict[str, str | int]:
    """Where a result came from (beside the ptyopt version every result file records): torch version, device,
    the data file (path, size, SHA-256), command line, start time."""
    path = config.data.path
    return {"torch_version": str(torch.__version__), "device": str(device),
            "data_path": str(path.resolve()), "data_size_bytes": int(path.stat().st_size),
            "data_sha256": file_sha256(path), "command_line": " ".join(sys.argv),
            "start_time": started}


def run_reconstruction(config: ReconstructionConfig, *, out_dir: Path | None = None, resume: bool = False,
                       overwrite: bool = False, show_progress: bool = True,
                       callbacks: list[IterationCallback] | None = None) -> RunOutput:
    """Run (or resume) a reconstruction and write every output; the truth metrics when a truth is known.

    Nothing is written until every check that can refuse has passed (solvers, output folder, data, device,
    checkpoint compatibility): a refused run leaves the folder as it was."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    check_config(config)
    out = Path(out_dir or config.output.dir)
    check_out_dir(out, resume=resume, overwrite=overwrite)
    torch.manual_seed(config.seed)
    problem = build_problem(config, warm_start=not resume)  # a resumed run takes its weights from the checkpoint
    if show_progress:
        Console(stderr=True).print(problem.memory.describe())
        if problem.warm_start is not None:
            errors = ", ".join(f"{name} {value:.3g}" for name, value in problem.warm_start.items())
            Console(stderr=True).print(f"model.dip: network fitted to {config.model.dip.fit_to} ({errors})")
    metrics_fn = truth_metrics_fn(problem)
    config_yaml = dump_config(config)
    snapshots = [snapshot_writer(problem, out, config_yaml)] if config.output.snapshot_every else []
    from ptyopt.io.run_report import RunReporter  # matplotlib: imported when a run starts, not with this module

    reporter = RunReporter(problem, out, config_yaml)  # after the snapshots: a page shows its iteration's snapshot
    engine = Engine(problem, out, callbacks=[*snapshots, reporter, *(callbacks or [])], metrics_fn=metrics_fn)
    if resume:
        engine.resume()
    origin = provenance(config, problem.device, started)
    done = engine.loop.iteration
    if overwrite:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml)
    if snapshots and done and not snapshot_path(out, done).exists():
        snapshots[0](engine, done)  # a kill between the checkpoint and its snapshot: write the snapshot now
    reporter.start(engine)
    try:
        engine.run(show_progress=show_progress)
    except PtyoptError as err:  # Ctrl-C or divergence: the page says so instead of "running" for ever
        reporter.stop(engine, str(err))
        raise
    result = result_from_state(problem, engine.state, engine.loop.history, config_yaml)
    result.attrs.update(origin, end_time=datetime.now(UTC).isoformat(timespec="seconds"))
    if engine.loop.stopped_at is not None:  # a stopping rule (solver.stop_when) ended the run
        result.attrs.update(stopped_at=engine.loop.stopped_at, stop_reason=engine.loop.stop_reason)
    metrics = metrics_fn(engine.state) if metrics_fn is not None else None
    if metrics is not None:
        metrics = {**metrics, "iterations": engine.loop.iteration, "wall_time_s": engine.loop.elapsed_s}
    files = write_outputs(problem, result, out, metrics)
    files["report"] = reporter.finish(engine, files, metrics)
    return RunOutput(out, result, metrics, files)




def snapshot_writer(problem: Problem, out: Path, config_yaml: str) -> IterationCallback:
    """An engine callback writing OUT/snapshots/iter_NNNN.h5 (the result schema, atomically) and
    iter_NNNN_phase.tif every output.snapshot_every iterations and at the last one."""
    every, last = problem.config.output.snapshot_every, problem.config.solver.iterations

    def write(engine: Engine, iteration: int) -> None:
        if iteration % every and iteration != last:
            return
        result = result_from_state(problem, engine.state, engine.loop.history, config_yaml)
        result.attrs.update(iteration=iteration, wall_time_s=engine.loop.elapsed_s)
        path = snapshot_path(out, iteration)
        phase = result.phase_sum.astype(np.float32)
        # the TIFF first: the .h5, written last, marks a complete snapshot (resume rewrites an incomplete one)
        write_atomically(path.with_name(f"{path.stem}_phase.tif"), lambda tmp: tifffile.imwrite(tmp, phase))
        write_result(path, result)

    return write
