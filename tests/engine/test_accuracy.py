"""Reconstruction quality on sto-tiny (abTEM data, so not an inverse crime)."""

import numpy as np
import pytest

from ptyopt.reconstruct import run_reconstruction

pytestmark = pytest.mark.abtem


def test_known_probe_and_positions_reach_small_phase_error(tiny_config):
    config = tiny_config(
        model={"probe_init": "truth", "positions_init": "truth"},
        optimize={"probe": {"lr": 1e-4, "start_iter": None}, "positions": {"lr": 1e-3, "start_iter": None},
                  "object_phase": {"lr": 5e-3}, "object_amplitude": {"lr": 2.5e-3}},
        solver={"iterations": 50},
    )
    run = run_reconstruction(config, show_progress=False)
    assert run.metrics["n_pixels"] > 300
    assert run.metrics["rmse_rad"] < 0.02
    assert run.metrics["pearson_r"] > 0.99


def test_position_refinement_recovers_large_shifts(tiny_config, perturbed_positions):
    """Nominal positions 1-3 px off (beyond half a pixel, so the integer crop must move) come back < 0.2 px."""
    path, offsets_px, ds = perturbed_positions
    config = tiny_config(
        data={"path": str(path)},
        model={"probe_init": "truth", "object_init": "truth"},
        optimize={"probe": {"lr": 1e-4, "start_iter": None}, "object_phase": {"lr": 1e-3, "start_iter": None},
                  "object_amplitude": {"lr": 1e-3, "start_iter": None}, "positions": {"lr": 0.05}},
        solver={"iterations": 30},
    )
    run = run_reconstruction(config, show_progress=False)
    error_px = (run.result.positions_ang - ds.truth.positions_ang) / ds.dx_ang
    assert np.sqrt((offsets_px**2).sum(axis=1).mean()) > 1.5
    assert np.sqrt((error_px**2).sum(axis=1).mean()) < 0.2
