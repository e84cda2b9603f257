"""Readers of foreign 4D-STEM files (registry ``READERS``, one class per format with its file suffixes): each
returns the raw diffraction array, (N, Ky, Kx) or (Ny, Nx, Ky, Kx), and the metadata the file carries
(``read_metadata``: energy, detector sampling, scan step and shape, exposure, in ptyopt's names; what a file does
not give comes from the config or the command line). The instrument formats (Merlin, Dectris Arina/Quadro, Zarr)
are in ``ptyopt.data.instrument``.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import ClassVar, Protocol

import h5py
import numpy as np

from ptyopt.errors import DataError
from ptyopt.registry import Registry

EMPAD_COLUMNS = 128
EMPAD_ROWS = 130  # the last 2 rows of each EMPAD frame hold metadata, not pixels
EMPAD_FRAME_BYTES = EMPAD_COLUMNS * EMPAD_ROWS * 4
_MATLAB_INTERNAL_GROUPS = ("#refs#", "#subsystem#")


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def _is_patterns(shape: tuple[int, ...]) -> bool:
    return len(shape) in (3, 4)


def _check_array(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype.names is not None and {"real", "imag"} <= set(array.dtype.names):
        array = array["real"] + 1j * array["imag"]  # MATLAB v7.3 stores complex as a compound type
    if np.iscomplexobj(array):
        raise DataError(
            f"{source} holds complex values; diffraction intensities must be real "
            "(store |psi|^2, not the wave function)"
        )
    if array.dtype.kind not in "uif":
        raise DataError(f"{source} has dtype {array.dtype}; expected real numbers (float or integer counts)")
    if not _is_patterns(array.shape):
        raise DataError(
            f"{source} has shape {array.shape}; expected a 3-D (N, Ky, Kx) or 4-D (Ny, Nx, Ky, Kx) "
            "array of diffraction patterns"
        )
    return array


def _no_key(path: Path, key: str | None) -> None:
    if key is not None:
        raise DataError(f"{path.suffix} files hold a single array; remove key '{key}'")


def _pick_by_shape(shapes: dict[str, tuple[int, ...]], source: str) -> str:
    """The key of the only array, or of the only 3-D/4-D array, in a multi-array file (npz, MATLAB v5)."""
    if len(shapes) == 1:
        return next(iter(shapes))
    candidates = [name for name, shape in shapes.items() if _is_patterns(shape)]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(f"'{name}' {shape}" for name, shape in shapes.items()) or "no arrays"
    raise DataError(
        f"{source}: cannot tell which array holds the diffraction patterns (found {found}); "
        "give the key of the (N, Ky, Kx) or (Ny, Nx, Ky, Kx) array"
    )


class Reader(Protocol):
    """A foreign format: ``read(path, key, scan_shape)`` -> the patterns array, for files ending in ``suffixes``.
    key: the array inside a multi-array file (None: found by shape); scan_shape: (Ny, Nx) where the file cannot
    tell it (EMPAD .raw)."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray: ...

    # optional: ``metadata(path, key) -> dict`` (energy_kv, dk_inv_ang, step_ang, conv_angle_mrad, scan_shape,
    # exposure_s) without reading the patterns; ``read_lazy(path, key, scan_shape)``: an array-like (shape, dtype,
    # ndim, slicing) that reads only what is indexed


READERS: Registry[type[Reader]] = Registry("reader")




def _hdf5_datasets(handle: h5py.File, skip: tuple[str, ...] = ()) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, item: h5py.HLObject) -> None:
        if isinstance(item, h5py.Dataset) and not name.startswith(skip):
            found["/" + name] = item

    handle.visititems(visit)
    return found


