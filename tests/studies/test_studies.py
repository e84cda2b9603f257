import csv
import math

import numpy as np
import pytest
import yaml
from scipy import stats

from ptyopt.demo import demo_config_path
from ptyopt.errors import ConfigError
from ptyopt.studies import runner
from ptyopt.studies.report import compare_to_best, mean_ci95, write_report
from ptyopt.studies.spec import expand_runs, load_spec, settings_of

TIME_COLUMNS = {"loop_time_s", "process_time_s"}


def _spec(tmp_path, **changes):
    raw = {
        "name": "t",
        "base_config": str(demo_config_path()),
        "overrides": {"solver.iterations": 1, "solver.batch_size": 96, "model.n_slices": 1,
                      "model.slice_thickness_ang": 15.62, "model.probe_modes": 1, "output.metrics_every": 1},
        "mode": "grid",
        "axes": {"solver.grouping": ["random", "compact"], "optimize.object_phase.lr": [1e-3, 2e-3]},
        "seeds": [0, 1],
    } | changes
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def _read(path):
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(handle)]


def test_settings_grid_zip_named(tmp_path):
    spec, base = _spec(tmp_path)
    assert [s for s, _ in settings_of(spec)] == [
        "grouping=random, lr=0.001", "grouping=random, lr=0.002", "grouping=compact, lr=0.001",
        "grouping=compact, lr=0.002"]
    runs = expand_runs(spec, base)
    assert len(runs) == 8 and len({r.key for r in runs}) == 8
    assert runs[1].config["seed"] == 1 and runs[0].config["solver"]["grouping"] == "random"
    zipped, base = _spec(tmp_path, mode="zip")
    assert len(settings_of(zipped)) == 2
    named, base = _spec(tmp_path, mode="named", axes={}, settings=[
        {"name": "cosine", "values": {"loss.pacbed.weight": {"kind": "cosine", "start_value": 0.5, "end_value": 0,
                                                             "start_iter": 1, "end_iter": 10}}}])
    run = expand_runs(named, base)[0]
    assert run.config["loss"]["pacbed"]["weight"]["kind"] == "cosine"


def test_bad_specs_fail_before_running(tmp_path):
    spec, base = _spec(tmp_path, axes={"solver.grupping": ["random"]})
    with pytest.raises(ConfigError, match="did you mean 'grouping'"):
        expand_runs(spec, base)
    with pytest.raises(ConfigError, match="did you mean 'pearson_r'"):
        _spec(tmp_path, metrics=["pearson"])
    spec, base = _spec(tmp_path)
    with pytest.raises(ConfigError, match="unknown profile"):
        expand_runs(spec, base, "posterr")
    with pytest.raises(ConfigError, match="same number of values"):
        _spec(tmp_path, mode="zip", axes={"solver.grouping": ["random"], "seed": [1, 2]})


def test_interrupted_study_resumes_without_repeating(tmp_path, monkeypatch):
    spec, base = _spec(tmp_path, time_to={"pearson_r": [-1.0, 2.0]})
    runs = expand_runs(spec, base)
    executed = []
    original = runner.execute_run

    def counting(run, out_dir, threads):
        executed.append(run.key)
        return original(run, out_dir, threads)

    monkeypatch.setattr(runner, "execute_run", counting)
    out = tmp_path / "study"

    def stop_after_three(row):
        if len(executed) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_study(spec, runs, out, on_row=stop_after_three)
    assert sum(runner.is_finished(out, r) for r in runs) == 3
    rows = runner.run_study(spec, runs, out)
    assert sorted(executed) == sorted(r.key for r in runs)  # every run exactly once over both invocations
    assert [row["key"] for row in rows] == [r.key for r in runs]
    report = write_report(spec, runs, rows, out)
    text = report.read_text()
    assert "95 % confidence" in text and "paired t" in text and "convergence_pearson_r.png" in text
    assert "## Time to accuracy" in text and "it 1 (2/2)" in text and "not reached (0/2)" in text
    html = (out / "report.html").read_text()
    assert "Time to accuracy" in html and "not reached (0/2)" in html  # the same cells in the dashboard


