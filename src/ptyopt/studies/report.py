"""Study report: mean ± 95 % confidence interval per setting, a paired test of the best setting against each
other one, and convergence plots (metric vs iteration and vs wall time)."""

from __future__ import annotations

import math
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


def _histories(out_dir: Path, runs: list[RunSpec], metric: str) -> dict[str, list[tuple[np.ndarray, ...]]]:
    """Per setting, each run's (iterations, wall times, metric values, forward evaluations): logged during the run
    (output.metrics_every), or else scored from its snapshots (output.snapshot_every)."""
    from ptyopt.io.result_file import read_result
    from ptyopt.studies.runner import run_dir
    from ptyopt.studies.snapshots import snapshot_scores

    curves: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for run in runs:
        path = run_dir(out_dir, run) / "result.h5"
        if not path.exists():
            continue
        history = read_result(path).history
        if f"metric_{metric}" in history:
            at = np.searchsorted(history["iteration"], history["metric_iteration"])
            work = (history["forward_evaluations"][at] if "forward_evaluations" in history
                    else np.full(len(at), np.nan))
            curves.setdefault(run.setting, []).append(
                (history["metric_iteration"], history["metric_wall_time_s"], history[f"metric_{metric}"], work))
        elif (scored := snapshot_scores(path.parent, metric)) is not None:  # scored now, from the run's snapshots
            curves.setdefault(run.setting, []).append(scored)
    return curves


def convergence_figure(out_dir: Path, runs: list[RunSpec], metric: str) -> Path | None:
    """Mean over seeds of ``metric`` vs iteration, vs loop wall time and vs forward-model evaluations (patterns
    pushed through the model, the device-independent cost), one line per setting."""
    curves = _histories(out_dir, runs, metric)
    if not curves:
        return None
    fig, (ax_it, ax_t, ax_w) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    for setting, items in curves.items():
        n = min(len(c[0]) for c in items)
        iterations = items[0][0][:n]
        times = np.mean([c[1][:n] for c in items], axis=0)
        work = np.mean([c[3][:n] for c in items], axis=0)
        values = np.array([c[2][:n] for c in items])
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


def write_report(spec: StudySpec, runs: list[RunSpec], rows: list[dict[str, Any]], out_dir: Path) -> Path:
    settings = list(dict.fromkeys(run.setting for run in runs))
    metrics = list(spec.metrics)
    columns = metrics + ["final_loss", "loop_time_s", "forward_evaluations"]
    lines = [f"# Study: {spec.name}", "", spec.description.strip(), "",
             f"{len(settings)} settings × {len(spec.seeds)} seeds (seeds {spec.seeds}) = {len(rows)} runs; "
             f"base config `{spec.base_config}`; overrides `{spec.overrides}`.", "",
             "Values are mean ± half-width of the 95 % confidence interval (Student t over seeds).", "",
             "| setting | n | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for setting in settings:
        mine = [r for r in rows if r["setting"] == setting]
        cells = [_fmt(*mean_ci95([r.get(c) for r in mine])) for c in columns]
        lines.append(f"| {setting} | {len(mine)} | " + " | ".join(cells) + " |")
    primary = metrics[0]
    if len(settings) > 1:
        best, tests = compare_to_best(rows, settings, primary)
        direction = "higher" if HIGHER_IS_BETTER[primary] else "lower"
        lines += ["", f"## Best setting by {primary} ({direction} is better): {best}", "",
                  "Two-sided paired t-test over shared seeds (Welch's t-test where fewer than two seeds are shared); "
                  f"with {len(spec.seeds)} seeds the test has little power, so p > 0.05 means *not shown*, "
                  "not *equal*.", "",
                  f"| other setting | {primary} difference (best − other) | p | test | n |", "|---|---|---|---|---|"]
        for t in tests:
            lines.append(f"| {t['setting']} | {t['difference']:.4g} | {t['p_value']:.3g} | {t['test']} | {t['n']} |")
    figures = [convergence_figure(out_dir, runs, metric) for metric in metrics]
    figures = [f for f in figures if f is not None]
    if figures:
        lines += ["", "## Convergence", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    interpretation = out_dir / INTERPRETATION
    if interpretation.exists():
        lines += ["", "## Interpretation", "", interpretation.read_text().strip()]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
