"""The run dashboard OUT/report.html: one self-contained page that a running job rewrites at each checkpoint
and a finished one for good.

It shows the loss terms (log scale, held-out validation terms dashed, solver-stage switches marked), the loss
weights, the learning rates, the truth metrics when a truth is known, the solver stages, the slice-summed phase
over iterations (from snapshots/iter_NNNN_phase.tif when output.snapshot_every is set, else the phase at each
checkpoint this process saw), the resolved config and, once finished, the figures ``write_outputs`` wrote.
While the run goes on the page says so and reloads itself every ``REFRESH_S`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import tifffile

from ptyopt.batching import evenly_spread
from ptyopt.io import html_page as h
from ptyopt.io.result_file import REPORT_NAME, SNAPSHOT_DIR, slice_summed_phase

if TYPE_CHECKING:
    from ptyopt.engine import Engine
    from ptyopt.problem import Problem

REFRESH_S = 30
MAX_THUMBNAILS = 8
# the truth metrics of the summary table (metric_* also holds bookkeeping: n_pixels, margin_ang, shift_px, ...)
SHOWN_METRICS = ("pearson_r", "rmse_rad", "nrmse", "psnr_db", "ssim", "position_rms_error_centred_ang",
                 "position_rms_error_affine_ang")
# and their curves, a panel each (nrmse and psnr_db are rmse_rad rescaled: no panel; each panel costs ~50 ms a
# checkpoint): title -> metrics drawn in it
METRIC_PANELS = {"pearson_r": ("pearson_r",), "rmse_rad": ("rmse_rad",), "ssim": ("ssim",),
                 "position RMS error [Å]": ("position_rms_error_centred_ang", "position_rms_error_affine_ang")}
# the final figures of write_outputs (RunOutput.files label -> caption), in page order
FINAL_FIGURES = {"object_png": "object phase (slice sum)", "probe_png": "probe modes",
                 "positions_png": "scan positions", "scan_model_png": "global scan model", "loss_png": "loss terms"}


@dataclass
class RunStatus:
    """Where the run stands: state 'running' (at a checkpoint), 'finished' or 'stopped' (message: why)."""

    state: Literal["running", "finished", "stopped"]
    iteration: int
    total_iterations: int
    message: str = ""


@dataclass
class RunPage:
    """Everything the dashboard shows, in plain data. history: the engine's per-iteration lists; loss_names: the
    configured terms; stage_names: the solver of each stage; thumbnails: (iteration, slice-summed phase (Y, X)
    [rad]); figures: label -> PNG file; metrics: the final truth metrics (None without a truth)."""

    title: str
    status: RunStatus
    history: Mapping[str, Sequence[float]]
    loss_names: list[str]
    stage_names: list[str]
    config_yaml: str
    thumbnails: list[tuple[int, np.ndarray]] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    metrics: Mapping[str, object] | None = None


def _series(history: Mapping[str, Sequence[float]], key: str) -> np.ndarray:
    return np.asarray(history.get(key, []), dtype=np.float64)


def _positive(values: np.ndarray) -> np.ndarray:
    """What a log axis can draw: values that are not positive (or NaN) become gaps."""
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def _stage_switches(history: Mapping[str, Sequence[float]]) -> list[int]:
    """The iterations at which a new solver stage took over."""
    iterations, stages = _series(history, "iteration"), _series(history, "solver_stage")
    if len(stages) != len(iterations) or len(stages) < 2:
        return []
    return [int(iterations[i]) for i in np.nonzero(np.diff(stages))[0] + 1]


def _axes(title: str, ylabel: str, log: bool = False) -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.14, top=0.9)
    if log:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set(title=title, xlabel="iteration", ylabel=ylabel)
    return fig, ax


def _mark_switches(ax: plt.Axes, switches: list[int]) -> None:
    for at in switches:
        ax.axvline(at - 0.5, color="0.4", linestyle=":", linewidth=1)


def loss_figure(page: RunPage) -> str:
    """Each loss term and the weighted total vs iteration (log); validation terms dashed."""
    history, iterations = page.history, _series(page.history, "iteration")
    fig, ax = _axes("loss terms (dotted lines: solver stage switches)", "value (log)", log=True)
    marker = "." if len(iterations) < 50 else None
    for name in [*page.loss_names, "total"]:
        values = _series(history, name)
        if len(values) == len(iterations):
            ax.plot(iterations, _positive(values), marker=marker, label=name)
    at = _series(history, "validation_iteration")
    for name in page.loss_names:
        values = _series(history, f"validation_{name}")
        if len(values) and len(values) == len(at):
            ax.plot(at, _positive(values), linestyle="--", marker="o", markersize=3, label=f"validation {name}")
    _mark_switches(ax, _stage_switches(history))
    ax.legend(fontsize=7)
    return h.figure_tag(fig, "loss terms")


def weight_figure(page: RunPage) -> str:
    """The weight of each loss term vs iteration (its schedule)."""
    iterations = _series(page.history, "iteration")
    fig, ax = _axes("loss weights", "weight")
    for name in page.loss_names:
        values = _series(page.history, f"weight_{name}")
        if len(values) == len(iterations):
            ax.plot(iterations, values, label=name)
    ax.legend(fontsize=7)
    return h.figure_tag(fig, "loss weights")


def learning_rate_figure(page: RunPage) -> str:
    """Each scheduled tensor's learning rate vs iteration (log; 0 = frozen and NaN = a solver that picks its own
    steps are gaps)."""
    iterations = _series(page.history, "iteration")
    fig, ax = _axes("learning rates (gaps: frozen, or a solver choosing its own steps)", "learning rate (log)",
                    log=True)
    keys = [key for key in page.history if key.startswith("lr_") and key != "lr_multiplier"]
    for key in keys:
        values = _series(page.history, key)
        if len(values) == len(iterations) and np.isfinite(_positive(values)).any():
            ax.plot(iterations, _positive(values), label=key.removeprefix("lr_"))
    _mark_switches(ax, _stage_switches(page.history))
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no learning rate in use", transform=ax.transAxes, ha="center", va="center")
    return h.figure_tag(fig, "learning rates")


def metric_figure(page: RunPage) -> str:
    """The truth metrics vs iteration (METRIC_PANELS), or '' when none was logged."""
    at = _series(page.history, "metric_iteration")
    panels = {title: [name for name in names if len(_series(page.history, f"metric_{name}")) == len(at) > 0]
              for title, names in METRIC_PANELS.items()}
    panels = {title: names for title, names in panels.items() if names}
    if not panels:
        return ""
    # fixed margins: constrained layout costs ~50 ms a panel, and this page is redrawn at every checkpoint
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    fig.subplots_adjust(left=0.3 / len(panels), right=0.98, bottom=0.16, top=0.88, wspace=0.35)
    for ax, (title, names) in zip(axes.flat, panels.items(), strict=True):
        for name in names:
            ax.plot(at, _series(page.history, f"metric_{name}"), marker="o", markersize=3,
                    label=name.removeprefix("position_rms_error_"))
        if len(names) > 1:
            ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        ax.set(title=title, xlabel="iteration")
    return h.figure_tag(fig, "truth metrics")


def _summary_rows(page: RunPage) -> list[tuple[str, object]]:
    history = page.history
    rows: list[tuple[str, object]] = [("iterations done", page.status.iteration),
                                      ("iterations planned", page.status.total_iterations)]
    for key, label in (("wall_time_s", "loop wall time [s]"), ("forward_evaluations", "forward evaluations")):
        if len(values := _series(history, key)):
            rows.append((label, float(values[-1])))
    if len(times := _series(history, "wall_time_s")):
        rows.append(("mean time per iteration [s]", float(times[-1]) / len(times)))
    for name in [*page.loss_names, "total"]:
        if len(values := _series(history, name)):
            rows.append((f"last {name}", float(values[-1])))
    for name in SHOWN_METRICS:
        if len(values := _series(history, f"metric_{name}")):
            at = int(_series(history, "metric_iteration")[-1])
            rows.append((f"{name} (iteration {at})", float(values[-1])))
    return rows


def _stage_rows(page: RunPage) -> list[tuple[object, ...]]:
    iterations, stages = _series(page.history, "iteration"), _series(page.history, "solver_stage")
    if not len(stages) or len(stages) != len(iterations):
        return []
    starts = [0, *(np.nonzero(np.diff(stages))[0] + 1)]
    ends = [*starts[1:], len(stages)]
    return [(int(stages[a]), page.stage_names[int(stages[a])] if int(stages[a]) < len(page.stage_names) else "?",
             int(iterations[a]), int(iterations[b - 1])) for a, b in zip(starts, ends, strict=True)]


def _thumbnails(page: RunPage) -> str:
    if not page.thumbnails:
        return h.paragraph("no snapshot yet", "note")
    shown = page.thumbnails
    low = min(float(np.nanpercentile(image, 1)) for _, image in shown)
    high = max(float(np.nanpercentile(image, 99)) for _, image in shown)
    return "".join(h.array_tag(image, f"phase at iteration {iteration}", f"iteration {iteration}",
                               limits=(low, high)) for iteration, image in shown) + h.paragraph(
        f"slice-summed phase over the scanned region, one grey scale for all ({low:.3g} to {high:.3g} rad)", "note")


def _banner(status: RunStatus, history: Mapping[str, Sequence[float]]) -> str:
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    times = _series(history, "wall_time_s")
    elapsed = float(times[-1]) if len(times) else 0.0
    if status.state == "running":
        return h.banner(f"running: iteration {status.iteration} of {status.total_iterations}, updated {now} "
                        f"(reloads every {REFRESH_S} s)", "running")
    if status.state == "finished":
        return h.banner(f"finished after {status.iteration} iterations in {elapsed:.1f} s (loop wall time); "
                        f"written {now}", "finished")
    return h.banner(f"stopped after iteration {status.iteration} of {status.total_iterations}: {status.message} "
                    f"(written {now})", "stopped")


def render_run_page(page: RunPage) -> str:
    """The dashboard as one HTML document (figures drawn here, final figures read from their files)."""
    parts = [_banner(page.status, page.history), _summary(page)]
    if len(_series(page.history, "iteration")):
        parts.append(h.section("Convergence", loss_figure(page), weight_figure(page), learning_rate_figure(page)))
        if metrics := metric_figure(page):
            parts.append(h.section("Truth metrics", metrics))
    if stages := _stage_rows(page):
        parts.append(h.section("Solver stages", h.table(["stage", "solver", "first iteration", "last iteration"],
                                                        stages)))
    parts.append(h.section("Phase over iterations", _thumbnails(page)))
    if page.status.state == "finished" and page.metrics:
        scalars = [(k, v) for k, v in page.metrics.items() if isinstance(v, int | float)]
        parts.append(h.section("Against the truth (final)", h.table(["metric", "value"], scalars)))
    figures = [h.file_tag(page.figures[label], caption, caption) for label, caption in FINAL_FIGURES.items()
               if label in page.figures and page.figures[label].exists()]
    if figures:
        parts.append(h.section("Final figures", *figures))
    parts.append(h.section("Settings", h.details("resolved config (YAML)", h.preformatted(page.config_yaml))))
    return h.page(page.title, *parts, refresh_s=REFRESH_S if page.status.state == "running" else None)


def _summary(page: RunPage) -> str:
    return h.section("Summary", h.table(["quantity", "value"], _summary_rows(page)))


def write_run_report(out_dir: Path, page: RunPage) -> Path:
    """Write OUT/report.html atomically; returns its path."""
    return h.write_page(Path(out_dir) / REPORT_NAME, render_run_page(page))


def pick_evenly(items: list, count: int) -> list:
    """At most ``count`` items, evenly spread, the first and the last always among them."""
    return [items[i] for i in evenly_spread(len(items), count)]


class RunReporter:
    """Keeps OUT/report.html up to date for one run: ``start`` (before the first iteration), the engine callback
    (each checkpoint but the last, whose page is the final one), ``finish`` (after write_outputs) and ``stop`` (a
    run that ends without finishing: Ctrl-C, divergence)."""

    def __init__(self, problem: Problem, out_dir: Path, config_yaml: str):
        config = problem.config
        self.out_dir = Path(out_dir)
        self.config_yaml = config_yaml
        self.total = config.solver.iterations
        self.checkpoint_every = config.output.checkpoint_every
        self.from_snapshots = bool(config.output.snapshot_every)
        self.loss_names = list(config.loss)
        self.stage_names = [stage.name for stage in config.solver.stages]
        self.title = f"ptyopt reconstruction: {self.out_dir.name} ({config.data.path.name})"
        centres = problem.geometry.nominal_centres_px
        low = np.maximum(np.floor(centres.min(axis=0)).astype(int), 0)
        high = np.ceil(centres.max(axis=0)).astype(int) + 1
        self.scanned = np.s_[low[0] : high[0], low[1] : high[1]]  # the thumbnails show the scanned region
        self.seen: list[tuple[int, np.ndarray]] = []  # checkpoint thumbnails when there are no snapshots

    def _thumbnails(self) -> list[tuple[int, np.ndarray]]:
        if not self.from_snapshots:
            return pick_evenly(self.seen, MAX_THUMBNAILS)
        folder = self.out_dir / SNAPSHOT_DIR
        # a snapshot is complete once its .h5 exists (the TIFF is written first)
        stems = sorted(p.name.removesuffix("_phase.tif") for p in folder.glob("iter_*_phase.tif"))
        done = [stem for stem in stems if (folder / f"{stem}.h5").exists()]
        return [(int(stem.removeprefix("iter_")), tifffile.imread(folder / f"{stem}_phase.tif")[self.scanned])
                for stem in pick_evenly(done, MAX_THUMBNAILS)]

    def _page(self, engine: Engine, status: RunStatus, **extra) -> RunPage:
        return RunPage(self.title, status, engine.loop.history, self.loss_names, self.stage_names, self.config_yaml,
                       thumbnails=self._thumbnails(), **extra)

    def _remember(self, engine: Engine, iteration: int) -> None:
        if self.from_snapshots or any(seen == iteration for seen, _ in self.seen):
            return
        state = engine.state
        phase = slice_summed_phase(state["object_phase"].detach().cpu().numpy(),
                                   state["occupancy"].detach().cpu().numpy())
        self.seen.append((iteration, np.ascontiguousarray(phase[self.scanned], dtype=np.float32)))

    def start(self, engine: Engine) -> Path:
        iteration = engine.loop.iteration
        if iteration:
            self._remember(engine, iteration)  # a resumed run: the state it continues from
        return write_run_report(self.out_dir, self._page(engine, RunStatus("running", iteration, self.total)))

    def __call__(self, engine: Engine, iteration: int) -> None:
        if iteration % self.checkpoint_every or iteration == self.total:
            return
        self._remember(engine, iteration)
        write_run_report(self.out_dir, self._page(engine, RunStatus("running", iteration, self.total)))

    def finish(self, engine: Engine, figures: Mapping[str, Path], metrics: Mapping[str, object] | None) -> Path:
        self._remember(engine, engine.loop.iteration)
        status = RunStatus("finished", engine.loop.iteration, self.total)
        return write_run_report(self.out_dir, self._page(engine, status, figures=dict(figures), metrics=metrics))

    def stop(self, engine: Engine, message: str) -> Path:
        status = RunStatus("stopped", engine.loop.iteration, self.total, message)
        return write_run_report(self.out_dir, self._page(engine, status))
