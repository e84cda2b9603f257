"""``ptyopt calibrate``: what a reconstruction needs to know about a detector, estimated from the data alone.

Conventions are ``ptyopt.data.detector_errors``'s (the same that ``ptyopt simulate`` uses to make test data with
known answers). Every estimate comes with an uncertainty:

- **pattern centre and descan**: the centroid of each pattern's bright-field disk (a soft mask between 25 % and
  75 % of the disk's level, so intensity moving inside the disk barely moves it), fitted over the scan as a
  plane c = c0 + A (iy - (Ny-1)/2, ix - (Nx-1)/2); uncertainties from the least-squares covariance;
- **disk radius → reciprocal pixel**: the area of the disk in the mean of the re-centred patterns, on the
  *amplitude* √(I/level) with a soft mask between 40 % and 60 % (an aperture's soft edge falls linearly in
  amplitude, so its half-amplitude point is the radius: on abTEM's soft aperture this is exact to 0.1 %, where
  the half-intensity point lies 1.4 % inside), r = sqrt(area/π), dk = α/(λ r) with the file's (or the given)
  convergence semi-angle; uncertainty: the change with a 25–75 % mask;
- **rotation and transpose**: the centre-of-mass shifts left after the plane are the specimen's phase gradient
  (times a positive constant), which is curl-free in the scan frame: for each transpose the rotation that
  minimises Σ curl² of M⁻¹·COM is found (0.1° grid, parabolic refinement); the transpose with the smaller
  residual curl wins, and the 180° ambiguity is settled by the sign of the divergence (the phase gradient
  points up the atomic potentials, so the divergence is most negative on the columns); uncertainty: the spread
  of the four scan quadrants' estimates / 2;
- **defocus**: the weak-phase model of bright-field pixels: the scan image of detector pixel k has the spectrum
  G_k(Q) = φ(Q) T_k(Q), T_k = A(k)[A(k+Q) e^{iπλΔf(|k|²-|k+Q|²)} - A(k-Q) e^{-iπλΔf(|k|²-|k-Q|²)}] (k in the
  scan frame); for each trial Δf, φ(Q) is fitted by least squares over the pixels and Δf maximises the
  explained power (coarse 20 Å grid over ±2000 Å, then 2 Å, parabolic peak). What it measures is the distance
  to the specimen's middle (abTEM SrTiO3: 50 Å for 60 Å at 15.6 Å thickness, 75 Å for 100 Å at 31 Å), so with
  a known thickness half of it is added to give ptyopt's entrance-surface defocus; its uncertainty is a
  quarter of the thickness (where in the crystal the probe "focuses"), or the peak's half-width without one.
  At most the central 64×64 positions and a detector binned to a disk radius of ~12 px are used;
- **counts**: mean counts per pattern, dose [e/Å²] = counts / step² where the data are counts; hot pixels:
  mean-pattern pixels above 5× their 3×3 neighbourhood's median and above a tenth of the disk level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.detector_errors import detector_map, scan_offsets, shift_patterns
from ptyopt.errors import ConfigError, DataError
from ptyopt.physics.constants import wavelength_ang

LOW, HIGH = 0.25, 0.75  # soft disk mask: 0 below LOW·level, 1 above HIGH·level


@dataclass
class Estimate:
    value: Any
    uncertainty: Any
    unit: str
    how: str


@dataclass
class Calibration:
    rotation_deg: Estimate
    transpose: Estimate
    centre_px: Estimate
    descan_px_per_step: Estimate
    disk_radius_px: Estimate
    dk_inv_ang: Estimate
    defocus_ang: Estimate
    counts_per_pattern: Estimate
    dose_e_per_ang2: Estimate | None
    hot_pixels: list[tuple[int, int]] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)  # what the figures show

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": 1}
        for name in ("rotation_deg", "transpose", "centre_px", "descan_px_per_step", "disk_radius_px", "dk_inv_ang",
                     "defocus_ang", "counts_per_pattern", "dose_e_per_ang2"):
            estimate = getattr(self, name)
            out[name] = None if estimate is None else asdict(estimate)
        out["hot_pixels"] = [list(p) for p in self.hot_pixels]
        return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


# ---- disk: level, soft mask, centroids ---------------------------------------------------------------------------


def disk_level(mean_pattern: np.ndarray) -> float:
    """The bright-field disk's intensity level: the median of the pixels above half the 99.5th percentile."""
    top = np.percentile(mean_pattern, 99.5)
    inside = mean_pattern[mean_pattern > 0.5 * top]
    if top <= 0 or inside.size == 0:
        raise DataError("no bright-field disk found: the mean pattern is empty")
    return float(np.median(inside))


