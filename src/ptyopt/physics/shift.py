"""Sub-pixel image shifts by a Fourier phase ramp."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def shift_ramp(shape_px: tuple[int, int], shift_px: Tensor) -> Tensor:
    """exp(-2 pi i (fy·sy + fx·sx)) on the unshifted FFT grid, shape shift_px.shape[:-1] + (Y, X).

    shift_px: (..., 2) shifts (sy, sx) [px]; f: dimensionless fftfreq in [-1/2, 1/2).
    """
    fy = torch.fft.fftfreq(shape_px[0], dtype=shift_px.dtype, device=shift_px.device)
    fx = torch.fft.fftfreq(shape_px[1], dtype=shift_px.dtype, device=shift_px.device)
    # separable: two 1-D ramps and one product, instead of a phasor evaluated on the whole grid
    phase_y = -2 * math.pi * fy * shift_px[..., 0, None]
    phase_x = -2 * math.pi * fx * shift_px[..., 1, None]
    ramp_y = torch.polar(torch.ones_like(phase_y), phase_y)
    ramp_x = torch.polar(torch.ones_like(phase_x), phase_x)
    return ramp_y[..., :, None] * ramp_x[..., None, :]


def fourier_shift(images: Tensor, shift_px: Tensor) -> Tensor:
    """Shift images (..., Y, X) by shift_px (..., 2) = (sy, sx) [px]: out(r) = in(r - s), periodically.

    A positive shift moves content towards larger indices, as ``torch.roll`` does; integer shifts equal
    ``torch.roll`` exactly (to round-off). Real input returns the real part.
    """
    shifted = torch.fft.ifft2(torch.fft.fft2(images) * shift_ramp(images.shape[-2:], shift_px))
    return shifted if images.is_complex() else shifted.real
