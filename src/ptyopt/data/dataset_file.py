"""The ptyopt dataset file (HDF5, DESIGN.md "Dataset file"): write and read a Dataset4D with its ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyopt.data.dataset import Dataset4D, GroundTruth
from ptyopt.errors import DataError, PtyoptError

FORMAT_VERSION = 1
_ROOT_MARKER = "ptyopt_dataset"
# names of the /truth attributes that were JSON-encoded on write and are decoded on read
_JSON_ATTRS = "_ptyopt_json_attrs"


def write_dataset(path: str | Path, dataset: Dataset4D) -> Path:
    """Write ``dataset`` to an HDF5 file at ``path`` (overwritten) and return the path.

    /meas keeps its dtype and is chunked per pattern, gzip-compressed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ky, kx = dataset.detector_shape
    with h5py.File(path, "w") as handle:
        handle.attrs[_ROOT_MARKER] = FORMAT_VERSION
        handle.create_dataset(
            "meas", data=dataset.meas, chunks=(1, ky, kx), compression="gzip", compression_opts=4, shuffle=True
        )
        scan = handle.create_group("scan")
        positions = scan.create_dataset("positions_ang", data=dataset.positions_ang)
        if dataset.scan_shape is not None:
            positions.attrs["shape"] = np.asarray(dataset.scan_shape, dtype=np.int64)
        if dataset.step_ang is not None:
            positions.attrs["step_ang"] = dataset.step_ang
        if dataset.acquisition_index is not None:
            scan.create_dataset("acquisition_index", data=dataset.acquisition_index)
        handle.attrs["energy_kv"] = dataset.energy_kv
        handle.attrs["conv_angle_mrad"] = dataset.conv_angle_mrad
        handle.attrs["dk_inv_ang"] = dataset.dk_inv_ang
        handle.attrs["aberrations"] = json.dumps(dataset.aberrations, sort_keys=True)
        if dataset.dose_e_per_ang2 is not None:
            handle.attrs["dose_e_per_ang2"] = dataset.dose_e_per_ang2
        handle.attrs["counts"] = bool(dataset.counts)
        if dataset.truth is not None:
            _write_truth(handle.create_group("truth"), dataset.truth)
    return path


def _write_truth(group: h5py.Group, truth: GroundTruth) -> None:
    slices = group.create_dataset("phase_slices", data=truth.phase_slices, compression="gzip", compression_opts=4)
    slices.attrs["dx_ang"] = truth.dx_ang
    slices.attrs["slice_thickness_ang"] = truth.slice_thickness_ang
    slices.attrs["origin_ang"] = np.asarray(truth.origin_ang, dtype=np.float64)
    if truth.fine_phase_slices is not None:
        fine = group.create_dataset(
            "fine_phase_slices", data=truth.fine_phase_slices, compression="gzip", compression_opts=4
        )
        fine.attrs["slice_thickness_ang"] = truth.fine_slice_thickness_ang
    if truth.positions_ang is not None:
        group.create_dataset("positions_ang", data=np.asarray(truth.positions_ang))
    if truth.probe is not None:
        group.create_dataset("probe", data=truth.probe).attrs["dx_ang"] = truth.probe_dx_ang
    json_names = []
    for name, value in truth.attrs.items():
        if name == _JSON_ATTRS:
            raise DataError(f"truth attribute name '{name}' is reserved; rename it")
        if isinstance(value, str | bool | int | float | np.generic) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
        ):
            group.attrs[name] = value
            continue
        try:
            group.attrs[name] = json.dumps(value)
        except TypeError as error:
            raise DataError(
                f"truth attribute '{name}' of type {type(value).__name__} cannot be stored; "
                "use numbers, strings, numeric arrays or JSON-serialisable lists and dicts"
            ) from error
        json_names.append(name)
    group.attrs[_JSON_ATTRS] = json.dumps(json_names)


