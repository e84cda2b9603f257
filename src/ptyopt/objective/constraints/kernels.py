"""Small filters shared by the constraints: Gaussian blur along one axis with edge padding, a soft top-hat."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Target = Literal["both", "phase", "amplitude"]
Padding = Literal["replicate", "reflect"]

# a logistic falls from 0.9 to 0.1 over 2 ln 9 of its argument: scaling by it makes `width` the 90 %-10 % width
_LOGISTIC_90_10 = 2 * math.log(9.0)


def target_keys(target: Target) -> tuple[str, ...]:
    """State keys of the object parts a constraint acts on."""
    return {
        "both": ("object_amplitude", "object_phase"),
        "phase": ("object_phase",),
        "amplitude": ("object_amplitude",),
    }[target]


def gaussian_kernel_1d(sigma: float, radius: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """g(i) = exp(-i^2 / (2 sigma^2)) / sum, i = -radius..radius."""
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur_axis(values: Tensor, sigma: float, dim: int, padding: Padding = "replicate") -> Tensor:
    """Gaussian blur (std sigma [samples]) of real ``values`` along ``dim``, edges padded (no wrap-around).

    The kernel reaches ceil(3 sigma) samples each side, truncated to length - 1 (and renormalised) on short axes.
    """
    length = values.shape[dim]
    radius = min(math.ceil(3 * sigma), length - 1)
    if radius < 1:
        return values.clone()
    kernel = gaussian_kernel_1d(sigma, radius, dtype=values.dtype, device=values.device)
    moved = values.movedim(dim, -1)
    flat = moved.reshape(-1, 1, length)
    padded = F.pad(flat, (radius, radius), mode=padding)
    blurred = F.conv1d(padded, kernel.view(1, 1, -1))
    return blurred.reshape(moved.shape).movedim(-1, dim)


def soft_top_hat(radius: Tensor, cutoff: float, width: float) -> Tensor:
    """M = 1 / (1 + exp(2 ln 9 (r - cutoff) / width)): 1/2 at the cutoff, 0.9 -> 0.1 over `width` (same units)."""
    return torch.sigmoid(-_LOGISTIC_90_10 * (radius - cutoff) / width)


def normalised_frequency_radius(shape: tuple[int, int], *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """|f| / f_Nyquist on the unshifted FFT layout (f = fftfreq [cycles/px], f_Nyquist = 1/2), shape (Y, X)."""
    fy = torch.fft.fftfreq(shape[0], dtype=dtype, device=device)[:, None]
    fx = torch.fft.fftfreq(shape[1], dtype=dtype, device=device)[None, :]
    return 2 * torch.sqrt(fy**2 + fx**2)


def scanned(values: Tensor, scan_mask: Tensor | None) -> Tensor:
    """The values (..., Yo, Xo) inside the scanned region, flattened over it (all of them without a mask)."""
    if scan_mask is None:
        return values
    if scan_mask.shape != values.shape[-2:]:
        raise ValueError(f"scan_mask has shape {tuple(scan_mask.shape)}; expected {tuple(values.shape[-2:])}")
    return values[..., scan_mask.to(device=values.device, dtype=torch.bool)]
