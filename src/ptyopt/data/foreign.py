"""A Dataset4D from a foreign file: read the raw array, bring it to (N, Ky, Kx), attach the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.readers import read_array
from ptyopt.data.transforms import to_3d
from ptyopt.errors import ConfigError


def read_foreign_patterns(path: str | Path, *, key: str | None = None, scan_shape: tuple[int, int] | None = None,
                          permute: tuple[int, ...] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The patterns (N, Ky, Kx) of a foreign file and the raster scan shape (Ny, Nx); a DataError when the file
    cannot be read, a ConfigError when 3-D data come without a scan shape."""
    meas, found_shape = to_3d(np.asarray(read_array(path, key=key, scan_shape=scan_shape)), permute)
    shape = found_shape or scan_shape
    if shape is None:
        raise ConfigError(
            "the data are 3-D (N, Ky, Kx); give the raster scan shape (Ny, Nx): --scan-shape Ny,Nx for "
            "`ptyopt convert`, data.scan_shape in a reconstruction config"
        )
    return meas, shape


def dataset_from_foreign_file(
    path: str | Path,
    *,
    step_ang: float,
    key: str | None = None,
    scan_shape: tuple[int, int] | None = None,
    permute: tuple[int, ...] | None = None,
    **metadata: Any,
) -> Dataset4D:
    """Raster dataset of a foreign file (npy/npz, HDF5/EMD, MATLAB, TIFF, EMPAD raw).

    scan_shape (Ny, Nx) is needed for 3-D data; permute orders the axes into (Ny, Nx, Ky, Kx);
    metadata: energy_kv, conv_angle_mrad, dk_inv_ang, aberrations, counts, dose_e_per_ang2 (see Dataset4D).
    """
    meas, shape = read_foreign_patterns(path, key=key, scan_shape=scan_shape, permute=permute)
    return Dataset4D.from_raster(meas, shape, step_ang, **metadata)
