"""4D-STEM simulation with abTEM (an independent simulator), in ptyopt's conventions.

Conventions bridged here, once: abTEM takes energy in eV, positions as (x, y) and returns arrays indexed
[kx, ky]; ptyopt uses kV, (y, x) and [ky, kx]. abTEM's tilt multiplies the propagator by
exp(-2 pi i dz (kx tan tx + ky tan ty)), the opposite sign of ptyopt's, so a ptyopt tilt (ty, tx) is the
abTEM tilt (-tx, -ty). abTEM's ``defocus`` equals ptyopt's (= -C10).
"""

from __future__ import annotations

import numpy as np

from ptyopt.simulate.presets import SimulationSpec
from ptyopt.simulate.structures import displaced, srtio3_supercell


def _abtem():
    import abtem
    import dask

    abtem.config.set({"diagnostics.progress_bar": False})
    dask.config.set(scheduler="synchronous")  # one process, bounded memory, deterministic
    return abtem


def abtem_version() -> str:
    return _abtem().__version__


def scan_positions_ang(spec: SimulationSpec) -> tuple[np.ndarray, np.ndarray]:
    """Nominal raster positions (N, 2) (y, x) [Å] and the true ones: the global scan model of
    ``physics.scan`` (scan-coil affine about the scan centre, linear drift in raster order) plus Gaussian jitter."""
    import torch

    from ptyopt.data.dataset import raster_positions_ang
    from ptyopt.physics.scan import affine_matrix, normalised_time, scan_displacement

    nominal = raster_positions_ang(spec.scan_shape, spec.step_ang) + np.asarray(spec.scan_start_ang)
    deformation = torch.from_numpy(affine_matrix(*spec.scan_affine) - np.eye(2))
    drift = torch.tensor([[0.0, 0.0], list(spec.drift_ang)], dtype=torch.float64)
    time = torch.from_numpy(normalised_time(np.arange(len(nominal))))
    centred = torch.from_numpy(nominal - nominal.mean(axis=0))
    distorted = nominal + scan_displacement(deformation, drift, centred, time).numpy()
    rng = np.random.default_rng([spec.seed, 1])
    return nominal, distorted + rng.normal(scale=spec.position_jitter_ang, size=nominal.shape)


def defocus_samples(spec: SimulationSpec) -> tuple[np.ndarray, np.ndarray]:
    """Defocus values [Å] and normalised Gaussian weights of the focal-spread integral (within ±2 sigma)."""
    if spec.focal_spread_ang == 0 or spec.focal_spread_samples == 1:
        return np.array([spec.defocus_ang]), np.array([1.0])
    offsets = np.linspace(-2.0, 2.0, spec.focal_spread_samples)
    weights = np.exp(-0.5 * offsets**2)
    return spec.defocus_ang + offsets * spec.focal_spread_ang, weights / weights.sum()


def _potential(spec: SimulationSpec, atoms, sigmas: dict[str, float] | None = None):
    abtem = _abtem()
    from abtem.parametrizations import KirklandParametrization, LobatoParametrization

    kind = LobatoParametrization if spec.parametrization == "lobato" else KirklandParametrization
    return abtem.Potential(
        atoms,
        gpts=spec.sim_gpts,
        slice_thickness=spec.sim_slice_thickness_ang,
        parametrization=kind(sigmas=sigmas),
        projection="infinite",
    )


def _probe(spec: SimulationSpec, defocus_ang: float, **grid):
    abtem = _abtem()
    return abtem.Probe(
        **grid,
        semiangle_cutoff=spec.conv_angle_mrad,
        energy=spec.energy_kv * 1e3,
        soft=spec.aperture_edge == "soft",
        defocus=defocus_ang,
        Cs=spec.cs_ang,
        tilt=(-spec.tilt_mrad[1], -spec.tilt_mrad[0]),
    )


def simulate_patterns(spec: SimulationSpec, positions_ang: np.ndarray, progress=None, chunk: int = 256) -> np.ndarray:
    """Noise-free diffraction intensities (N, K, K) float32, DC at K//2, each summing to ~1 (abTEM's
    normalisation), averaged over frozen-phonon configurations and focal-spread defoci.

    progress: optional callable(advance: int) called after each chunk of positions.
    """
    abtem = _abtem()
    atoms = srtio3_supercell(spec.cell_repeats, spec.thickness_uc)
    rng = np.random.default_rng([spec.seed, 2])
    configs = (
        [displaced(atoms, spec.thermal_u_ang, rng) for _ in range(spec.frozen_phonons)]
        if spec.frozen_phonons
        else [atoms]
    )
    defoci, weights = defocus_samples(spec)
    detector = abtem.PixelatedDetector(max_angle="cutoff")
    total = np.zeros((len(positions_ang), spec.detector_px, spec.detector_px), dtype=np.float64)
    for config in configs:
        potential = _potential(spec, config)
        for defocus, weight in zip(defoci, weights, strict=True):
            probe = _probe(spec, defocus)
            for start in range(0, len(positions_ang), chunk):
                xy = positions_ang[start : start + chunk, ::-1]  # abTEM scans in (x, y)
                result = probe.scan(potential, scan=abtem.CustomScan(xy), detectors=detector).compute()
                patterns = np.asarray(result.array).reshape(len(xy), spec.detector_px, spec.detector_px)
                total[start : start + chunk] += weight * patterns.transpose(0, 2, 1)  # [kx, ky] -> [ky, kx]
                if progress is not None:
                    progress(len(xy))
    return (total / len(configs)).astype(np.float32)


def work_units(spec: SimulationSpec, n_positions: int) -> int:
    """Probe positions × configurations × defoci: the progress bar's total."""
    return n_positions * max(spec.frozen_phonons, 1) * len(defocus_samples(spec)[0])


def thermal_potential_slices(spec: SimulationSpec) -> np.ndarray:
    """Configuration-averaged projected potential per simulation slice (S_sim, N, N) [V·Å], indexed [y, x].

    The frozen-phonon average of the potential is the Debye–Waller-smeared potential, which abTEM's
    parametrisation computes exactly with Gaussian ``sigmas`` (no sampling noise).
    """
    atoms = srtio3_supercell(spec.cell_repeats, spec.thickness_uc)
    sigmas = spec.thermal_u_ang if spec.frozen_phonons else None
    array = np.asarray(_potential(spec, atoms, sigmas).build().compute().array, dtype=np.float64)
    return array.transpose(0, 2, 1)


def probe_wave(spec: SimulationSpec) -> np.ndarray:
    """abTEM's probe at the cell centre on the simulation grid (N, N) complex, indexed [y, x], sum |psi|^2 = 1."""
    abtem = _abtem()
    centre = spec.cell_ang / 2
    probe = _probe(spec, spec.defocus_ang, extent=spec.cell_ang, gpts=spec.sim_gpts)
    waves = probe.build(scan=abtem.CustomScan(np.array([[centre, centre]]))).compute()
    array = np.asarray(waves.array, dtype=np.complex128).reshape(spec.sim_gpts, spec.sim_gpts).T
    return array / np.linalg.norm(array)
