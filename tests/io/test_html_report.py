"""The run dashboard OUT/report.html: written at each checkpoint while the run goes on, final when it ends,
self-contained, replaced by --overwrite, continued by --resume; the learning rates it plots are logged as
lr_<tensor>; and it opens in headless Chromium with a clean console and a page that is not blank."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from ptyopt.config import parse_config
from ptyopt.engine import Interrupted
from ptyopt.io.html_page import array_tag, format_number, page, table
from ptyopt.io.run_report import MAX_THUMBNAILS, pick_evenly
from ptyopt.reconstruct import OUTPUT_NAMES, clear_run, run_reconstruction
from tests.html_check import assert_renders_in_chromium, assert_self_contained, screenshot_problems

pytestmark = pytest.mark.abtem

PROBE_LR = {"kind": "linear", "start_value": 1e-3, "end_value": 1e-4, "start_iter": 1, "end_iter": 4}


@pytest.fixture(scope="module")
def watched_run(tiny_dataset_path, tmp_path_factory):
    """A 4-iteration run (checkpoints at 2 and 4, snapshots every iteration, truth metrics every 2) whose page is
    read by a callback after each iteration: (RunOutput, {iteration: page text})."""
    out = tmp_path_factory.mktemp("watched") / "run"
    config = parse_config({
        "data": {"path": str(tiny_dataset_path)},
        "model": {"n_slices": 2, "slice_thickness_ang": 3.905, "aperture_edge": "hard"},
        "solver": {"iterations": 4, "batch_size": 8},
        "optimize": {"probe": {"lr": PROBE_LR, "start_iter": 2}},
        "output": {"dir": str(out), "checkpoint_every": 2, "metrics_every": 2, "snapshot_every": 1,
                   "metric_margin_ang": 0.5},
    })
    seen = {}

    def read_page(engine, iteration):
        seen[iteration] = (out / "report.html").read_text()

    run = run_reconstruction(config, out_dir=out, show_progress=False, callbacks=[read_page])
    return run, seen


def test_the_page_is_rewritten_at_checkpoints_while_the_run_goes_on(watched_run):
    _, seen = watched_run
    assert "running: iteration 0 of 4" in seen[1]  # the start page, before the first checkpoint
    running = seen[2]
    assert "running: iteration 2 of 4" in running and '<meta http-equiv="refresh" content="30">' in running
    assert 'alt="loss terms"' in running and 'alt="learning rates"' in running and 'alt="loss weights"' in running
    assert 'alt="phase at iteration 2"' in running and "Final figures" not in running
    assert seen[3] == running  # iteration 3 is no checkpoint: the page waits for the next one


def test_the_final_page_is_complete_and_self_contained(watched_run):
    run, _ = watched_run
    assert run.files["report"] == run.out_dir / "report.html"
    text = run.files["report"].read_text()
    assert "finished after 4 iterations in" in text and "http-equiv" not in text and "running:" not in text
    for alt in ("loss terms", "loss weights", "learning rates", "truth metrics", "object phase (slice sum)",
                "probe modes", "scan positions", "loss terms"):
        assert f'alt="{alt}"' in text, alt
    assert [int(i) for i in re.findall(r'alt="phase at iteration (\d+)"', text)] == [1, 2, 3, 4]  # the snapshots
    assert "Against the truth (final)" in text and f"{run.metrics['pearson_r']:.4g}" in text
    assert "<details><summary>resolved config (YAML)</summary><pre>" in text and "slice_thickness_ang" in text
    assert_self_contained(text)


def test_learning_rates_are_logged_as_scheduled(watched_run):
    history = watched_run[0].result.history
    probe = [0.0] + [PROBE_LR["start_value"] + (PROBE_LR["end_value"] - PROBE_LR["start_value"]) * (i - 1) / 3
                     for i in (2, 3, 4)]  # frozen before start_iter 2: logged as 0
    np.testing.assert_allclose(history["lr_probe"], probe, rtol=1e-12)
    np.testing.assert_allclose(history["lr_object_phase"], 5e-4)  # the default, constant
    assert "lr_tilts" not in history  # start_iter null: never refined, no rate
    per_iteration = [k for k in history if not k.startswith(("metric_", "validation_"))]
    assert {len(history[k]) for k in per_iteration} == {4}


def test_learning_rates_follow_a_torch_lr_scheduler(tiny_config, tmp_path):
    config = tiny_config(solver={"iterations": 3, "lr_scheduler": {"name": "StepLR",
                                                                   "options": {"step_size": 1, "gamma": 0.5}}},
                         optimize={"object_phase": {"lr": 1e-3}})
    history = run_reconstruction(config, out_dir=tmp_path / "run", show_progress=False).result.history
    np.testing.assert_allclose(history["lr_object_phase"], [1e-3, 5e-4, 2.5e-4], rtol=1e-12)


def test_a_solver_choosing_its_own_steps_logs_no_rate_and_the_page_lists_the_stages(tiny_config, tmp_path):
    config = tiny_config(solver={"iterations": 3, "switch": [
        {"start_iter": 3, "name": "lbfgs", "options": {"max_iter": 2, "max_evals": 4}}]})
    run = run_reconstruction(config, out_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(run.result.history["lr_object_phase"], [5e-4, 5e-4, np.nan])
    text = run.files["report"].read_text()
    assert ('<tr><td class="num">0</td><td>adam</td><td class="num">1</td><td class="num">2</td></tr>'
            '<tr><td class="num">1</td><td>lbfgs</td><td class="num">3</td><td class="num">3</td></tr>') in text


def test_a_stopped_run_says_so_and_its_resume_continues_the_page(tiny_config, tmp_path):
    config = tiny_config(solver={"iterations": 5})

    def interrupt(engine, iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run_reconstruction(config, out_dir=tmp_path, show_progress=False, callbacks=[interrupt])
    stopped = (tmp_path / "report.html").read_text()
    assert "stopped after iteration 3 of 5" in stopped and "--resume" in stopped and "http-equiv" not in stopped
    run = run_reconstruction(config, out_dir=tmp_path, resume=True, show_progress=False)
    text = run.files["report"].read_text()
    assert "finished after 5 iterations" in text
    # no snapshots: the thumbnails are the checkpoints this process saw, from the state it resumed
    assert [int(i) for i in re.findall(r'alt="phase at iteration (\d+)"', text)] == [3, 4, 5]
    assert re.search(r"iterations done</td><td class=\"num\">5<", text)


def test_overwrite_removes_the_report(tiny_config, tmp_path):
    run = run_reconstruction(tiny_config(solver={"iterations": 1}), out_dir=tmp_path, show_progress=False)
    report = run.files["report"]
    assert report.exists() and report.with_name("report.html.sha256").exists()
    assert {"report.html", "report.html.sha256"} <= set(OUTPUT_NAMES)
    clear_run(tmp_path)
    assert not report.exists() and not report.with_name("report.html.sha256").exists()
    first = {}
    run_reconstruction(tiny_config(solver={"iterations": 1}), out_dir=tmp_path, show_progress=False)
    again = run_reconstruction(tiny_config(solver={"iterations": 2}), out_dir=tmp_path, overwrite=True,
                               show_progress=False, callbacks=[lambda e, i: first.setdefault(i, report.read_text())])
    assert "running: iteration 0 of 2" in first[1]  # the old page was removed, a new run's page replaced it
    assert "finished after 2 iterations" in again.files["report"].read_text()


def test_page_parts():
    assert pick_evenly(list(range(1, 21)), MAX_THUMBNAILS) == [1, 4, 6, 9, 12, 15, 17, 20]
    assert pick_evenly([1, 2], MAX_THUMBNAILS) == [1, 2]
    html = table(["name", "value"], [("a<b", 0.123456), ("n", 3), ("nan", float("nan"))])
    assert "<td>a&lt;b</td>" in html and '<td class="num">0.1235</td>' in html and '<td class="num">–</td>' in html
    assert format_number(None) == "–" and format_number(True) == "True"
    tag = array_tag(np.arange(400.0).reshape(20, 20), "ramp", max_px=8)
    assert tag.startswith('<img src="data:image/png;base64,') and 'width="8"' in tag
    encoded = re.search(r"base64,([^\"]*)", tag).group(1)
    thumbnail = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("L"), dtype=float)
    assert thumbnail.shape == (6, 6) and np.all(np.diff(thumbnail[:, 0]) > 0)  # 3x3 blocks of a ramp, 6 px wide
    assert page("t", tag, refresh_s=5).count('http-equiv="refresh" content="5"') == 1


def test_the_run_report_renders_in_chromium(watched_run, tmp_path):
    assert_renders_in_chromium(watched_run[0].files["report"], tmp_path)


def test_the_chromium_check_catches_a_broken_page(tmp_path):
    """The check can fail: a script error, a missing image and an empty page are all reported."""
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><img src="missing.png"><script>undefinedFunction();</script>'
                      "</body></html>")
    problems = "\n".join(screenshot_problems(broken, tmp_path))
    assert "Uncaught ReferenceError" in problems and "blank" in problems
    with pytest.raises(AssertionError, match="images not inline"):
        assert_self_contained(broken.read_text())
