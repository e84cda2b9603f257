"""Readers of instrument files, with the metadata they carry (the ``io`` extra: ``pip install 'ptyopt[io]'``).

- **Quantum Detectors Merlin** ``.mib`` (+ ``.hdr``): through rosettasciio (GPL-3.0, hence optional), memory-mapped;
  the exposure comes from the frame headers, the scan shape from the ``.hdr`` when it says.
- **Dectris Arina / Quadro** master files (``*_master.h5``: ``/entry/data/data_NNNNNN`` linked to the data files,
  bitshuffle/LZ4 through hdf5plugin): the linked blocks in order; detector pixel, distance and wavelength from
  ``/entry/instrument`` give the energy and dk.
- **Zarr** stores (``.zarr`` folders): the array ``key`` or the largest 3-D/4-D one; ptyopt's own metadata names in
  the array's or the root's attributes (``energy_kv``, ``dk_inv_ang``, ``step_ang``, ``conv_angle_mrad``) are read.

``metadata(path)`` returns what a file says, in ptyopt's names and units (energy_kv, dk_inv_ang, step_ang,
conv_angle_mrad, scan_shape, exposure_s), without reading the patterns; a value the file does not give is absent.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyopt.errors import DataError

IO_EXTRA = "pip install 'ptyopt[io]'"
_DECTRIS_BLOCK = re.compile(r"data_\d{6}$")


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading {what} needs the '{module}' package: {IO_EXTRA}") from None


# ---- Merlin (.mib) through rosettasciio ------------------------------------------------------------------------


def read_merlin(path: Path, scan_shape: tuple[int, int] | None) -> np.ndarray:
    """The frames of a .mib file, (N, Ky, Kx) or (Ny, Nx, Ky, Kx) with ``scan_shape``, memory-mapped."""
    api = _need("rsciio.quantumdetector", "Merlin .mib files")
    check_merlin_header(path)
    navigation = None if scan_shape is None else (scan_shape[1], scan_shape[0])  # rosettasciio: (x, y)
    try:
        data = api.load_mib_data(str(path), lazy=False, mmap_mode="r", navigation_shape=navigation)
    except (ValueError, RuntimeError, OSError) as err:
        raise DataError(f"cannot read {path} as a Merlin .mib file ({err})") from None
    return np.asarray(data)


def check_merlin_header(path: Path) -> None:
    """A clear error for a file that is not a Merlin .mib or is cut short (before rosettasciio parses it)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(768)
    fields = head[:384].decode(errors="replace").split(",")
    if len(fields) < 8 or fields[0] != "MQ1":
        raise DataError(f"{path} is not a Merlin .mib file (no 'MQ1' frame header)")
    try:
        header_bytes, width, height = int(fields[2]), int(fields[4]), int(fields[5])
        depth = {"U08": 1, "U16": 2, "U32": 4, "R64": 8}[fields[6]]
    except (ValueError, KeyError):
        raise DataError(f"{path}: unreadable Merlin frame header ({','.join(fields[:8])})") from None
    frame = header_bytes + width * height * depth
    if size % frame:
        raise DataError(f"{path} has {size} bytes, not a whole number of {frame}-byte frames: it is truncated")


