"""Instrument formats (the io extra): Merlin .mib (hand-built bytes following Quantum Detectors' frame layout:
a 384-byte ASCII header per frame, then big-endian pixels), Dectris Arina/Quadro master + data files
(bitshuffle/LZ4 written with hdf5plugin), Zarr stores; their metadata filling `ptyopt convert`; truncated and
foreign files refused with exit 2 and nothing written."""

import numpy as np
import pytest
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.data import read_array, read_dataset
from ptyopt.data.readers import read_metadata
from ptyopt.errors import DataError
from ptyopt.physics.constants import wavelength_ang

pytest.importorskip("rsciio", reason="the io extra (pip install 'ptyopt[io]'; make setup installs it)")
hdf5plugin = pytest.importorskip("hdf5plugin")
zarr = pytest.importorskip("zarr")
runner = CliRunner()
SCAN = (2, 3)
META = ["--conv-angle-mrad", "20", "--step-ang", "0.5"]


def _frames(k=16, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, size=(SCAN[0] * SCAN[1], k, k)).astype(np.uint16)


def write_mib(path, frames, exposure_ns=1_000_000):
    """Merlin frames: 'MQ1,<seq>,00384,01,<width>,<height>,U16,   1x1,...' padded to 384 bytes, then >u2 pixels."""
    with open(path, "wb") as handle:
        for i, frame in enumerate(frames, start=1):
            fields = ["MQ1", f"{i:06d}", "00384", "01", f"{frame.shape[1]:04d}", f"{frame.shape[0]:04d}", "U16",
                      "   1x1", "01", "2026-12-03 10:00:00.000000", "0.001000", "0", "0", "0", "MQ1A",
                      "2026-12-03T10:00:00.000000000Z", f"{exposure_ns}ns", "12", ""]
            header = ",".join(fields).encode()
            handle.write(header + b" " * (384 - len(header)))
            handle.write(frame.astype(">u2").tobytes())
    return path


def test_merlin_round_trip_metadata_and_cli(tmp_path):
    frames = _frames()
    path = write_mib(tmp_path / "scan.mib", frames)
    array = read_array(path, scan_shape=SCAN)
    assert array.shape == (*SCAN, 16, 16)
    np.testing.assert_array_equal(array.reshape(frames.shape), frames)
    assert read_metadata(path) == {"exposure_s": pytest.approx(1e-3)}
    out = tmp_path / "scan.h5"
    result = runner.invoke(app, ["convert", str(path), "--out", str(out), "--scan-shape", "2,3", "--energy-kv",
                                 "300", "--dk-inv-ang", "0.05", *META])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_dataset(out).meas, frames)


def test_merlin_truncated_and_foreign_files_are_refused(tmp_path):
    path = write_mib(tmp_path / "scan.mib", _frames())
    cut = tmp_path / "cut.mib"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_array(cut)
    foreign = tmp_path / "foreign.mib"
    foreign.write_bytes(b"\x89PNG" + bytes(2000))
    result = runner.invoke(app, ["convert", str(foreign), "--out", str(tmp_path / "x.h5"), "--energy-kv", "300",
                                 "--dk-inv-ang", "0.05", "--scan-shape", "2,3", *META])
    assert result.exit_code == 2 and "not a Merlin" in result.output
    assert not (tmp_path / "x.h5").exists()


