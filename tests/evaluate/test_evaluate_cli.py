import json

import pytest
from typer.testing import CliRunner

from ptyopt.cli import app

runner = CliRunner()


def strict_json(text: str):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_evaluate_writes_strict_json_and_a_figure(synthetic_run, tmp_path):
    out_json, figure = tmp_path / "metrics.json", tmp_path / "eval.png"
    result = runner.invoke(app, ["evaluate", str(synthetic_run["result_path"]), "--truth",
                                 str(synthetic_run["data_path"]), "--json", str(out_json), "--figure", str(figure),
                                 "--margin-ang", "1.0"])
    assert result.exit_code == 0, result.output
    metrics = strict_json(out_json.read_text())
    assert metrics["pearson_r"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["data_r_factor"] < 1e-6 and metrics["margin_ang"] == 1.0
    assert metrics["truth"] == str(synthetic_run["data_path"])
    assert figure.stat().st_size > 10_000
    assert "data R-factor" in result.output and "probe overlap" in result.output


def test_evaluate_default_figure_and_half_dataset_compare(synthetic_run, tmp_path):
    import shutil

    result_path = shutil.copy(synthetic_run["result_path"], tmp_path / "result.h5")
    out_json = tmp_path / "compare.json"
    result = runner.invoke(app, ["evaluate", str(result_path), "--compare", str(synthetic_run["result_path"]),
                                 "--json", str(out_json), "--margin-ang", "1.0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "evaluation.png").stat().st_size > 10_000
    payload = strict_json(out_json.read_text())
    assert payload["truth"] is None and payload["compare"]["frc_resolution_ang"] is None
    assert payload["compare"]["pearson_r"] == pytest.approx(1.0, abs=1e-9)
    assert "half-dataset FRC" in result.output


def test_evaluate_bad_files_exit_2_with_a_message(synthetic_run, tmp_path):
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope.h5"), "--truth", str(synthetic_run["data_path"])])
    assert missing.exit_code == 2 and "no result file" in missing.output
    text = tmp_path / "notes.txt"
    text.write_text("not a result")
    foreign = runner.invoke(app, ["evaluate", str(text), "--truth", str(synthetic_run["data_path"])])
    assert foreign.exit_code == 2 and "not a ptyopt result file" in foreign.output
    dataset_as_result = runner.invoke(app, ["evaluate", str(synthetic_run["data_path"]), "--truth",
                                            str(synthetic_run["data_path"])])
    assert dataset_as_result.exit_code == 2 and "not a ptyopt result file" in dataset_as_result.output
    no_truth = runner.invoke(app, ["evaluate", str(synthetic_run["result_path"]), "--truth", str(tmp_path / "x.h5")])
    assert no_truth.exit_code == 2 and "dataset file not found" in no_truth.output
    nothing = runner.invoke(app, ["evaluate", str(synthetic_run["result_path"])])
    assert nothing.exit_code == 2 and "--truth" in nothing.output
    for result in (missing, foreign, dataset_as_result, no_truth, nothing):
        assert "Traceback" not in result.output