def soft_mask(patterns: np.ndarray, level: np.ndarray | float, low: float = LOW, high: float = HIGH) -> np.ndarray:
    level = np.asarray(level, dtype=np.float64).reshape(-1, *([1] * (patterns.ndim - 1))) if np.ndim(level) else level
    return np.clip((patterns / level - low) / (high - low), 0.0, 1.0)


def centroids(weights: np.ndarray) -> np.ndarray:
    """(y, x) centroid of each weight map (N, K, K) -> (N, 2) [px]."""
    ky, kx = weights.shape[-2:]
    total = weights.sum(axis=(-2, -1))
    if np.any(total <= 0):
        raise DataError("a pattern has no bright-field disk (all pixels below a quarter of the disk level)")
    y = (weights.sum(axis=-1) * np.arange(ky)).sum(axis=-1) / total
    x = (weights.sum(axis=-2) * np.arange(kx)).sum(axis=-1) / total
    return np.stack([y, x], axis=1)


def fit_plane(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """values (N, 2) = c0 + A offsets: (c0, A, σ(c0), σ(A)) by least squares."""
    design = np.column_stack([np.ones(len(offsets)), offsets])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coef
    dof = max(len(values) - 3, 1)
    cov = np.linalg.inv(design.T @ design)
    sigma = np.sqrt(np.diag(cov))[:, None] * np.sqrt((residual**2).sum(axis=0) / dof)[None, :]  # (3, 2)
    return coef[0], coef[1:].T, sigma[0], sigma[1:].T


# ---- rotation from the curl of the centre-of-mass field --------------------------------------------------------


def curl_div(field_yx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """curl = ∂x Fy - ∂y Fx and div = ∂y Fy + ∂x Fx of a field (Ny, Nx, 2) on the scan grid."""
    dfy_dy, dfy_dx = np.gradient(field_yx[..., 0])
    dfx_dy, dfx_dx = np.gradient(field_yx[..., 1])
    return dfy_dx - dfx_dy, dfy_dy + dfx_dx


def to_scan_frame(field_yx: np.ndarray, angle_deg: float, transpose: bool) -> np.ndarray:
    """M⁻¹ v for detector vectors v (..., 2)."""
    return field_yx @ np.linalg.inv(detector_map(angle_deg, transpose)).T


def rotation_curve(field_yx: np.ndarray, transpose: bool, angles_deg: np.ndarray) -> np.ndarray:
    """Σ curl² / Σ (curl² + div²) of the field taken to the scan frame, for each angle."""
    out = []
    for angle in angles_deg:
        curl, div = curl_div(to_scan_frame(field_yx, angle, transpose))
        out.append((curl**2).sum() / max((curl**2 + div**2).sum(), 1e-300))
    return np.asarray(out)


def best_rotation(field_yx: np.ndarray, transpose: bool) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(angle in [0, 180) [deg], residual curl fraction, the grid, the curve)."""
    grid = np.arange(0.0, 180.0, 0.1)
    curve = rotation_curve(field_yx, transpose, grid)
    k = int(np.argmin(curve))
    a, b, c = curve[k - 1], curve[k], curve[(k + 1) % len(grid)]
    denominator = a - 2 * b + c
    step = 0.5 * (a - c) / denominator if denominator > 0 else 0.0
    angle = (grid[k] + 0.1 * float(np.clip(step, -1, 1))) % 180.0
    return angle, float(rotation_curve(field_yx, transpose, np.array([angle]))[0]), grid, curve


def divergence_sign_angle(field_yx: np.ndarray, angle_deg: float, transpose: bool) -> float:
    """angle or angle + 180: the one whose scan-frame field has its divergence skewed negative (sharp negative
    peaks on the columns, where the phase gradient converges)."""
    _, div = curl_div(to_scan_frame(field_yx, angle_deg, transpose))
    centred = div - div.mean()
    skew = float((centred**3).mean() / max(centred.std() ** 3, 1e-300))
    return angle_deg if skew < 0 else (angle_deg + 180.0) % 360.0


def rotation_and_transpose(field_yx: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
    fits = {t: best_rotation(field_yx, t) for t in (False, True)}
    transpose = fits[True][1] < fits[False][1]
    angle = divergence_sign_angle(field_yx, fits[transpose][0], transpose)
    curves = {f"transpose={t}": {"angle_deg": fits[t][2].tolist(), "curl_fraction": fits[t][3].tolist()}
              for t in fits}
    return angle, transpose, {"curves": curves, "residual_curl": {str(t): fits[t][1] for t in fits}}


def quadrant_spread(field_yx: np.ndarray, angle: float, transpose: bool) -> float:
    """Half the standard deviation of the rotation estimated on the four scan quadrants [deg]."""
    ny, nx = field_yx.shape[:2]
    estimates = []
    for rows in (slice(0, ny // 2), slice(ny // 2, ny)):
        for cols in (slice(0, nx // 2), slice(nx // 2, nx)):
            part = field_yx[rows, cols]
            if min(part.shape[:2]) < 4:
                return math.nan
            own = best_rotation(part, transpose)[0]
            estimates.append(((own - angle + 90) % 180) - 90)  # the difference, modulo 180
    return float(np.std(estimates) / 2)


# ---- defocus from the bright-field pixels (weak-phase model) ---------------------------------------------------


def bf_explained_power(spectra: np.ndarray, k: np.ndarray, q: tuple[np.ndarray, np.ndarray], k_max: float,
                       wavelength: float, defoci_ang: np.ndarray) -> np.ndarray:
    """For each trial defocus: Σ_Q |Σ_k G_k conj(T_k)|² / Σ_k |T_k|² (the power explained by the best φ(Q)).
    spectra (n, Ny, Nx): the scan images' FFTs of n bright-field pixels at k (n, 2) [1/Å] in the scan frame;
    q: the scan FFT's frequency grids [1/Å]; k_max: the aperture's radius [1/Å]."""
    qy, qx = q
    plus_y, plus_x = k[:, 0, None, None] + qy, k[:, 1, None, None] + qx
    minus_y, minus_x = k[:, 0, None, None] - qy, k[:, 1, None, None] - qx
    a_plus = (np.hypot(plus_y, plus_x) <= k_max).astype(float)
    a_minus = (np.hypot(minus_y, minus_x) <= k_max).astype(float)
    k2 = (k**2).sum(axis=1)[:, None, None]
    d_plus, d_minus = k2 - (plus_y**2 + plus_x**2), k2 - (minus_y**2 + minus_x**2)
    out = []
    for defocus in defoci_ang:
        c = math.pi * wavelength * defocus
        transfer = a_plus * np.exp(1j * c * d_plus) - a_minus * np.exp(-1j * c * d_minus)
        numerator = np.abs((spectra * np.conj(transfer)).sum(axis=0)) ** 2
        denominator = (np.abs(transfer) ** 2).sum(axis=0)
        explained = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
        explained[0, 0] = 0.0
        out.append(float(explained.sum()))
    return np.asarray(out)


def bright_field_defocus(centred: np.ndarray, scan_shape: tuple[int, int], radius_px: float, dk_inv_ang: float,
                         step_ang: float, wavelength: float, angle_deg: float, transpose: bool
                         ) -> tuple[float, float, dict[str, Any]]:
    """(Δf to the specimen's middle [Å], the peak's half-width [Å], the curve) from centred patterns."""
    ny, nx = scan_shape
    cube = centred.reshape(ny, nx, *centred.shape[-2:])
    sy, sx = max(0, (ny - 64) // 2), max(0, (nx - 64) // 2)
    cube = cube[sy:sy + 64, sx:sx + 64]
    ky, kx = cube.shape[-2:]
    binning = max(1, int(radius_px // 12))
    if binning > 1:
        cube = cube[..., : ky // binning * binning, : kx // binning * binning]
        cube = cube.reshape(*cube.shape[:2], ky // binning, binning, kx // binning, binning).sum(axis=(3, 5))
    # bin b's centre, relative to K//2, in original pixels
    iy = np.arange(cube.shape[2]) * binning + (binning - 1) / 2 - ky // 2
    ix = np.arange(cube.shape[3]) * binning + (binning - 1) / 2 - kx // 2
    py, px = np.meshgrid(iy, ix, indexing="ij")
    inside = np.hypot(py, px) < radius_px - binning
    k_det = np.stack([py[inside], px[inside]], axis=1) * dk_inv_ang
    k_scan = to_scan_frame(k_det, angle_deg, transpose)
    images = cube[:, :, inside].astype(np.float64)
    images -= images.mean(axis=(0, 1))
    spectra = np.fft.fft2(np.moveaxis(images, -1, 0))
    q = np.meshgrid(np.fft.fftfreq(images.shape[0], d=step_ang), np.fft.fftfreq(images.shape[1], d=step_ang),
                    indexing="ij")
    k_max = radius_px * dk_inv_ang
    coarse = np.arange(-2000.0, 2000.0 + 1, 20.0)
    power = bf_explained_power(spectra, k_scan, q, k_max, wavelength, coarse)
    centre = coarse[int(np.argmax(power))]
    fine = np.arange(centre - 30.0, centre + 30.0 + 1e-9, 2.0)
    fine_power = bf_explained_power(spectra, k_scan, q, k_max, wavelength, fine)
    j = int(np.clip(np.argmax(fine_power), 1, len(fine) - 2))
    a, b, c = fine_power[j - 1: j + 2]
    step = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
    defocus = float(fine[j] + 2.0 * np.clip(step, -1, 1))
    half = fine_power >= 0.5 * (fine_power.max() + fine_power.min())
    width = float(fine[half].max() - fine[half].min()) / 2 if half.any() else math.nan
    return defocus, width, {"defocus_ang": coarse.tolist(), "explained_power": power.tolist()}


# ---- everything ------------------------------------------------------------------------------------------------


def calibrate(dataset: Dataset4D, *, conv_angle_mrad: float | None = None, thickness_ang: float | None = None,
              chunk: int = 256) -> Calibration:
    """All estimates of the module docstring on a raster dataset (thickness_ang: the specimen's, for the
    defocus at its entrance surface)."""
    if dataset.scan_shape is None:
        raise DataError("calibration needs a raster scan with a known scan shape (Ny, Nx)")
    scan_shape = tuple(dataset.scan_shape)
    if min(scan_shape) < 8:
        raise DataError(f"calibration needs a scan of at least 8×8 positions, got {scan_shape}")
    alpha = conv_angle_mrad if conv_angle_mrad is not None else dataset.conv_angle_mrad
    n = dataset.n_patterns
    meas = dataset.meas
    totals = np.empty(n)
    mean_pattern = np.zeros(dataset.detector_shape)
    for start in range(0, n, chunk):
        part = np.asarray(meas[start:start + chunk], dtype=np.float64)
        totals[start:start + chunk] = part.sum(axis=(1, 2))
        mean_pattern += part.sum(axis=0)
    mean_pattern /= n
    level = disk_level(mean_pattern)
    relative = totals / totals.mean()
    centres = np.empty((n, 2))
    coms = np.empty((n, 2))
    ky, kx = dataset.detector_shape
    for start in range(0, n, chunk):
        part = np.asarray(meas[start:start + chunk], dtype=np.float64)
        centres[start:start + chunk] = centroids(soft_mask(part, level * relative[start:start + chunk]))
        coms[start:start + chunk] = centroids(part)
    offsets = scan_offsets(scan_shape)
    c0, descan, sigma_c0, sigma_descan = fit_plane(centres, offsets)
    com_plane = fit_plane(coms, offsets)
    field_yx = (coms - (com_plane[0] + offsets @ com_plane[1].T)).reshape(*scan_shape, 2)
    angle, transpose, curves = rotation_and_transpose(field_yx)
    angle_sigma = quadrant_spread(field_yx, angle % 180.0, transpose)

    # re-centred mean pattern -> disk radius -> dk
    shifts = torch.from_numpy(np.array([ky // 2, kx // 2]) - (c0 + offsets @ descan.T))
    centred = np.empty(meas.shape, dtype=np.float32)
    for start in range(0, n, chunk):
        part = torch.from_numpy(np.asarray(meas[start:start + chunk], dtype=np.float32))
        centred[start:start + chunk] = shift_patterns(part, shifts[start:start + chunk]).numpy()
    centred_mean = centred.mean(axis=0, dtype=np.float64)
    amplitude = np.sqrt(np.clip(centred_mean, 0, None) / level)
    radius, wide = (math.sqrt(soft_mask(amplitude, 1.0, low, high).sum() / math.pi) for low, high in ((0.4, 0.6),
                                                                                                    (0.25, 0.75)))
    radius_sigma = abs(wide - radius)
    wavelength = wavelength_ang(dataset.energy_kv)
    dk = alpha * 1e-3 / (wavelength * radius)
    dk_sigma = dk * radius_sigma / radius
    middle, width, focus_curve = bright_field_defocus(centred, scan_shape, radius, dk, dataset.step_ang, wavelength,
                                                      angle, transpose)
    if thickness_ang is not None:
        defocus = Estimate(middle + thickness_ang / 2, thickness_ang / 4, "Å",
                           f"bright-field weak-phase fit ({middle:.1f} Å to the middle) + half the {thickness_ang:g} Å "
                           "thickness; positive = underfocus")
    else:
        defocus = Estimate(middle, width, "Å", "bright-field weak-phase fit: to the specimen's middle (give "
                           "--thickness-ang for the entrance surface); positive = underfocus")

    from scipy.ndimage import median_filter

    background = median_filter(mean_pattern, size=3)
    hot = np.argwhere((mean_pattern > 5 * background) & (mean_pattern > 0.1 * level))  # not dark-field noise
    counts = float(totals.mean())
    dose = (Estimate(counts / dataset.step_ang**2, float(totals.std() / dataset.step_ang**2 / math.sqrt(n)),
                     "e/Å²", "mean counts per pattern / step²") if dataset.counts else None)
    return Calibration(
        rotation_deg=Estimate(float(angle), angle_sigma, "deg", "curl-free centre-of-mass field"),
        transpose=Estimate(bool(transpose), None, "", "smaller residual curl of the two"),
        centre_px=Estimate(c0.tolist(), sigma_c0.tolist(), "px", "bright-field disk centroid at the scan's middle"),
        descan_px_per_step=Estimate(descan.tolist(), sigma_descan.tolist(), "px/step",
                                    "plane fit of the disk centroids [[dcy/diy, dcy/dix], [dcx/diy, dcx/dix]]"),
        disk_radius_px=Estimate(radius, radius_sigma, "px", "area of the re-centred mean pattern's disk"),
        dk_inv_ang=Estimate(dk, dk_sigma, "1/Å", f"α/(λ r), α = {alpha:g} mrad"),
        defocus_ang=defocus,
        counts_per_pattern=Estimate(counts, float(totals.std()), "", "mean (± spread) of the pattern totals"),
        dose_e_per_ang2=dose,
        hot_pixels=[(int(y), int(x)) for y, x in hot[:50]],
        curves={"rotation": curves, "focus": focus_curve, "centres": centres.reshape(*scan_shape, 2),
                "mean_pattern": centred_mean, "radius_px": radius, "field": field_yx},
    )


# ---- figures ---------------------------------------------------------------------------------------------------


def write_figures(calibration: Calibration, out_dir) -> list:
    """One PNG per estimate in out_dir: rotation.png, centres.png, defocus.png, disk.png. Returns the paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = calibration.curves
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in curves["rotation"]["curves"].items():
        ax.plot(curve["angle_deg"], curve["curl_fraction"], label=name)
    ax.axvline(calibration.rotation_deg.value % 180, color="k", lw=0.8, ls="--")
    ax.set(xlabel="rotation [deg] (mod 180)", ylabel="curl² / (curl² + div²)",
           title=f"rotation {calibration.rotation_deg.value:.2f}°, transpose {calibration.transpose.value}")
    ax.legend()
    paths.append(out_dir / "rotation.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    centres = curves["centres"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    for ax, axis, label in zip(axes, range(2), ("centre y [px]", "centre x [px]"), strict=True):
        image = ax.imshow(centres[..., axis], cmap="viridis")
        ax.set(title=label, xlabel="scan x", ylabel="scan y")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("bright-field disk centre over the scan (descan)")
    paths.append(out_dir / "centres.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    focus = curves["focus"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(focus["defocus_ang"], focus["explained_power"])
    ax.set(xlabel="trial defocus to the specimen's middle [Å]", ylabel="explained bright-field power",
           title=f"defocus {calibration.defocus_ang.value:.1f} ± {calibration.defocus_ang.uncertainty:.1f} Å")
    paths.append(out_dir / "defocus.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    mean = curves["mean_pattern"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(np.sqrt(np.clip(mean, 0, None)), cmap="gray")
    k = mean.shape[0] // 2
    theta = np.linspace(0, 2 * np.pi, 200)
    r = calibration.disk_radius_px.value
    ax.plot(mean.shape[1] // 2 + r * np.cos(theta), k + r * np.sin(theta), "r-", lw=0.8)
    ax.set(title=f"re-centred mean pattern (√I), r = {r:.2f} px, dk = {calibration.dk_inv_ang.value:.5g} 1/Å")
    paths.append(out_dir / "disk.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


# ---- the config that undoes what was measured -----------------------------------------------------------------

DK_AGREEMENT = 0.02  # the file's dk is kept when the estimate agrees within this fraction


ROTATION_MODES = ("model", "resample")


def calibrated_config(calibration: Calibration, data_path: str, file_dk_inv_ang: float, *, recipe: str,
                      n_slices: int | None, slice_thickness_ang: float | None,
                      rotation: str = "model", file_aberrations: dict[str, float] | None = None
                      ) -> tuple[str, list[str]]:
    """A runnable config (the recipe, with a ``detector_correction`` step moving every pattern's centre to K//2)
    and notes on what was chosen. rotation 'model': the rotation and transpose go to
    ``experiment.detector_rotation_deg`` / ``detector_transpose`` (the positions are mapped into the detector's
    frame, the patterns are only shifted); 'resample': the correction step also rotates the patterns back."""
    if rotation not in ROTATION_MODES:
        raise ConfigError(f"rotation must be one of {', '.join(ROTATION_MODES)}, got '{rotation}'")
    import yaml

    from ptyopt.config import parse_config
    from ptyopt.recipes import recipe_raw

    raw = recipe_raw(recipe, data_path=data_path, n_slices=n_slices, slice_thickness_ang=slice_thickness_ang)
    angle, transpose = round(float(calibration.rotation_deg.value), 4), bool(calibration.transpose.value)
    in_model = rotation == "model"
    step = {"kind": "detector_correction", "rotation_deg": 0.0 if in_model else angle,
            "transpose": False if in_model else transpose,
            "centre_px": [round(float(v), 4) for v in calibration.centre_px.value],
            "descan_px_per_step": [[round(float(v), 6) for v in row] for row in calibration.descan_px_per_step.value]}
    raw["data"]["preprocess"] = [step, *raw["data"].get("preprocess", [])]
    notes = []
    if in_model and (angle != 0 or transpose):
        raw.setdefault("experiment", {}).update({"detector_rotation_deg": angle, "detector_transpose": transpose})
        notes.append(f"the object is reconstructed in the detector's frame (rotated {angle:g}°"
                     f"{', transposed' if transpose else ''} against the scan); --rotation resample rotates the "
                     "patterns instead")
    dk = float(calibration.dk_inv_ang.value)
    if abs(dk / file_dk_inv_ang - 1) > DK_AGREEMENT:
        raw.setdefault("experiment", {})["dk_inv_ang"] = round(dk, 7)
        notes.append(f"the file's dk {file_dk_inv_ang:.5g} 1/Å differs from the estimate {dk:.5g} 1/Å by more than "
                     f"{DK_AGREEMENT:.0%}: the config uses the estimate (experiment.dk_inv_ang)")
    else:
        notes.append(f"the file's dk {file_dk_inv_ang:.5g} 1/Å agrees with the estimate {dk:.5g} 1/Å within "
                     f"{DK_AGREEMENT:.0%}: kept")
    from ptyopt.physics.aberrations import canonical_aberrations

    aberrations = canonical_aberrations(file_aberrations or {})
    file_defocus = -aberrations.get("C10", 0.0)
    estimate = float(calibration.defocus_ang.value)
    tolerance = max(2 * float(calibration.defocus_ang.uncertainty or 0), 0.1 * abs(estimate))
    if abs(file_defocus - estimate) > tolerance:
        raw.setdefault("experiment", {})["aberrations"] = {**aberrations, "C10": round(-estimate, 2)}
        notes.append(f"the file's defocus {file_defocus:g} Å differs from the estimate {estimate:.1f} Å by more than "
                     f"{tolerance:.1f} Å: the initial probe uses the estimate (experiment.aberrations C10)")
    else:
        notes.append(f"the file's defocus {file_defocus:g} Å agrees with the estimate {estimate:.1f} Å: kept")
    if n_slices is None or slice_thickness_ang is None:
        notes.append("model.n_slices / model.slice_thickness_ang are the recipe's placeholders: set your specimen's "
                     "slicing (`ptyopt plan CONFIG` suggests one)")
    parse_config(raw)
    header = (f"# written by `ptyopt calibrate` from {data_path} (recipe '{recipe}'): the first preprocessing\n"
              "# step moves the pattern centre (and its descan) to K//2; the detector's rotation and transpose are "
              + ("experiment.detector_*.\n" if in_model else "undone by the same step.\n"))
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), notes
