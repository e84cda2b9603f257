"""Free-space propagators for one multislice step, with optional 2/3 band limit and specimen tilt.

All kernels use the FFT convention exp(-2 pi i k·r) and the unshifted frequency layout of ``frequency_grid``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Protocol

import torch
from torch import Tensor

from ptyopt.registry import Registry


class PropagatorKind(Protocol):
    """A free-space propagator: ``phase(k2_inv_ang2, dz_ang, wavelength_ang)`` -> the phase [rad] of H (real)."""

    name: ClassVar[str]

    @staticmethod
    def phase(k2_inv_ang2: Tensor, dz_ang: Tensor, wavelength_ang: float) -> Tensor: ...


PROPAGATORS: Registry[type[PropagatorKind]] = Registry("propagator")


@PROPAGATORS.register
class Fresnel:
    """Paraxial (Fresnel) propagator: H = exp(-i pi lambda dz |k|^2)."""

    name = "fresnel"

    @staticmethod
    def phase(k2_inv_ang2: Tensor, dz_ang: Tensor, wavelength_ang: float) -> Tensor:
        return -math.pi * wavelength_ang * dz_ang * k2_inv_ang2


@PROPAGATORS.register
class AngularSpectrum:
    """Angular-spectrum propagator without the global term: H = exp(2 pi i dz (k_z - 1/lambda)),
    k_z = sqrt(1/lambda^2 - |k|^2). Equals the Fresnel phase to first order in lambda^2 |k|^2."""

    name = "angular_spectrum"

    @staticmethod
    def phase(k2_inv_ang2: Tensor, dz_ang: Tensor, wavelength_ang: float) -> Tensor:
        inv_wavelength2 = 1.0 / wavelength_ang**2
        kz = torch.sqrt(torch.clamp(inv_wavelength2 - k2_inv_ang2, min=0.0))
        # written as -|k|^2/(kz + 1/lambda) to avoid the cancellation in kz - 1/lambda
        return -2 * math.pi * dz_ang * k2_inv_ang2 / (kz + 1.0 / wavelength_ang)


def tilt_ramp_phase(ky_inv_ang: Tensor, kx_inv_ang: Tensor, dz_ang: Tensor, tilt_mrad: Tensor) -> Tensor:
    """Phase [rad] 2 pi dz (ky tan(theta_y) + kx tan(theta_x)) of a specimen tilt (theta_y, theta_x) [mrad].

    tilt_mrad: (2,) for one global tilt or (N, 2) for one tilt per position; the result has shape
    dz_ang.shape + tilt_mrad.shape[:-1] + (Y, X). It moves the wave by -dz·tan(theta) per slice (the
    sign DESIGN.md fixes; abTEM's tilt has the opposite sign, so ptyopt (ty, tx) = abTEM (-tx, -ty)).
    """
    tan_y = torch.tan(tilt_mrad[..., 0] * 1e-3)[..., None, None]
    tan_x = torch.tan(tilt_mrad[..., 1] * 1e-3)[..., None, None]
    dz = dz_ang.reshape(dz_ang.shape + (1,) * (tilt_mrad.dim() - 1) + (1, 1))
    return 2 * math.pi * dz * (ky_inv_ang * tan_y + kx_inv_ang * tan_x)


def tilt_ramp(ky_inv_ang: Tensor, kx_inv_ang: Tensor, dz_ang: Tensor, tilt_mrad: Tensor) -> Tensor:
    """exp(i · tilt_ramp_phase): the complex tilt factor of the propagator."""
    phase = tilt_ramp_phase(ky_inv_ang, kx_inv_ang, dz_ang, tilt_mrad)
    return torch.polar(torch.ones_like(phase), phase)


def band_limit_mask(ky_inv_ang: Tensor, kx_inv_ang: Tensor, fraction: float = 2.0 / 3.0) -> Tensor:
    """1 where |k| <= fraction · k_Nyquist, else 0 (k_Nyquist = the smaller of the two axes' maxima)."""
    k_nyquist = torch.minimum(ky_inv_ang.abs().max(), kx_inv_ang.abs().max())
    return (ky_inv_ang**2 + kx_inv_ang**2 <= (fraction * k_nyquist) ** 2).to(ky_inv_ang.dtype)


def propagator(
    ky_inv_ang: Tensor,
    kx_inv_ang: Tensor,
    dz_ang: Tensor | float,
    wavelength_ang: float,
    *,
    kind: str = "fresnel",
    tilt_mrad: Tensor | None = None,
    band_limit: bool = False,
) -> Tensor:
    """Complex propagator H(k) for slice thickness(es) dz_ang [Å].

    Shape: dz_ang.shape + tilt_mrad.shape[:-1] + (Y, X). dz_ang may be a scalar or one value per slice (S,);
    tilt_mrad (theta_y, theta_x) [mrad] may be absent, global (2,) or per position (N, 2).
    ``band_limit`` multiplies by the 2/3-Nyquist aperture that keeps the transmission-probe product alias-free.
    """
    phase_fn = PROPAGATORS.get(kind).phase
    dz = torch.as_tensor(dz_ang, dtype=ky_inv_ang.dtype, device=ky_inv_ang.device)
    k2 = ky_inv_ang**2 + kx_inv_ang**2
    phase = phase_fn(k2, dz.reshape(dz.shape + (1, 1)), wavelength_ang)
    if tilt_mrad is not None:
        tilt_mrad = tilt_mrad.to(ky_inv_ang.dtype)
        phase = phase.reshape(dz.shape + (1,) * (tilt_mrad.dim() - 1) + k2.shape)
        phase = phase + tilt_ramp_phase(ky_inv_ang, kx_inv_ang, dz, tilt_mrad)
    amplitude = band_limit_mask(ky_inv_ang, kx_inv_ang) if band_limit else torch.ones_like(k2)
    return torch.polar(amplitude.expand_as(phase), phase)