def merlin_metadata(path: Path) -> dict[str, Any]:
    check_merlin_header(path)
    with open(path, "rb") as handle:
        fields = handle.read(384).decode(errors="replace").split(",")
    out: dict[str, Any] = {}
    exposure = fields[-3].strip() if len(fields) > 3 else ""
    if exposure.endswith("ns"):
        out["exposure_s"] = float(exposure[:-2]) * 1e-9
    hdr = path.with_suffix(".hdr")
    if hdr.is_file():
        text = hdr.read_text(errors="replace")
        frames_x = re.search(r"Frames in Acquisition \(Number\):\s*(\d+)", text)
        per_trigger = re.search(r"Frames per Trigger \(Number\):\s*(\d+)", text)
        if frames_x and per_trigger and int(per_trigger.group(1)) > 1:
            nx = int(per_trigger.group(1))
            out["scan_shape"] = (int(frames_x.group(1)) // nx, nx)
    return out


# ---- Dectris Arina / Quadro master files -------------------------------------------------------------------------


def is_dectris_master(handle: h5py.File) -> bool:
    group = handle.get("entry/data")
    return isinstance(group, h5py.Group) and any(_DECTRIS_BLOCK.match(name) for name in group)


def read_dectris(path: Path) -> np.ndarray:
    """The frames of all data blocks of a master file, concatenated in block order."""
    _need("hdf5plugin", "Dectris (bitshuffle/LZ4-compressed) files")
    with h5py.File(path, "r") as handle:
        group = handle["entry/data"]
        blocks = []
        for name in sorted(n for n in group if _DECTRIS_BLOCK.match(n)):
            try:
                blocks.append(group[name][()])
            except KeyError:
                link = group.get(name, getlink=True)
                target = getattr(link, "filename", name)
                raise DataError(f"{path}: data block {name} links to {target}, which is missing beside the "
                                "master file") from None
            except OSError as err:
                raise DataError(f"{path}: cannot read data block {name} ({err}); is the data file complete?") from None
    return np.concatenate(blocks)


def dectris_metadata(path: Path) -> dict[str, Any]:
    from ptyopt.physics.constants import wavelength_ang

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as handle:
        detector = handle.get("entry/instrument/detector")
        beam = handle.get("entry/instrument/beam")
        wavelength = _scalar(beam, "incident_wavelength") if beam is not None else None
        if wavelength is not None:
            out["energy_kv"] = _energy_kv(wavelength)
        if detector is not None:
            pixel_m = _scalar(detector, "x_pixel_size")
            distance_m = _scalar(detector, "detector_distance")
            exposure = _scalar(detector, "count_time")
            if exposure is not None:
                out["exposure_s"] = exposure
            if pixel_m and distance_m and "energy_kv" in out:
                out["dk_inv_ang"] = pixel_m / distance_m / wavelength_ang(out["energy_kv"])
    return out


def _scalar(group, name: str) -> float | None:
    item = group.get(name) if group is not None else None
    return None if item is None else float(np.asarray(item[()]).reshape(-1)[0])


def _energy_kv(wavelength_ang: float) -> float:
    """The accelerating voltage [kV] of an electron wavelength [Å] (relativistic, the inverse of
    ``physics.constants.wavelength_ang``)."""
    from ptyopt.physics.constants import wavelength_ang as wavelength_of

    low, high = 1.0, 5000.0  # kV; the wavelength falls monotonically with the energy
    for _ in range(100):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if wavelength_of(mid) > wavelength_ang else (low, mid)
    return math.sqrt(low * high)


# ---- Zarr -------------------------------------------------------------------------------------------------------

ZARR_METADATA = ("energy_kv", "dk_inv_ang", "step_ang", "conv_angle_mrad")


def _zarr_arrays(root) -> dict[str, Any]:
    import zarr

    if isinstance(root, zarr.Array):
        return {"": root}
    found = {}

    def visit(group, prefix: str) -> None:
        for name, array in group.arrays():
            found[f"{prefix}{name}"] = array
        for name, sub in group.groups():
            visit(sub, f"{prefix}{name}/")

    visit(root, "")
    return found


def _zarr_pick(path: Path, key: str | None):
    zarr = _need("zarr", "Zarr stores")
    try:
        root = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not a store
        raise DataError(f"{path} is not a readable Zarr store ({err})") from None
    arrays = _zarr_arrays(root)
    if key is not None:
        name = key.strip("/")
        if name not in arrays:
            raise DataError(f"{path} has no array '{key}'; arrays: {', '.join(arrays) or 'none'}")
        return root, arrays[name]
    candidates = {name: a for name, a in arrays.items() if a.ndim in (3, 4)}
    if not candidates:
        raise DataError(f"{path} holds no 3-D or 4-D array (found {', '.join(arrays) or 'none'})")
    return root, max(candidates.values(), key=lambda a: a.size)


def read_zarr(path: Path, key: str | None) -> Any:
    """The patterns array of a Zarr store, not loaded (a zarr array: sliced on demand)."""
    return _zarr_pick(path, key)[1]


def zarr_metadata(path: Path, key: str | None = None) -> dict[str, Any]:
    root, array = _zarr_pick(path, key)
    attrs = {**dict(root.attrs), **dict(array.attrs)}
    out = {name: float(attrs[name]) for name in ZARR_METADATA if name in attrs}
    if "scan_shape" in attrs:
        out["scan_shape"] = tuple(int(n) for n in attrs["scan_shape"])
    return out


# ---- EMD 1.0 (py4DSTEM / emdfile) ------------------------------------------------------------------------------

_LENGTH_TO_ANG = {"A": 1.0, "Å": 1.0, "nm": 10.0, "pm": 0.01}
_RECIPROCAL_TO_INV_ANG = {"A^-1": 1.0, "1/A": 1.0, "Å^-1": 1.0, "nm^-1": 0.1, "1/nm": 0.1}


def is_emd1(handle: h5py.File) -> bool:
    return handle.attrs.get("emd_group_type") == "file" and int(handle.attrs.get("version_major", 0)) == 1


def emd1_metadata(handle: h5py.File) -> dict[str, Any]:
    """The scan step and reciprocal pixel of the largest 4-D EMD array from its dimension vectors (EMD 1.0: an
    'array' group holds ``data`` and ``dim0..dimN``; a linear dimension is stored as its first two values)."""
    arrays = []

    def visit(name, item):
        if isinstance(item, h5py.Group) and item.attrs.get("emd_group_type") == "array" and "data" in item:
            if item["data"].ndim == 4:
                arrays.append(item)

    handle.visititems(visit)
    if not arrays:
        return {}
    group = max(arrays, key=lambda g: g["data"].size)
    out: dict[str, Any] = {"scan_shape": tuple(int(n) for n in group["data"].shape[:2])}

    def step(name: str, table: dict[str, float]) -> float | None:
        dim = group.get(name)
        if dim is None or dim.shape[0] < 2:
            return None
        factor = table.get(str(dim.attrs.get("units", "")))
        return None if factor is None else float(dim[1] - dim[0]) * factor

    scan_step = step("dim0", _LENGTH_TO_ANG)
    if scan_step:
        out["step_ang"] = scan_step
    dk = step("dim2", _RECIPROCAL_TO_INV_ANG)
    if dk:
        out["dk_inv_ang"] = dk
    return out


# ---- EMPAD .xml (the acquisition's description beside its .raw) --------------------------------------------------


def _xml_text(root, path: str) -> str | None:
    """The text of element ``path`` (a/b/c), or the attribute c of element a/b."""
    node = root.find(path)
    if node is not None and node.text and node.text.strip():
        return node.text.strip()
    parent, _, attribute = path.rpartition("/")
    node = root.find(parent) if parent else root
    return None if node is None else node.attrib.get(attribute)


def parse_empad_xml(path: Path) -> dict[str, Any]:
    """raw_file (the .raw beside it), scan_shape, and where the xml says: step_ang (the scan field of view over
    the larger scan side, corrected by its scale factor) and dk_inv_ang (calibrated_pixelsize)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path} is not a readable EMPAD .xml file ({err})") from None
    raw_name = _xml_text(root, "raw_file/filename")
    if raw_name is None:
        raise DataError(f"{path} is not an EMPAD acquisition file: it names no raw_file")
    out: dict[str, Any] = {"raw_file": path.parent / raw_name}
    pix_x, pix_y = _xml_text(root, "pix_x"), _xml_text(root, "pix_y")
    if pix_x and pix_y:
        out["scan_shape"] = (int(pix_y), int(pix_x))
    else:
        match = re.match(r"scan_x(\d+)_y(\d+)", Path(raw_name).stem)
        if match:
            out["scan_shape"] = (int(match.group(2)), int(match.group(1)))
    fov, factor = (_xml_text(root, f"iom_measurements/full_scan_field_of_view/{n}") for n in ("x", "scale_factor"))
    if fov and factor and "scan_shape" in out:
        out["step_ang"] = float(fov) / float(factor) / max(out["scan_shape"]) * 1e10
    pixel = _xml_text(root, "iom_measurements/calibrated_pixelsize")
    if pixel:
        out["dk_inv_ang"] = float(pixel) * 1e8  # stored so that × 1e9 gives 1/nm
    return out