class LazyHdf5Array:
    """An HDF5 dataset read only where it is indexed (shape, dtype and ndim without reading; np.asarray reads
    it all)."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        with h5py.File(path, "r") as handle:
            dataset = handle[name]
            self.shape, self.dtype = tuple(dataset.shape), dataset.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        with h5py.File(self.path, "r") as handle:
            return handle[self.name][index]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self[()]
        return array if dtype is None else array.astype(dtype)


def _hdf5_key(handle: h5py.File, path: Path, key: str | None, matlab: bool = False) -> str:
    """The dataset holding the patterns: ``key``, or the largest 3-D/4-D one."""
    datasets = _hdf5_datasets(handle, _MATLAB_INTERNAL_GROUPS if matlab else ())
    if key is None:
        candidates = [name for name, ds in datasets.items() if _is_patterns(ds.shape)]
        if not candidates:
            found = ", ".join(f"{name} {ds.shape}" for name, ds in datasets.items()) or "no datasets"
            raise DataError(
                f"{path} holds no 3-D or 4-D dataset (found {found}); the diffraction patterns must be "
                "(N, Ky, Kx) or (Ny, Nx, Ky, Kx)"
            )
        key = max(candidates, key=lambda name: datasets[name].size)
    name = "/" + key.lstrip("/")
    if name not in datasets:
        raise DataError(f"{path} has no dataset '{key}'; datasets in the file: {_listing(list(datasets))}")
    return name


def _read_hdf5_array(path: Path, key: str | None, *, matlab: bool = False) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        array = handle[_hdf5_key(handle, path, key, matlab)][()]
    # MATLAB writes column-major, so h5py sees the dimensions in reverse order
    return np.ascontiguousarray(array.T) if matlab else array


@READERS.register
class NpyReader:
    """NumPy .npy: one array."""

    name, suffixes = "npy", (".npy",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        _no_key(path, key)
        return np.load(path, allow_pickle=False)

    @staticmethod
    def read_lazy(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        _no_key(path, key)
        return np.load(path, allow_pickle=False, mmap_mode="r")


@READERS.register
class NpzReader:
    """NumPy .npz: the array ``key``, or the only 3-D/4-D one."""

    name, suffixes = "npz", (".npz",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        with np.load(path, allow_pickle=False) as archive:
            if key is None:
                key = _pick_by_shape({name: archive[name].shape for name in archive.files}, str(path))
            if key not in archive.files:
                raise DataError(f"{path} has no array '{key}'; available keys: {_listing(archive.files)}")
            return archive[key]


@READERS.register
class Hdf5Reader:
    """HDF5 and EMD: the dataset ``key``, or the largest 3-D/4-D one."""

    name, suffixes = "hdf5", (".h5", ".hdf5", ".hdf", ".emd")

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        from ptyopt.data.instrument import is_dectris_master, read_dectris

        with h5py.File(path, "r") as handle:
            dectris = key is None and is_dectris_master(handle)
        return read_dectris(path) if dectris else _read_hdf5_array(path, key)

    @staticmethod
    def read_lazy(path: Path, key: str | None, scan_shape: tuple[int, int] | None):
        from ptyopt.data.instrument import is_dectris_master, read_dectris

        with h5py.File(path, "r") as handle:
            if key is None and is_dectris_master(handle):
                return read_dectris(path)  # several linked files: read whole
            return LazyHdf5Array(path, _hdf5_key(handle, path, key))

    @staticmethod
    def metadata(path: Path, key: str | None) -> dict:
        from ptyopt.data.instrument import dectris_metadata, emd1_metadata, is_dectris_master, is_emd1

        with h5py.File(path, "r") as handle:
            if is_emd1(handle):
                return emd1_metadata(handle)
            dectris = is_dectris_master(handle)
        return dectris_metadata(path) if dectris else {}


@READERS.register
class MatlabReader:
    """MATLAB v5 (scipy) and v7.3 (HDF5, transposed back to row-major)."""

    name, suffixes = "matlab", (".mat",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        if h5py.is_hdf5(path):
            return _read_hdf5_array(path, key, matlab=True)
        import scipy.io

        variables = scipy.io.loadmat(path)
        arrays = {name: value for name, value in variables.items()
                  if not name.startswith("__") and isinstance(value, np.ndarray)}
        if key is None:
            key = _pick_by_shape({name: value.shape for name, value in arrays.items()}, str(path))
        if key not in arrays:
            raise DataError(f"{path} has no variable '{key}'; variables in the file: {_listing(list(arrays))}")
        return arrays[key]


@READERS.register
class TiffReader:
    """Greyscale TIFF stacks."""

    name, suffixes = "tiff", (".tif", ".tiff")

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        import tifffile

        _no_key(path, key)
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            # interleaved samples put a colour axis last; separate planes (tifffile's default for a stack of
            # 3 or 4 frames) put it first, where it is the frame axis and reads correctly
            if page.samplesperpixel > 1 and page.planarconfig == tifffile.PLANARCONFIG.CONTIG:
                raise DataError(f"{path} is a colour (RGB) TIFF; diffraction patterns must be single-channel "
                                "greyscale")
            return tif.asarray()


@READERS.register
class EmpadReader:
    """EMPAD .raw (128×130 float32 frames, the last 2 rows metadata), memory-mapped."""

    name, suffixes = "empad", (".raw",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        _no_key(path, key)
        size_bytes = path.stat().st_size
        if scan_shape is not None:
            expected_bytes = scan_shape[0] * scan_shape[1] * EMPAD_FRAME_BYTES
            if size_bytes != expected_bytes:
                raise DataError(
                    f"{path} has {size_bytes} bytes, but an EMPAD scan of {scan_shape} needs {expected_bytes} "
                    "bytes "
                    f"({EMPAD_FRAME_BYTES} per frame of {EMPAD_COLUMNS}x{EMPAD_ROWS} float32); the file is "
                    f"{'truncated' if size_bytes < expected_bytes else 'larger'} or scan_shape is wrong"
                )
        elif size_bytes == 0 or size_bytes % EMPAD_FRAME_BYTES:
            raise DataError(
                f"{path} has {size_bytes} bytes, not a whole number of EMPAD frames of {EMPAD_FRAME_BYTES} bytes "
                f"({EMPAD_COLUMNS}x{EMPAD_ROWS} float32); the file is truncated or not an EMPAD .raw file"
            )
        else:
            n_frames = size_bytes // EMPAD_FRAME_BYTES
            side = math.isqrt(n_frames)
            if side * side != n_frames:
                raise DataError(f"{path} holds {n_frames} EMPAD frames, not a square scan; give "
                                "scan_shape=(Ny, Nx)")
            scan_shape = (side, side)
        frames = np.memmap(path, dtype="<f4", mode="r", shape=(*scan_shape, EMPAD_ROWS, EMPAD_COLUMNS))
        return frames[:, :, :EMPAD_COLUMNS, :]


@READERS.register
class EmpadXmlReader:
    """EMPAD acquisition .xml: the .raw it names, with the scan shape, step and detector pixel it gives."""

    name, suffixes = "empad_xml", (".xml",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        from ptyopt.data.instrument import parse_empad_xml

        _no_key(path, key)
        info = parse_empad_xml(path)
        if not info["raw_file"].is_file():
            raise DataError(f"{path} names the raw file {info['raw_file'].name}, which is not beside it")
        return EmpadReader.read(info["raw_file"], None, scan_shape or info.get("scan_shape"))

    @staticmethod
    def metadata(path: Path, key: str | None) -> dict:
        from ptyopt.data.instrument import parse_empad_xml

        return {k: v for k, v in parse_empad_xml(path).items() if k != "raw_file"}


@READERS.register
class MerlinReader:
    """Quantum Detectors Merlin .mib (+ .hdr), memory-mapped (rosettasciio: the io extra)."""

    name, suffixes = "merlin", (".mib",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        from ptyopt.data.instrument import read_merlin

        _no_key(path, key)
        return read_merlin(path, scan_shape)

    @staticmethod
    def metadata(path: Path, key: str | None) -> dict:
        from ptyopt.data.instrument import merlin_metadata

        return merlin_metadata(path)


@READERS.register
class ZarrReader:
    """Zarr stores (.zarr folders): the array ``key`` or the largest 3-D/4-D one, read on demand."""

    name, suffixes = "zarr", (".zarr",)

    @staticmethod
    def read(path: Path, key: str | None, scan_shape: tuple[int, int] | None) -> np.ndarray:
        from ptyopt.data.instrument import read_zarr

        return read_zarr(path, key)

    @staticmethod
    def metadata(path: Path, key: str | None) -> dict:
        from ptyopt.data.instrument import zarr_metadata

        return zarr_metadata(path, key)


def read_metadata(path: str | Path, key: str | None = None) -> dict:
    """What a foreign file says about its experiment, in ptyopt's names (empty for formats without metadata)."""
    path = Path(path)
    reader = READER_OF_SUFFIX.get(path.suffix.lower())
    if reader is None or not hasattr(reader, "metadata"):
        return {}
    try:
        return reader.metadata(path, key)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cannot read the metadata of {path} ({error})") from error


