"""`ptyopt bench --time-to-accuracy`: thresholds against a known history, the CLI's table and JSON, refusals."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ptyopt.bench_accuracy import first_reached
from ptyopt.cli import app

runner = CliRunner()


def test_first_reached_against_a_known_history():
    its, times, r = np.array([1, 2, 3, 4]), np.array([0.5, 1.0, 1.5, 2.0]), np.array([0.9, 0.97, 0.96, 0.99])
    assert first_reached(its, times, r, 0.95) == (2, 1.0)
    assert first_reached(its, times, r, 0.99) == (4, 2.0)
    assert first_reached(its, times, r, 0.995) == (None, None)
    assert first_reached(its, times, 1 - r, 0.035, higher_is_better=False) == (2, 1.0)
    assert first_reached(its, times, 1 - r, 0.02, higher_is_better=False) == (4, 2.0)


def _config(tmp_path, data_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"path": str(data_path)}, "model": {"n_slices": 2, "slice_thickness_ang": 3.905},
        "solver": {"name": "lsqml", "iterations": 3, "batch_size": 16},
        "output": {"dir": str(tmp_path / "unused"), "metric_margin_ang": 0.5}}))
    return path


def test_time_to_accuracy_cli_writes_the_table_and_the_json_record(tiny_dataset_path, tmp_path):
    config = _config(tmp_path, tiny_dataset_path)
    out = tmp_path / "tta.json"
    result = runner.invoke(app, ["bench", "--time-to-accuracy", str(config), "--r", "0.1,0.9999",
                                 "--max-iterations", "2", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "not reached" in result.output and "lsqml" in result.output
    record = json.loads(out.read_text())
    assert record["schema_version"] == 1 and record["mode"] == "time-to-accuracy" and record["iterations"] == 2
    assert record["history"]["iteration"] == [1, 2] and len(record["history"]["pearson_r"]) == 2
    low, high = record["thresholds"]
    assert low["pearson_r"] == 0.1 and low["iteration"] == 1 and low["time_s"] == pytest.approx(
        record["history"]["time_s"][0])
    work = record["history"]["forward_evaluations"]
    assert low["forward_evaluations"] == work[0] > 0 and work[1] > work[0]  # patterns evaluated until then
    assert high == {"pearson_r": 0.9999, "iteration": None, "time_s": None, "forward_evaluations": None}
    assert not (tmp_path / "unused").exists()  # the run's outputs went to a temporary folder


def test_time_to_accuracy_refuses_data_without_truth_and_bad_thresholds(tiny_dataset_path, tmp_path):
    from ptyopt.data import read_dataset, write_dataset

    no_truth = write_dataset(tmp_path / "no_truth.h5", read_dataset(tiny_dataset_path).replace(truth=None))
    result = runner.invoke(app, ["bench", "--time-to-accuracy", str(_config(tmp_path, no_truth))])
    assert result.exit_code == 2 and "no ground truth" in result.output
    result = runner.invoke(app, ["bench", "--time-to-accuracy", str(_config(tmp_path, tiny_dataset_path)),
                                 "--r", "1.5"])
    assert result.exit_code == 2 and "thresholds in (0, 1]" in result.output
