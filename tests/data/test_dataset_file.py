"""The ptyopt dataset file: write -> read keeps every field; foreign or incomplete files raise DataError."""

import json

import h5py
import numpy as np
import pytest

from ptyopt.data.dataset import Dataset4D, GroundTruth
from ptyopt.data.dataset_file import is_dataset_file, read_dataset, write_dataset
from ptyopt.errors import DataError


def _truth(rng):
    probe = rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))
    return GroundTruth(
        phase_slices=rng.standard_normal((3, 12, 14)).astype(np.float32),
        dx_ang=0.31,
        slice_thickness_ang=2.0,
        origin_ang=(-1.5, -2.25),
        positions_ang=rng.standard_normal((6, 2)),
        probe=probe.astype(np.complex64),
        probe_dx_ang=0.31,
        fine_phase_slices=rng.standard_normal((6, 12, 14)),
        fine_slice_thickness_ang=1.0,
        attrs={
            "structure": "SrTiO3 [001]",
            "seed": 7,
            "thickness_ang": 12.5,
            "periodic": True,
            "cell_ang": [3.905, 3.905, 3.905],
            "source": {"tool": "abtem", "version": "1.0.11"},
            "nothing": None,
            "grid": np.arange(3),
        },
    )


def _dataset(meas, **changes):
    metadata = {
        "energy_kv": 300.0,
        "conv_angle_mrad": 21.4,
        "dk_inv_ang": 0.0195,
        "aberrations": {"defocus": 120.0, "C12": 5.0, "phi12": 0.3},
        "dose_e_per_ang2": 1.0e5,
        "counts": True,
    }
    return Dataset4D.from_raster(meas, scan_shape=(2, 3), step_ang=0.4, **{**metadata, **changes})


def _assert_same(read, written):
    assert read.meas.dtype == written.meas.dtype
    np.testing.assert_array_equal(read.meas, written.meas)
    np.testing.assert_array_equal(read.positions_ang, written.positions_ang)
    for name in (
        "energy_kv",
        "conv_angle_mrad",
        "dk_inv_ang",
        "aberrations",
        "dose_e_per_ang2",
        "counts",
        "scan_shape",
        "step_ang",
    ):
        assert getattr(read, name) == getattr(written, name), name


def test_round_trip_uint16_counts_with_truth(tmp_path):
    rng = np.random.default_rng(1)
    written = _dataset(rng.poisson(20.0, (6, 8, 8)).astype(np.uint16), truth=_truth(rng))
    path = write_dataset(tmp_path / "sub" / "data.h5", written)
    assert path == tmp_path / "sub" / "data.h5"
    assert is_dataset_file(path)
    read = read_dataset(path)
    _assert_same(read, written)
    assert read.meas.dtype == np.uint16
    assert read.aberrations == {"C10": -120.0, "C12": 5.0, "phi12": 0.3}

    truth, expected = read.truth, written.truth
    np.testing.assert_array_equal(truth.phase_slices, expected.phase_slices)
    assert truth.phase_slices.dtype == np.float32
    assert (truth.dx_ang, truth.slice_thickness_ang, truth.origin_ang) == (0.31, 2.0, (-1.5, -2.25))
    np.testing.assert_array_equal(truth.positions_ang, expected.positions_ang)
    assert np.iscomplexobj(truth.probe) and truth.probe.shape == (2, 8, 8)
    np.testing.assert_array_equal(truth.probe, expected.probe)
    assert truth.probe_dx_ang == 0.31
    np.testing.assert_array_equal(truth.fine_phase_slices, expected.fine_phase_slices)
    assert truth.fine_slice_thickness_ang == 1.0
    grid = truth.attrs.pop("grid")
    np.testing.assert_array_equal(grid, np.arange(3))
    assert truth.attrs == {
        "structure": "SrTiO3 [001]",
        "seed": 7,
        "thickness_ang": 12.5,
        "periodic": True,
        "cell_ang": [3.905, 3.905, 3.905],
        "source": {"tool": "abtem", "version": "1.0.11"},
        "nothing": None,
    }
    assert type(truth.attrs["seed"]) is int and type(truth.attrs["periodic"]) is bool


