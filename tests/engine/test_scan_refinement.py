"""Refining the global scan model in whole runs, on data simulated with known distortions (abTEM, sto-tiny):
a pure affine error is taken up by the global model, kill -9 + --resume continues exactly, bad setups exit 2."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import dump_config
from ptyopt.data import read_dataset, write_dataset
from ptyopt.evaluate.probe_positions import position_errors
from ptyopt.io.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ptyopt.io.result_file import read_result
from ptyopt.physics.scan import affine_matrix
from ptyopt.reconstruct import run_reconstruction
from tests.conftest import kill_9_at, run_in_subprocess

AFFINE = (60.0, 0.05, 0.04)  # rotation [mrad], scale, shear: up to ~1.3 px at the scan's corners


@pytest.fixture(scope="session")
def affine_dataset_path(tmp_path_factory):
    pytest.importorskip("abtem")
    from ptyopt.simulate.presets import get_preset, with_overrides
    from ptyopt.simulate.run import simulate_dataset

    folder = tmp_path_factory.mktemp("affine")
    spec = with_overrides(get_preset("sto-tiny"), frozen_phonons=0, aperture_edge="hard", scan_shape=(12, 12),
                          scan_affine=AFFINE)
    return write_dataset(folder / "affine.h5", simulate_dataset(spec, cache_dir=folder / "cache"))


GLOBAL_ONLY = {"object_amplitude": {"lr": 1, "start_iter": None}, "object_phase": {"lr": 1, "start_iter": None},
               "probe": {"lr": 1, "start_iter": None}, "positions": {"lr": 1, "start_iter": 1},
               "scan_affine": {"lr": 1, "start_iter": 1}}


def test_a_pure_affine_error_is_taken_up_by_the_global_model(tiny_config, affine_dataset_path):
    """Known object and probe, nominal positions: LSQ-ML's Gauss-Newton steps recover the scan-coil affine and the
    per-position offsets (refined too, split by scan_model_fit) stay near zero."""
    config = tiny_config(data={"path": str(affine_dataset_path)}, optimize=GLOBAL_ONLY,
                         model={"object_init": "truth", "probe_init": "truth"},
                         solver={"name": "lsqml", "iterations": 8, "batch_size": 16},
                         constraints={"scan_model_fit": {}, "position_recenter": {}})
    run = run_reconstruction(config, show_progress=False)
    dataset = read_dataset(affine_dataset_path)
    true_deformation = affine_matrix(*AFFINE) - np.eye(2)
    fitted = run.result.scan.affine_matrix - np.eye(2)
    np.testing.assert_allclose(fitted, true_deformation, atol=0.15 * np.abs(true_deformation).max())
    errors = position_errors(run.result.positions_ang, dataset.truth.positions_ang, run.result.nominal_positions_ang)
    assert errors["position_rms_error_centred_ang"] < 0.25 * errors["nominal_rms_error_centred_ang"]
    offsets = run.result.positions_ang - run.result.nominal_positions_ang - run.result.scan.displacement_ang
    assert np.sqrt((offsets**2).sum(1).mean()) < 0.2 * errors["nominal_rms_error_centred_ang"]


# (without solver.scan_search: its accept/reject decisions at near-ties flip with the run-to-run round-off of
# this CPU and move a resumed run by up to ~7e-3 Å; test_a_run_with_the_scan_search_resumed... covers it)
@pytest.mark.parametrize("solver, search", [("lsqml", None), ("lm", None)])
def test_kill_9_during_position_refinement_then_resume_continues_exactly(tiny_config, affine_dataset_path, tmp_path,
                                                                         solver, search):
    refine = {"probe": {"lr": 1, "start_iter": 2}, "positions": {"lr": 1, "start_iter": 2},
              "scan_affine": {"lr": 1, "start_iter": 1}}
    config = tiny_config(data={"path": str(affine_dataset_path)}, optimize=refine,
                         solver={"name": solver, "iterations": 6, "batch_size": 16, "scan_search": search},
                         constraints={"scan_model_fit": {}, "position_recenter": {}})
    # every run in a fresh process of its own (see tests.conftest.run_in_subprocess)
    assert run_in_subprocess(config, tmp_path / "ref") == 0
    reference = read_result(tmp_path / "ref" / "result.h5")
    killed = tmp_path / "killed"
    kill_9_at(config, 5, killed)
    assert load_checkpoint(killed / CHECKPOINT_NAME, "cpu")["loop"]["iteration"] == 4
    assert run_in_subprocess(config, killed, resume=True) == 0
    resumed = read_result(killed / "result.h5")
    same = dict(rtol=1e-5, atol=1e-5)  # float32 round-off [Å, rad]
    for name in ("affine_matrix", "displacement_ang"):
        np.testing.assert_allclose(getattr(resumed.scan, name), getattr(reference.scan, name), **same)
    np.testing.assert_allclose(resumed.positions_ang, reference.positions_ang, **same)
    np.testing.assert_allclose(resumed.object_phase, reference.object_phase, **same)
    assert np.abs(reference.scan.affine_matrix - np.eye(2)).max() > 0  # the model did move


def test_a_run_with_the_scan_search_resumed_from_its_checkpoint_continues(tiny_config, affine_dataset_path, tmp_path):
    """The search keeps no state of its own: 4 iterations, then --resume to 6, ends where 6 in one go end (to
    the round-off two identical runs differ by on this CPU, ~1e-6 Å, which a search decision can amplify)."""
    def config(iterations):
        return tiny_config(data={"path": str(affine_dataset_path)}, solver={
            "name": "lsqml", "iterations": iterations, "batch_size": 16, "scan_search": {"passes": 1}},
            optimize={"probe": {"lr": 1, "start_iter": 2}, "positions": {"lr": 1, "start_iter": 2},
                      "scan_affine": {"lr": 1, "start_iter": 1}},
            constraints={"scan_model_fit": {}, "position_recenter": {}})
    reference = run_reconstruction(config(6), out_dir=tmp_path / "ref", show_progress=False)
    run_reconstruction(config(4), out_dir=tmp_path / "two", show_progress=False)
    resumed = run_reconstruction(config(6), out_dir=tmp_path / "two", resume=True, show_progress=False)
    np.testing.assert_allclose(resumed.result.positions_ang, reference.result.positions_ang, rtol=0, atol=1e-3)
    np.testing.assert_allclose(resumed.result.scan.affine_matrix, reference.result.scan.affine_matrix, atol=1e-4)
    assert np.abs(reference.result.scan.affine_matrix - np.eye(2)).max() > 1e-3


def test_drift_on_a_scan_of_unknown_order_is_refused_before_anything_is_written(tiny_config, tiny_dataset_path,
                                                                                 tmp_path):
    dataset = read_dataset(tiny_dataset_path)
    unordered = write_dataset(tmp_path / "unordered.h5", dataset.replace(scan_shape=None))
    out = tmp_path / "run"
    config = tiny_config(data={"path": str(unordered)}, optimize={"scan_drift": {"lr": 1, "start_iter": 1}},
                         output={"dir": str(out)})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    result = CliRunner().invoke(app, ["reconstruct", str(path)])
    assert result.exit_code == 2, result.output
    assert "acquisition order" in result.output and "Traceback" not in result.output
    assert not out.exists()
    # the same scan with its acquisition order, or an affine alone, is fine
    ordered = write_dataset(tmp_path / "ordered.h5", dataset.replace(
        scan_shape=None, acquisition_index=np.arange(dataset.n_patterns)[::-1].astype(float)))
    for data, optimize in ((ordered, {"scan_drift": {"lr": 1, "start_iter": 1}}),
                           (unordered, {"scan_affine": {"lr": 1, "start_iter": 1}})):
        ok = tiny_config(data={"path": str(data)}, optimize=optimize, solver={"iterations": 1})
        assert run_reconstruction(ok, out_dir=tmp_path / f"ok-{data.stem}", show_progress=False).result.scan


def test_scan_model_fit_without_a_global_tensor_is_a_config_error(tiny_config, tmp_path):
    from ptyopt.errors import ConfigError

    with pytest.raises(ConfigError, match="scan_model_fit"):
        tiny_config(constraints={"scan_model_fit": {}})


def test_the_coordinated_search_recovers_more_of_the_affine_from_a_vacuum_start(tiny_config, affine_dataset_path):
    """From vacuum and the nominal scan (object, probe, offsets and affine refined by LSQ-ML), adding
    solver.scan_search brings the positions closer to the truth (translation removed)."""
    refine = {"probe": {"lr": 1, "start_iter": 2}, "positions": {"lr": 1, "start_iter": 1},
              "scan_affine": {"lr": 1, "start_iter": 1}}
    dataset = read_dataset(affine_dataset_path)
    errors = {}
    for search in (None, {}):
        config = tiny_config(data={"path": str(affine_dataset_path)}, optimize=refine,
                             solver={"name": "lsqml", "iterations": 10, "batch_size": 16, "scan_search": search},
                             constraints={"scan_model_fit": {}, "position_recenter": {}})
        run = run_reconstruction(config, overwrite=True, show_progress=False)
        errors[search is not None] = position_errors(run.result.positions_ang, dataset.truth.positions_ang,
                                                     run.result.nominal_positions_ang)
    nominal = errors[True]["nominal_rms_error_centred_ang"]
    assert errors[True]["position_rms_error_centred_ang"] < 0.5 * nominal
    assert errors[True]["position_rms_error_centred_ang"] < errors[False]["position_rms_error_centred_ang"]


def test_scan_search_without_the_affine_refined_is_a_config_error(tiny_config):
    from ptyopt.errors import ConfigError

    with pytest.raises(ConfigError, match="scan_search"):
        tiny_config(solver={"scan_search": {}})
