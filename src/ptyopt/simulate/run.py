"""``ptyopt simulate``: presets -> abTEM -> Dataset4D with ground truth, cached by parameters."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.dataset_file import read_dataset, write_dataset
from ptyopt.data.detector_errors import DetectorErrors, apply_detector_errors
from ptyopt.errors import ConfigError
from ptyopt.progress import progress_bar
from ptyopt.simulate.presets import SimulationSpec

CACHE_FORMAT = 1  # bump when the simulation or truth recipe changes, to invalidate old caches


def default_cache_dir() -> Path:
    """$PTYOPT_CACHE_DIR, else ~/.cache/ptyopt/simulate."""
    return Path(os.environ.get("PTYOPT_CACHE_DIR", Path.home() / ".cache" / "ptyopt")) / "simulate"


DETECTOR_FIELDS = {"detector_rotation_deg", "detector_transpose", "descan_px_per_step", "centre_offset_px"}


def cache_key(spec: SimulationSpec, abtem_version: str) -> str:
    """Hash of everything that changes the noise-free ideal data: the dose only adds noise and the detector's
    errors are applied after the cache, so they are left out."""
    text = spec.model_dump_json(exclude={"dose_e_per_ang2", "name", *DETECTOR_FIELDS}) + abtem_version + str(
        CACHE_FORMAT)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def apply_source_size(patterns: np.ndarray, spec: SimulationSpec) -> np.ndarray:
    """Spatial incoherence: a Gaussian blur of the 4D data along both scan axes (sigma = source size)."""
    if spec.source_size_ang == 0:
        return patterns
    from scipy.ndimage import gaussian_filter

    sigma_px = spec.source_size_ang / spec.step_ang
    cube = patterns.reshape(*spec.scan_shape, *patterns.shape[1:])
    return gaussian_filter(cube, sigma=(sigma_px, sigma_px, 0, 0), mode="nearest").reshape(patterns.shape)


def add_poisson_noise(dataset: Dataset4D, dose_e_per_ang2: float, seed: int) -> Dataset4D:
    """Electron counts Poisson(dose · step² · I) as uint32; mean counts per pattern = dose · step² · sum(I)."""
    electrons = dose_e_per_ang2 * dataset.step_ang**2
    counts = np.random.default_rng([seed, 3]).poisson(dataset.meas.astype(np.float64) * electrons)
    return dataset.replace(meas=counts.astype(np.uint32), counts=True, dose_e_per_ang2=dose_e_per_ang2)


def detector_errors_of(spec: SimulationSpec) -> DetectorErrors:
    return DetectorErrors(spec.detector_rotation_deg, spec.detector_transpose, spec.descan_px_per_step,
                          spec.centre_offset_px)


def record_detector(dataset: Dataset4D, spec: SimulationSpec) -> Dataset4D:
    """The detector's errors applied to the patterns, and recorded in the truth (``truth.attrs['detector']``)."""
    errors = detector_errors_of(spec)
    if errors.is_identity:
        return dataset
    meas = apply_detector_errors(dataset.meas, spec.scan_shape, errors)
    truth = dataset.truth
    if truth is not None:
        from dataclasses import replace

        attrs = {**truth.attrs, "detector": {"rotation_deg": errors.rotation_deg, "transpose": errors.transpose,
                                              "descan_px_per_step": [list(r) for r in errors.descan_px_per_step],
                                              "centre_offset_px": list(errors.centre_offset_px)}}
        truth = replace(truth, attrs=attrs)
    return dataset.replace(meas=meas, truth=truth)


def _simulate_clean(spec: SimulationSpec, version: str) -> Dataset4D:
    from ptyopt.simulate import abtem_driver as driver
    from ptyopt.simulate.ground_truth import build_truth

    nominal, true = driver.scan_positions_ang(spec)
    with progress_bar() as bar:
        task = bar.add_task(f"abTEM {spec.name}", total=driver.work_units(spec, len(true)))
        patterns = driver.simulate_patterns(spec, true, progress=lambda n: bar.advance(task, n))
    patterns = apply_source_size(patterns, spec)
    attrs = {
        "simulator": "abtem",
        "abtem_version": version,
        "structure": "SrTiO3 [001], a = 3.905 Å, atoms at z + a/4",
        "simulation": spec.model_dump(mode="json"),
        "conventions": "positions (y, x) Å; defocus = -C10; tilt (theta_y, theta_x) mrad in ptyopt's sign",
        "phase": "sigma * configuration-averaged v_z, Fourier-cropped to the detector band and |k| < K/2 dk",
        "probe_normalisation": "sum |psi|^2 = 1",
        "tilt_mrad": list(spec.tilt_mrad),
    }
    truth = build_truth(spec, driver.thermal_potential_slices(spec), driver.probe_wave(spec), true, attrs)
    return Dataset4D.from_raster(
        patterns,
        spec.scan_shape,
        spec.step_ang,
        energy_kv=spec.energy_kv,
        conv_angle_mrad=spec.conv_angle_mrad,
        dk_inv_ang=spec.dk_inv_ang,
        aberrations={"defocus": spec.defocus_ang, "Cs": spec.cs_ang},
        truth=truth,
    ).replace(positions_ang=nominal)


def simulate_dataset(spec: SimulationSpec, *, cache_dir: Path | None = None, use_cache: bool = True) -> Dataset4D:
    """Noise-free (dose None) or Poisson-noisy dataset of ``spec`` with its ground truth.

    The noise-free data are cached under cache_dir by ``cache_key``; re-running is then instant.
    """
    try:
        from ptyopt.simulate.abtem_driver import abtem_version

        version = abtem_version()
    except ImportError:
        raise ConfigError(
            "simulation needs abTEM: install the 'sim' extra (pip install 'ptyopt[sim]'; make setup does)"
        ) from None
    path = (cache_dir or default_cache_dir()) / f"{spec.name}-{cache_key(spec, version)}.h5"
    if use_cache and path.exists():
        clean = read_dataset(path)
    else:
        clean = _simulate_clean(spec, version)
        if use_cache:
            write_dataset(path, clean)
    clean = record_detector(clean, spec)
    if spec.dose_e_per_ang2 is None:
        return clean
    return add_poisson_noise(clean, spec.dose_e_per_ang2, spec.seed)
