"""Study report: mean ± 95 % confidence interval per setting, a paired test of the best setting against each
other one, and convergence plots (metric vs iteration, vs wall time and vs forward evaluations): report.md for
git diffs, report.html (``report_html``) to read, both from the same tables and curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from ptyopt.studies.spec import HIGHER_IS_BETTER, RunSpec, StudySpec  # noqa: E402

INTERPRETATION = "interpretation.md"


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student t, n - 1 degrees of freedom)."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1:
        return float(data[0]), math.nan
    half = stats.t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size)
    return float(data.mean()), float(half)


def compare_to_best(rows: list[dict[str, Any]], settings: list[str], metric: str) -> tuple[str, list[dict]]:
    """The best setting by mean ``metric`` and, for each other setting, a two-sided paired t-test over the seeds
    both share (Welch's unpaired t-test when they share fewer than two)."""
    by_setting = {s: {r["seed"]: r.get(metric) for r in rows if r["setting"] == s} for s in settings}
    means = {s: mean_ci95(list(v.values()))[0] for s, v in by_setting.items()}
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    best = max((s for s in settings if math.isfinite(means[s])), key=lambda s: sign * means[s])
    tests = []
    for other in settings:
        if other == best:
            continue
        shared = sorted(set(by_setting[best]) & set(by_setting[other]))
        a = [by_setting[best][seed] for seed in shared]
        b = [by_setting[other][seed] for seed in shared]
        if len(shared) >= 2:
            result, test = stats.ttest_rel(a, b), "paired t"
        else:
            result = stats.ttest_ind(list(by_setting[best].values()), list(by_setting[other].values()),
                                     equal_var=False)
            test = "Welch t"
        tests.append({"setting": other, "difference": means[best] - means[other], "p_value": float(result.pvalue),
                      "test": test, "n": len(shared)})
    return best, tests


Curve = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # iterations, wall times [s], values, work
LOSS_CURVE = "total"  # the weighted total loss, beside the metrics


def run_curves(out_dir: Path, runs: list[RunSpec], metrics: list[str]) -> dict[str, dict[str, list[Curve]]]:
    """Per curve (each metric, and LOSS_CURVE), per setting, each run's (iterations, wall times, values, forward
    evaluations): metrics logged during the run (output.metrics_every) or else scored from its snapshots
    (output.snapshot_every); the loss at every iteration. Each result file is read once."""
    from ptyopt.io.result_file import read_result
    from ptyopt.studies.runner import run_dir
    from ptyopt.studies.snapshots import snapshot_scores

    curves: dict[str, dict[str, list[Curve]]] = {name: {} for name in [*metrics, LOSS_CURVE]}
    for run in runs:
        path = run_dir(out_dir, run) / "result.h5"
        if not path.exists():
            continue
        history = read_result(path).history
        work = history.get("forward_evaluations", np.full(len(history.get("iteration", [])), np.nan))
        for metric in metrics:
            if f"metric_{metric}" in history:
                at = np.searchsorted(history["iteration"], history["metric_iteration"])
                curves[metric].setdefault(run.setting, []).append(
                    (history["metric_iteration"], history["metric_wall_time_s"], history[f"metric_{metric}"],
                     work[at]))
            elif (scored := snapshot_scores(path.parent, metric)) is not None:  # scored now, from the snapshots
                curves[metric].setdefault(run.setting, []).append(scored)
        if LOSS_CURVE in history:
            curves[LOSS_CURVE].setdefault(run.setting, []).append(
                (history["iteration"], history["wall_time_s"], history[LOSS_CURVE], work))
    return curves


def aligned(items: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A setting's runs cut to their common length: iterations (n,), mean wall times (n,), mean work (n,) and
    the values (runs, n)."""
    n = min(len(c[0]) for c in items)
    return (items[0][0][:n], np.mean([c[1][:n] for c in items], axis=0), np.mean([c[3][:n] for c in items], axis=0),
            np.array([c[2][:n] for c in items]))


def convergence_figure(out_dir: Path, metric: str, curves: dict[str, list[Curve]]) -> Path | None:
    """Mean over seeds of ``metric`` vs iteration, vs loop wall time and vs forward-model evaluations (patterns
    pushed through the model, the device-independent cost), one line per setting."""
    if not curves:
        return None
    fig, (ax_it, ax_t, ax_w) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for setting, items in curves.items():
        iterations, times, work, values = aligned(items)
        line = ax_it.plot(iterations, values.mean(0), label=setting)[0]
        ax_it.fill_between(iterations, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
        ax_t.plot(times, values.mean(0), color=line.get_color())
        ax_w.plot(work, values.mean(0), color=line.get_color())
    ax_it.set(xlabel="iteration", ylabel=metric, title=f"{metric} vs iteration (band: min-max over seeds)")
    ax_t.set(xlabel="loop wall time (s)", ylabel=metric, title=f"{metric} vs wall time (mean over seeds)")
    ax_w.set(xlabel="forward-model evaluations (patterns)", ylabel=metric, title=f"{metric} vs work")
    ax_it.legend(fontsize=7)
    path = out_dir / f"convergence_{metric}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.4g} ± {half:.2g}" if math.isfinite(half) else f"{mean:.4g}"


SUMMARY_EXTRA = ["final_loss", "loop_time_s", "forward_evaluations"]  # summary columns after the metrics


@dataclass
class StudyTables:
    """The report's tables as data (report.md and report.html render the same numbers): summary columns (after
    'setting' and 'n') and one row per setting of formatted mean ± CI cells; the best setting by the primary
    metric and the tests of it against each other setting (None and [] with a single setting)."""

    columns: list[str]
    summary: list[list[str]]
    primary: str
    best: str | None
    tests: list[dict[str, Any]]

    def comparison_rows(self) -> list[list[str]]:
        return [[t["setting"], f"{t['difference']:.4g}", f"{t['p_value']:.3g}", t["test"], str(t["n"])]
                for t in self.tests]


def study_tables(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]]) -> StudyTables:
    settings = list(dict.fromkeys(run.setting for run in runs))
    columns = list(spec.metrics) + SUMMARY_EXTRA
    summary = []
    for setting in settings:
        mine = [r for r in rows if r["setting"] == setting]
        summary.append([setting, str(len(mine)), *(_fmt(*mean_ci95([r.get(c) for r in mine])) for c in columns)])
    primary = spec.metrics[0]
    best, tests = compare_to_best(rows, settings, primary) if len(settings) > 1 else (None, [])
    return StudyTables(columns, summary, primary, best, tests)


def study_summary_line(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]]) -> str:
    settings = len(dict.fromkeys(run.setting for run in runs))
    return (f"{settings} settings × {len(spec.seeds)} seeds (seeds {spec.seeds}) = {len(rows)} runs; "
            f"base config `{spec.base_config}`; overrides `{spec.overrides}`.")


CI_NOTE = "Values are mean ± half-width of the 95 % confidence interval (Student t over seeds)."


def comparison_note(spec: StudySpec) -> str:
    return ("Two-sided paired t-test over shared seeds (Welch's t-test where fewer than two seeds are shared); "
            f"with {len(spec.seeds)} seeds the test has little power, so p > 0.05 means *not shown*, not *equal*.")


def best_heading(tables: StudyTables) -> str:
    direction = "higher" if HIGHER_IS_BETTER[tables.primary] else "lower"
    return f"Best setting by {tables.primary} ({direction} is better): {tables.best}"


TIME_TO_NOTE = ("Loop time (iterations only: not start-up, scoring or checkpoints) and iteration at which each "
                "run first reached the threshold, mean ± 95 % CI over the runs that reached it; k/n = how many "
                "of the n seeds did.")


def time_to_table(spec: StudySpec, runs: list[RunSpec],
                  curves: dict[str, dict[str, list[Curve]]]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows (formatted cells): per setting, per (metric, threshold) of ``spec.time_to``, the time and
    iteration to reach it (report.md and report.html render the same cells)."""
    from ptyopt.bench_accuracy import first_reached

    targets = [(metric, threshold) for metric, thresholds in spec.time_to.items() for threshold in thresholds]
    columns = ["setting", *(f"{m} {'≥' if HIGHER_IS_BETTER[m] else '≤'} {t:g}" for m, t in targets)]
    rows = []
    for setting in dict.fromkeys(run.setting for run in runs):
        cells = [setting]
        for metric, threshold in targets:
            items = curves.get(metric, {}).get(setting, [])
            hits = [first_reached(c[0], c[1], c[2], threshold, HIGHER_IS_BETTER[metric]) for c in items]
            reached = [hit for hit in hits if hit[0] is not None]
            if not reached:
                cells.append(f"not reached (0/{len(items)})")
                continue
            time_s, half = mean_ci95([hit[1] for hit in reached])
            iteration = float(np.mean([hit[0] for hit in reached]))
            cells.append(f"{_fmt(time_s, half)} s, it {iteration:.3g} ({len(reached)}/{len(items)})")
        rows.append(cells)
    return columns, rows


def write_report(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """OUT/report.md (for git diffs) and, beside it, the self-contained OUT/report.html (tables, tests and mean ±
    95 % CI curves); returns the report.md path."""
    from ptyopt.studies.report_html import write_report_html

    tables = study_tables(spec, runs, rows)
    lines = [f"# Study: {spec.name}", "", spec.description.strip(), "", study_summary_line(spec, runs, rows), "",
             CI_NOTE, "", "| setting | n | " + " | ".join(tables.columns) + " |",
             "|---|---|" + "---|" * len(tables.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in tables.summary]
    if tables.best is not None:
        lines += ["", f"## {best_heading(tables)}", "", comparison_note(spec), "",
                  f"| other setting | {tables.primary} difference (best − other) | p | test | n |",
                  "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in tables.comparison_rows()]
    curves = run_curves(out_dir, runs, list(dict.fromkeys([*spec.metrics, *spec.time_to])))
    if spec.time_to:
        columns, cells = time_to_table(spec, runs, curves)
        lines += ["", "## Time to accuracy", "", TIME_TO_NOTE, "",
                  "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
    figures = [convergence_figure(out_dir, metric, curves[metric]) for metric in spec.metrics]
    figures = [f for f in figures if f is not None]
    if figures:
        lines += ["", "## Convergence", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    interpretation = out_dir / INTERPRETATION
    if interpretation.exists():
        lines += ["", "## Interpretation", "", interpretation.read_text().strip()]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    write_report_html(spec, runs, rows, out_dir, tables, curves)
    return path
