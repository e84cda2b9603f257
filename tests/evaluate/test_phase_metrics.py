import json
import math

import numpy as np
import pytest

from ptyopt.data.dataset import GroundTruth
from ptyopt.errors import DataError
from ptyopt.evaluate.phase_metrics import (
    compare_phase,
    phase_metrics,
    scanned_region_mask,
    slice_sum,
    truth_on_canvas,
)
from ptyopt.evaluate.registration import fourier_shift_image

DX = 0.2  # Å
PERIOD_ANG = 3.905


def columns(y_ang, x_ang, width_ang=0.35):
    """Analytic projected phase [rad] of a square lattice of Gaussian columns at positions (y, x) [Å]."""
    def comb(coord):
        centres = np.arange(-3, 30) * PERIOD_ANG + 0.4
        return np.exp(-((coord[:, None] - centres[None, :]) ** 2) / (2 * width_ang**2)).sum(axis=1)

    return 0.9 * np.outer(comb(np.asarray(y_ang)), comb(np.asarray(x_ang)))


@pytest.fixture
def truth():
    origin = (-6.0, -5.0)
    shape = (150, 170)
    y = origin[0] + np.arange(shape[0]) * DX
    x = origin[1] + np.arange(shape[1]) * DX
    total = columns(y, x)
    slices = np.stack([0.25 * total, 0.35 * total, 0.4 * total])
    positions = np.stack(np.meshgrid(np.arange(8) * 2.0, np.arange(9) * 2.0, indexing="ij"), -1).reshape(-1, 2)
    return GroundTruth(phase_slices=slices, dx_ang=DX, slice_thickness_ang=2.0, origin_ang=origin,
                       positions_ang=positions)


@pytest.fixture
def region(truth):
    """Truth phase on the truth canvas itself and the scanned region minus 1 Å."""
    phase = truth.phase_slices.sum(axis=0).astype(np.float64)
    mask = scanned_region_mask(phase.shape, truth.origin_ang, DX, truth.positions_ang, 1.0)
    return phase, mask


