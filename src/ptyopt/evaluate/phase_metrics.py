"""Object phase against the ground truth: truth resampled on the reconstruction canvas, registration, metrics.

Recipe (research/simulation.md §5): compare the slice-summed phase over the scanned field of view minus a
margin, after sub-pixel registration (the object/probe translation is ambiguous) and removal of the global
phase offset and, optionally, of a linear ramp (the ramp ↔ probe tilt / pattern-centre ambiguity).
Canvas convention: pixel (iy, ix) sits at origin_ang + (iy, ix)·dx_ang [Å] in the frame of the scan positions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from ptyopt.data.dataset import GroundTruth
from ptyopt.errors import DataError
from ptyopt.evaluate.registration import fourier_shift_image, phase_correlation_shift

_MIN_PIXELS = 16


def _canvas_axes_ang(canvas_shape: tuple[int, int], origin_ang: tuple[float, float], dx_ang: float):
    return (
        float(origin_ang[0]) + np.arange(int(canvas_shape[0])) * dx_ang,
        float(origin_ang[1]) + np.arange(int(canvas_shape[1])) * dx_ang,
    )


def truth_on_canvas(
    truth: GroundTruth,
    canvas_shape: tuple[int, int],
    canvas_origin_ang: tuple[float, float],
    dx_ang: float,
    frame: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Slice-summed truth phase (Y, X) [rad] on a canvas of shape (Y, X), pixel dx_ang [Å], pixel (0, 0) at
    canvas_origin_ang (y, x) [Å]; float64, NaN where the canvas lies outside the truth canvas (frame: see
    ``image_on_canvas``)."""
    phase_sum = truth.phase_slices.sum(axis=0, dtype=np.float64)
    return image_on_canvas(phase_sum, truth.dx_ang, truth.origin_ang, canvas_shape, canvas_origin_ang, dx_ang,
                           frame)


