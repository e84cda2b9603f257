"""Dataset4D: measured diffraction patterns, scan positions, experiment metadata and optional ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ptyopt.errors import ConfigError, DataError
from ptyopt.physics.aberrations import canonical_aberrations
from ptyopt.physics.constants import wavelength_ang


def raster_positions_ang(scan_shape: tuple[int, int], step_ang: float | tuple[float, float]) -> np.ndarray:
    """Nominal raster positions (N, 2) as (y, x) [Å], raster index n = iy * Nx + ix, first at (0, 0)."""
    step_y, step_x = (step_ang, step_ang) if np.isscalar(step_ang) else step_ang
    iy, ix = np.meshgrid(np.arange(scan_shape[0]), np.arange(scan_shape[1]), indexing="ij")
    return np.stack([iy.ravel() * step_y, ix.ravel() * step_x], axis=1).astype(np.float64)


def _require_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise DataError(
            f"{name}: {bad} values are NaN or infinite; fix or mask them before loading "
            "(e.g. replace with 0 with numpy.nan_to_num)"
        )


def _positive(name: str, value: float) -> float:
    if value is None or not (math.isfinite(float(value)) and float(value) > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass
class GroundTruth:
    """Known answer of a simulated dataset (DESIGN.md `/truth/`).

    phase_slices: (S, Y, X) [rad] on a canvas of pixel dx_ang [Å] and slice thickness slice_thickness_ang [Å];
    origin_ang: (y, x) position [Å] of canvas pixel (0, 0) in the frame of the scan positions;
    positions_ang: true positions (N, 2) [Å]; probe: (Y, X) or (pmode, Y, X) complex with pixel probe_dx_ang;
    fine_phase_slices: optional (S_fine, Y, X) [rad] on the same canvas in the simulation's thinner slices of
    fine_slice_thickness_ang [Å] (phase_slices are their sums in the reconstruction slicing).
    """

    phase_slices: np.ndarray
    dx_ang: float
    slice_thickness_ang: float
    origin_ang: tuple[float, float] = (0.0, 0.0)
    positions_ang: np.ndarray | None = None
    probe: np.ndarray | None = None
    probe_dx_ang: float | None = None
    fine_phase_slices: np.ndarray | None = None
    fine_slice_thickness_ang: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.phase_slices = np.asarray(self.phase_slices)
        if self.phase_slices.ndim != 3:
            raise DataError(f"truth phase_slices has shape {self.phase_slices.shape}; expected (S, Y, X)")
        _require_finite("truth phase_slices", self.phase_slices)
        self.dx_ang = _positive("truth dx_ang", self.dx_ang)
        self.slice_thickness_ang = _positive("truth slice_thickness_ang", self.slice_thickness_ang)
        self.origin_ang = (float(self.origin_ang[0]), float(self.origin_ang[1]))
        if self.fine_phase_slices is not None:
            self.fine_phase_slices = np.asarray(self.fine_phase_slices)
            if self.fine_phase_slices.ndim != 3 or self.fine_phase_slices.shape[1:] != self.phase_slices.shape[1:]:
                raise DataError(
                    f"truth fine_phase_slices has shape {self.fine_phase_slices.shape}; expected (S_fine, Y, X) "
                    f"on the canvas of phase_slices {self.phase_slices.shape}"
                )
            self.fine_slice_thickness_ang = _positive("truth fine_slice_thickness_ang", self.fine_slice_thickness_ang)
        if self.probe is not None:
            self.probe = np.asarray(self.probe)
            if self.probe.ndim not in (2, 3):
                raise DataError(f"truth probe has shape {self.probe.shape}; expected (Y, X) or (pmode, Y, X)")
            if self.probe_dx_ang is None:
                raise DataError("truth probe is given without probe_dx_ang; give its pixel size in Å")


@dataclass
class Dataset4D:
    """A 4D-STEM dataset ready for reconstruction, validated on construction.

    meas: (N, Ky, Kx) intensities, zero frequency at (Ky//2, Kx//2), float or unsigned-integer counts;
    positions_ang: (N, 2) nominal scan positions (y, x) [Å]; energy_kv [kV]; conv_angle_mrad [mrad];
    dk_inv_ang: detector pixel [1/Å]; aberrations: Krivanek C_nm [Å] / phi_nm [rad] (aliases accepted);
    dose_e_per_ang2: electron dose or None; counts: True when meas holds electron counts;
    scan_shape: (Ny, Nx) of a raster scan or None; step_ang: raster step [Å] or None;
    acquisition_index: (N,) order (or time, any unit) in which the patterns were acquired, or None: a raster
    scan is then taken in raster order n = iy * Nx + ix (``acquisition_order``).
    """

    meas: np.ndarray
    positions_ang: np.ndarray
    energy_kv: float
    conv_angle_mrad: float
    dk_inv_ang: float
    aberrations: dict[str, float] = field(default_factory=dict)
    dose_e_per_ang2: float | None = None
    counts: bool = False
    scan_shape: tuple[int, int] | None = None
    step_ang: float | None = None
    truth: GroundTruth | None = None
    acquisition_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        meas = np.asarray(self.meas)
        if meas.ndim == 4:
            raise DataError(
                f"measurements have shape {meas.shape} (4-D); expected (N, Ky, Kx): "
                "reshape the scan axes first (ptyopt.data.preprocess.to_3d or the reader's scan_shape)"
            )
        if meas.ndim != 3:
            raise DataError(f"measurements have shape {meas.shape}; expected (N, Ky, Kx)")
        if not (np.issubdtype(meas.dtype, np.floating) or np.issubdtype(meas.dtype, np.unsignedinteger)):
            if np.issubdtype(meas.dtype, np.integer):
                meas = meas.astype(np.float32)
            else:
                raise DataError(f"measurements have dtype {meas.dtype}; expected float or unsigned integer")
        if np.issubdtype(meas.dtype, np.floating):
            _require_finite("measurements", meas)
        self.meas = meas
        positions = np.asarray(self.positions_ang, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise DataError(f"positions have shape {positions.shape}; expected (N, 2) as (y, x) in Å")
        if positions.shape[0] != meas.shape[0]:
            raise DataError(
                f"{positions.shape[0]} scan positions but {meas.shape[0]} diffraction patterns; "
                "they must match (check scan_shape or crop both together)"
            )
        _require_finite("scan positions", positions)
        self.positions_ang = positions
        self.energy_kv = _positive("energy_kv", self.energy_kv)
        self.conv_angle_mrad = _positive("conv_angle_mrad", self.conv_angle_mrad)
        self.dk_inv_ang = _positive("dk_inv_ang", self.dk_inv_ang)
        self.aberrations = canonical_aberrations(self.aberrations)
        if self.dose_e_per_ang2 is not None:
            self.dose_e_per_ang2 = _positive("dose_e_per_ang2", self.dose_e_per_ang2)
        self.counts = bool(self.counts)
        if self.counts and np.issubdtype(meas.dtype, np.floating) and (meas < 0).any():
            raise DataError("counts=True but the measurements hold negative values; electron counts are >= 0")
        if self.scan_shape is not None:
            self.scan_shape = (int(self.scan_shape[0]), int(self.scan_shape[1]))
            if self.scan_shape[0] * self.scan_shape[1] != meas.shape[0]:
                raise DataError(
                    f"scan_shape {self.scan_shape} holds {self.scan_shape[0] * self.scan_shape[1]} positions "
                    f"but there are {meas.shape[0]} patterns"
                )
        if self.step_ang is not None:
            self.step_ang = _positive("step_ang", self.step_ang)
        if self.acquisition_index is not None:
            order = np.asarray(self.acquisition_index, dtype=np.float64)
            if order.shape != (meas.shape[0],):
                raise DataError(f"acquisition_index has shape {order.shape}; expected ({meas.shape[0]},), one "
                                "value per pattern")
            _require_finite("acquisition_index", order)
            self.acquisition_index = order

    @property
    def acquisition_order(self) -> np.ndarray | None:
        """(N,) when each pattern was acquired: ``acquisition_index``, else the raster index of a raster scan,
        else None (a scan of unknown order)."""
        if self.acquisition_index is not None:
            return self.acquisition_index
        return None if self.scan_shape is None else np.arange(self.n_patterns, dtype=np.float64)

    def subset(self, index: np.ndarray, scan_shape: tuple[int, int] | None) -> Dataset4D:
        """The patterns ``index`` (with their positions, true positions and acquisition order)."""
        truth = self.truth
        if truth is not None and truth.positions_ang is not None:
            truth = replace(truth, positions_ang=truth.positions_ang[index])
        order = self.acquisition_order
        return self.replace(meas=self.meas[index], positions_ang=self.positions_ang[index], scan_shape=scan_shape,
                            truth=truth, acquisition_index=None if order is None else order[index])

    @classmethod
    def from_raster(
        cls, meas: np.ndarray, scan_shape: tuple[int, int], step_ang: float, **metadata: Any
    ) -> Dataset4D:
        """Build a dataset whose positions are the raster grid of ``scan_shape`` with ``step_ang`` [Å]."""
        step = _positive("step_ang", step_ang)
        return cls(
            meas=meas,
            positions_ang=raster_positions_ang(scan_shape, step),
            scan_shape=scan_shape,
            step_ang=step,
            **metadata,
        )

    @property
    def n_patterns(self) -> int:
        return int(self.meas.shape[0])

    @property
    def detector_shape(self) -> tuple[int, int]:
        return int(self.meas.shape[1]), int(self.meas.shape[2])

    @property
    def pixel_size_ang(self) -> tuple[float, float]:
        """Real-space pixel (dy, dx) [Å] = 1 / (K · dk) along each detector axis."""
        return 1.0 / (self.meas.shape[1] * self.dk_inv_ang), 1.0 / (self.meas.shape[2] * self.dk_inv_ang)

    @property
    def dx_ang(self) -> float:
        """Real-space pixel [Å] of a square detector."""
        dy, dx = self.pixel_size_ang
        if self.meas.shape[1] != self.meas.shape[2]:
            raise DataError(
                f"the detector is {self.detector_shape}, not square; crop or pad it to a square for reconstruction"
            )
        return dx

    @property
    def wavelength_ang(self) -> float:
        return wavelength_ang(self.energy_kv)

    @property
    def mean_counts_per_pattern(self) -> float:
        return float(self.meas.sum(axis=(1, 2), dtype=np.float64).mean())

    def replace(self, **changes: Any) -> Dataset4D:
        """A validated copy with some fields changed."""
        return replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """Plain-type description for printing and logging."""
        return {
            "patterns": self.n_patterns,
            "detector_px": self.detector_shape,
            "scan_shape": self.scan_shape,
            "step_ang": self.step_ang,
            "energy_kv": self.energy_kv,
            "wavelength_ang": round(self.wavelength_ang, 6),
            "conv_angle_mrad": self.conv_angle_mrad,
            "dk_inv_ang": self.dk_inv_ang,
            "pixel_size_ang": tuple(round(p, 6) for p in self.pixel_size_ang),
            "aberrations": self.aberrations,
            "dose_e_per_ang2": self.dose_e_per_ang2,
            "counts": self.counts,
            "dtype": str(self.meas.dtype),
            "mean_counts_per_pattern": round(self.mean_counts_per_pattern, 4),
            "truth": self.truth is not None,
        }