def test_identical_images_give_zero_error(region):
    phase, mask = region
    metrics = compare_phase(phase, phase, mask)
    assert metrics["rmse_rad"] < 1e-9
    assert metrics["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert np.abs(metrics["shift_px"]).max() < 1e-6
    assert metrics["psnr_db"] > 150
    assert metrics["n_pixels"] == int(mask.sum())
    json.dumps(metrics)


def test_registration_and_offset_removal_recover_a_shifted_copy(region):
    phase, mask = region
    recon = fourier_shift_image(phase, (1.3, -0.7)) + 0.5
    registered = compare_phase(recon, phase, mask)
    unregistered = compare_phase(recon, phase, mask, register=False)
    np.testing.assert_allclose(registered["shift_px"], (-1.3, 0.7), atol=0.02)
    assert registered["offset_rad"] == pytest.approx(0.5, abs=0.01)
    assert registered["rmse_rad"] < 0.005 * registered["truth_range_rad"]
    assert registered["pearson_r"] > 0.999
    assert unregistered["rmse_rad"] > 10 * registered["rmse_rad"]
    assert unregistered["pearson_r"] < 0.95
    assert unregistered["psnr_db"] < registered["psnr_db"] - 20
    assert registered["nrmse"] == pytest.approx(registered["rmse_rad"] / registered["truth_range_rad"])
    json.dumps(registered)


@pytest.mark.parametrize("register", [False, True])
def test_remove_ramp_removes_a_plane(region, register):
    phase, mask = region
    y, x = np.mgrid[: phase.shape[0], : phase.shape[1]]
    recon = phase + 0.3 + 0.004 * y - 0.007 * x
    with_ramp = compare_phase(recon, phase, mask, register=register, remove_ramp=True)
    without = compare_phase(recon, phase, mask, register=register)
    assert with_ramp["rmse_rad"] < 1e-3
    np.testing.assert_allclose(with_ramp["ramp_rad_per_px"], (0.004, -0.007), atol=1e-5)
    assert without["rmse_rad"] > 0.05
    assert without["ramp_rad_per_px"] == [0.0, 0.0]


def test_noise_lowers_the_correlation(region):
    phase, mask = region
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(phase.shape)
    r = [compare_phase(phase + level * noise, phase, mask)["pearson_r"] for level in (0.0, 0.05, 0.2, 0.5)]
    assert r[0] == pytest.approx(1.0)
    assert r[0] > r[1] > r[2] > r[3]
    assert r[3] < 0.9


def test_truth_on_canvas_exact_index_path_matches_slicing(truth):
    total = truth.phase_slices.sum(axis=0, dtype=np.float64)
    origin = (truth.origin_ang[0] + 3 * DX, truth.origin_ang[1] + 5 * DX)
    canvas = truth_on_canvas(truth, (40, 50), origin, DX)
    np.testing.assert_array_equal(canvas, total[3:43, 5:55])
    # a canvas reaching beyond the truth: NaN there, exact values elsewhere
    outside = truth_on_canvas(truth, (40, 50), (truth.origin_ang[0] - 2 * DX, truth.origin_ang[1] + 150 * DX), DX)
    assert np.isnan(outside[:2]).all() and np.isnan(outside[:, 20:]).all()
    np.testing.assert_array_equal(outside[2:, :20], total[:38, 150:170])


@pytest.mark.parametrize("dx_ang, offset_px", [(DX, (0.37, -0.61)), (0.8 * DX, (0.0, 0.0)), (0.7 * DX, (2.3, 1.1))])
def test_truth_on_canvas_interpolates_finer_and_shifted_canvases(truth, dx_ang, offset_px):
    origin = (truth.origin_ang[0] + (10 + offset_px[0]) * DX, truth.origin_ang[1] + (12 + offset_px[1]) * DX)
    shape = (60, 70)
    canvas = truth_on_canvas(truth, shape, origin, dx_ang)
    expected = columns(origin[0] + np.arange(shape[0]) * dx_ang, origin[1] + np.arange(shape[1]) * dx_ang)
    assert np.isfinite(canvas).all()
    assert np.abs(canvas - expected).max() < 0.02 * np.ptp(expected)


def test_truth_on_canvas_coarser_canvas_is_smoothed_but_faithful(truth):
    origin = (truth.origin_ang[0] + 4 * DX, truth.origin_ang[1] + 4 * DX)
    canvas = truth_on_canvas(truth, (40, 45), origin, 2 * DX)
    expected = columns(origin[0] + np.arange(40) * 2 * DX, origin[1] + np.arange(45) * 2 * DX)
    assert np.corrcoef(canvas.ravel(), expected.ravel())[0, 1] > 0.99
    assert canvas.max() < expected.max()  # the anti-alias filter lowers the peaks


def test_scanned_region_mask_geometry():
    positions = np.array([[1.0, 2.0], [1.0, 10.0], [9.0, 2.0], [9.0, 10.0], [5.0, 6.0]])
    mask = scanned_region_mask((30, 40), (-2.0, -1.0), 0.5, positions, 1.5)
    # kept: y in [2.5, 7.5] -> rows (y + 2) / 0.5 = 9..19; x in [3.5, 8.5] -> columns (x + 1) / 0.5 = 9..19
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (9, 19, 9, 19)
    assert mask.sum() == 11 * 11
    assert scanned_region_mask((30, 40), (-2.0, -1.0), 0.5, positions, 0.0).sum() == 17 * 17


def test_empty_region_is_an_error_that_says_what_to_change(region):
    phase, _ = region
    with pytest.raises(DataError, match="reduce margin_ang"):
        compare_phase(phase, phase, np.zeros(phase.shape, dtype=bool))


def test_diverged_reconstruction_is_reported(region):
    phase, mask = region
    recon = phase.copy()
    recon[0, 0] = np.nan
    with pytest.raises(DataError, match="diverged"):
        compare_phase(recon, phase, mask)


def test_slice_sum_modes_and_occupancy():
    rng = np.random.default_rng(2)
    phase = rng.random((2, 3, 8, 9))
    np.testing.assert_allclose(slice_sum(phase), phase[0].sum(axis=0))
    np.testing.assert_allclose(slice_sum(phase[1]), phase[1].sum(axis=0))
    np.testing.assert_allclose(slice_sum(phase, np.array([1.0, 3.0])),
                               0.25 * phase[0].sum(axis=0) + 0.75 * phase[1].sum(axis=0))
    with pytest.raises(DataError, match="expected"):
        slice_sum(phase[0, 0])
    with pytest.raises(DataError, match="occupancy"):
        slice_sum(phase, np.array([1.0, 1.0, 1.0]))


def test_phase_metrics_end_to_end(truth):
    """A perfect reconstruction on its own canvas, split differently in slices and displaced by 0.9 px."""
    origin = (truth.origin_ang[0] + 8 * DX, truth.origin_ang[1] + 6 * DX)
    shape = (120, 140)
    total = truth_on_canvas(truth, shape, origin, DX)
    recon = np.stack([fourier_shift_image(total, (0.9, 0.0)) / 4] * 4)[None]  # (omode, S, Y, X)
    metrics = phase_metrics(recon + 0.2, origin, DX, truth, truth.positions_ang, 1.0)
    assert metrics["pearson_r"] > 0.999
    np.testing.assert_allclose(metrics["shift_px"], (-0.9, 0.0), atol=0.02)
    assert metrics["offset_rad"] == pytest.approx(0.8, abs=0.01)  # 0.2 in each of 4 slices
    assert metrics["margin_ang"] == 1.0
    expected_mask = scanned_region_mask(shape, origin, DX, truth.positions_ang, 1.0)
    assert metrics["n_pixels"] == int(expected_mask.sum())
    assert all(isinstance(v, float) for k, v in metrics.items() if k not in ("shift_px", "ramp_rad_per_px",
                                                                                  "n_pixels"))
    assert not math.isnan(json.loads(json.dumps(metrics))["rmse_rad"])
