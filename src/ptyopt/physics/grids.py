"""Spatial-frequency grids on the unshifted FFT layout (zero frequency at index 0)."""

import torch
from torch import Tensor


def frequency_grid(
    shape_px: tuple[int, int],
    dx_ang: float | tuple[float, float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """(ky, kx) [1/Å], each of shape (Y, X), for a real-space grid of pixel size dx_ang [Å].

    k = fftfreq(N, d=dx): the layout of torch.fft.fft2 output, matching the kernel exp(-2 pi i k·r).
    """
    dy_ang, dx_x_ang = (dx_ang, dx_ang) if isinstance(dx_ang, (int, float)) else dx_ang
    ky = torch.fft.fftfreq(shape_px[0], d=dy_ang, dtype=dtype, device=device)
    kx = torch.fft.fftfreq(shape_px[1], d=dx_x_ang, dtype=dtype, device=device)
    return torch.meshgrid(ky, kx, indexing="ij")
