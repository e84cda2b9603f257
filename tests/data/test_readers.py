"""Each foreign-format reader round-trips an array through a file written here; bad input raises DataError."""

import h5py
import numpy as np
import pytest
import scipy.io
import tifffile

from ptyopt.data.readers import (
    EMPAD_COLUMNS,
    EMPAD_ROWS,
    READER_OF_SUFFIX,
    READERS,
    SUPPORTED_SUFFIXES,
    read_array,
)
from ptyopt.errors import DataError


@pytest.fixture
def patterns():
    """Non-symmetric 4-D array (Ny, Nx, Ky, Kx) with distinct values, so any axis mix-up shows."""
    return np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(3, 4, 5, 6)


def test_npy(tmp_path, patterns):
    np.save(tmp_path / "a.npy", patterns)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npy"), patterns)


def test_npy_uint16_dtype_kept(tmp_path, patterns):
    np.save(tmp_path / "a.npy", patterns.astype(np.uint16))
    assert read_array(tmp_path / "a.npy").dtype == np.uint16


def test_npz_by_key_and_discovery(tmp_path, patterns):
    np.savez(tmp_path / "a.npz", meas=patterns, energy=np.array(300.0), mask=np.ones((5, 6)))
    np.testing.assert_array_equal(read_array(tmp_path / "a.npz", key="meas"), patterns)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npz"), patterns)
    with pytest.raises(DataError, match=r"'mask' in .*a.npz has shape \(5, 6\)"):
        read_array(tmp_path / "a.npz", key="mask")
    with pytest.raises(DataError, match="no array 'cbed'; available keys: meas, energy, mask"):
        read_array(tmp_path / "a.npz", key="cbed")


def test_npz_ambiguous_discovery_lists_arrays(tmp_path, patterns):
    np.savez(tmp_path / "a.npz", first=patterns, second=patterns[0])
    with pytest.raises(DataError, match=r"cannot tell which array.*'first' \(3, 4, 5, 6\).*give the key"):
        read_array(tmp_path / "a.npz")


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".emd", ".H5"])
def test_hdf5_by_key(tmp_path, patterns, suffix):
    path = tmp_path / f"a{suffix}"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/meas", data=patterns)
    np.testing.assert_array_equal(read_array(path, key="/data/meas"), patterns)
    np.testing.assert_array_equal(read_array(path, key="data/meas"), patterns)


def test_hdf5_discovers_the_4d_array_among_decoys(tmp_path, patterns):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("calibration/energy", data=np.arange(3.0))
        f.create_dataset("mask", data=np.ones((5, 6)))
        f.create_dataset("experiment/detector/frames", data=patterns)
    np.testing.assert_array_equal(read_array(path), patterns)


def test_hdf5_discovery_takes_the_largest(tmp_path, patterns):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("small", data=patterns[0])
        f.create_dataset("large", data=patterns)
    np.testing.assert_array_equal(read_array(path), patterns)


def test_emd_in_berkeley_layout(tmp_path, patterns):
    path = tmp_path / "scan.emd"
    with h5py.File(path, "w") as f:
        f.attrs["version_major"] = 0
        group = f.create_group("data/datacube_0")
        group.attrs["emd_group_type"] = 1
        group.create_dataset("data", data=patterns)
        for i, n in enumerate(patterns.shape, start=1):
            group.create_dataset(f"dim{i}", data=np.arange(n, dtype=np.float64))
    np.testing.assert_array_equal(read_array(path), patterns)


def test_hdf5_missing_key_lists_datasets(tmp_path, patterns):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/meas", data=patterns)
        f.create_dataset("mask", data=np.ones((5, 6)))
    with pytest.raises(DataError, match="no dataset '/meas'; datasets in the file: /data/meas, /mask"):
        read_array(path, key="/meas")


def test_hdf5_without_patterns_names_what_it_found(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("mask", data=np.ones((5, 6)))
    with pytest.raises(DataError, match=r"no 3-D or 4-D dataset \(found /mask \(5, 6\)\)"):
        read_array(path)


def _write_mat73(path, arrays):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte userblock, dims reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array.T).attrs["MATLAB_class"] = np.bytes_("single")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def test_matlab_v5(tmp_path, patterns):
    scipy.io.savemat(tmp_path / "a.mat", {"cbed": patterns, "energy": 300.0})
    np.testing.assert_array_equal(read_array(tmp_path / "a.mat", key="cbed"), patterns)
    np.testing.assert_array_equal(read_array(tmp_path / "a.mat"), patterns)
    with pytest.raises(DataError, match="no variable 'dp'; variables in the file: cbed, energy"):
        read_array(tmp_path / "a.mat", key="dp")