def image_on_canvas(
    image: np.ndarray,
    image_dx_ang: float,
    image_origin_ang: tuple[float, float],
    canvas_shape: tuple[int, int],
    canvas_origin_ang: tuple[float, float],
    dx_ang: float,
    frame: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Resample an image (Y, X) with pixel image_dx_ang [Å] and pixel (0, 0) at image_origin_ang onto a canvas;
    float64, NaN outside the image. frame (M, c): the canvas lives in another frame, its point r showing the
    image at M⁻¹(r - c) + c (a detector rotated or transposed against the scan: ``experiment.detector_*``).

    Same pixel and a whole-pixel offset: exact indexing. Otherwise cubic-spline interpolation; when the canvas
    is coarser than the image (ratio f > 1) the image is first smoothed by a Gaussian of sigma (f − 1)/2 image
    px against aliasing.
    """
    if not (math.isfinite(dx_ang) and dx_ang > 0):
        raise DataError(f"canvas pixel dx_ang must be a positive number of Å, got {dx_ang!r}")
    image = np.asarray(image, dtype=np.float64)
    if frame is not None:
        return _image_in_frame(image, image_dx_ang, image_origin_ang, canvas_shape, canvas_origin_ang, dx_ang, frame)
    scale = dx_ang / image_dx_ang
    offset_px = (np.asarray(canvas_origin_ang, dtype=np.float64) - np.asarray(image_origin_ang)) / image_dx_ang
    y_px = offset_px[0] + np.arange(int(canvas_shape[0])) * scale
    x_px = offset_px[1] + np.arange(int(canvas_shape[1])) * scale
    out = np.full((int(canvas_shape[0]), int(canvas_shape[1])), np.nan)
    whole = np.abs(offset_px - np.round(offset_px)).max() < 1e-6
    if abs(scale - 1.0) < 1e-9 and whole:
        rows, cols = np.round(y_px).astype(int), np.round(x_px).astype(int)
        in_y = (rows >= 0) & (rows < image.shape[0])
        in_x = (cols >= 0) & (cols < image.shape[1])
        out[np.ix_(in_y, in_x)] = image[np.ix_(rows[in_y], cols[in_x])]
        return out
    tol = 1e-6
    in_y = (y_px >= -tol) & (y_px <= image.shape[0] - 1 + tol)
    in_x = (x_px >= -tol) & (x_px <= image.shape[1] - 1 + tol)
    if not (in_y.any() and in_x.any()):
        return out
    source = gaussian_filter(image, (scale - 1.0) / 2.0, mode="nearest") if scale > 1.0 + 1e-9 else image
    yy, xx = np.meshgrid(y_px[in_y], x_px[in_x], indexing="ij")
    out[np.ix_(in_y, in_x)] = map_coordinates(source, [yy, xx], order=3, mode="nearest")
    return out


def _image_in_frame(image, image_dx_ang, image_origin_ang, canvas_shape, canvas_origin_ang, dx_ang, frame):
    matrix, centre = (np.asarray(a, dtype=np.float64) for a in frame)
    y_ang, x_ang = _canvas_axes_ang(canvas_shape, canvas_origin_ang, dx_ang)
    points = np.stack(np.meshgrid(y_ang, x_ang, indexing="ij"), axis=-1) - centre
    source_ang = points @ np.linalg.inv(matrix).T + centre
    px = (source_ang - np.asarray(image_origin_ang)) / image_dx_ang
    scale = dx_ang / image_dx_ang
    source = gaussian_filter(image, (scale - 1.0) / 2.0, mode="nearest") if scale > 1.0 + 1e-9 else image
    out = map_coordinates(source, [px[..., 0], px[..., 1]], order=3, mode="constant", cval=np.nan)
    inside = ((px[..., 0] >= 0) & (px[..., 0] <= image.shape[0] - 1) & (px[..., 1] >= 0)
              & (px[..., 1] <= image.shape[1] - 1))
    return np.where(inside, out, np.nan)


def scanned_region_mask(
    canvas_shape: tuple[int, int],
    canvas_origin_ang: tuple[float, float],
    dx_ang: float,
    positions_ang: np.ndarray,
    margin_ang: float,
    frame: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Boolean mask (Y, X): canvas pixels inside the bounding box of the scan positions (N, 2) (y, x) [Å]
    shrunk by margin_ang [Å] on every side (DESIGN: the scanned field of view minus a margin; use about one
    probe radius). Pixels exactly on the shrunk box's edge are inside. frame (M, c): the canvas and the
    positions are in a rotated/transposed frame; the box is the scan's own, taken back through M⁻¹.
    """
    if frame is not None:
        matrix, centre = (np.asarray(a, dtype=np.float64) for a in frame)
        inverse = np.linalg.inv(matrix)
        scan = (np.asarray(positions_ang, dtype=np.float64) - centre) @ inverse.T + centre
        low, high = scan.min(axis=0) + margin_ang, scan.max(axis=0) - margin_ang
        y_ang, x_ang = _canvas_axes_ang(canvas_shape, canvas_origin_ang, dx_ang)
        points = (np.stack(np.meshgrid(y_ang, x_ang, indexing="ij"), axis=-1) - centre) @ inverse.T + centre
        tol = 1e-9
        return np.all((points >= low - tol) & (points <= high + tol), axis=-1)
    positions = np.asarray(positions_ang, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2 or len(positions) == 0:
        raise DataError(f"positions have shape {positions.shape}; expected (N, 2) as (y, x) in Å")
    low = positions.min(axis=0) + margin_ang
    high = positions.max(axis=0) - margin_ang
    y_ang, x_ang = _canvas_axes_ang(canvas_shape, canvas_origin_ang, dx_ang)
    tol = 1e-9 * dx_ang
    in_y = (y_ang >= low[0] - tol) & (y_ang <= high[0] + tol)
    in_x = (x_ang >= low[1] - tol) & (x_ang <= high[1] + tol)
    return in_y[:, None] & in_x[None, :]


def _plane_design(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1], dtype=np.float64), indexing="ij")
    return y, x