def test_time_to_accuracy_table_from_curves():
    from ptyopt.studies.report import time_to_table
    from ptyopt.studies.spec import RunSpec, StudySpec

    spec = StudySpec(name="t", base_config="b.yaml", mode="named", settings=[{"name": "a", "values": {}}],
                     seeds=[0, 1], time_to={"pearson_r": [0.9], "rmse_rad": [0.1]})
    runs = [RunSpec("a", {}, seed, {}) for seed in (0, 1)]
    its = np.array([1, 2, 3])
    curves = {"pearson_r": {"a": [(its, np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.95, 0.99]), its),
                                  (its, np.array([2.0, 4.0, 6.0]), np.array([0.5, 0.6, 0.91]), its)]},
              "rmse_rad": {"a": [(its, np.array([1.0, 2.0, 3.0]), np.array([0.3, 0.2, 0.15]), its)] * 2}}
    columns, rows = time_to_table(spec, runs, curves)
    assert columns == ["setting", "pearson_r ≥ 0.9", "rmse_rad ≤ 0.1"]
    mean, half = mean_ci95([2.0, 6.0])
    assert rows == [["a", f"{mean:.4g} ± {half:.2g} s, it 2.5 (2/2)", "not reached (0/2)"]]


@pytest.mark.slow
def test_dask_cluster_matches_process_executor(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec, base = _spec(tmp_path)
    runs = expand_runs(spec, base)
    runner.run_study(spec, runs, tmp_path / "local", workers=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        runner.run_study(spec, runs, tmp_path / "dask", scheduler=cluster.scheduler_address)
    local, dask = _read(tmp_path / "local" / "results.csv"), _read(tmp_path / "dask" / "results.csv")
    assert len(local) == 8 and local == dask


def test_statistics_against_formulas():
    values = [0.9, 0.92, 0.95]
    mean, half = mean_ci95(values)
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3))
    assert math.isnan(mean_ci95([0.5])[1])
    rows = [{"setting": s, "seed": k, "pearson_r": v}
            for s, vals in {"a": [0.90, 0.91, 0.92], "b": [0.80, 0.83, 0.81]}.items() for k, v in enumerate(vals)]
    best, tests = compare_to_best(rows, ["a", "b"], "pearson_r")
    assert best == "a" and tests[0]["test"] == "paired t"
    assert tests[0]["p_value"] == pytest.approx(stats.ttest_rel([0.90, 0.91, 0.92], [0.80, 0.83, 0.81]).pvalue)
    best, _ = compare_to_best([{**r, "rmse_rad": r["pearson_r"]} for r in rows], ["a", "b"], "rmse_rad")
    assert best == "b"  # lower is better for errors


def test_shipped_study_specs_expand():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "studies"
    counts = {}
    for path in sorted(root.glob("*.yaml")):
        spec, base = load_spec(path)
        runs = expand_runs(spec, base)
        counts[spec.name] = len(runs)
        # scan_distortion's settings choose their own simulated datasets (data.path), so it has no poster scale
        assert len(spec.seeds) >= 3 and ("poster" in spec.profiles or spec.name == "scan_distortion")
    assert counts == {"batch_geometry": 27, "late_refinement": 18, "loss_scheduling": 15, "solvers": 12,
                      "second_order": 15, "scan_distortion": 48, "loss_design": 42, "recipes": 60}


def test_the_report_scores_snapshots_of_runs_that_logged_no_metrics(tmp_path):
    """output.metrics_every 0 and snapshot_every 1: the convergence figure comes from scoring the snapshots after
    the runs, and the last snapshot's score is the run's own final metric (on the run's scan region)."""
    spec, base = _spec(tmp_path, axes={"solver.grouping": ["random"]}, seeds=[0],
                       overrides={"solver.iterations": 2, "solver.batch_size": 96, "model.n_slices": 1,
                                  "model.slice_thickness_ang": 15.62, "model.probe_modes": 1,
                                  "output.metrics_every": 0, "output.snapshot_every": 1,
                                  "data.scan_region": [[4, 20], [4, 20]]})
    runs = expand_runs(spec, base)
    rows = runner.run_study(spec, runs, tmp_path / "study")
    from ptyopt.studies.snapshots import snapshot_scores

    iterations, times, values, work = snapshot_scores(runner.run_dir(tmp_path / "study", runs[0]), "pearson_r")
    assert list(iterations) == [1, 2] and times[1] > times[0] > 0 and work[1] > work[0] > 0
    assert values[-1] == pytest.approx(rows[0]["pearson_r"], abs=1e-12)
    text = write_report(spec, runs, rows, tmp_path / "study").read_text()
    assert "convergence_pearson_r.png" in text and (tmp_path / "study" / "convergence_pearson_r.png").exists()
