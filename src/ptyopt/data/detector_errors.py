"""What a real detector does to ideal patterns: rotation against the scan, a transpose, an off-centre beam and
descan (the pattern centre moving with the beam). ``simulate`` applies them to make test data with known answers;
``calibrate`` estimates the same numbers from data. One set of conventions for both:

- vectors on the detector are (y, x) in pixels; ``rotation_matrix(θ) = [[cos θ, -sin θ], [sin θ, cos θ]]``;
- the detector sees a scan-frame direction v at ``T R(θ) v`` (T swaps y and x when ``transpose``);
- the pattern centre (the optical axis, the bright-field disk's centre) of the pattern at scan index (iy, ix) is
  ``K//2 + centre_offset_px + descan_px_per_step @ (iy - (Ny-1)/2, ix - (Nx-1)/2)``: offset at the scan's middle,
  descan as a 2×2 matrix [[dcy/diy, dcy/dix], [dcx/diy, dcx/dix]] in pixels per scan step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """R(θ) acting on (y, x) vectors."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s], [s, c]])


def detector_map(angle_deg: float, transpose: bool) -> np.ndarray:
    """M = T R(θ): where a scan-frame (y, x) direction appears on the detector."""
    swap = np.array([[0.0, 1.0], [1.0, 0.0]]) if transpose else np.eye(2)
    return swap @ rotation_matrix(angle_deg)


def scan_offsets(scan_shape: tuple[int, int]) -> np.ndarray:
    """(iy - (Ny-1)/2, ix - (Nx-1)/2) of every position in raster order, (N, 2)."""
    iy, ix = np.meshgrid(np.arange(scan_shape[0]), np.arange(scan_shape[1]), indexing="ij")
    return np.stack([iy.ravel() - (scan_shape[0] - 1) / 2, ix.ravel() - (scan_shape[1] - 1) / 2], axis=1)


@dataclass(frozen=True)
class DetectorErrors:
    rotation_deg: float = 0.0
    transpose: bool = False
    descan_px_per_step: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    centre_offset_px: tuple[float, float] = (0.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return (self.rotation_deg == 0 and not self.transpose and not np.any(self.descan_px_per_step)
                and not np.any(self.centre_offset_px))

    def centre_shifts_px(self, scan_shape: tuple[int, int]) -> np.ndarray:
        """Each pattern's centre relative to K//2, (N, 2) [px]."""
        return np.asarray(self.centre_offset_px) + scan_offsets(scan_shape) @ np.asarray(self.descan_px_per_step).T


def apply_detector_errors(patterns: np.ndarray, scan_shape: tuple[int, int], errors: DetectorErrors,
                          *, chunk: int = 256) -> np.ndarray:
    """Patterns (N, K, K) as the imperfect detector records them (bicubic resampling about K//2; intensity
    falling outside the detector is lost, and the total of each pattern is otherwise kept up to interpolation)."""
    if errors.is_identity:
        return patterns
    n = patterns.shape[0]
    if n != scan_shape[0] * scan_shape[1]:
        raise ValueError(f"{n} patterns do not fill a {scan_shape} raster")
    out = np.empty(patterns.shape, dtype=np.float32)
    shifts = errors.centre_shifts_px(scan_shape)
    for start in range(0, n, chunk):
        part = torch.from_numpy(np.asarray(patterns[start:start + chunk], dtype=np.float32))
        out[start:start + chunk] = resample_about_centre(part, errors, shifts[start:start + chunk],
                                                         inverse=False).numpy()
    return out


def correct_detector_errors(patterns: Tensor, errors: DetectorErrors, shifts_px: np.ndarray) -> Tensor:
    """The inverse of ``apply_detector_errors``: patterns (B, K, K) whose centres sit at K//2 + shifts_px (B, 2),
    seen through M, resampled back to the ideal detector (centred, in the scan frame)."""
    return resample_about_centre(patterns, errors, shifts_px, inverse=True)


def resample_about_centre(patterns: Tensor, errors: DetectorErrors, shifts_px: np.ndarray, *,
                          inverse: bool) -> Tensor:
    """Bicubic resampling of (B, K, K): forward, output q shows input at M⁻¹(q - s); inverse, output p shows
    input at M p + s (coordinates about K//2)."""
    b, ky, kx = patterns.shape
    matrix = detector_map(errors.rotation_deg, errors.transpose)
    qy, qx = np.meshgrid(np.arange(ky) - ky // 2, np.arange(kx) - kx // 2, indexing="ij")
    s = np.asarray(shifts_px, dtype=float).reshape(b, 2)
    if inverse:
        py = matrix[0, 0] * qy + matrix[0, 1] * qx + s[:, 0, None, None] + ky // 2
        px = matrix[1, 0] * qy + matrix[1, 1] * qx + s[:, 1, None, None] + kx // 2
    else:
        inv = np.linalg.inv(matrix)
        dy, dx = qy[None] - s[:, 0, None, None], qx[None] - s[:, 1, None, None]
        py = inv[0, 0] * dy + inv[0, 1] * dx + ky // 2
        px = inv[1, 0] * dy + inv[1, 1] * dx + kx // 2
    grid = torch.from_numpy(np.stack([2 * px / (kx - 1) - 1, 2 * py / (ky - 1) - 1], axis=-1)).to(
        patterns.device, torch.float32)
    sampled = F.grid_sample(patterns[:, None].float(), grid, mode="bicubic", padding_mode="zeros",
                            align_corners=True)
    return sampled[:, 0].clamp(min=0).to(patterns.dtype)


def shift_patterns(patterns: Tensor, shift_px: Tensor) -> Tensor:
    """Patterns (N, K, K) moved by shift_px (N, 2) [px] (Fourier shift, for real non-negative images)."""
    from ptyopt.physics.shift import fourier_shift

    return fourier_shift(patterns.double(), shift_px.double()).clamp(min=0).to(patterns.dtype)


def to_detector_frame(positions_ang: np.ndarray, rotation_deg: float, transpose: bool,
                      centre_ang: np.ndarray) -> np.ndarray:
    """Scan-frame positions (N, 2) [Å] in the detector's frame: c + M (p - c) (M = T R(θ)), so that a model whose
    object lives in that frame needs no resampled patterns."""
    matrix = detector_map(rotation_deg, transpose)
    return np.asarray(centre_ang) + (np.asarray(positions_ang, dtype=float) - centre_ang) @ matrix.T
