"""Solver stages in one run (solver.switch): history, cumulative work, the log, resume across a switch, bad configs."""


import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import parse_config
from ptyopt.engine import Interrupted
from ptyopt.errors import ConfigError
from ptyopt.io.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ptyopt.objective.losses import SingleLoss
from ptyopt.reconstruct import run_reconstruction
from ptyopt.solvers.checks import check_config
from tests.conftest import kill_9_at

pytestmark = pytest.mark.abtem

N_PATTERNS = 144  # the tiny dataset's 12 × 12 scan
ADAM_THEN_LBFGS = {"switch": [{"start_iter": 4, "name": "lbfgs", "options": {"max_iter": 3, "max_evals": 6}}]}


def _arrays(result):
    return [result.object_phase, result.object_amplitude, result.probe, result.positions_ang]


def test_adam_then_lbfgs_logs_stages_and_continues_the_work_count(tiny_config, tmp_path, capsys):
    config = tiny_config(solver={"iterations": 6, **ADAM_THEN_LBFGS})
    run = run_reconstruction(config, out_dir=tmp_path, show_progress=False)
    history = run.result.history
    assert list(history["solver_stage"]) == [0, 0, 0, 1, 1, 1]
    work = np.diff(np.concatenate([[0], history["forward_evaluations"]]))
    assert list(work[:3]) == [N_PATTERNS] * 3  # Adam: one pass per iteration
    assert np.all(work[3:] % N_PATTERNS == 0) and np.all(work[3:] >= 2 * N_PATTERNS)  # L-BFGS: whole passes, more
    assert np.all(np.diff(history["wall_time_s"]) > 0) and np.isfinite(history["total"]).all()
    log = capsys.readouterr().err
    assert "0: adam (iterations 1-3), 1: lbfgs (iterations 4-6)" in log
    assert "iteration 4: solver stage 1 (lbfgs) replaces stage 0 (adam)" in log


def test_epie_then_adam_with_its_own_scheduler(tiny_config, tmp_path):
    """A classical solver first; the Adam stage starts its own LR scheduler and continues ePIE's count."""
    config = tiny_config(solver={"iterations": 4, "name": "epie", "switch": [
        {"start_iter": 3, "name": "adam", "lr_scheduler": {"name": "StepLR", "options": {"step_size": 1}}}]})
    history = run_reconstruction(config, out_dir=tmp_path, show_progress=False).result.history
    assert list(history["solver_stage"]) == [0, 0, 1, 1]
    work = np.diff(np.concatenate([[0], history["forward_evaluations"]]))
    assert work[0] > N_PATTERNS  # ePIE's position steps add linearised passes
    assert list(work[2:]) == [N_PATTERNS] * 2
    assert np.isfinite(history["total"]).all()


def test_kill_9_after_the_switch_then_resume_matches_uninterrupted(tiny_config, tmp_path):
    """Killed in the L-BFGS stage (checkpoint at 4, stage 1, with its secant pairs): --resume continues with
    L-BFGS and reproduces the uninterrupted run, history included."""
    config = tiny_config(solver={"iterations": 6, **ADAM_THEN_LBFGS})
    reference = run_reconstruction(config, out_dir=tmp_path / "ref", show_progress=False)
    killed = tmp_path / "killed"
    kill_9_at(config, 5, killed)
    checkpoint = load_checkpoint(killed / CHECKPOINT_NAME, "cpu")
    assert checkpoint["loop"]["iteration"] == 4 and checkpoint["stage"] == 1
    assert checkpoint["solver"]["memory"]["pairs"], "the L-BFGS history is part of the checkpoint"
    resumed = run_reconstruction(config, out_dir=killed, resume=True, show_progress=False)
    for a, b in zip(_arrays(reference.result), _arrays(resumed.result), strict=True):
        np.testing.assert_array_equal(a, b)
    for key in ("solver_stage", "forward_evaluations", "total"):
        np.testing.assert_array_equal(resumed.result.history[key], reference.result.history[key])


def test_stopped_before_the_switch_resume_crosses_it(tiny_config, tmp_path):
    config = tiny_config(solver={"iterations": 5, **ADAM_THEN_LBFGS})
    reference = run_reconstruction(config, out_dir=tmp_path / "ref", show_progress=False)

    def interrupt(engine, iteration):
        if iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run_reconstruction(config, out_dir=tmp_path / "run", show_progress=False, callbacks=[interrupt])
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, "cpu")["stage"] == 0
    resumed = run_reconstruction(config, out_dir=tmp_path / "run", resume=True, show_progress=False)
    for a, b in zip(_arrays(reference.result), _arrays(resumed.result), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.result.history["forward_evaluations"],
                                  reference.result.history["forward_evaluations"])


