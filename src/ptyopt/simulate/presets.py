"""Simulation specifications (typed) and the named presets of ``ptyopt simulate``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.registry import did_you_mean
from ptyopt.simulate.structures import SRTIO3_LATTICE_ANG, SRTIO3_THERMAL_U_ANG


class SimulationSpec(StrictModel):
    """Everything that defines a simulated SrTiO3 [001] 4D-STEM dataset (abTEM multislice).

    The detector is the 2/3-band-limited square of the simulation grid: K = 2·sim_gpts/3 pixels at
    dk = 1/cell, so the reconstruction pixel is cell/K and the probe window equals the cell.
    """

    name: str = Field(description="preset name, recorded in the file")
    energy_kv: float = Field(300.0, gt=0, description="accelerating voltage [kV]")
    conv_angle_mrad: float = Field(21.4, gt=0, description="probe convergence semi-angle [mrad]")
    defocus_ang: float = Field(100.0, description="defocus [Å] = -C10; positive = underfocus (focus below entrance)")
    cs_ang: float = Field(0.0, description="spherical aberration C30 [Å]")
    aperture_edge: Literal["hard", "soft"] = Field("soft", description="abTEM aperture edge (soft = realistic)")
    cell_repeats: int = Field(5, ge=1, description="lateral supercell size in unit cells (square)")
    thickness_uc: int = Field(8, ge=1, description="specimen thickness in unit cells (3.905 Å each)")
    sim_gpts: int = Field(192, ge=12, description="simulation grid per axis; 2/3 of it is the detector size K")
    parametrization: Literal["lobato", "kirkland"] = Field("lobato", description="abTEM scattering factors")
    recon_slices: int = Field(8, ge=1, description="slices of the reconstruction the truth is summed into")
    scan_shape: tuple[int, int] = Field((64, 64), description="raster scan (Ny, Nx)")
    step_ang: float = Field(0.4, gt=0, description="scan step [Å]")
    scan_start_ang: tuple[float, float] = Field((0.0, 0.0), description="first nominal position (y, x) [Å]")
    position_jitter_ang: float = Field(0.0, ge=0, description="RMS of true minus nominal position per axis [Å]")
    drift_ang: tuple[float, float] = Field(
        (0.0, 0.0), description="linear drift (y, x) over the whole scan [Å]: last minus first pattern's true offset"
    )
    scan_affine: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="scan-coil error (rotation [mrad], relative scale, shear) about the scan centre"
    )
    frozen_phonons: int = Field(8, ge=0, description="frozen-phonon configurations (0 = static lattice)")
    thermal_u_ang: dict[str, float] = Field(
        default_factory=lambda: dict(SRTIO3_THERMAL_U_ANG), description="RMS displacement per axis [Å] per element"
    )
    focal_spread_ang: float = Field(0.0, ge=0, description="standard deviation of the defocus [Å] (temporal)")
    focal_spread_samples: int = Field(5, ge=1, description="defocus samples of the focal-spread integral")
    source_size_ang: float = Field(0.0, ge=0, description="Gaussian source standard deviation [Å] (spatial)")
    tilt_mrad: tuple[float, float] = Field((0.0, 0.0), description="specimen tilt (theta_y, theta_x) [mrad]")
    detector_rotation_deg: float = Field(
        0.0, description="detector rotated against the scan [deg] (ptyopt.data.detector_errors conventions)")
    detector_transpose: bool = Field(False, description="detector axes swapped (after the rotation)")
    descan_px_per_step: tuple[tuple[float, float], tuple[float, float]] = Field(
        ((0.0, 0.0), (0.0, 0.0)),
        description="pattern-centre motion [[dcy/diy, dcy/dix], [dcx/diy, dcx/dix]] [px/step]")
    centre_offset_px: tuple[float, float] = Field(
        (0.0, 0.0), description="pattern centre minus K//2 at the scan's middle (y, x) [px]")
    dose_e_per_ang2: float | None = Field(None, gt=0, description="electron dose; None = noise-free intensities")
    seed: int = Field(0, description="seeds phonons, position jitter and Poisson noise")
    recon_scan_region: tuple[tuple[int, int], tuple[int, int]] | None = Field(
        None, description="scan rows and columns [start, stop) meant for reconstruction (None = all)"
    )

    @model_validator(mode="after")
    def _check(self) -> SimulationSpec:
        if (2 * self.sim_gpts) % 3 or ((2 * self.sim_gpts) // 3) % 2:
            raise ConfigError(f"sim_gpts={self.sim_gpts}: 2/3 of it must be an even integer (e.g. 48, 96, 192)")
        if (2 * self.thickness_uc) % self.recon_slices:
            raise ConfigError(
                f"recon_slices={self.recon_slices} must divide the {2 * self.thickness_uc} simulation slices "
                f"(a/2 each) of a {self.thickness_uc}-unit-cell specimen"
            )
        return self

    @property
    def lattice_ang(self) -> float:
        return SRTIO3_LATTICE_ANG

    @property
    def cell_ang(self) -> float:
        return self.cell_repeats * SRTIO3_LATTICE_ANG

    @property
    def detector_px(self) -> int:
        return 2 * self.sim_gpts // 3

    @property
    def dk_inv_ang(self) -> float:
        return 1.0 / self.cell_ang

    @property
    def dx_ang(self) -> float:
        """Reconstruction pixel [Å] = 1/(K dk)."""
        return self.cell_ang / self.detector_px

    @property
    def n_sim_slices(self) -> int:
        return 2 * self.thickness_uc

    @property
    def sim_slice_thickness_ang(self) -> float:
        return SRTIO3_LATTICE_ANG / 2


PRESETS: dict[str, SimulationSpec] = {
    spec.name: spec
    for spec in (
        # seconds: tests (2×2 cells, 2 u.c. thick, 32-px detector, 6×6 scan)
        SimulationSpec(
            name="sto-tiny", cell_repeats=2, thickness_uc=2, sim_gpts=48, recon_slices=2, scan_shape=(6, 6),
            step_ang=0.6, defocus_ang=50.0, frozen_phonons=2,
        ),
        # shipped with the package (a few MB), reconstructs on 2 CPU cores in minutes
        SimulationSpec(
            name="sto-demo", cell_repeats=3, thickness_uc=4, sim_gpts=96, recon_slices=4, scan_shape=(24, 24),
            step_ang=0.45, defocus_ang=60.0, position_jitter_ang=0.03, frozen_phonons=4, dose_e_per_ang2=1e6,
        ),
        # the CPU benchmark: 64×64 scan, 128×128 detector, 8 u.c., 8 phonon configurations
        SimulationSpec(
            name="sto-small", cell_repeats=5, thickness_uc=8, sim_gpts=192, recon_slices=8, scan_shape=(64, 64),
            step_ang=0.4, defocus_ang=100.0, position_jitter_ang=0.05, frozen_phonons=8, dose_e_per_ang2=1e5,
        ),
        # the poster's geometry: raw 200×200 scan, central 100×100 reconstructed with 32 slices (GPU)
        SimulationSpec(
            name="sto-poster", cell_repeats=5, thickness_uc=16, sim_gpts=192, recon_slices=32,
            scan_shape=(200, 200), step_ang=0.4, defocus_ang=100.0, position_jitter_ang=0.05, frozen_phonons=8,
            dose_e_per_ang2=1e5, recon_scan_region=((50, 150), (50, 150)),
        ),
    )
}


def get_preset(name: str) -> SimulationSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset '{name}'{did_you_mean(name, list(PRESETS))}") from None


def with_overrides(spec: SimulationSpec, **overrides) -> SimulationSpec:
    """A validated copy with the given fields replaced (None values are ignored)."""
    changes = {key: value for key, value in overrides.items() if value is not None}
    try:
        return SimulationSpec.model_validate(spec.model_dump() | changes)
    except ValueError as err:
        raise ConfigError(f"invalid simulation settings: {err}") from None
