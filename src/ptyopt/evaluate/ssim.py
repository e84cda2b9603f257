"""Structural similarity (SSIM, Wang et al., IEEE TIP 13, 600 (2004)) with a Gaussian window.

SSIM(x) = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)), with local means, variances and
covariance weighted by a Gaussian of standard deviation sigma_px (truncated at 3.5 σ, mirrored edges), and
C1 = (K1·L)², C2 = (K2·L)², K1 = 0.01, K2 = 0.03, L the data range. The score is the mean over the mask.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from ptyopt.errors import DataError

K1 = 0.01
K2 = 0.03
_TRUNCATE = 3.5


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float, *, sigma_px: float = 1.5) -> np.ndarray:
    """Local SSIM (Y, X) of images a, b (Y, X) in the same unit as data_range (e.g. rad)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(f"SSIM needs two 2-D images of one shape; got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("SSIM images contain NaN or infinite values; crop or fill them first")
    if not (math.isfinite(data_range) and data_range > 0):
        raise DataError(f"SSIM data_range must be positive (the truth's max − min), got {data_range!r}")
    if not sigma_px > 0:
        raise DataError(f"SSIM window sigma_px must be positive, got {sigma_px!r}")

    def smooth(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, sigma_px, mode="reflect", truncate=_TRUNCATE)

    mean_a, mean_b = smooth(a), smooth(b)
    var_a = smooth(a * a) - mean_a**2
    var_b = smooth(b * b) - mean_b**2
    covariance = smooth(a * b) - mean_a * mean_b
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    numerator = (2 * mean_a * mean_b + c1) * (2 * covariance + c2)
    denominator = (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    return numerator / denominator


def structural_similarity(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float,
    *,
    sigma_px: float = 1.5,
    mask: np.ndarray | None = None,
) -> float:
    """Mean SSIM of a and b (Y, X) over mask (Y, X) bool (all pixels when None); 1 for identical images."""
    local = ssim_map(a, b, data_range, sigma_px=sigma_px)
    if mask is None:
        return float(local.mean())
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != local.shape:
        raise DataError(f"SSIM mask has shape {mask.shape}; expected {local.shape} like the images")
    if not mask.any():
        raise DataError("the SSIM mask selects no pixel")
    return float(local[mask].mean())
