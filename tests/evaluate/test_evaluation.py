import dataclasses
import json
import shutil

import numpy as np
import pytest

from ptyopt.data import Dataset4D, GroundTruth, read_dataset
from ptyopt.errors import DataError
from ptyopt.evaluate import compare_results, evaluate_result, json_safe, result_r_factor
from ptyopt.evaluate.phase_metrics import shift_mirrored, truth_on_canvas

from .conftest import column_phase, make_result

DX = 0.2  # Å
TRUTH_ORIGIN = (-6.0, -5.0)
CANVAS_ORIGIN = (-4.0, -3.0)  # 10 px inside the truth canvas on each axis
CANVAS = (120, 140)
SHIFT_PX = (0.37, -0.61)


@pytest.fixture(scope="module")
def positions():
    return np.stack(np.meshgrid(np.arange(8) * 2.0, np.arange(9) * 2.0, indexing="ij"), -1).reshape(-1, 2)


@pytest.fixture(scope="module")
def truth(positions):
    shape = (150, 170)
    total = column_phase(TRUTH_ORIGIN[0] + np.arange(shape[0]) * DX, TRUTH_ORIGIN[1] + np.arange(shape[1]) * DX)
    fractions = np.array([0.1, 0.15, 0.2, 0.1, 0.25, 0.2])
    fine = fractions[:, None, None] * total
    return GroundTruth(phase_slices=fine.reshape(3, 2, *shape).sum(axis=1), dx_ang=DX, slice_thickness_ang=2.0,
                       origin_ang=TRUTH_ORIGIN, positions_ang=positions, fine_phase_slices=fine,
                       fine_slice_thickness_ang=1.0)


def dataset_with(truth, positions):
    return Dataset4D.from_raster(np.ones((len(positions), 8, 8)), (8, 9), 2.0, energy_kv=300, conv_angle_mrad=20,
                                 dk_inv_ang=0.5, truth=truth)


def slices_on_canvas(truth, slices):
    single = dataclasses.replace
    return np.stack([truth_on_canvas(single(truth, phase_slices=s[None], fine_phase_slices=None), CANVAS,
                                     CANVAS_ORIGIN, DX) for s in slices])


@pytest.fixture(scope="module")
def exact_slices(truth):
    return slices_on_canvas(truth, truth.phase_slices)


def evaluate(slices, truth, positions, **kwargs):
    result = make_result(slices, DX, CANVAS_ORIGIN, positions)
    return evaluate_result(result, dataset_with(truth, positions), data_r_factor=False, **kwargs)


