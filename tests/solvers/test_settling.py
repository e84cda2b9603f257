"""The exit-wave solvers settle on noisy data instead of drifting (issue 22). With constant full steps LSQ-ML and
ePIE reach their best r against the truth soon after the positions start moving and then lose it while the data
misfit keeps falling (each batch's full step moves the estimate by as much as that batch's noise); with their
default step schedule (full steps decaying to a floor) they lose at most 0.002 in r between iterations 10 and 30
and stay within 0.001 of their best. Data: a small thick SrTiO3 set simulated with Poisson noise."""

import numpy as np
import pytest

from ptyopt.config import parse_config
from ptyopt.reconstruct import run_reconstruction

LOSS_10_TO_30 = 0.002  # the criterion
DRIFT_FROM_BEST = 0.001  # r lost after the best iteration (from iteration 10 on)


@pytest.fixture(scope="module")
def noisy_thick_path(tmp_path_factory):
    pytest.importorskip("abtem")
    from ptyopt.data import write_dataset
    from ptyopt.simulate.presets import get_preset, with_overrides
    from ptyopt.simulate.run import simulate_dataset

    folder = tmp_path_factory.mktemp("noisy")
    spec = with_overrides(get_preset("sto-demo"), scan_shape=(16, 16), dose_e_per_ang2=1e5, frozen_phonons=2,
                          thickness_uc=8, recon_slices=8)
    return write_dataset(folder / "noisy.h5", simulate_dataset(spec, cache_dir=folder / "cache"))


def r_history(path, out_dir, solver, schedule=None) -> dict[int, float]:
    """Pearson r against the truth every 2 iterations of a 30-iteration run (probe from 5, positions from 10)."""
    options = {} if schedule is None else {"step_schedule": schedule}
    config = parse_config({
        "data": {"path": str(path)},
        "model": {"n_slices": 8, "slice_thickness_ang": 3.905, "probe_modes": 2},
        "optimize": {"probe": {"start_iter": 5}, "positions": {"start_iter": 10}},
        "constraints": {"probe_orthogonalize": {}, "probe_fixed_intensity": {}, "position_recenter": {}},
        "solver": {"name": solver, "options": options, "iterations": 30, "batch_size": 16},
        "output": {"dir": str(out_dir), "checkpoint_every": 30, "metrics_every": 2},
    })
    history = run_reconstruction(config, show_progress=False).result.history
    return dict(zip(history["metric_iteration"].astype(int).tolist(), history["metric_pearson_r"].tolist(),
                    strict=True))


def drift_from_best(r: dict[int, float]) -> float:
    return max(v for k, v in r.items() if k >= 10) - r[30]


@pytest.mark.parametrize("solver", ["lsqml", "epie"])
def test_exit_wave_solvers_settle_on_noisy_data(solver, noisy_thick_path, tmp_path):
    r = r_history(noisy_thick_path, tmp_path / "default", solver)
    assert r[30] >= r[10] - LOSS_10_TO_30, r
    assert drift_from_best(r) <= DRIFT_FROM_BEST, r
    constant = r_history(noisy_thick_path, tmp_path / "constant", solver, schedule=1.0)
    # the test can fail: on these data constant full steps drift several times as far from their best
    assert drift_from_best(constant) > max(DRIFT_FROM_BEST / 2, 3 * drift_from_best(r)), constant
    assert np.mean([r[k] for k in (26, 28, 30)]) > np.mean([constant[k] for k in (26, 28, 30)])
