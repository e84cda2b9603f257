"""The study report as one self-contained page, OUT/report.html, beside report.md: the same tables and tests
(``report.study_tables``, not parsed from the markdown), each metric's and the loss's mean ± 95 % CI over seeds
vs iteration, vs loop wall time and vs forward-model evaluations per setting, every run with a link to its
dashboard, the interpretation and the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import yaml

from ptyopt.io import html_page as h
from ptyopt.io.result_file import REPORT_NAME
from ptyopt.studies.report import (
    CI_NOTE,
    INTERPRETATION,
    LOSS_CURVE,
    SUMMARY_EXTRA,
    TIME_TO_NOTE,
    Curve,
    StudyTables,
    aligned,
    best_heading,
    comparison_note,
    mean_ci95,
    study_summary_line,
    time_to_table,
)
from ptyopt.studies.spec import RunSpec, StudySpec

REPORT_HTML = "report.html"


def mean_and_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of values (runs, n): the mean over runs and the half-width of its 95 % CI (NaN for one run)."""
    pairs = [mean_ci95(list(column)) for column in values.T]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def curve_figure(name: str, curves: dict[str, list[Curve]]) -> str:
    """``name`` (a metric, or the total loss on a log axis) vs iteration, wall time and work: per setting the mean
    over seeds with its 95 % CI as a band (none where a setting has a single seed)."""
    loss = name == LOSS_CURVE
    label = "total loss" if loss else name
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.0))
    fig.subplots_adjust(left=0.075, right=0.99, bottom=0.14, top=0.9, wspace=0.3)
    for setting, items in curves.items():
        iterations, times, work, values = aligned(items)
        mean, half = mean_and_band(values)
        colour = None
        for ax, x in zip(axes, (iterations, times, work), strict=True):
            line = ax.plot(x, mean, color=colour, label=setting)[0]
            colour = line.get_color()
            if np.isfinite(half).any():
                ax.fill_between(x, mean - half, mean + half, color=colour, alpha=0.15, linewidth=0)
    for ax, xlabel in zip(axes, ("iteration", "loop wall time (s)", "forward-model evaluations (patterns)"),
                          strict=True):
        ax.set(xlabel=xlabel, ylabel=label)
        ax.grid(True, alpha=0.3)
        if loss:
            ax.set_yscale("log")
    axes[0].set_title(f"{label} vs iteration (mean over seeds, band: 95 % CI)", fontsize=10)
    axes[1].set_title(f"{label} vs wall time")
    axes[2].set_title(f"{label} vs work")
    axes[0].legend(fontsize=7)
    return h.figure_tag(fig, f"convergence of {label}")


def _run_rows(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]], out_dir: Path):
    by_key = {row["key"]: row for row in rows}
    columns = ["run", "setting", "seed", *spec.metrics, *SUMMARY_EXTRA, "iterations"]
    table_rows = []
    for run in runs:
        row = by_key.get(run.key, {})
        page = Path("runs") / run.key / REPORT_NAME
        name = h.link(run.key, page.as_posix()) if (out_dir / page).exists() else run.key
        table_rows.append([name, run.setting, run.seed, *(row.get(c) for c in columns[3:])])
    return columns, table_rows


def render_report_html(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]], out_dir: Path,
                       tables: StudyTables, curves: dict[str, dict[str, list[Curve]]]) -> str:
    parts = []
    if spec.description.strip():
        parts.append(h.paragraph(spec.description.strip()))
    parts.append(h.paragraph(study_summary_line(spec, runs, rows).replace("`", "")))
    parts.append(h.section("Summary", h.paragraph(CI_NOTE, "note"),
                           h.table(["setting", "n", *tables.columns], tables.summary)))
    if tables.best is not None:
        parts.append(h.section(best_heading(tables), h.paragraph(comparison_note(spec).replace("*", ""), "note"),
                               h.table(["other setting", f"{tables.primary} difference (best − other)", "p", "test",
                                        "n"], tables.comparison_rows())))
    if spec.time_to:
        columns, cells = time_to_table(spec, runs, curves)
        parts.append(h.section("Time to accuracy", h.paragraph(TIME_TO_NOTE, "note"), h.table(columns, cells)))
    figures = [curve_figure(name, curves[name]) for name in [*spec.metrics, LOSS_CURVE] if curves.get(name)]
    parts.append(h.section("Convergence", *figures) if figures else h.section(
        "Convergence", h.paragraph("no curves: the runs logged no metrics (output.metrics_every) and wrote no "
                                   "snapshots (output.snapshot_every)", "note")))
    interpretation = out_dir / INTERPRETATION
    if interpretation.exists():
        parts.append(h.section("Interpretation", h.preformatted(interpretation.read_text().strip(), "text")))
    columns, run_rows = _run_rows(spec, runs, rows, out_dir)
    parts.append(h.section("Runs", h.details(f"{len(runs)} runs (links: each run's dashboard)",
                                             h.table(columns, run_rows))))
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    parts.append(h.section("Settings", h.details("study spec (YAML)", h.preformatted(spec_yaml))))
    return h.page(f"ptyopt study: {spec.name}", *parts)


def write_report_html(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]], out_dir: Path,
                      tables: StudyTables, curves: dict[str, dict[str, list[Curve]]]) -> Path:
    """Write OUT/report.html atomically; returns its path."""
    return h.write_page(Path(out_dir) / REPORT_HTML,
                        render_report_html(spec, runs, rows, out_dir, tables, curves))
