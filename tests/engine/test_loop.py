"""The engine loop: determinism, checkpoints and resume (also after kill -9), Ctrl-C, NaN guard, outputs."""


import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import dump_config
from ptyopt.engine import Interrupted
from ptyopt.errors import ConfigError
from ptyopt.io.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ptyopt.io.result_file import read_result
from ptyopt.objective.losses import SingleLoss
from ptyopt.reconstruct import run_reconstruction
from tests.conftest import kill_9_at

pytestmark = pytest.mark.abtem

REFINE = {"probe": {"lr": 1e-4, "start_iter": 2}, "positions": {"lr": 1e-2, "start_iter": 3},
          "tilts": {"lr": 1e-2, "start_iter": 3}}


def _arrays(result):
    return [result.object_phase, result.object_amplitude, result.probe, result.positions_ang, result.tilts_mrad]


def _assert_same(a, b, exact=True):
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_same_seed_same_result_and_seed_matters(tiny_config, tmp_path):
    first = run_reconstruction(tiny_config(optimize=REFINE), out_dir=tmp_path / "a", show_progress=False)
    second = run_reconstruction(tiny_config(optimize=REFINE), out_dir=tmp_path / "b", show_progress=False)
    _assert_same(first.result, second.result)
    other = run_reconstruction(tiny_config(optimize=REFINE, seed=7), out_dir=tmp_path / "c", show_progress=False)
    assert not np.array_equal(first.result.object_phase, other.result.object_phase)


def test_kill_9_then_resume_matches_uninterrupted(tiny_config, tmp_path):
    config = tiny_config(optimize=REFINE, solver={"iterations": 8})
    reference = run_reconstruction(config, out_dir=tmp_path / "ref", show_progress=False)
    killed = tmp_path / "killed"
    kill_9_at(config, 5, killed)
    assert load_checkpoint(killed / CHECKPOINT_NAME, "cpu")["loop"]["iteration"] == 4  # checkpoint_every = 2
    resumed = run_reconstruction(config, out_dir=killed, resume=True, show_progress=False)
    _assert_same(reference.result, resumed.result, exact=False)
    np.testing.assert_allclose(resumed.result.history["iteration"], np.arange(1, 9))


def test_ctrl_c_saves_and_resume_continues(tiny_config, tmp_path):
    config = tiny_config(solver={"iterations": 5})

    def interrupt(engine, iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume"):
        run_reconstruction(config, out_dir=tmp_path, show_progress=False, callbacks=[interrupt])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME, "cpu")["loop"]["iteration"] == 3
    resumed = run_reconstruction(config, out_dir=tmp_path, resume=True, show_progress=False)
    assert list(resumed.result.history["iteration"]) == [1, 2, 3, 4, 5]
    changed = tiny_config(solver={"iterations": 5, "batch_size": 4})
    with pytest.raises(ConfigError, match="different configuration"):
        run_reconstruction(changed, out_dir=tmp_path, resume=True, show_progress=False)


