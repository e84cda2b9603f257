"""Dataset4D validation, aberration aliases and raster geometry."""

import numpy as np
import pytest

from ptyopt.data.dataset import Dataset4D, raster_positions_ang
from ptyopt.errors import ConfigError, DataError, PtyoptError

METADATA = {"energy_kv": 300.0, "conv_angle_mrad": 21.4, "dk_inv_ang": 0.02}


def _dataset(meas=None, **changes):
    meas = np.ones((6, 8, 8), dtype=np.float32) if meas is None else meas
    kwargs = {"scan_shape": (2, 3), "step_ang": 0.5, **METADATA, **changes}
    return Dataset4D.from_raster(meas, **kwargs)


def test_valid_dataset():
    data = _dataset()
    assert data.n_patterns == 6
    assert data.detector_shape == (8, 8)
    assert data.positions_ang.shape == (6, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_meas_rejected(bad):
    meas = np.ones((6, 8, 8), dtype=np.float32)
    meas[2, 3, 4] = bad
    meas[5, 0, 0] = bad
    with pytest.raises(DataError, match="measurements: 2 values are NaN or infinite; fix or mask them"):
        _dataset(meas)


def test_2d_meas_rejected():
    with pytest.raises(DataError, match=r"shape \(8, 8\); expected \(N, Ky, Kx\)"):
        Dataset4D(meas=np.ones((8, 8)), positions_ang=np.zeros((8, 2)), **METADATA)


def test_4d_meas_rejected_with_reshape_hint():
    with pytest.raises(DataError, match=r"\(2, 3, 8, 8\) \(4-D\); expected \(N, Ky, Kx\): reshape the scan axes"):
        Dataset4D(meas=np.ones((2, 3, 8, 8)), positions_ang=np.zeros((6, 2)), **METADATA)


def test_positions_pattern_count_mismatch():
    with pytest.raises(DataError, match="5 scan positions but 6 diffraction patterns"):
        Dataset4D(meas=np.ones((6, 8, 8)), positions_ang=np.zeros((5, 2)), **METADATA)


def test_scan_shape_mismatch():
    with pytest.raises(DataError, match=r"scan_shape \(2, 2\) holds 4 positions but there are 6 patterns"):
        Dataset4D(meas=np.ones((6, 8, 8)), positions_ang=np.zeros((6, 2)), scan_shape=(2, 2), **METADATA)


@pytest.mark.parametrize("field", ["energy_kv", "conv_angle_mrad", "dk_inv_ang"])
@pytest.mark.parametrize("value", [-300.0, 0.0, float("nan")])
def test_non_positive_metadata_rejected(field, value):
    with pytest.raises(ConfigError, match=f"{field} must be a positive number"):
        _dataset(**{field: value})


def test_negative_counts_rejected():
    meas = np.ones((6, 8, 8), dtype=np.float32)
    meas[0, 0, 0] = -1.0
    with pytest.raises(DataError, match="negative values"):
        _dataset(meas, counts=True)


def test_signed_integer_meas_become_float32():
    assert _dataset(np.ones((6, 8, 8), dtype=np.int32)).meas.dtype == np.float32


def test_unknown_aberration_suggests_closest():
    with pytest.raises(ConfigError, match="unknown aberration 'defocsu'; did you mean 'defocus'"):
        _dataset(aberrations={"defocsu": 100.0})


def test_errors_are_ptyopt_errors():
    with pytest.raises(PtyoptError):
        _dataset(aberrations={"defocsu": 100.0})
    with pytest.raises(PtyoptError):
        _dataset(np.ones((8, 8)))


def test_defocus_alias_becomes_minus_c10():
    data = _dataset(aberrations={"defocus": 150.0, "Cs": 1.0e4})
    assert data.aberrations == {"C10": -150.0, "C30": 1.0e4}


def test_raster_ordering_is_row_major():
    step_y_ang, step_x_ang = 0.7, 0.4
    n_y, n_x = 3, 4
    positions = raster_positions_ang((n_y, n_x), (step_y_ang, step_x_ang))
    assert positions.shape == (n_y * n_x, 2)
    for iy in range(n_y):
        for ix in range(n_x):
            np.testing.assert_allclose(positions[iy * n_x + ix], [iy * step_y_ang, ix * step_x_ang])


def test_pixel_size_is_inverse_of_reciprocal_extent():
    data = Dataset4D(meas=np.ones((2, 8, 10)), positions_ang=np.zeros((2, 2)), **METADATA)
    assert data.pixel_size_ang == pytest.approx((1 / (8 * 0.02), 1 / (10 * 0.02)))
    with pytest.raises(DataError, match="not square"):
        _ = data.dx_ang
    assert _dataset().dx_ang == pytest.approx(1 / (8 * 0.02))
