"""The detector's response to the model's far-field intensity: a Gaussian point-spread function (or none).

Intensities are (B, Ky, Kx) with the zero frequency at (Ky//2, Kx//2), the measured patterns' layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def gaussian_kernel_1d(sigma_px: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised samples of exp(-x²/2σ²) on x = -r..r px, r = max(1, round(3σ))."""
    radius = max(1, int(round(3 * sigma_px)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return kernel / kernel.sum()


def detector_blur(intensities: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian point-spread function (std sigma_px) with replicate edges; keeps the total of patterns
    that are flat within 3 sigma of the detector edge (replicated edge pixels count more than once)."""
    kernel = gaussian_kernel_1d(sigma_px, intensities.dtype, intensities.device)
    r = kernel.numel() // 2
    x = intensities[:, None]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0]


@dataclass(frozen=True)
class DetectorResponse:
    """The linear map D from model to detected intensities, D I = blur(I) (std ``blur_px`` [px]; 0 = identity),
    and its adjoint Dᵀ, which pulls a per-pixel residual back onto the model intensity (what the exit-wave
    solvers need to include the detector in their far-field updates). ``fft_layout`` variants act on
    intensities in the unshifted FFT layout (DC at pixel 0), where the exit-wave solvers work."""

    blur_px: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.blur_px == 0

    def __call__(self, intensities: Tensor) -> Tensor:
        return intensities if self.is_identity else detector_blur(intensities, self.blur_px)

    def adjoint(self, residual: Tensor) -> Tensor:
        """Dᵀ r (B, Ky, Kx): the replicate edges make D non-symmetric, so the adjoint is the exact VJP."""
        if self.is_identity:
            return residual
        _, pullback = torch.func.vjp(self, torch.zeros_like(residual))
        return pullback(residual)[0]

    def fft_layout(self, intensities: Tensor) -> Tensor:
        """D on intensities in the unshifted layout."""
        if self.is_identity:
            return intensities
        shifted = torch.fft.fftshift(intensities, dim=(-2, -1))
        return torch.fft.ifftshift(self(shifted), dim=(-2, -1))

    def adjoint_fft_layout(self, residual: Tensor) -> Tensor:
        """Dᵀ on residuals in the unshifted layout."""
        if self.is_identity:
            return residual
        shifted = torch.fft.fftshift(residual, dim=(-2, -1))
        return torch.fft.ifftshift(self.adjoint(shifted), dim=(-2, -1))
