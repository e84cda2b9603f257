"""A foreign file larger than the memory a process may still take is inspected and cropped without reading it
whole: a fresh process (tests/data/lazy_check.py) limits its data segment (RLIMIT_DATA, which counts heap and
anonymous memory but not read-only file maps) to its own use plus half the file, runs `ptyopt inspect` and
`ptyopt convert --scan-crop-y/x`, and checks that allocating the whole file's worth fails under that limit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptyopt.data import read_dataset

SHAPE = (32, 32, 128, 128)  # 64 MiB of float32


def _write(path: Path) -> Path:
    if path.suffix == ".npy":
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=SHAPE)
        for row in range(SHAPE[0]):
            array[row] = row
        array.flush()
    else:
        with h5py.File(path, "w") as handle:
            data = handle.create_dataset("patterns", shape=SHAPE, dtype=np.float32, chunks=(1, 1, 128, 128))
            for row in range(SHAPE[0]):
                data[row] = row
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA semantics are Linux's")
@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_a_file_twice_the_free_memory_is_inspected_and_cropped(tmp_path, suffix):
    path = _write(tmp_path / f"big{suffix}")
    out = tmp_path / "crop.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("lazy_check.py")), str(path), str(out),
                          str(path.stat().st_size)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["full_read"] == "MemoryError"  # the limit bites: the whole file would not fit
    assert record["inspect"][0] == 0 and "(32, 32, 128, 128)" in record["inspect"][1]
    assert record["convert"][0] == 0, record["convert"][1]
    cropped = read_dataset(out)
    assert cropped.scan_shape == (4, 4)
    np.testing.assert_array_equal(cropped.meas[:, 0, 0], np.repeat([2, 3, 4, 5], 4))
    np.testing.assert_allclose(cropped.positions_ang[0], [2 * 0.5, 3 * 0.5])  # its place in the full scan