def test_matlab_v73_matches_v5(tmp_path, patterns):
    scipy.io.savemat(tmp_path / "v5.mat", {"cbed": patterns})
    _write_mat73(tmp_path / "v73.mat", {"cbed": patterns, "energy": np.array([[300.0]])})
    assert h5py.is_hdf5(tmp_path / "v73.mat")
    from_v5 = read_array(tmp_path / "v5.mat", key="cbed")
    for key in ("cbed", None):
        from_v73 = read_array(tmp_path / "v73.mat", key=key)
        assert from_v73.shape == from_v5.shape == patterns.shape
        np.testing.assert_array_equal(from_v73, from_v5)


def test_tiff_stack(tmp_path, patterns):
    stack = patterns.reshape(12, 5, 6)
    tifffile.imwrite(tmp_path / "a.tif", stack)
    out = read_array(tmp_path / "a.tif")
    assert out.shape == (12, 5, 6)
    np.testing.assert_array_equal(out, stack)
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif", scan_shape=(3, 4)), patterns)


def test_tiff_4d_stays_4d(tmp_path, patterns):
    tifffile.imwrite(tmp_path / "a.tiff", patterns, photometric="minisblack")
    np.testing.assert_array_equal(read_array(tmp_path / "a.tiff"), patterns)


def test_tiff_stack_of_three_frames(tmp_path, patterns):
    tifffile.imwrite(tmp_path / "a.tif", patterns[0, :3], photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif"), patterns[0, :3])


def test_tiff_rgb_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="colour"):
        read_array(tmp_path / "a.tif")


def _write_empad(path, frames):
    """frames: (N, 128, 128) float32; each is written as 130 rows, the last 2 holding junk metadata."""
    junk = np.full((frames.shape[0], EMPAD_ROWS - EMPAD_COLUMNS, EMPAD_COLUMNS), -7.0e9, dtype="<f4")
    np.concatenate([frames.astype("<f4"), junk], axis=1).tofile(path)


@pytest.fixture
def empad_frames():
    rng = np.random.default_rng(0)
    return rng.random((6, EMPAD_COLUMNS, EMPAD_COLUMNS), dtype=np.float32)


def test_empad_with_scan_shape(tmp_path, empad_frames):
    _write_empad(tmp_path / "scan.raw", empad_frames)
    out = read_array(tmp_path / "scan.raw", scan_shape=(2, 3))
    assert out.shape == (2, 3, 128, 128)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, empad_frames.reshape(2, 3, 128, 128))
    assert out.min() > -1.0  # metadata rows dropped


def test_empad_infers_square_scan(tmp_path, empad_frames):
    _write_empad(tmp_path / "scan.raw", empad_frames[:4])
    out = read_array(tmp_path / "scan.raw")
    assert out.shape == (2, 2, 128, 128)
    np.testing.assert_array_equal(out[1, 0], empad_frames[2])


def test_empad_non_square_needs_scan_shape(tmp_path, empad_frames):
    _write_empad(tmp_path / "scan.raw", empad_frames)
    with pytest.raises(DataError, match=r"6 EMPAD frames, not a square scan; give scan_shape"):
        read_array(tmp_path / "scan.raw")


def test_empad_truncated(tmp_path, empad_frames):
    _write_empad(tmp_path / "scan.raw", empad_frames)
    data = (tmp_path / "scan.raw").read_bytes()
    (tmp_path / "scan.raw").write_bytes(data[:-100])
    actual = len(data) - 100
    expected = 6 * 130 * 128 * 4
    with pytest.raises(DataError, match=f"has {actual} bytes, but an EMPAD scan of \\(2, 3\\) needs {expected}"):
        read_array(tmp_path / "scan.raw", scan_shape=(2, 3))
    with pytest.raises(DataError, match=f"{actual} bytes, not a whole number of EMPAD frames of 66560 bytes"):
        read_array(tmp_path / "scan.raw")