def test_exact_reconstruction_scores_perfectly(truth, positions, exact_slices):
    metrics = evaluate(exact_slices, truth, positions)
    assert metrics["rmse_rad"] < 1e-9 and metrics["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["frc_resolution_ang"] is None
    np.testing.assert_allclose(metrics["frc"]["frc"], 1.0, atol=1e-9)
    assert [s["slice"] for s in metrics["per_slice"]] == [0, 1, 2]
    assert max(s["rmse_rad"] for s in metrics["per_slice"]) < 1e-9
    assert metrics["position_rms_error_ang"] == 0.0 and metrics["data_r_factor"] is None
    assert metrics["probe_overlap"] is None and any("probe" in note for note in metrics["notes"])
    json.dumps(json_safe(metrics), allow_nan=False)


def test_subpixel_shift_and_offset_leave_the_metrics_unchanged(truth, positions, exact_slices):
    moved = np.stack([shift_mirrored(s, SHIFT_PX) for s in exact_slices]) + 0.8 / 3
    reference = evaluate(exact_slices, truth, positions)
    metrics = evaluate(moved, truth, positions)
    np.testing.assert_allclose(metrics["shift_px"], (-SHIFT_PX[0], -SHIFT_PX[1]), atol=0.01)
    assert metrics["offset_rad"] == pytest.approx(0.8, abs=0.01)
    assert metrics["rmse_rad"] < 0.003 * metrics["truth_range_rad"]
    assert metrics["nrmse"] == pytest.approx(reference["nrmse"], abs=0.003)
    assert metrics["pearson_r"] == pytest.approx(reference["pearson_r"], abs=2e-4)
    assert metrics["ssim"] == pytest.approx(reference["ssim"], abs=1e-3)
    assert metrics["psnr_db"] > 50
    for moved_slice, exact_slice in zip(metrics["per_slice"], reference["per_slice"], strict=True):
        assert moved_slice["pearson_r"] == pytest.approx(exact_slice["pearson_r"], abs=2e-4)
        assert moved_slice["rmse_rad"] < 0.003 * metrics["truth_range_rad"]
    unmoved_frc = np.asarray(metrics["frc"]["frc"])
    assert unmoved_frc[: len(unmoved_frc) // 2].min() > 0.99
    # a shift beyond one pixel is found as well
    assert evaluate(np.stack([shift_mirrored(s, (1.5, 0)) for s in exact_slices]), truth, positions,
                    margin_ang=1.0)["shift_px"][0] == pytest.approx(-1.5, abs=0.01)


def test_ramp_is_removed_on_request(truth, positions, exact_slices):
    y = np.arange(CANVAS[0])[:, None] * np.ones(CANVAS)
    ramped = exact_slices + (0.004 * y)[None] / 3
    plain = evaluate(ramped, truth, positions)
    removed = evaluate(ramped, truth, positions, remove_ramp=True)
    assert removed["rmse_rad"] < 1e-6 < plain["rmse_rad"]
    assert removed["ramp_rad_per_px"][0] == pytest.approx(0.004, rel=1e-3)
    assert removed["per_slice"][0]["rmse_rad"] < 1e-6


def test_per_slice_needs_matching_slicings(truth, positions, exact_slices):
    fine = slices_on_canvas(truth, truth.fine_phase_slices)
    from_fine = evaluate(fine, truth, positions)  # the 6 fine slices themselves
    assert len(from_fine["per_slice"]) == 6 and from_fine["per_slice"][3]["rmse_rad"] < 1e-9
    two = evaluate(fine.reshape(2, 3, *CANVAS).sum(axis=1), truth, positions)  # 6 fine slices sum into 2
    assert len(two["per_slice"]) == 2 and two["per_slice"][1]["pearson_r"] == pytest.approx(1.0, abs=1e-9)
    four = evaluate(np.stack([exact_slices.sum(axis=0) / 4] * 4), truth, positions)
    assert four["per_slice"] is None and any("per-slice" in note for note in four["notes"])
    assert four["rmse_rad"] < 1e-9  # the slice sum is still exact


def test_truth_is_required(positions, exact_slices):
    result = make_result(exact_slices, DX, CANVAS_ORIGIN, positions)
    with pytest.raises(DataError, match="no ground truth"):
        evaluate_result(result, dataset_with(None, positions))


def test_half_dataset_comparison(positions, exact_slices):
    rng = np.random.default_rng(0)
    total = exact_slices.sum(axis=0)
    noise = 0.3 * total.std()
    a = make_result((total + noise * rng.normal(size=CANVAS))[None], DX, CANVAS_ORIGIN, positions[::2])
    b_phase = shift_mirrored(total, SHIFT_PX) + noise * rng.normal(size=CANVAS) + 1.0
    b = make_result(b_phase[None], DX, CANVAS_ORIGIN, positions[1::2])
    out = compare_results(a, b, margin_ang=1.0)
    np.testing.assert_allclose(out["shift_px"], SHIFT_PX, atol=0.1)  # noisy images: a looser registration
    assert out["offset_rad"] == pytest.approx(-1.0, abs=0.05)
    # white noise on both: the FRC falls below the half-bit threshold before Nyquist
    assert out["frc_resolution_ang"] is not None and 2 * DX < out["frc_resolution_ang"] < 2.0
    assert 0.5 < out["pearson_r"] < 1.0
    same = compare_results(a, a, margin_ang=1.0)
    assert same["frc_resolution_ang"] is None and same["rms_difference_rad"] < 1e-12
    json.dumps(json_safe(out), allow_nan=False)


def test_comparison_on_different_canvases(positions, exact_slices):
    total = exact_slices.sum(axis=0)
    a = make_result(total[None], DX, CANVAS_ORIGIN, positions)
    b = make_result(total[None, 5:, 3:], DX, (CANVAS_ORIGIN[0] + 5 * DX, CANVAS_ORIGIN[1] + 3 * DX), positions)
    out = compare_results(a, b, margin_ang=1.0)
    assert np.abs(out["shift_px"]).max() < 1e-3 and out["pearson_r"] == pytest.approx(1.0, abs=1e-9)


def test_data_r_factor_of_the_true_state_is_zero(synthetic_run):
    result = synthetic_run["result"]
    dataset = read_dataset(synthetic_run["data_path"])
    metrics = evaluate_result(result, dataset, margin_ang=1.0)
    assert metrics["data_r_factor"] < 1e-6
    assert metrics["probe_overlap"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["position_rms_error_ang"] < 1e-9 < metrics["nominal_rms_error_ang"]
    assert metrics["pearson_r"] == pytest.approx(1.0, abs=1e-9) and len(metrics["per_slice"]) == 2
    assert metrics["notes"] == []
    rng = np.random.default_rng(0)
    perturbed = dataclasses.replace(result, object_phase=result.object_phase
                                    + 0.2 * rng.normal(size=result.object_phase.shape))
    assert result_r_factor(perturbed) > 0.02
    moved = dataclasses.replace(result, positions_ang=result.nominal_positions_ang)
    assert result_r_factor(moved) > 1e-3


def test_data_r_factor_is_skipped_without_the_data_file(synthetic_run, tmp_path):
    result = synthetic_run["result"]
    dataset = read_dataset(synthetic_run["data_path"])
    metrics = evaluate_result(result, dataset, margin_ang=1.0, data_path=tmp_path / "missing.h5")
    assert metrics["data_r_factor"] is None
    assert any("missing.h5" in note and "R-factor" in note for note in metrics["notes"])
    copy = shutil.copy(synthetic_run["data_path"], tmp_path / "moved.h5")
    assert result_r_factor(result, data_path=copy) < 1e-6
    no_config = dataclasses.replace(result, config="")
    with pytest.raises(DataError, match="no resolved config"):
        result_r_factor(no_config)


def test_positions_of_a_scan_region_are_matched_to_the_truth(truth, positions, exact_slices):
    """A result of the config's data.scan_region (rows 2:6, columns 1:5 of the 8×9 scan) is compared with the
    same subset of the true positions."""
    import yaml

    index = (np.arange(2, 6)[:, None] * 9 + np.arange(1, 5)[None, :]).ravel()
    config = yaml.safe_dump({"data": {"path": "elsewhere.h5", "scan_region": [[2, 6], [1, 5]]}})
    offset = np.array([0.1, 0.0])
    result = make_result(exact_slices, DX, CANVAS_ORIGIN, positions[index] + offset, nominal_ang=positions[index],
                         config=config)
    metrics = evaluate_result(result, dataset_with(truth, positions), margin_ang=1.0, data_r_factor=False)
    assert metrics["position_rms_error_ang"] == pytest.approx(0.1)
    assert metrics["position_rms_error_centred_ang"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["nominal_rms_error_ang"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["rmse_rad"] < 1e-9
    unmatched = make_result(exact_slices, DX, CANVAS_ORIGIN, positions[index])
    metrics = evaluate_result(unmatched, dataset_with(truth, positions), margin_ang=1.0, data_r_factor=False)
    assert metrics["position_rms_error_ang"] is None and any("position" in n for n in metrics["notes"])