def test_round_trip_float32_without_optional_fields(tmp_path):
    meas = np.random.default_rng(2).random((6, 8, 8), dtype=np.float32)
    written = Dataset4D(
        meas=meas, positions_ang=np.zeros((6, 2)), energy_kv=80.0, conv_angle_mrad=30.0, dk_inv_ang=0.03
    )
    path = write_dataset(tmp_path / "data.h5", written)
    read = read_dataset(path)
    _assert_same(read, written)
    assert read.meas.dtype == np.float32
    assert read.dose_e_per_ang2 is None and read.scan_shape is None and read.step_ang is None
    assert read.truth is None and read.counts is False and read.aberrations == {}
    with h5py.File(path, "r") as f:
        assert "dose_e_per_ang2" not in f.attrs
        assert "shape" not in f["scan/positions_ang"].attrs and "step_ang" not in f["scan/positions_ang"].attrs
        assert "truth" not in f


def test_file_layout_follows_design(tmp_path):
    rng = np.random.default_rng(3)
    path = write_dataset(tmp_path / "data.h5", _dataset(np.ones((6, 8, 8), np.uint16), truth=_truth(rng)))
    with h5py.File(path, "r") as f:
        assert f.attrs["ptyopt_dataset"] == 1
        assert f["meas"].shape == (6, 8, 8) and f["meas"].chunks == (1, 8, 8)
        assert f["meas"].compression == "gzip"
        assert tuple(f["scan/positions_ang"].attrs["shape"]) == (2, 3)
        assert f["scan/positions_ang"].attrs["step_ang"] == 0.4
        assert json.loads(f.attrs["aberrations"]) == {"C10": -120.0, "C12": 5.0, "phi12": 0.3}
        assert bool(f.attrs["counts"]) is True
        assert f.attrs["dose_e_per_ang2"] == 1.0e5
        assert f["truth/phase_slices"].attrs["dx_ang"] == 0.31
        assert f["truth/probe"].attrs["dx_ang"] == 0.31
        assert f["truth"].attrs["structure"] == "SrTiO3 [001]"


def test_foreign_hdf5_file_rejected(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.ones((4, 8, 8)))
    assert not is_dataset_file(path)
    with pytest.raises(DataError, match=r"not a ptyopt dataset file .*`ptyopt convert`"):
        read_dataset(path)


def test_non_hdf5_and_missing_files(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"plain bytes")
    assert not is_dataset_file(tmp_path / "a.npy")
    assert not is_dataset_file(tmp_path / "missing.h5")
    with pytest.raises(DataError, match="not a ptyopt dataset file"):
        read_dataset(tmp_path / "a.npy")
    with pytest.raises(DataError, match="dataset file not found"):
        read_dataset(tmp_path / "missing.h5")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("energy_kv", "lacks the attribute 'energy_kv'"),
        ("dk_inv_ang", "lacks the attribute 'dk_inv_ang'"),
        ("meas", "lacks the dataset 'meas'"),
        ("scan/positions_ang", "lacks the dataset 'scan/positions_ang'"),
    ],
)
def test_missing_required_field_named(tmp_path, remove, message):
    path = write_dataset(tmp_path / "data.h5", _dataset(np.ones((6, 8, 8), np.float32)))
    with h5py.File(path, "r+") as f:
        if remove in f.attrs:
            del f.attrs[remove]
        else:
            del f[remove]
    with pytest.raises(DataError, match=message):
        read_dataset(path)


def test_invalid_content_caught_by_dataset_validation(tmp_path):
    path = write_dataset(tmp_path / "data.h5", _dataset(np.ones((6, 8, 8), np.float32)))
    with h5py.File(path, "r+") as f:
        del f["scan/positions_ang"]
        f.create_dataset("scan/positions_ang", data=np.zeros((5, 2)))
    with pytest.raises(DataError, match="5 scan positions but 6 diffraction patterns"):
        read_dataset(path)


def test_unsupported_format_version(tmp_path):
    path = write_dataset(tmp_path / "data.h5", _dataset(np.ones((6, 8, 8), np.float32)))
    with h5py.File(path, "r+") as f:
        f.attrs["ptyopt_dataset"] = 2
    with pytest.raises(DataError, match="format version 2; this ptyopt reads version 1"):
        read_dataset(path)