def is_dataset_file(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file carrying the root attribute ``ptyopt_dataset``."""
    path = Path(path)
    try:
        if not path.is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as handle:
            return _ROOT_MARKER in handle.attrs
    except OSError:
        return False


def has_truth(path: str | Path) -> bool:
    """Whether the ptyopt dataset file ``path`` has a ``/truth`` group, read without loading any data; the errors
    of ``read_dataset`` for a missing or foreign file."""
    path = Path(path)
    _check_dataset_file(path)
    with h5py.File(path, "r") as handle:
        return "truth" in handle


def _require(node: h5py.Group | h5py.Dataset, name: str, path: Path, what: str) -> Any:
    if name not in node.attrs:
        raise DataError(f"{path}: {node.name} lacks the attribute '{name}' ({what}); add it or re-convert the data")
    return node.attrs[name]


def _require_dataset(handle: h5py.File, name: str, path: Path, what: str) -> h5py.Dataset:
    item = handle.get(name)
    if not isinstance(item, h5py.Dataset):
        raise DataError(f"{path} lacks the dataset '{name}' ({what}); add it or re-convert the data")
    return item


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def read_dataset(path: str | Path) -> Dataset4D:
    """Read a ptyopt dataset file written by ``write_dataset`` (or by hand following DESIGN.md); a DataError naming
    the file when it is damaged (a truncated or corrupted HDF5 file, values of the wrong kind)."""
    try:
        return _read_dataset(Path(path))
    except PtyoptError:  # our own messages (missing file, attribute, version) say it better
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as error:  # h5py/numpy on a damaged file
        raise DataError(f"{path} is not a readable dataset ({type(error).__name__}: {error}); the file is damaged "
                        "or not a ptyopt dataset file; check that it is complete") from None


def _check_dataset_file(path: Path) -> None:
    """A DataError when ``path`` is missing or not a ptyopt dataset file."""
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    if not is_dataset_file(path):
        raise DataError(
            f"{path} is not a ptyopt dataset file (no root attribute '{_ROOT_MARKER}'); "
            "convert foreign data first with `ptyopt convert`"
        )


def _read_dataset(path: Path) -> Dataset4D:
    _check_dataset_file(path)
    with h5py.File(path, "r") as handle:
        version = int(handle.attrs[_ROOT_MARKER])
        if version != FORMAT_VERSION:
            raise DataError(f"{path} has dataset format version {version}; this ptyopt reads version {FORMAT_VERSION}")
        meas = _require_dataset(handle, "meas", path, "diffraction patterns (N, Ky, Kx)")[()]
        positions = _require_dataset(handle, "scan/positions_ang", path, "scan positions (N, 2) in Å")
        shape = positions.attrs.get("shape")
        step_ang = positions.attrs.get("step_ang")
        aberrations_json = _require(handle, "aberrations", path, "JSON of C_nm in Å")
        try:
            aberrations = json.loads(aberrations_json)
        except (TypeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: the attribute 'aberrations' is not valid JSON ({error})") from error
        dose = handle.attrs.get("dose_e_per_ang2")
        truth = _read_truth(handle["truth"], path) if "truth" in handle else None
        order = handle["scan"].get("acquisition_index")
        return Dataset4D(
            meas=meas,
            positions_ang=positions[()],
            energy_kv=float(_require(handle, "energy_kv", path, "beam energy in kV")),
            conv_angle_mrad=float(_require(handle, "conv_angle_mrad", path, "probe semi-angle in mrad")),
            dk_inv_ang=float(_require(handle, "dk_inv_ang", path, "detector pixel in 1/Å")),
            aberrations=aberrations,
            dose_e_per_ang2=None if dose is None else float(dose),
            counts=bool(_require(handle, "counts", path, "true when /meas holds electron counts")),
            scan_shape=None if shape is None else (int(shape[0]), int(shape[1])),
            step_ang=None if step_ang is None else float(step_ang),
            truth=truth,
            acquisition_index=None if order is None else order[()],
        )


def _read_truth(group: h5py.Group, path: Path) -> GroundTruth:
    slices = _require_dataset(group.file, "truth/phase_slices", path, "true phase (S, Y, X) in rad")
    probe = group.get("probe")
    positions = group.get("positions_ang")
    fine = group.get("fine_phase_slices")
    json_names = set(json.loads(group.attrs.get(_JSON_ATTRS, "[]")))
    attrs = {
        name: json.loads(value) if name in json_names else _plain(value)
        for name, value in group.attrs.items()
        if name != _JSON_ATTRS
    }
    return GroundTruth(
        phase_slices=slices[()],
        dx_ang=float(_require(slices, "dx_ang", path, "truth pixel in Å")),
        slice_thickness_ang=float(_require(slices, "slice_thickness_ang", path, "slice thickness in Å")),
        origin_ang=tuple(_require(slices, "origin_ang", path, "(y, x) of truth pixel (0, 0) in Å")),
        positions_ang=None if positions is None else positions[()],
        probe=None if probe is None else probe[()],
        probe_dx_ang=None if probe is None else float(_require(probe, "dx_ang", path, "probe pixel in Å")),
        fine_phase_slices=None if fine is None else fine[()],
        fine_slice_thickness_ang=None
        if fine is None
        else float(_require(fine, "slice_thickness_ang", path, "fine slice thickness in Å")),
        attrs=attrs,
    )
