"""The result file OUT/result.h5 (DESIGN.md "Result file")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyopt.errors import DataError
from ptyopt.io.integrity import verify, write_atomically

RESULT_NAME = "result.h5"
REPORT_NAME = "report.html"  # OUT/report.html: the run's dashboard (io.run_report)
SNAPSHOT_DIR = "snapshots"  # OUT/snapshots/iter_NNNN.h5: results of the iterations output.snapshot_every names


def snapshot_path(out_dir: Path, iteration: int) -> Path:
    return Path(out_dir) / SNAPSHOT_DIR / f"iter_{iteration:04d}.h5"


@dataclass
class GlobalScan:
    """The fitted global scan model (``model.scan_model``) in Å: affine_matrix A = I + M (2, 2) about centre_ang
    (y, x); drift_ang (K + 1, 2): d_0 a translation, d_k the coefficient of the drift basis q_k (tau^k without its
    affine part; d_1 = the drift over the whole acquisition for a linear drift); acquisition_time (N,) tau in
    [-1/2, 1/2] or None (scan of unknown order); displacement_ang (N, 2): the model's displacement of each
    nominal position (the per-position offsets come on top)."""

    affine_matrix: np.ndarray
    drift_ang: np.ndarray
    centre_ang: np.ndarray
    displacement_ang: np.ndarray
    acquisition_time: np.ndarray | None = None


@dataclass
class ReconstructionResult:
    """A finished (or checkpointed) reconstruction in plain numpy.

    object_phase, object_amplitude: (omode, S, Y, X); occupancy: (omode,); probe: (pmode, Y, X) complex;
    positions_ang: refined (N, 2) (y, x); nominal_positions_ang: (N, 2); tilts_mrad: (1 | N, 2);
    slice_thickness_ang: (1 | S,); dx_ang [Å]; origin_ang: (y, x) of object pixel (0, 0) in the positions'
    frame; history: per-iteration arrays; config: resolved YAML; seed; scan: the global scan model, or None.
    """

    object_phase: np.ndarray
    object_amplitude: np.ndarray
    occupancy: np.ndarray
    probe: np.ndarray
    positions_ang: np.ndarray
    nominal_positions_ang: np.ndarray
    tilts_mrad: np.ndarray
    slice_thickness_ang: np.ndarray
    dx_ang: float
    origin_ang: tuple[float, float]
    history: dict[str, np.ndarray] = field(default_factory=dict)
    config: str = ""
    seed: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)
    scan: GlobalScan | None = None

    @property
    def phase_sum(self) -> np.ndarray:
        """Slice-summed phase (Y, X) [rad], occupancy-weighted over object modes."""
        return slice_summed_phase(self.object_phase, self.occupancy)


def slice_summed_phase(object_phase: np.ndarray, occupancy: np.ndarray) -> np.ndarray:
    """The phase (omode, S, Y, X) [rad] summed over slices and averaged over object modes with weights
    |occupancy| (omode,) normalised to 1: (Y, X) [rad]."""
    weights = np.abs(occupancy) / np.abs(occupancy).sum()
    return np.tensordot(weights, object_phase.sum(axis=1), axes=1)


def write_result(path: str | Path, result: ReconstructionResult) -> Path:
    """Write atomically, with a SHA-256 sidecar checked by ``read_result``."""
    return write_atomically(path, lambda tmp: _write_result_file(tmp, result))


def _write_result_file(tmp: Path, result: ReconstructionResult) -> None:
    from ptyopt import __version__

    with h5py.File(tmp, "w") as f:
        f.attrs["ptyopt_result"] = 1
        f.attrs["ptyopt_version"] = __version__
        f.attrs["dx_ang"] = result.dx_ang
        f.attrs["config"] = result.config
        f.attrs["seed"] = result.seed
        for key, value in result.attrs.items():
            f.attrs[key] = value
        obj = f.create_group("object")
        obj.create_dataset("phase", data=result.object_phase, compression="gzip", compression_opts=4)
        obj.create_dataset("amplitude", data=result.object_amplitude, compression="gzip", compression_opts=4)
        obj.create_dataset("occupancy", data=result.occupancy)
        obj.attrs["origin_ang"] = np.asarray(result.origin_ang)
        f.create_dataset("probe", data=result.probe)
        f.create_dataset("positions_ang", data=result.positions_ang)
        f.create_dataset("nominal_positions_ang", data=result.nominal_positions_ang)
        f.create_dataset("tilts_mrad", data=result.tilts_mrad)
        f.create_dataset("slice_thickness_ang", data=result.slice_thickness_ang)
        if result.scan is not None:
            scan = f.create_group("scan_model")
            scan.create_dataset("affine_matrix", data=result.scan.affine_matrix)
            scan.create_dataset("drift_ang", data=result.scan.drift_ang)
            scan.create_dataset("centre_ang", data=result.scan.centre_ang)
            scan.create_dataset("displacement_ang", data=result.scan.displacement_ang)
            if result.scan.acquisition_time is not None:
                scan.create_dataset("acquisition_time", data=result.scan.acquisition_time)
        history = f.create_group("history")
        for key, values in result.history.items():
            history.create_dataset(key, data=np.asarray(values))


def read_result(path: str | Path) -> ReconstructionResult:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no result file at {path}")
    verify(path, "result file")
    try:
        return _read_result_file(path)
    except (OSError, KeyError) as err:  # not HDF5, truncated, or missing a dataset of the schema
        raise DataError(f"cannot read {path} as a ptyopt result ({err}); it is damaged or of another kind") from None


def _read_result_file(path: Path) -> ReconstructionResult:
    with h5py.File(path, "r") as f:
        if "ptyopt_result" not in f.attrs:
            raise DataError(f"{path} is not a ptyopt result file (no 'ptyopt_result' attribute)")
        known = {"ptyopt_result", "ptyopt_version", "dx_ang", "config", "seed"}
        return ReconstructionResult(
            object_phase=f["object/phase"][()],
            object_amplitude=f["object/amplitude"][()],
            occupancy=f["object/occupancy"][()],
            probe=f["probe"][()],
            positions_ang=f["positions_ang"][()],
            nominal_positions_ang=f["nominal_positions_ang"][()],
            tilts_mrad=f["tilts_mrad"][()],
            slice_thickness_ang=f["slice_thickness_ang"][()],
            dx_ang=float(f.attrs["dx_ang"]),
            origin_ang=tuple(float(v) for v in f["object"].attrs["origin_ang"]),
            history={key: f["history"][key][()] for key in f["history"]},
            config=str(f.attrs["config"]),
            seed=int(f.attrs["seed"]),
            attrs={k: v for k, v in f.attrs.items() if k not in known},
            scan=_read_scan(f["scan_model"]) if "scan_model" in f else None,
        )


def _read_scan(group: h5py.Group) -> GlobalScan:
    time = group.get("acquisition_time")
    return GlobalScan(affine_matrix=group["affine_matrix"][()], drift_ang=group["drift_ang"][()],
                      centre_ang=group["centre_ang"][()], displacement_ang=group["displacement_ang"][()],
                      acquisition_time=None if time is None else time[()])
