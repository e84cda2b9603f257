"""Probe formation from a condenser aperture and aberrations, mixed-state modes and their orthogonalisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from ptyopt.errors import ConfigError
from ptyopt.physics.aberrations import aberration_phase
from ptyopt.physics.constants import wavelength_ang as electron_wavelength_ang
from ptyopt.physics.grids import frequency_grid


def real_dtype(complex_dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64, float64 for complex128."""
    return torch.empty((), dtype=complex_dtype).real.dtype


def aperture(
    alpha_rad: Tensor, conv_angle_mrad: float, edge: Literal["hard", "soft"], edge_width_rad: float
) -> Tensor:
    """Condenser aperture A(alpha): 1 inside the convergence semi-angle, 0 outside.

    ``soft``: a linear ramp of width edge_width_rad centred on the edge (A = 1/2 at the edge), which
    removes the pixel-scale aliasing of a hard edge.
    """
    cutoff_rad = conv_angle_mrad * 1e-3
    if edge == "hard":
        return (alpha_rad <= cutoff_rad).to(alpha_rad.dtype)
    if edge == "soft":
        return torch.clamp((cutoff_rad - alpha_rad) / edge_width_rad + 0.5, 0.0, 1.0)
    raise ConfigError(f"aperture edge must be 'hard' or 'soft', got '{edge}'")