def test_2d_array_rejected(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((5, 6)))
    with pytest.raises(DataError, match=r"has shape \(5, 6\); expected a 3-D \(N, Ky, Kx\) or 4-D"):
        read_array(tmp_path / "a.npy")


def test_5d_array_rejected(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((1, 2, 2, 3, 3)))
    with pytest.raises(DataError, match=r"has shape \(1, 2, 2, 3, 3\); expected a 3-D"):
        read_array(tmp_path / "a.npy")


def test_complex_rejected(tmp_path, patterns):
    np.save(tmp_path / "a.npy", patterns.astype(np.complex64))
    with pytest.raises(DataError, match="complex values; diffraction intensities must be real"):
        read_array(tmp_path / "a.npy")


def test_complex_matlab_v73_rejected(tmp_path, patterns):
    compound = np.empty(patterns.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
    compound["real"], compound["imag"] = patterns, 1.0
    _write_mat73(tmp_path / "a.mat", {"psi": compound})
    with pytest.raises(DataError, match="complex values"):
        read_array(tmp_path / "a.mat")


def test_unknown_suffix(tmp_path):
    (tmp_path / "a.dm4").write_bytes(b"\0" * 16)
    with pytest.raises(DataError, match=r"unsupported file type '.dm4'.*supported: .npy, .npz, .h5"):
        read_array(tmp_path / "a.dm4")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found: .*nothere.npy"):
        read_array(tmp_path / "nothere.npy")


def test_damaged_file(tmp_path):
    (tmp_path / "a.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match=r"cannot read .*a.h5 as a .h5 file"):
        read_array(tmp_path / "a.h5")


def test_key_for_single_array_format_rejected(tmp_path, patterns):
    np.save(tmp_path / "a.npy", patterns)
    with pytest.raises(DataError, match="hold a single array; remove key 'meas'"):
        read_array(tmp_path / "a.npy", key="meas")


def test_scan_shape_mismatch(tmp_path, patterns):
    np.save(tmp_path / "a.npy", patterns.reshape(12, 5, 6))
    with pytest.raises(DataError, match=r"holds 12 patterns but scan_shape \(5, 5\) needs 25"):
        read_array(tmp_path / "a.npy", scan_shape=(5, 5))


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_every_registered_reader_turns_a_damaged_file_into_a_data_error(tmp_path, suffix):
    """Random bytes under each registered suffix: a DataError naming the file, never another exception."""
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="damaged"):
        read_array(path)
    assert suffix in READERS.get(READER_OF_SUFFIX[suffix].name).suffixes


def test_empad_xml_names_its_raw_file_and_gives_scan_step_and_pixel(tmp_path, empad_frames):
    """The acquisition .xml beside the .raw (hand-built following the EMPAD layout: raw_file, pix_x/pix_y, the
    scan field of view with its scale factor, calibrated_pixelsize): frames, scan shape and metadata; a missing
    raw file and a foreign xml are refused."""
    from ptyopt.data.readers import read_metadata

    _write_empad(tmp_path / "scan_x3_y2.raw", empad_frames)
    xml = tmp_path / "scan.xml"
    xml.write_text('<root><raw_file filename="scan_x3_y2.raw"/><pix_x>3</pix_x><pix_y>2</pix_y>'
                   "<iom_measurements><full_scan_field_of_view><x>8.64e-10</x><scale_factor>0.72</scale_factor>"
                   "</full_scan_field_of_view><calibrated_pixelsize>2.5e-11</calibrated_pixelsize>"
                   "</iom_measurements></root>")
    array = read_array(xml)
    assert array.shape == (2, 3, 128, 128)
    np.testing.assert_array_equal(array.reshape(6, 128, 128), empad_frames)
    meta = read_metadata(xml)
    assert meta["scan_shape"] == (2, 3) and meta["step_ang"] == pytest.approx(8.64 / 0.72 / 3)
    assert meta["dk_inv_ang"] == pytest.approx(2.5e-3)
    (tmp_path / "scan_x3_y2.raw").unlink()
    with pytest.raises(DataError, match="not beside it"):
        read_array(xml)
    foreign = tmp_path / "other.xml"
    foreign.write_text("<config><a>1</a></config>")
    with pytest.raises(DataError, match="names no raw_file"):
        read_array(foreign)