def _fit_plane(residual: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Least-squares plane a + b·y + c·x [rad, rad/px] through residual over valid, evaluated on the whole grid."""
    y, x = _plane_design(residual.shape)
    centre = np.array([y[valid].mean(), x[valid].mean()])
    design = np.stack([np.ones(int(valid.sum())), y[valid] - centre[0], x[valid] - centre[1]], axis=1)
    coef, *_ = np.linalg.lstsq(design, residual[valid], rcond=None)
    return coef[0] + coef[1] * (y - centre[0]) + coef[2] * (x - centre[1])


def shift_mirrored(image: np.ndarray, shift_px: tuple[float, float]) -> np.ndarray:
    """Image (Y, X) shifted by shift_px (dy, dx) [px] as ``fourier_shift_image`` does, without wrapping around."""
    # The even (mirror) extension to (2Y, 2X) is periodic and continuous, so the Fourier shift does not ring at
    # the canvas edges; content entering at an edge is the mirror image of what lies there.
    extended = np.pad(image, ((0, image.shape[0]), (0, image.shape[1])), mode="symmetric")
    return fourier_shift_image(extended, shift_px)[: image.shape[0], : image.shape[1]]


def _plane_slopes(plane: np.ndarray) -> tuple[float, float]:
    return (float(plane[1, 0] - plane[0, 0]) if plane.shape[0] > 1 else 0.0,
            float(plane[0, 1] - plane[0, 0]) if plane.shape[1] > 1 else 0.0)


def _valid_region(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if recon.ndim != 2 or recon.shape != truth.shape or mask.shape != recon.shape:
        raise DataError(
            f"reconstruction {recon.shape}, truth {truth.shape} and mask {mask.shape} must be 2-D of one shape"
        )
    if not np.isfinite(recon).all():
        raise DataError("the reconstructed phase holds NaN or infinite values; the reconstruction diverged")
    valid = mask.astype(bool) & np.isfinite(truth)
    if valid.sum() < _MIN_PIXELS:
        raise DataError(
            f"the comparison region holds {int(valid.sum())} pixels with a known truth (need >= {_MIN_PIXELS}); "
            "reduce margin_ang or check that the canvas origin and the truth origin share the positions' frame"
        )
    return valid


def align_phase(
    recon_phase: np.ndarray,
    truth_phase: np.ndarray,
    mask: np.ndarray,
    *,
    register: bool = True,
    remove_ramp: bool = False,
    max_shift_px: float | None = None,
    upsample: int = 20,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reconstruction (Y, X) [rad] registered to the truth (Y, X) over mask and freed of offset (and ramp).

    Returns the aligned reconstruction (float64, whole canvas) and what was removed: shift_px (dy, dx) applied
    to the reconstruction, offset_rad (the constant removed, at the region's centroid when a ramp is fitted),
    ramp_rad_per_px (dy, dx slopes removed; zeros without remove_ramp), and the boolean region used.
    Truth pixels that are NaN are left out of the region.
    """
    recon = np.asarray(recon_phase, dtype=np.float64)
    truth = np.asarray(truth_phase, dtype=np.float64)
    valid = _valid_region(recon, truth, np.asarray(mask))
    shift = (0.0, 0.0)
    if register:
        # A ramp biases the registration and its mirror extension has kinks; register and shift a detrended
        # copy, then add the plane back, moved analytically: plane(r − s) = plane(r) − slope·s.
        plane = _fit_plane(recon - np.nan_to_num(truth), valid) if remove_ramp else np.zeros_like(recon)
        detrended = recon - plane
        rows, cols = np.nonzero(valid.any(axis=1))[0], np.nonzero(valid.any(axis=0))[0]
        box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        inside = valid[box]
        reference, moving = truth[box].copy(), detrended[box].copy()
        reference[~inside] = reference[inside].mean()
        moving[~inside] = moving[inside].mean()
        shift = phase_correlation_shift(reference, moving, upsample, max_shift_px=max_shift_px)
        slope = _plane_slopes(plane)
        recon = shift_mirrored(detrended, shift) + plane - (slope[0] * shift[0] + slope[1] * shift[1])
    residual = recon - np.nan_to_num(truth)
    if remove_ramp:
        plane = _fit_plane(residual, valid)
        ramp = _plane_slopes(plane)
        offset = float(plane[valid].mean())
        recon = recon - plane
    else:
        ramp, offset = (0.0, 0.0), float(residual[valid].mean())
        recon = recon - offset
    info = {"shift_px": [float(shift[0]), float(shift[1])], "offset_rad": offset,
            "ramp_rad_per_px": [ramp[0], ramp[1]], "region": valid}
    return recon, info


def phase_error_metrics(aligned_phase: np.ndarray, truth_phase: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    """Error metrics of an already aligned phase (Y, X) [rad] against the truth (Y, X) [rad] over region (bool).

    With t the truth and r the aligned phase in the region: rmse_rad = sqrt(mean((r − t)²));
    nrmse = rmse / (max t − min t); pearson_r = corr(r, t); psnr_db = 20·log10((max t − min t) / rmse), inf when
    rmse = 0; truth_range_rad = max t − min t; n_pixels. A constant truth gives NaN nrmse, pearson_r and psnr_db.
    """
    region = np.asarray(region, dtype=bool)
    r = np.asarray(aligned_phase, dtype=np.float64)[region]
    t = np.asarray(truth_phase, dtype=np.float64)[region]
    rmse = float(np.sqrt(np.mean((r - t) ** 2)))
    data_range = float(t.max() - t.min())
    if data_range > 0:
        nrmse = rmse / data_range
        psnr = 20.0 * math.log10(data_range / rmse) if rmse > 0 else math.inf
    else:
        nrmse = psnr = math.nan
    r_centred, t_centred = r - r.mean(), t - t.mean()
    denominator = math.sqrt(float(np.sum(r_centred**2)) * float(np.sum(t_centred**2)))
    pearson = float(np.sum(r_centred * t_centred)) / denominator if denominator > 0 else math.nan
    return {"rmse_rad": rmse, "nrmse": float(nrmse), "pearson_r": pearson, "psnr_db": float(psnr),
            "truth_range_rad": data_range, "n_pixels": int(region.sum())}


def compare_phase(
    recon_phase: np.ndarray,
    truth_phase: np.ndarray,
    mask: np.ndarray,
    *,
    register: bool = True,
    remove_ramp: bool = False,
    max_shift_px: float | None = None,
    upsample: int = 20,
    dx_ang: float | None = None,
) -> dict[str, Any]:
    """Ground-truth metrics of a phase image (Y, X) [rad] against the truth (Y, X) [rad] over mask (Y, X) bool.

    ``align_phase`` (sub-pixel registration of the reconstruction to the truth, offset and optional ramp
    removal), then ``phase_error_metrics``: rmse_rad, nrmse, pearson_r, psnr_db, truth_range_rad, n_pixels, plus
    shift_px (dy, dx) applied to the reconstruction, offset_rad and ramp_rad_per_px. All plain Python numbers
    and lists (json-serialisable; psnr_db is inf for a perfect match).
    """
    aligned, info = align_phase(recon_phase, truth_phase, mask, register=register, remove_ramp=remove_ramp,
                                max_shift_px=max_shift_px, upsample=upsample)
    region = info.pop("region")
    metrics = {**phase_error_metrics(aligned, truth_phase, region), **info}
    if dx_ang is not None:  # with the pixel size [Å]: the FRC resolution against the truth too
        metrics["frc_resolution_ang"] = frc_resolution_to_truth(aligned, truth_phase, region, dx_ang)
    return metrics


def slice_sum(recon_phase_slices: np.ndarray, occupancy: np.ndarray | None = None) -> np.ndarray:
    """Slice-summed phase (Y, X) [rad] of (omode, S, Y, X) or (S, Y, X) phases.

    With object modes: mode 0, or the occupancy-weighted mean over modes when occupancy (omode,) is given.
    """
    phase = np.asarray(recon_phase_slices, dtype=np.float64)
    if phase.ndim == 3:
        return phase.sum(axis=0)
    if phase.ndim != 4:
        raise DataError(f"reconstructed phase has shape {phase.shape}; expected (omode, S, Y, X) or (S, Y, X)")
    if occupancy is None:
        return phase[0].sum(axis=0)
    weights = np.asarray(occupancy, dtype=np.float64).reshape(-1)
    if weights.shape[0] != phase.shape[0] or not (weights >= 0).all() or weights.sum() <= 0:
        raise DataError(
            f"occupancy {weights.tolist()} must hold {phase.shape[0]} non-negative weights with a positive sum"
        )
    return np.tensordot(weights / weights.sum(), phase.sum(axis=1), axes=1)


def phase_metrics(
    recon_phase_slices: np.ndarray,
    canvas_origin_ang: tuple[float, float],
    dx_ang: float,
    truth: GroundTruth,
    positions_ang: np.ndarray,
    margin_ang: float,
    *,
    occupancy: np.ndarray | None = None,
    register: bool = True,
    remove_ramp: bool = False,
    max_shift_px: float | None = None,
    frame: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``compare_phase`` of a reconstruction's slice sum against the truth over the scanned region minus margin
    (frame (M, c): the canvas and positions are in a detector frame, see ``image_on_canvas``).

    recon_phase_slices: (omode, S, Y, X) or (S, Y, X) [rad] on a canvas of pixel dx_ang [Å] whose pixel (0, 0)
    sits at canvas_origin_ang (y, x) [Å]; positions_ang (N, 2) [Å]: the scan positions defining the region;
    margin_ang [Å]: shrinks the region on every side. Adds margin_ang to the metrics.
    """
    phase = slice_sum(recon_phase_slices, occupancy)
    truth_phase = truth_on_canvas(truth, phase.shape, canvas_origin_ang, dx_ang, frame)
    mask = scanned_region_mask(phase.shape, canvas_origin_ang, dx_ang, positions_ang, margin_ang, frame)
    metrics = compare_phase(phase, truth_phase, mask, register=register, remove_ramp=remove_ramp,
                            max_shift_px=max_shift_px, dx_ang=dx_ang)
    return {**metrics, "margin_ang": float(margin_ang)}


def frc_resolution_to_truth(aligned: np.ndarray, truth_phase: np.ndarray, region: np.ndarray,
                            dx_ang: float) -> float:
    """The half-bit FRC resolution [Å] of the aligned phase against the truth over the region's bounding box
    (outside pixels at the region's mean); NaN when the curve never crosses (up to the pixel's Nyquist limit) or
    the region is too small (a per-iteration history holds floats)."""
    from ptyopt.evaluate.frc import fourier_ring_correlation

    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    if rows.size == 0:
        return math.nan
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crops = []
    for image in (aligned, truth_phase):
        crop = np.asarray(image, dtype=np.float64)[box].copy()
        crop[~region[box]] = crop[region[box]].mean()
        crops.append(crop)
    try:
        resolution = fourier_ring_correlation(crops[0], crops[1], dx_ang).resolution_ang
    except DataError:
        return math.nan
    return math.nan if resolution is None else float(resolution)
