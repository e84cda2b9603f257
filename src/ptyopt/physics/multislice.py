"""Multislice forward model, vectorised over (batch, probe modes, object modes).

Shapes (DESIGN.md order): object (omode, S, Yo, Xo); probe (pmode, Y, X); batch tensors lead with B.
One step is psi <- IFFT[ H · FFT[ t_s · psi ] ] (transmission first, then propagation), as in abTEM.
FFTs are orthonormal, so sum_k |Psi(k)|^2 = sum_r |psi(r)|^2 and the pattern total equals the probe power.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ptyopt.physics.shift import shift_ramp


def transmission(amplitude: Tensor, phase_rad: Tensor) -> Tensor:
    """t = A · exp(i phi), complex, same shape as the inputs."""
    return torch.polar(amplitude, phase_rad)


def gather_patches(image: Tensor, crop_yx_px: Tensor, window_px: tuple[int, int]) -> Tensor:
    """Windows of ``image`` (..., Yo, Xo) with top-left corners crop_yx_px (B, 2) [int px] -> (B, ..., Y, X).

    One advanced-indexing gather for the whole batch (no per-position loop).
    """
    rows = crop_yx_px[:, 0, None] + torch.arange(window_px[0], device=crop_yx_px.device)  # (B, Y)
    cols = crop_yx_px[:, 1, None] + torch.arange(window_px[1], device=crop_yx_px.device)  # (B, X)
    patches = image[..., rows[:, :, None], cols[:, None, :]]  # (..., B, Y, X)
    return patches.movedim(-3, 0)


def split_positions(center_px: Tensor, window_px: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Split probe centres (B, 2) [object px] into integer crops (top-left corners) and sub-pixel shifts.

    centre = crop + window//2 + shift with |shift| <= 1/2, so the probe never wraps around its window.
    """
    nearest = torch.round(center_px)
    half = torch.tensor([window_px[0] // 2, window_px[1] // 2], device=center_px.device)
    return nearest.long() - half, center_px - nearest


def shift_probes(probe: Tensor, shift_px: Tensor) -> Tensor:
    """Probe modes (pmode, Y, X) shifted by sub-pixel shifts (B, 2) [px] -> (B, pmode, Y, X)."""
    ramp = shift_ramp(probe.shape[-2:], shift_px.to(probe.real.dtype))
    return torch.fft.ifft2(torch.fft.fft2(probe)[None] * ramp[:, None])


def _slice_propagator(propagators: Tensor, index: int) -> Tensor:
    """Propagator of slice ``index`` broadcastable against psi (B, pmode, omode, Y, X).

    propagators: (S | 1, Y, X) shared by the batch, or (S | 1, B, Y, X) one per position (tilts).
    """
    h = propagators[index if propagators.shape[0] > 1 else 0]
    return h[:, None, None] if h.dim() == 3 else h


def multislice_far_field(
    probes: Tensor, transmissions: Tensor, propagators: Tensor, *, propagate_last: bool = False
) -> Tensor:
    """Far-field waves Psi(k) (B, pmode, omode, Y, X), unshifted FFT layout, orthonormal FFT.

    probes: (B, pmode, Y, X) incident waves; transmissions: (B, omode, S, Y, X) object patches;
    propagators: (S | 1, Y, X) or (S | 1, B, Y, X) from ``propagator``. The last slice is propagated only
    when ``propagate_last`` (abTEM does; it changes |Psi|^2 only through a band limit), and then in
    Fourier space, at no extra FFT.
    """
    n_slices = transmissions.shape[2]
    psi = probes[:, :, None]  # (B, pmode, 1, Y, X) broadcasts against object modes
    for s in range(n_slices - 1):
        psi = psi * transmissions[:, None, :, s]
        psi = torch.fft.ifft2(torch.fft.fft2(psi, norm="ortho") * _slice_propagator(propagators, s), norm="ortho")
    far_field = torch.fft.fft2(psi * transmissions[:, None, :, n_slices - 1], norm="ortho")
    if propagate_last:
        far_field = far_field * _slice_propagator(propagators, n_slices - 1)
    return far_field


def far_field_intensity(far_field: Tensor, occupancy: Tensor) -> Tensor:
    """Incoherent mode sum sum_p sum_o occupancy_o |Psi_po(k)|^2 -> (B, Ky, Kx), zero frequency at (K//2).

    occupancy: (omode,) object-mode weights (sum to 1 for a normalised mixed object).
    """
    intensity = (far_field.real**2 + far_field.imag**2) * occupancy[:, None, None]
    return torch.fft.fftshift(intensity.sum(dim=(1, 2)), dim=(-2, -1))


def multislice_exit_waves(probes: Tensor, transmissions: Tensor, propagators: Tensor) -> Tensor:
    """Real-space exit waves (B, pmode, omode, Y, X) after the last slice, without its propagation."""
    return torch.fft.ifft2(multislice_far_field(probes, transmissions, propagators), norm="ortho")


def forward_intensities(
    object_amplitude: Tensor,
    object_phase_rad: Tensor,
    probe: Tensor,
    crop_yx_px: Tensor,
    shift_px: Tensor,
    propagators: Tensor,
    occupancy: Tensor,
    *,
    propagate_last: bool = False,
) -> Tensor:
    """Diffraction intensities (B, Ky, Kx) of a batch of positions, DC at (Ky//2, Kx//2).

    object_amplitude, object_phase_rad: (omode, S, Yo, Xo); probe: (pmode, Y, X) complex;
    crop_yx_px: (B, 2) integer top-left corners of the object patches; shift_px: (B, 2) sub-pixel probe
    shifts [px]; propagators: see ``multislice_far_field``; occupancy: (omode,).
    The probe position is crop + window centre + shift.
    """
    window = probe.shape[-2:]
    transmissions = transmission(
        gather_patches(object_amplitude, crop_yx_px, window), gather_patches(object_phase_rad, crop_yx_px, window)
    )
    far_field = multislice_far_field(
        shift_probes(probe, shift_px), transmissions, propagators, propagate_last=propagate_last
    )
    return far_field_intensity(far_field, occupancy)
