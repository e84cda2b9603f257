"""Constraints on the mixed-state probe (pmode, Y, X): Fourier mask, orthogonal modes, fixed total intensity."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ptyopt.errors import ConfigError
from ptyopt.objective.constraints.base import (
    CONSTRAINTS,
    Constraint,
    ConstraintContext,
    ConstraintWindow,
    State,
    assign,
    require,
)
from ptyopt.objective.constraints.kernels import soft_top_hat
from ptyopt.physics import frequency_grid, orthogonalize_modes


@CONSTRAINTS.register
class ProbeFourierMask(Constraint):
    """Soft top-hat on the probe spectrum: P <- IFFT[M(k) · FFT[P]] for every mode.

    M(k) = 1 / (1 + exp(2 ln 9 (|k| - R) / W)), R = radius_factor · conv_angle / lambda [1/Å],
    W = edge_width_px · dk with dk = 1 / (max(Y, X) · dx) [1/Å]. The probe is FFT'd after ifftshift (centre at
    (Y//2, X//2) moved to the origin) and shifted back, so it stays centred. It removes the power the solver
    puts outside the condenser aperture (aliasing, noise); radius_factor > 1 leaves room for the partial
    coherence and the aberrations that spread the aperture edge.
    """

    name = "probe_fourier_mask"
    edits = ("probe",)

    class Params(ConstraintWindow):
        radius_factor: float = Field(1.5, gt=0, description="mask radius in units of the aperture radius conv/λ")
        edge_width_px: float = Field(3.0, gt=0, description="90 %-10 % width of the mask edge [reciprocal px]")

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        if ctx.conv_angle_mrad <= 0:
            raise ConfigError(f"probe_fourier_mask needs conv_angle_mrad > 0, got {ctx.conv_angle_mrad}")
        probe = require(state, "probe", self.name)
        shape = (probe.shape[-2], probe.shape[-1])
        ky, kx = frequency_grid(shape, ctx.dx_ang, dtype=probe.real.dtype, device=probe.device)
        radius_inv_ang = self.params.radius_factor * ctx.conv_angle_mrad * 1e-3 / ctx.wavelength_ang
        width_inv_ang = self.params.edge_width_px / (max(shape) * ctx.dx_ang)
        mask = soft_top_hat(torch.sqrt(ky**2 + kx**2), radius_inv_ang, width_inv_ang)
        spectrum = torch.fft.fft2(torch.fft.ifftshift(probe, dim=(-2, -1)))
        assign(probe, torch.fft.fftshift(torch.fft.ifft2(spectrum * mask), dim=(-2, -1)))


@CONSTRAINTS.register
class ProbeOrthogonalize(Constraint):
    """Orthogonal probe modes sorted by decreasing power, the mixed state unchanged.

    With M the (pmode, Y·X) mode matrix and M M^H = V diag(p) V^H, P <- V^H M (ptyopt.physics.orthogonalize_modes).
    """

    name = "probe_orthogonalize"
    edits = ("probe",)

    class Params(ConstraintWindow):
        pass

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        probe = require(state, "probe", self.name)
        if probe.shape[0] < 2:
            return
        # a single-precision Gram matrix leaves weak modes visibly non-orthogonal; MPS has no float64
        work = probe if probe.device.type == "mps" else probe.to(torch.complex128)
        assign(probe, orthogonalize_modes(work))


@CONSTRAINTS.register
class ProbeFixedIntensity(Constraint):
    """P <- P · sqrt(probe_power / sum |P|^2): removes the scale ambiguity between probe and object."""

    name = "probe_fixed_intensity"
    edits = ("probe",)

    class Params(ConstraintWindow):
        pass

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        if not ctx.probe_power > 0:
            raise ConfigError(f"probe_fixed_intensity needs a positive target probe_power, got {ctx.probe_power}")
        probe = require(state, "probe", self.name)
        power = float((probe.abs() ** 2).sum())
        if power > 0 and math.isfinite(power):
            probe.mul_(math.sqrt(ctx.probe_power / power))
