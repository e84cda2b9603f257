"""The study's report.html beside report.md: the same tables and tests (from the same data), mean ± 95 % CI
curves vs iteration, wall time and work per setting, links to each run's dashboard; self-contained, and it opens
in headless Chromium with a clean console and a page that is not blank."""

import re

import numpy as np
import pytest
import yaml

from ptyopt.demo import demo_config_path
from ptyopt.studies import runner
from ptyopt.studies.report import mean_ci95, write_report
from ptyopt.studies.report_html import mean_and_band
from ptyopt.studies.spec import expand_runs, load_spec
from tests.html_check import assert_renders_in_chromium, assert_self_contained


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """2 settings × 2 seeds of 2 iterations with metrics every iteration: (spec, runs, rows, out folder)."""
    folder = tmp_path_factory.mktemp("study")
    raw = {"name": "html", "description": "Does a larger phase step help?", "base_config": str(demo_config_path()),
           "overrides": {"solver.iterations": 2, "solver.batch_size": 96, "model.n_slices": 1,
                         "model.slice_thickness_ang": 15.62, "model.probe_modes": 1, "output.metrics_every": 1},
           "axes": {"optimize.object_phase.lr": [1e-3, 2e-3]}, "seeds": [0, 1]}
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    spec, base = load_spec(folder / "spec.yaml")
    runs = expand_runs(spec, base)
    out = folder / "out"
    rows = runner.run_study(spec, runs, out)
    (out / "interpretation.md").write_text("The larger step converges faster & ends higher.")
    write_report(spec, runs, rows, out)
    return spec, runs, rows, out


def test_the_html_report_has_the_tables_tests_and_curves(study):
    spec, runs, rows, out = study
    text = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert "<h1>ptyopt study: html</h1>" in text and "Does a larger phase step help?" in text
    # the summary rows hold the report.md cells: same numbers, same rounding
    for setting in ("lr=0.001", "lr=0.002"):
        cells = next(line for line in markdown.splitlines() if line.startswith(f"| {setting} |")).split(" | ")[1:]
        html_row = re.search(rf"<tr><td>{re.escape(setting)}</td>(.*?)</tr>", text).group(1)
        assert re.findall(r"<td[^>]*>(.*?)</td>", html_row) == [c.strip(" |") for c in cells]
    pearson = [r["pearson_r"] for r in rows if r["setting"] == "lr=0.001"]
    mean, half = mean_ci95(pearson)
    assert f"{mean:.4g} ± {half:.2g}" in text
    assert "Best setting by pearson_r (higher is better)" in text and "paired t" in text
    for name in ("pearson_r", "rmse_rad", "total loss"):
        assert f'alt="convergence of {name}"' in text, name
    assert "The larger step converges faster &amp; ends higher." in text
    assert text.count('<a href="runs/') == len(runs) and all((out / "runs" / r.key / "report.html").exists()
                                                             for r in runs)
    assert "http-equiv" not in text
    assert_self_contained(text)


def test_the_band_is_the_confidence_interval_over_seeds():
    values = np.array([[1.0, 2.0, 3.0], [2.0, 2.5, 5.0], [3.0, 4.0, 4.0]])
    mean, half = mean_and_band(values)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(half, [mean_ci95(list(values[:, i]))[1] for i in range(3)])
    assert np.isnan(mean_and_band(values[:1])[1]).all()  # one seed: no band


def test_the_study_report_renders_in_chromium(study, tmp_path):
    assert_renders_in_chromium(study[3] / "report.html", tmp_path)