def make_probe(
    shape_px: tuple[int, int],
    dx_ang: float,
    energy_kv: float,
    conv_angle_mrad: float,
    aberrations: Mapping[str, float] | None = None,
    *,
    edge: Literal["hard", "soft"] = "hard",
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Focused-probe wave function psi(r), shape (Y, X), centred at pixel (Y//2, X//2), sum |psi|^2 = 1.

    Psi(k) = A(lambda |k|) exp(-i chi(k));  psi = fftshift(ifft2(Psi)).
    shape_px: window (Y, X) [px]; dx_ang: real-space pixel [Å]; energy_kv [kV]; conv_angle_mrad: aperture
    semi-angle [mrad]; aberrations: Krivanek symbols or aliases (C_nm [Å], phi_nm [rad]).
    """
    if conv_angle_mrad <= 0:
        raise ConfigError(f"conv_angle_mrad must be positive, got {conv_angle_mrad}")
    wavelength = electron_wavelength_ang(energy_kv)
    ky, kx = frequency_grid(shape_px, dx_ang, dtype=real_dtype(dtype), device=device)
    alpha_rad = wavelength * torch.sqrt(ky**2 + kx**2)
    dk_inv_ang = 1.0 / (max(shape_px) * dx_ang)
    if conv_angle_mrad * 1e-3 < wavelength * dk_inv_ang:
        raise ConfigError(
            f"the aperture ({conv_angle_mrad} mrad) holds no pixel but the centre of the {shape_px} grid with "
            f"dx={dx_ang} Å (one pixel is {wavelength * dk_inv_ang * 1e3:.3g} mrad); use a larger window"
        )
    amplitude = aperture(alpha_rad, conv_angle_mrad, edge, edge_width_rad=wavelength * dk_inv_ang)
    chi = aberration_phase(ky, kx, wavelength, aberrations or {})
    spectrum = torch.polar(amplitude, -chi)
    psi = torch.fft.fftshift(torch.fft.ifft2(spectrum, norm="ortho"), dim=(-2, -1))
    return psi / torch.linalg.vector_norm(psi)


def add_aberrations(probe: Tensor, dx_ang: float, wavelength_ang: float, aberrations: Mapping[str, float]) -> Tensor:
    """The probe (..., Y, X), centred at (Y//2, X//2) as ``make_probe`` gives it, with aberrations added in its
    spectrum: Psi'(k) = Psi(k) exp(-i chi(k)). Unitary (the power is kept); chi is linear in the coefficients, so
    ``make_probe`` with defocus a, then defocus b added, is ``make_probe`` with defocus a + b."""
    ky, kx = frequency_grid(tuple(probe.shape[-2:]), dx_ang, dtype=real_dtype(probe.dtype), device=probe.device)
    phase = torch.polar(torch.ones_like(ky), -aberration_phase(ky, kx, wavelength_ang, aberrations))
    spectrum = torch.fft.fft2(torch.fft.ifftshift(probe, dim=(-2, -1)), norm="ortho")
    return torch.fft.fftshift(torch.fft.ifft2(spectrum * phase, norm="ortho"), dim=(-2, -1))


def _hermite(order: int, u: Tensor) -> Tensor:
    """Physicists' Hermite polynomial H_order(u) by recurrence."""
    h_prev, h = torch.ones_like(u), 2 * u
    if order == 0:
        return h_prev
    for k in range(1, order):
        h_prev, h = h, 2 * u * h - 2 * k * h_prev
    return h


def probe_modes(probe: Tensor, n_modes: int, extra_power_fraction: float) -> Tensor:
    """Initial mixed-state probe, shape (n_modes, Y, X), orthogonal modes with total power of ``probe``.

    Mode (a, b) is probe(r) · H_a(x'/w) · H_b(y'/w) (Hermite-like; x', y' from the intensity centroid,
    w the RMS width), taken in order of degree a + b and orthonormalised by QR. Mode 0 keeps
    (1 - extra_power_fraction) of the power; the others share extra_power_fraction equally.
    """
    if n_modes < 1:
        raise ConfigError(f"the number of probe modes must be >= 1, got {n_modes}")
    if n_modes == 1:
        return probe.unsqueeze(0).clone()
    if not 0 < extra_power_fraction < 1:
        raise ConfigError(f"extra_power_fraction must be in (0, 1) for several modes, got {extra_power_fraction}")
    shape = probe.shape[-2:]
    intensity = probe.abs() ** 2
    power = intensity.sum()
    y = torch.arange(shape[0], dtype=intensity.dtype, device=probe.device)[:, None]
    x = torch.arange(shape[1], dtype=intensity.dtype, device=probe.device)[None, :]
    cy, cx = (intensity * y).sum() / power, (intensity * x).sum() / power
    width = torch.sqrt((intensity * ((y - cy) ** 2 + (x - cx) ** 2)).sum() / power / 2)
    orders = [(a, d - a) for d in range(n_modes) for a in range(d, -1, -1)][:n_modes]
    basis = torch.stack(
        [probe * _hermite(a, (x - cx) / width) * _hermite(b, (y - cy) / width) for a, b in orders]
    )
    q, _ = torch.linalg.qr(basis.reshape(n_modes, -1).T)
    # QR may flip the sign/phase of mode 0; restore it so mode 0 equals the normalised input probe.
    q = q.T * (torch.vdot(q[:, 0], probe.reshape(-1)) / torch.vdot(q[:, 0], probe.reshape(-1)).abs())
    fractions = torch.full((n_modes,), extra_power_fraction / (n_modes - 1), dtype=intensity.dtype)
    fractions[0] = 1 - extra_power_fraction
    weights = torch.sqrt(fractions.to(probe.device) * power)
    return (q * weights[:, None]).reshape(n_modes, *shape)


def orthogonalize_modes(modes: Tensor) -> Tensor:
    """Orthogonal modes spanning the same mixed state, sorted by decreasing power; total power kept.

    With A the (M, Y·X) matrix of modes and A A^H = V diag(p) V^H (Hermitian eigendecomposition),
    the new modes V^H A are mutually orthogonal with powers p.
    """
    flat = modes.reshape(modes.shape[0], -1)
    gram = flat @ flat.conj().T
    _, vectors = torch.linalg.eigh(gram)
    vectors = vectors.flip(-1)  # eigh sorts ascending
    return (vectors.conj().T @ flat).reshape(modes.shape)