READER_OF_SUFFIX: dict[str, type[Reader]] = {suffix: READERS.get(name) for name in READERS
                                             for suffix in READERS.get(name).suffixes}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(READER_OF_SUFFIX)


def _apply_scan_shape(array: np.ndarray, scan_shape: tuple[int, int], source: str) -> np.ndarray:
    """4-D (Ny, Nx, Ky, Kx) from 3-D data and the scan shape (a lazy HDF5 array stays 3-D: ``crop_scan`` and
    ``to_3d`` index it by raster order)."""
    if array.ndim == 4:
        if array.shape[:2] != scan_shape:
            raise DataError(f"{source} has scan axes {array.shape[:2]} but scan_shape is {scan_shape}")
        return array
    if array.shape[0] != scan_shape[0] * scan_shape[1]:
        raise DataError(
            f"{source} holds {array.shape[0]} patterns but scan_shape {scan_shape} needs "
            f"{scan_shape[0] * scan_shape[1]}; fix scan_shape"
        )
    return array.reshape(*scan_shape, *array.shape[1:]) if isinstance(array, np.ndarray) else array


def crop_scan(array, scan_shape: tuple[int, int], y_range: tuple[int, int] | None,
              x_range: tuple[int, int] | None) -> np.ndarray:
    """The scan rows y_range and columns x_range [start, stop) of a (lazy) 4-D (Ny, Nx, Ky, Kx) or raster-ordered
    3-D array, read alone: (ny, nx, Ky, Kx)."""
    from ptyopt.data.transforms import scan_region_indices

    index, (ny, nx) = scan_region_indices(scan_shape, y_range, x_range)
    rows = index.reshape(ny, nx)
    if array.ndim == 4:
        iy, ix = np.divmod(rows[:, 0], scan_shape[1])
        return np.asarray(array[int(iy[0]):int(iy[-1]) + 1, int(ix[0]):int(ix[0]) + nx])
    return np.stack([np.asarray(array[int(row[0]):int(row[-1]) + 1]) for row in rows])