def write_dectris(folder, frames, *, wavelength=0.019687, pixel_m=75e-6, distance_m=0.2, per_file=4):
    """A Dectris-style master file: /entry/data/data_NNNNNN external links to data files holding
    /entry/data/data (bitshuffle/LZ4), and /entry/instrument beam and detector metadata."""
    import h5py

    master = folder / "scan_master.h5"
    with h5py.File(master, "w") as handle:
        data = handle.create_group("entry/data")
        for block, start in enumerate(range(0, len(frames), per_file), start=1):
            name = f"scan_data_{block:06d}.h5"
            with h5py.File(folder / name, "w") as part:
                part.create_dataset("entry/data/data", data=frames[start:start + per_file],
                                    chunks=(1, *frames.shape[1:]), **hdf5plugin.Bitshuffle(cname="lz4"))
            data[f"data_{block:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        handle["entry/instrument/beam/incident_wavelength"] = wavelength
        handle["entry/instrument/detector/x_pixel_size"] = pixel_m
        handle["entry/instrument/detector/detector_distance"] = distance_m
        handle["entry/instrument/detector/count_time"] = 0.001
    return master


def test_dectris_master_and_data_files_round_trip_with_their_metadata(tmp_path):
    frames = _frames()
    master = write_dectris(tmp_path, frames)
    np.testing.assert_array_equal(read_array(master), frames)
    meta = read_metadata(master)
    assert meta["energy_kv"] == pytest.approx(300.0, rel=1e-3)
    assert meta["dk_inv_ang"] == pytest.approx(75e-6 / 0.2 / wavelength_ang(meta["energy_kv"]))
    out = tmp_path / "scan.h5"
    result = runner.invoke(app, ["convert", str(master), "--out", str(out), "--scan-shape", "2,3", *META])
    assert result.exit_code == 0, result.output  # energy and dk came from the file
    dataset = read_dataset(out)
    np.testing.assert_array_equal(dataset.meas, frames)
    assert dataset.dk_inv_ang == pytest.approx(meta["dk_inv_ang"]) and dataset.energy_kv == pytest.approx(300, rel=1e-3)
    (tmp_path / "scan_data_000002.h5").unlink()
    missing = runner.invoke(app, ["convert", str(master), "--out", str(tmp_path / "y.h5"), "--scan-shape", "2,3",
                                  *META])
    assert missing.exit_code == 2 and "data_000002" in missing.output and not (tmp_path / "y.h5").exists()


def test_zarr_round_trip_with_metadata_and_refusals(tmp_path):
    frames = _frames().reshape(*SCAN, 16, 16)
    store = tmp_path / "scan.zarr"
    root = zarr.open_group(str(store), mode="w")
    root.create_array("patterns", shape=frames.shape, dtype=frames.dtype, chunks=(1, 1, 16, 16))[...] = frames
    root.attrs.update({"energy_kv": 200.0, "dk_inv_ang": 0.04, "step_ang": 0.5, "conv_angle_mrad": 25.0})
    np.testing.assert_array_equal(read_array(store), frames)
    out = tmp_path / "scan.h5"
    result = runner.invoke(app, ["convert", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    dataset = read_dataset(out)
    assert dataset.scan_shape == SCAN and dataset.energy_kv == 200 and dataset.conv_angle_mrad == 25
    bare = tmp_path / "bare.zarr"
    zarr.open_group(str(bare), mode="w").create_array("p", shape=frames.shape, dtype=frames.dtype)[...] = frames
    refused = runner.invoke(app, ["convert", str(bare), "--out", str(tmp_path / "z.h5")])
    assert refused.exit_code == 2 and "--energy-kv" in refused.output and "--dk-inv-ang" in refused.output
    assert not (tmp_path / "z.h5").exists()
    not_a_store = tmp_path / "empty.zarr"
    not_a_store.mkdir()
    with pytest.raises(DataError):
        read_array(not_a_store)


def test_py4dstem_emd1_round_trip_with_its_calibration(tmp_path):
    """An EMD 1.0 file as py4DSTEM writes it (emdfile): the 4-D array, the scan step and dk from its dimension
    vectors (Å and Å⁻¹; nm would be converted)."""
    emdfile = pytest.importorskip("emdfile")
    frames = _frames().reshape(*SCAN, 16, 16)
    array = emdfile.Array(data=frames, name="datacube", dims=[np.arange(2) * 0.4, np.arange(3) * 0.4,
                                                              np.arange(16) * 0.05, np.arange(16) * 0.05],
                          dim_units=["A", "A", "A^-1", "A^-1"], dim_names=["Rx", "Ry", "Qx", "Qy"])
    root = emdfile.Root(name="root")
    root.tree(array)
    path = tmp_path / "scan.emd"
    emdfile.save(str(path), root, mode="o")
    np.testing.assert_array_equal(read_array(path), frames)
    meta = read_metadata(path)
    assert meta["scan_shape"] == SCAN and meta["step_ang"] == pytest.approx(0.4)
    assert meta["dk_inv_ang"] == pytest.approx(0.05)
    out = tmp_path / "scan.h5"
    result = runner.invoke(app, ["convert", str(path), "--out", str(out), "--energy-kv", "300",
                                 "--conv-angle-mrad", "20"])
    assert result.exit_code == 0, result.output
    assert read_dataset(out).dk_inv_ang == pytest.approx(0.05)