BAD_SWITCHES = [
    ([{"start_iter": 1, "name": "lbfgs"}], r"switch\[0\].start_iter is 1; each switch must start after iteration 1"),
    ([{"start_iter": 5, "name": "lbfgs"}, {"start_iter": 5, "name": "adam"}],
     r"switch\[1\].start_iter is 5; each switch must start after iteration 5"),
    ([{"start_iter": 5, "name": "lbgfs"}], r"unknown solver 'lbgfs' in solver.switch\[0\].name; did you mean 'lbfgs'"),
    ([{"start_iter": 5, "name": "epie", "lr_scheduler": {"name": "StepLR"}}],
     r"solver.switch\[0\].lr_scheduler is for torch optimisers; 'epie'"),
    ([{"start_iter": 5, "name": "lbfgs", "options": {"history": 5}}],
     r"solver.switch\[0\].options.history for 'lbfgs'.*did you mean 'history_size'"),
    ([{"start_iter": 5, "nme": "lbfgs"}], r"unknown key 'solver.switch.0.nme'"),
]


@pytest.mark.parametrize(("switch", "match"), BAD_SWITCHES)
def test_bad_switches_are_config_errors(switch, match):
    with pytest.raises(ConfigError, match=match):
        check_config(parse_config({"data": {"path": "x.h5"}, "solver": {"switch": switch}}))


def test_config_validate_exits_2_on_a_bad_switch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: x.h5}\nsolver:\n  switch:\n    - {start_iter: 21, name: lbfgs}\n"
                   "    - {start_iter: 30, name: ssnl}\n")
    result = CliRunner().invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2 and "did you mean 'ssnal'" in result.output
    good = tmp_path / "good.yaml"
    good.write_text("data: {path: x.h5}\nsolver:\n  switch:\n    - {start_iter: 21, name: lbfgs, "
                    "options: {max_iter: 5}}\n")
    result = CliRunner().invoke(app, ["config", "validate", str(good)])
    assert result.exit_code == 0 and "start_iter: 21" in result.output and "is valid" in result.output


def test_nan_in_the_first_lbfgs_iteration_rolls_back_to_adam_and_switches_again(tiny_config, tmp_path,
                                                                                 monkeypatch, capsys):
    calls = {"n": 0}
    original = SingleLoss.__call__

    def flaky(self, inputs):
        calls["n"] += 1
        value = original(self, inputs)
        return value * float("nan") if calls["n"] == 3 * 18 + 1 else value  # L-BFGS's first chunk (18 batches/it)

    monkeypatch.setattr(SingleLoss, "__call__", flaky)
    run = run_reconstruction(tiny_config(solver={"iterations": 5, **ADAM_THEN_LBFGS}), out_dir=tmp_path,
                             show_progress=False)
    log = capsys.readouterr().err
    assert "iteration 4: non-finite loss" in log and log.count("replaces stage 0 (adam)") == 2
    history = run.result.history
    assert list(history["solver_stage"]) == [0, 0, 0, 1, 1] and list(history["lr_multiplier"])[3:] == [0.5, 0.5]
    assert np.isfinite(history["total"]).all()


def test_what_a_later_stage_refuses_fails_at_run_start(tiny_config, tmp_path):
    """ePIE cannot refine tilts: a switch to it fails before iteration 1, not at the switch."""
    config = tiny_config(optimize={"tilts": {"lr": 1e-3, "start_iter": 1}},
                         solver={"iterations": 3, "switch": [{"start_iter": 3, "name": "epie"}]})
    with pytest.raises(ConfigError, match=r"solver.switch\[0\] \(epie\): .*set optimize.tilts.start_iter: null"):
        run_reconstruction(config, out_dir=tmp_path, show_progress=False)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_a_later_stage_is_checked_only_for_the_tensors_refined_in_its_iterations(tiny_config, tmp_path):
    """Adam refines tilts in iterations 1-2 (end_iter 3), ePIE (which cannot refine tilts) runs from 3: accepted,
    and the tilts stay as Adam left them."""
    config = tiny_config(optimize={"tilts": {"lr": 1e-3, "start_iter": 1, "end_iter": 3}},
                         solver={"iterations": 4, "switch": [{"start_iter": 3, "name": "epie"}]})
    check_config(config)  # accepted: no tilt is refined in ePIE's iterations
    tilts = {}

    def record(engine, iteration):
        tilts[iteration] = engine.state["tilts_mrad"].detach().clone()

    run = run_reconstruction(config, out_dir=tmp_path, show_progress=False, callbacks=[record])
    assert list(run.result.history["solver_stage"]) == [0, 0, 1, 1]
    assert not torch.equal(tilts[2], tilts[1]) and torch.equal(tilts[4], tilts[2])
