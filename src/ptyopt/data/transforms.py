"""Pure array operations on diffraction patterns (..., Ky, Kx) with the zero frequency at (Ky//2, Kx//2).

Each detector operation works the same on one batch or on a whole dataset, so the preprocessing
pipeline can apply it either once ("precompute") or per batch ("on the fly"). Geometry rules
(DESIGN.md): dx = 1/(K·dk); resampling by s changes K and dk (dx kept, probe window scaled by s);
padding or cropping the detector changes K at fixed dk, hence dx.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ptyopt.errors import ConfigError, DataError


@dataclass(frozen=True)
class DetectorGeometry:
    """Detector size shape_px = (Ky, Kx) [px] and reciprocal pixel dk_inv_ang [1/Å]."""

    shape_px: tuple[int, int]
    dk_inv_ang: float

    @property
    def pixel_size_ang(self) -> tuple[float, float]:
        """Real-space pixel (dy, dx) [Å] = 1 / (K · dk)."""
        return 1.0 / (self.shape_px[0] * self.dk_inv_ang), 1.0 / (self.shape_px[1] * self.dk_inv_ang)

    @property
    def window_ang(self) -> tuple[float, float]:
        """Probe window (Y, X) [Å] = 1 / dk."""
        return 1.0 / self.dk_inv_ang, 1.0 / self.dk_inv_ang


# ---- scan-level (structural) operations on numpy arrays -------------------------------------------------


def to_3d(array: np.ndarray, permute: tuple[int, ...] | None = None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Bring a raw array to (N, Ky, Kx) and return it with its scan shape (Ny, Nx) (None for 3-D input).

    permute: axis order that turns the input into (Ny, Nx, Ky, Kx) (4-D) or (N, Ky, Kx) (3-D), e.g.
    (2, 3, 0, 1) for data stored as (Ky, Kx, Ny, Nx). The raster index is n = iy * Nx + ix.
    """
    if permute is not None:
        if sorted(permute) != list(range(array.ndim)):
            raise ConfigError(f"permute {tuple(permute)} is not an order of the {array.ndim} axes of {array.shape}")
        array = np.transpose(array, permute)
    if array.ndim == 4:
        ny, nx, ky, kx = array.shape
        return np.ascontiguousarray(array.reshape(ny * nx, ky, kx)), (ny, nx)
    if array.ndim == 3:
        return array, None
    raise DataError(f"array has shape {array.shape}; expected (Ny, Nx, Ky, Kx) or (N, Ky, Kx)")


