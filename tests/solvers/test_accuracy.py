"""Reconstruction quality of the exit-wave solvers on sto-tiny (abTEM data, noise-free, 2 unit cells, 12×12 scan,
32-px detector, 2 slices), with batches of 8 positions."""

import numpy as np
import pytest

from ptyopt.reconstruct import run_reconstruction

pytestmark = pytest.mark.abtem

FROZEN = {"lr": 1.0, "start_iter": None}  # the learning rate is ignored by these solvers; the window counts


@pytest.mark.parametrize("name", ["epie", "rpie", "mpie", "lsqml"])
def test_known_probe_and_positions_reach_small_phase_error(tiny_config, name):
    """Probe and positions at the truth and not refined; the object from vacuum; 6 iterations, default options."""
    config = tiny_config(
        model={"probe_init": "truth", "positions_init": "truth"},
        optimize={"probe": FROZEN, "positions": FROZEN},
        solver={"name": name, "iterations": 6},
    )
    run = run_reconstruction(config, show_progress=False)
    assert run.metrics["n_pixels"] > 300
    assert run.metrics["rmse_rad"] < 0.05
    assert run.metrics["pearson_r"] > 0.98


@pytest.mark.parametrize("name", ["epie", "lsqml"])
def test_probe_refined_from_the_aperture_reaches_small_phase_error(tiny_config, name):
    """The probe from the aperture (refined from iteration 3, power fixed); positions nominal (= true here)."""
    config = tiny_config(
        optimize={"probe": {"lr": 1.0, "start_iter": 3}, "positions": FROZEN},
        constraints={"probe_fixed_intensity": {}},
        solver={"name": name, "iterations": 20},
    )
    run = run_reconstruction(config, show_progress=False)
    assert run.metrics["rmse_rad"] < 0.03
    assert run.metrics["pearson_r"] > 0.99


@pytest.mark.parametrize("name", ["epie", "lsqml"])
def test_position_refinement_recovers_large_shifts(tiny_config, perturbed_positions, name):
    """Nominal positions 1-3 px off (the integer crop must move; at most 0.5 px per update) come back < 0.2 px
    in 10 iterations with the object and probe known."""
    path, offsets_px, ds = perturbed_positions
    config = tiny_config(
        data={"path": str(path)},
        model={"probe_init": "truth", "object_init": "truth"},
        optimize={"probe": FROZEN, "object_phase": FROZEN, "object_amplitude": FROZEN, "positions": {"lr": 1.0}},
        solver={"name": name, "iterations": 10},
    )
    run = run_reconstruction(config, show_progress=False)
    error_px = (run.result.positions_ang - ds.truth.positions_ang) / ds.dx_ang
    assert np.sqrt((offsets_px**2).sum(axis=1).mean()) > 1.5
    assert np.sqrt((error_px**2).sum(axis=1).mean()) < 0.2
