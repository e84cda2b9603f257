"""Sub-pixel image registration: Fourier shifts and phase correlation refined by an upsampled local DFT.

Sign convention (shared by both functions): ``fourier_shift_image(image, s)`` gives ``out(r) = image(r - s)``,
so a positive shift moves content towards larger indices, as ``np.roll`` does; and
``phase_correlation_shift(reference, moving)`` returns the ``s`` for which ``fourier_shift_image(moving, s)``
best matches ``reference``. If ``moving = fourier_shift_image(reference, a)`` then the returned shift is ``-a``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal.windows import tukey

from ptyopt.errors import DataError


def fourier_shift_image(image: np.ndarray, shift_yx: tuple[float, float]) -> np.ndarray:
    """Shift an image (..., Y, X) by shift_yx = (dy, dx) [px] periodically: out(r) = image(r - s).

    Multiplies the spectrum by exp(-2 pi i (fy·dy + fx·dx)) with f the fftfreq grid [cycles/px]. Integer
    shifts equal ``np.roll(image, (dy, dx), axis=(-2, -1))`` to round-off. Real input returns a real image.
    """
    image = np.asarray(image)
    dy, dx = float(shift_yx[0]), float(shift_yx[1])
    fy = np.fft.fftfreq(image.shape[-2])[:, None]
    fx = np.fft.fftfreq(image.shape[-1])[None, :]
    ramp = np.exp(-2j * math.pi * (fy * dy + fx * dx))
    shifted = np.fft.ifft2(np.fft.fft2(image, axes=(-2, -1)) * ramp, axes=(-2, -1))
    return shifted if np.iscomplexobj(image) else shifted.real


def apodization_window(shape_px: tuple[int, int], alpha: float = 0.5) -> np.ndarray:
    """Separable Tukey window (Y, X): flat centre, cosine tapers over a fraction ``alpha`` of each axis."""
    return np.outer(tukey(shape_px[0], alpha, sym=True), tukey(shape_px[1], alpha, sym=True))


def _local_correlation(spectrum: np.ndarray, centre_yx: np.ndarray, offsets_px: np.ndarray) -> np.ndarray:
    """Inverse DFT of ``spectrum`` (Y, X) evaluated on the grid centre + offsets (n, n) [px], by matrix products.

    c(y, x) = sum_k spectrum(k) exp(+2 pi i (fy·y + fx·x)) / (Y·X), the correlation at non-integer lags.
    """
    fy = np.fft.fftfreq(spectrum.shape[0])
    fx = np.fft.fftfreq(spectrum.shape[1])
    kernel_y = np.exp(2j * math.pi * np.outer(centre_yx[0] + offsets_px, fy))
    kernel_x = np.exp(2j * math.pi * np.outer(fx, centre_yx[1] + offsets_px))
    return (kernel_y @ spectrum @ kernel_x).real / spectrum.size


def _parabolic_vertex(left: float, centre: float, right: float) -> float:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through three equally spaced samples."""
    curvature = left - 2.0 * centre + right
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def _prepare(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    # Subtract the mean first: otherwise the window itself correlates best at zero lag and biases the peak.
    return (image - image.mean()) * window


def _integer_peak(correlation: np.ndarray, max_shift_px: float | None) -> np.ndarray:
    lag_y = np.fft.fftfreq(correlation.shape[0], 1.0 / correlation.shape[0])
    lag_x = np.fft.fftfreq(correlation.shape[1], 1.0 / correlation.shape[1])
    if max_shift_px is not None:
        allowed = (np.abs(lag_y)[:, None] <= max_shift_px) & (np.abs(lag_x)[None, :] <= max_shift_px)
        correlation = np.where(allowed, correlation, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    return np.array([lag_y[iy], lag_x[ix]])


def _refine_peak(cross: np.ndarray, peak: np.ndarray, upsample: int) -> np.ndarray:
    n_fine = int(math.ceil(1.5 * upsample)) | 1  # odd, so that the integer peak sits on the grid centre
    offsets = (np.arange(n_fine) - n_fine // 2) / upsample
    local = _local_correlation(cross, peak, offsets)
    jy, jx = np.unravel_index(int(np.argmax(local)), local.shape)
    refine = np.zeros(2)
    if 0 < jy < n_fine - 1:
        refine[0] = _parabolic_vertex(local[jy - 1, jx], local[jy, jx], local[jy + 1, jx])
    if 0 < jx < n_fine - 1:
        refine[1] = _parabolic_vertex(local[jy, jx - 1], local[jy, jx], local[jy, jx + 1])
    return peak + np.array([offsets[jy], offsets[jx]]) + refine / upsample


def _cross_power(ref_spectrum: np.ndarray, moving: np.ndarray, window: np.ndarray, whiten: float) -> np.ndarray:
    cross = ref_spectrum * np.conj(np.fft.fft2(_prepare(moving, window)))
    if whiten > 0:
        magnitude = np.abs(cross)
        cross = cross / (magnitude + whiten * magnitude.max() + np.finfo(np.float64).tiny)
    return cross


def phase_correlation_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    upsample: int = 20,
    *,
    window_alpha: float = 0.5,
    whiten: float = 0.0,
    max_shift_px: float | None = None,
    iterations: int = 8,
) -> tuple[float, float]:
    """Sub-pixel shift (dy, dx) [px] such that ``fourier_shift_image(moving, (dy, dx))`` best matches ``reference``.

    Both images (Y, X) are made zero-mean and apodised with a Tukey window (``window_alpha``; 0 = none). The
    inverse transform of the cross-power spectrum R = F_ref·conj(F_mov) peaks at the shift. With ``whiten`` > 0
    R is whitened to R/(|R| + whiten·max|R|) (true phase correlation, a sharper peak); the default, plain
    cross-correlation, is the matched filter and more robust to noise, which whitening amplifies.
    The integer peak (restricted to |dy|, |dx| <= ``max_shift_px`` when given: a crystal's correlation repeats
    with its lattice) is refined by evaluating the inverse DFT on a grid of 1/``upsample`` px spanning ±0.75 px
    around it, then by a parabola through the best grid point and its neighbours.

    The window is fixed while the content moves under it, which biases the peak towards zero lag in proportion
    to the shift. So ``moving`` is shifted by the current estimate and the residual shift measured again, up to
    ``iterations`` times in all or until it is below 1e-4 px: the bias vanishes with the residual.
    """
    reference = np.asarray(reference, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    if reference.ndim != 2 or reference.shape != moving.shape:
        raise DataError(
            f"registration needs two 2-D images of the same shape; got {reference.shape} and {moving.shape}"
        )
    if min(reference.shape) < 4:
        raise DataError(f"images of shape {reference.shape} are too small to register; need at least 4×4 px")
    if not (np.isfinite(reference).all() and np.isfinite(moving).all()):
        raise DataError("registration images contain NaN or infinite values; crop or fill them first")
    if upsample < 1:
        raise DataError(f"upsample must be >= 1, got {upsample}")
    window = apodization_window(reference.shape, window_alpha)
    ref_spectrum = np.fft.fft2(_prepare(reference, window))
    cross = _cross_power(ref_spectrum, moving, window, whiten)
    shift = _integer_peak(np.fft.ifft2(cross).real, max_shift_px)
    if upsample == 1:
        return float(shift[0]), float(shift[1])
    shift = _refine_peak(cross, shift, upsample)
    for _ in range(max(iterations, 1) - 1):
        cross = _cross_power(ref_spectrum, fourier_shift_image(moving, shift), window, whiten)
        residual = _refine_peak(cross, np.zeros(2), upsample)
        shift = shift + residual
        if np.abs(residual).max() < 1e-4:
            break
    return float(shift[0]), float(shift[1])
