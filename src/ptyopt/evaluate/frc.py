"""Fourier ring correlation (FRC) of two images and the half-bit resolution criterion.

FRC(r) = Re Σ_{k∈r} F_a(k)·conj F_b(k) / sqrt(Σ_{k∈r} |F_a(k)|² · Σ_{k∈r} |F_b(k)|²) over the rings
(r − 1/2)·dk <= |k| < (r + 1/2)·dk, dk the frequency spacing of the image's shorter axis, so every ring has
samples along both axes of a non-square image. The half-bit threshold (van Heel & Schatz,
J. Struct. Biol. 151, 250 (2005)) is T(r) = (0.2071 + 1.9102/√n_r) / (1.2071 + 0.9102/√n_r), n_r the pixels in
ring r; the resolution is 1/k at the first crossing of FRC below T. Rings run from the first above zero frequency
up to Nyquist 1/(2·dx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ptyopt.errors import DataError
from ptyopt.evaluate.registration import apodization_window

_MIN_SIDE_PX = 8


def half_bit_threshold(n_pixels: np.ndarray) -> np.ndarray:
    """T(n) = (0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n) for rings of n pixels (dimensionless; T(1) = 1)."""
    root = np.sqrt(np.asarray(n_pixels, dtype=np.float64))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


@dataclass(frozen=True)
class FRCResult:
    """One FRC curve: per ring (R,) its spatial frequency [1/Å], FRC value, pixel count and half-bit threshold;
    resolution_ang [Å] = 1/k at the first crossing below the threshold, None when the FRC never crosses."""

    spatial_frequency_inv_ang: np.ndarray
    frc: np.ndarray
    n_pixels: np.ndarray
    threshold: np.ndarray
    resolution_ang: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats (JSON-serialisable)."""
        return {
            "resolution_ang": self.resolution_ang,
            "spatial_frequency_inv_ang": [float(v) for v in self.spatial_frequency_inv_ang],
            "frc": [float(v) for v in self.frc],
            "half_bit_threshold": [float(v) for v in self.threshold],
            "n_pixels": [int(v) for v in self.n_pixels],
        }


def _crossing_frequency(k_inv_ang: np.ndarray, frc: np.ndarray, threshold: np.ndarray) -> float | None:
    """Frequency where frc − threshold first turns negative, linearly interpolated between the two rings."""
    excess = frc - threshold
    below = np.nonzero(excess < 0)[0]
    if below.size == 0:
        return None
    first = int(below[0])
    if first == 0:
        return float(k_inv_ang[0])
    above, under = excess[first - 1], excess[first]
    fraction = above / (above - under)
    return float(k_inv_ang[first - 1] + fraction * (k_inv_ang[first] - k_inv_ang[first - 1]))


def _prepared(image: np.ndarray, window: np.ndarray | None) -> np.ndarray:
    # The mean is removed first, else the window's own spectrum leaks into the low rings of both images alike.
    image = image - image.mean()
    return image * window if window is not None else image


def fourier_ring_correlation(
    a: np.ndarray,
    b: np.ndarray,
    dx_ang: float,
    *,
    apodize: bool = True,
    window_alpha: float = 0.5,
) -> FRCResult:
    """FRC of two real images a, b (Y, X) with pixel dx_ang [Å] (see the module docstring).

    With apodize, both images are made zero-mean and multiplied by a Tukey window (taper fraction window_alpha of
    each axis) before the FFT, so the periodic edges do not add correlated streaks. Rings of width one frequency
    pixel dk = 1/(min(Y, X)·dx_ang); the ring of |k| = 0 is left out.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(f"FRC needs two 2-D images of one shape; got {a.shape} and {b.shape}")
    if min(a.shape) < _MIN_SIDE_PX:
        raise DataError(f"images of shape {a.shape} are too small for an FRC; need at least {_MIN_SIDE_PX} px a side")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("FRC images contain NaN or infinite values; crop or fill them first")
    if not (np.isfinite(dx_ang) and dx_ang > 0):
        raise DataError(f"pixel dx_ang must be a positive number of Å, got {dx_ang!r}")
    window = apodization_window(a.shape, window_alpha) if apodize else None
    spectrum_a = np.fft.fft2(_prepared(a, window))
    spectrum_b = np.fft.fft2(_prepared(b, window))
    dk_inv_ang = 1.0 / (min(a.shape) * dx_ang)
    ky = np.fft.fftfreq(a.shape[0], d=dx_ang)[:, None]
    kx = np.fft.fftfreq(a.shape[1], d=dx_ang)[None, :]
    ring = np.rint(np.sqrt(ky**2 + kx**2) / dk_inv_ang).astype(np.int64).ravel()
    n_rings = min(a.shape) // 2 + 1  # rings 0 .. Nyquist
    inside = ring < n_rings
    ring = ring[inside]
    cross = np.bincount(ring, (spectrum_a * np.conj(spectrum_b)).real.ravel()[inside], n_rings)
    power_a = np.bincount(ring, (np.abs(spectrum_a) ** 2).ravel()[inside], n_rings)
    power_b = np.bincount(ring, (np.abs(spectrum_b) ** 2).ravel()[inside], n_rings)
    counts = np.bincount(ring, minlength=n_rings)
    cross, power_a, power_b, counts = cross[1:], power_a[1:], power_b[1:], counts[1:]
    denominator = np.sqrt(power_a * power_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = np.where(denominator > 0, cross / denominator, 0.0)
    k_inv_ang = np.arange(1, n_rings) * dk_inv_ang
    threshold = half_bit_threshold(counts)
    crossing = _crossing_frequency(k_inv_ang, frc, threshold)
    return FRCResult(
        spatial_frequency_inv_ang=k_inv_ang,
        frc=frc,
        n_pixels=counts,
        threshold=threshold,
        resolution_ang=None if crossing is None else 1.0 / crossing,
    )