def test_nan_rolls_back_and_halves_learning_rates(tiny_config, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = SingleLoss.__call__

    def flaky(self, inputs):
        calls["n"] += 1
        value = original(self, inputs)
        return value * float("nan") if calls["n"] == 40 else value  # inside iteration 3 (18 batches/iteration)

    monkeypatch.setattr(SingleLoss, "__call__", flaky)
    run = run_reconstruction(tiny_config(solver={"iterations": 4}), out_dir=tmp_path, show_progress=False)
    assert "rolled back" in capsys.readouterr().err
    multipliers = run.result.history["lr_multiplier"]
    assert list(multipliers) == [1.0, 1.0, 0.5, 0.5]
    assert np.isfinite(run.result.object_phase).all()


def test_outputs_and_cli(tiny_config, tmp_path):
    config_file = tmp_path / "config.yaml"
    config = tiny_config(loss={"single": {}, "pacbed": {"weight": {"kind": "linear", "start_value": 1.0,
                                                                   "end_value": 0.0, "start_iter": 1,
                                                                   "end_iter": 3}}})
    config_file.write_text(dump_config(config))
    result = CliRunner().invoke(app, ["reconstruct", str(config_file), "--out", str(tmp_path / "run"),
                                      "--iterations", "3"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    for name in ("result.h5", "config.yaml", "metrics.json", "phase_sum.tif", "phase_stack.tif",
                 "object_phase.png", "probe.png", "positions.png", "loss.png"):
        assert (run_dir / name).stat().st_size > 0, name
    saved = read_result(run_dir / "result.h5")
    assert saved.object_phase.shape[:2] == (1, 2) and saved.probe.ndim == 3
    np.testing.assert_allclose(saved.history["weight_pacbed"], [1.0, 0.5, 0.0])  # the schedule is logged
    assert "pearson_r" in (run_dir / "metrics.json").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: x.h5}\nmodel: {n_slice: 2}\n")
    result = CliRunner().invoke(app, ["reconstruct", str(bad)])
    assert result.exit_code == 2 and "did you mean 'n_slices'" in result.output


def test_update_windows_and_gradient_accumulation(tiny_config, tmp_path):
    """start/end iterations and a window schedule gate each tensor; accumulation halves the optimiser steps."""
    config = tiny_config(
        optimize={"probe": {"lr": 1e-3, "start_iter": 3},
                  "positions": {"lr": 1e-2, "start_iter": 1, "end_iter": 3},
                  "object_amplitude": {"lr": 1e-3, "active_when": {"kind": "piecewise", "points": [[1, 0], [4, 1]]}}},
        solver={"iterations": 4, "grad_accumulation": 2},
    )
    snapshots = {}

    def record(engine, iteration):
        snapshots[iteration] = {k: v.detach().clone() for k, v in engine.state.items()}
        optimizer = engine.solver.optimizer
        steps = {group["name"]: float(optimizer.state.get(group["params"][0], {}).get("step", 0))
                 for group in optimizer.param_groups}
        snapshots[iteration]["steps"] = steps

    run_reconstruction(config, out_dir=tmp_path, show_progress=False, callbacks=[record])
    initial_probe = snapshots[1]["probe"]
    assert torch.equal(snapshots[2]["probe"], initial_probe) and not torch.equal(snapshots[3]["probe"], initial_probe)
    assert not torch.equal(snapshots[2]["position_offsets_px"], snapshots[1]["position_offsets_px"])
    assert torch.equal(snapshots[4]["position_offsets_px"], snapshots[2]["position_offsets_px"])
    assert torch.equal(snapshots[3]["object_amplitude"], snapshots[1]["object_amplitude"])
    assert not torch.equal(snapshots[4]["object_amplitude"], snapshots[3]["object_amplitude"])
    assert int(snapshots[1]["steps"]["object_phase"]) == 9  # 18 batches per iteration, 2 per step


def test_held_out_validation_and_interleaved_halves(tiny_config, tmp_path):
    seen = set()

    def record(engine, iteration):
        for group in engine.sampler.groups(iteration):
            seen.update(engine.train_indices[group].tolist())
        record.held = set(engine.validation_indices.tolist())

    config = tiny_config(solver={"iterations": 3, "validation_fraction": 0.25}, output={"metrics_every": 1})
    run = run_reconstruction(config, out_dir=tmp_path / "v", show_progress=False, callbacks=[record])
    assert len(record.held) == 36 and not (seen & record.held) and len(seen) == 144 - 36
    assert len(run.result.history["validation_single"]) == 3
    assert np.all(np.isfinite(run.result.history["validation_single"]))
    halves = [run_reconstruction(tiny_config(data={"half": part}, solver={"iterations": 1}),
                                 out_dir=tmp_path / f"h{part}", show_progress=False) for part in (0, 1)]
    a, b = (h.result.nominal_positions_ang for h in halves)
    assert len(a) == len(b) == 72 and not ({tuple(p) for p in a} & {tuple(p) for p in b})
