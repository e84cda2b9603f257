"""A Dataset4D from a foreign file: read the raw array, bring it to (N, Ky, Kx), attach the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.readers import crop_scan, read_array
from ptyopt.data.transforms import to_3d
from ptyopt.errors import ConfigError


def read_foreign_patterns(path: str | Path, *, key: str | None = None, scan_shape: tuple[int, int] | None = None,
                          permute: tuple[int, ...] | None = None,
                          scan_region: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None,
                          ) -> tuple[np.ndarray, tuple[int, int]]:
    """The patterns (N, Ky, Kx) of a foreign file and the raster scan shape (Ny, Nx); a DataError when the file
    cannot be read, a ConfigError when 3-D data come without a scan shape. scan_region (y_range, x_range):
    only those scan rows and columns, read alone where the format allows (the file need not fit in memory)."""
    raw = read_array(path, key=key, scan_shape=scan_shape, lazy=True)
    if scan_region is not None and any(r is not None for r in scan_region):
        if permute is not None:
            raw = np.transpose(np.asarray(raw), permute)  # the axes must be (Ny, Nx, Ky, Kx) to crop the scan
            permute = None
        full = tuple(raw.shape[:2]) if raw.ndim == 4 else scan_shape
        if full is None:
            raise ConfigError("cropping the scan of 3-D data needs --scan-shape Ny,Nx")
        raw = crop_scan(raw, full, *scan_region)
    meas, found_shape = to_3d(np.asarray(raw), permute)
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
    scan_region: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None,
    **metadata: Any,
) -> Dataset4D:
    """Raster dataset of a foreign file (npy/npz, HDF5/EMD, MATLAB, TIFF, EMPAD, Merlin, Dectris, Zarr).

    scan_shape (Ny, Nx) is needed for 3-D data; permute orders the axes into (Ny, Nx, Ky, Kx); scan_region
    (y_range, x_range) keeps those scan rows and columns [start, stop) (read alone; the positions keep their
    place in the full scan); metadata: energy_kv, conv_angle_mrad, dk_inv_ang, aberrations, counts,
    dose_e_per_ang2 (see Dataset4D).
    """
    meas, shape = read_foreign_patterns(path, key=key, scan_shape=scan_shape, permute=permute,
                                        scan_region=scan_region)
    dataset = Dataset4D.from_raster(meas, shape, step_ang, **metadata)
    if scan_region is None:
        return dataset
    start = np.array([0 if r is None else r[0] for r in scan_region], dtype=float)
    return dataset.replace(positions_ang=dataset.positions_ang + start * step_ang)