def read_array(path: str | Path, *, key: str | None = None, scan_shape: tuple[int, int] | None = None,
               lazy: bool = False) -> np.ndarray:
    """Diffraction patterns of a foreign file as (N, Ky, Kx), or (Ny, Nx, Ky, Kx) when the file or
    ``scan_shape`` gives the scan axes. The dtype is kept (float or integer counts).

    key: array name in .npz / .mat, or dataset path in HDF5 / EMD (e.g. "/data/meas"); without it the
    3-D/4-D array is found (the largest one in HDF5). scan_shape: (Ny, Nx) of the raster scan; required for
    an EMPAD .raw of a non-square scan. EMPAD .raw files are returned as a read-only memory map.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not (path.is_dir() if suffix == ".zarr" else path.is_file()):
        raise DataError(f"data file not found: {path}")
    if scan_shape is not None:
        if len(scan_shape) != 2 or not all(int(n) == n and n > 0 for n in scan_shape):
            raise DataError(f"scan_shape must be two positive integers (Ny, Nx), got {scan_shape!r}")
        scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"unsupported file type '{path.suffix}' of {path}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    reader = READER_OF_SUFFIX[suffix]
    try:
        array = reader.read_lazy(path, key, scan_shape) if lazy and hasattr(reader, "read_lazy") else reader.read(
            path, key, scan_shape)
    except DataError:
        raise
    except (OSError, ValueError, NotImplementedError, zipfile.BadZipFile) as error:
        # parse errors of numpy / h5py / scipy / tifffile on damaged or mislabelled files
        raise DataError(
            f"cannot read {path} as a {suffix} file ({error}): it is not a readable dataset; check that it is "
            "complete and of that format"
        ) from error
    if not lazy:
        array = np.asarray(array)  # a Zarr array is read here (memory maps stay maps)
    array = _check_array(array, str(path) if key is None else f"'{key}' in {path}")
    if scan_shape is not None:
        array = _apply_scan_shape(array, scan_shape, str(path))
    return array