def scan_region_indices(
    scan_shape: tuple[int, int], y_range: tuple[int, int] | None, x_range: tuple[int, int] | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Raster indices of the scan rows y_range = (start, stop) and columns x_range, and the new scan shape."""
    ny, nx = scan_shape
    y0, y1 = y_range or (0, ny)
    x0, x1 = x_range or (0, nx)
    if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
        raise DataError(
            f"scan crop rows {y0}:{y1}, columns {x0}:{x1} do not fit the {ny}×{nx} scan; "
            "give 0 <= start < stop <= size for each axis"
        )
    iy, ix = np.meshgrid(np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
    return (iy * nx + ix).ravel(), (y1 - y0, x1 - x0)


# ---- detector-level operations on torch tensors (..., Ky, Kx) -------------------------------------------


def flip_transpose(patterns: Tensor, flip_y: bool, flip_x: bool, transpose: bool) -> Tensor:
    """Flip the detector axes, then optionally swap them. Flips keep the zero frequency at K//2 only for odd K;
    for even K the flipped pattern is rolled by one pixel so that DC stays at K//2."""
    out = patterns
    for axis, flip in ((-2, flip_y), (-1, flip_x)):
        if flip:
            out = out.flip(axis)
            if out.shape[axis] % 2 == 0:  # flipping an even axis moves DC from K//2 to K//2 - 1
                out = out.roll(1, dims=axis)
    return out.transpose(-2, -1) if transpose else out


def centred_crop_slices(shape_px: tuple[int, int], target_px: tuple[int, int]) -> tuple[slice, slice]:
    """Slices that cut a (Ty, Tx) window out of (Ky, Kx) keeping the zero frequency at the new T//2."""
    out = []
    for k, t in zip(shape_px, target_px, strict=True):
        if not 0 < t <= k:
            raise DataError(f"cannot crop the {shape_px} detector to {target_px}; each size must be in 1..K")
        start = k // 2 - t // 2
        out.append(slice(start, start + t))
    return out[0], out[1]


def check_detector_range(shape_px: tuple[int, int], y_range: tuple[int, int], x_range: tuple[int, int]) -> None:
    """Ranges must fit and keep the zero frequency at the new K//2 (DESIGN.md convention)."""
    for axis, (k, (start, stop)) in enumerate(zip(shape_px, (y_range, x_range), strict=True)):
        if not 0 <= start < stop <= k:
            raise DataError(f"detector crop {start}:{stop} on axis {axis} does not fit the size {k}")
        if k // 2 - start != (stop - start) // 2:
            centred = k // 2 - (stop - start) // 2
            raise DataError(
                f"detector crop {start}:{stop} on axis {axis} moves the zero frequency off the new centre; "
                f"for a width of {stop - start} px use {centred}:{centred + stop - start}"
            )


def fit_power_law(mean_pattern: Tensor, threshold_percentile: float) -> tuple[float, float]:
    """Fit I(r) = a · r^(-b) to the dark pixels (below the percentile) of a mean pattern; returns (a, b).

    r is the distance [px] from the zero frequency. A log-log least-squares line through the positive pixels.
    """
    ky, kx = mean_pattern.shape[-2:]
    y = torch.arange(ky, dtype=torch.float64) - ky // 2
    x = torch.arange(kx, dtype=torch.float64) - kx // 2
    radius = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    values = mean_pattern.detach().cpu().to(torch.float64)
    level = torch.quantile(values.flatten(), threshold_percentile / 100.0)
    use = (values <= level) & (values > 0) & (radius > 0)
    if use.sum() < 10:
        raise DataError(
            "too few positive dark pixels to fit a power-law background; use padding background 'constant'"
        )
    design = torch.stack([torch.ones_like(radius[use]), torch.log(radius[use])], dim=1)
    coef = torch.linalg.lstsq(design, torch.log(values[use])[:, None]).solution[:, 0]
    return float(torch.exp(coef[0])), float(-coef[1])


def power_law_template(target_px: tuple[int, int], inner_px: tuple[int, int], a: float, b: float) -> Tensor:
    """a · r^(-b) on the padded detector, zero inside the centred inner detector region (float64)."""
    ty, tx = target_px
    y = torch.arange(ty, dtype=torch.float64) - ty // 2
    x = torch.arange(tx, dtype=torch.float64) - tx // 2
    radius = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2).clamp(min=1.0)
    template = a * radius ** (-b)
    sy, sx = centred_crop_slices(target_px, inner_px)
    template[sy, sx] = 0.0
    return template


def pad_patterns(patterns: Tensor, target_px: tuple[int, int], background: Tensor | float) -> Tensor:
    """Embed (..., Ky, Kx) in a (..., Ty, Tx) canvas filled with ``background`` (a constant or a (Ty, Tx)
    template), zero frequency at T//2. The measured pixels are kept as they are."""
    sy, sx = centred_crop_slices(target_px, patterns.shape[-2:])
    canvas = torch.zeros(*patterns.shape[:-2], *target_px, dtype=patterns.dtype, device=patterns.device)
    canvas = canvas + torch.as_tensor(background, dtype=patterns.dtype, device=patterns.device)
    canvas[..., sy, sx] = patterns
    return canvas


def resampling_matrix(n_in: int, scale: float) -> Tensor:
    """(n_out, n_in) matrix R, n_out = scale · n_in, that integrates the old pixels over the new ones.

    New pixel j is centred on old coordinate c_j = n_in//2 + (j - n_out//2)/scale and spans 1/scale old pixels;
    R[j, i] is the overlap of old pixel i with it. Counts are kept (each interior column of R sums to 1) and
    the zero frequency stays on the centre pixel, for down- and up-sampling alike.
    """
    n_out = round(n_in * scale)
    if n_out < 1 or abs(n_out - n_in * scale) > 1e-9:
        raise ConfigError(
            f"resampling {n_in} px by {scale} does not give a whole number of pixels; "
            f"choose a factor s with s·{n_in} an integer (e.g. 0.5 or 2)"
        )
    centres = n_in // 2 + (np.arange(n_out) - n_out // 2) / scale
    lo, hi = centres - 0.5 / scale, centres + 0.5 / scale
    edges = np.arange(n_in)
    overlap = np.minimum(hi[:, None], edges[None, :] + 0.5) - np.maximum(lo[:, None], edges[None, :] - 0.5)
    return torch.from_numpy(np.clip(overlap, 0.0, None))


def resample_patterns(patterns: Tensor, matrix_y: Tensor, matrix_x: Tensor) -> Tensor:
    """R_y · I · R_x^T on the last two axes (counts-conserving resampling)."""
    return matrix_y @ patterns @ matrix_x.T
