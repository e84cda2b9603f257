"""Fourier-space filters of the object: lateral low-pass (kr_filter) and the multilayer kz regulariser.

Both use periodic FFTs over the object canvas; the canvas edge lies outside the scanned region, so the lateral
wrap-around is harmless. The kz filter also wraps along z (top and bottom slices mix); object_z_blur does not.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ptyopt.objective.constraints.base import (
    CONSTRAINTS,
    Constraint,
    ConstraintContext,
    ConstraintWindow,
    State,
    assign,
    require,
)
from ptyopt.objective.constraints.kernels import Target, normalised_frequency_radius, soft_top_hat, target_keys

_LATERAL_DIMS = (-2, -1)
_VOLUME_DIMS = (-3, -2, -1)


@CONSTRAINTS.register
class KrFilter(Constraint):
    """Lateral sigmoid low-pass of each slice: f <- Re IFFT2[M · FFT2 f].

    M = 1 / (1 + exp(2 ln 9 (rho - cutoff_fraction) / width_fraction)), rho = |f| / f_Nyquist (f in cycles/px).
    The amplitude is filtered around 1 (A <- 1 + Re IFFT2[M · FFT2 (A - 1)]), the phase as it is.
    """

    name = "kr_filter"
    edits = ("object_amplitude", "object_phase")  # at most: ``target`` says which

    class Params(ConstraintWindow):
        cutoff_fraction: float = Field(0.5, gt=0, description="radius where M = 1/2, as a fraction of Nyquist")
        width_fraction: float = Field(0.1, gt=0, description="90 %-10 % width of the edge, as a fraction of Nyquist")
        target: Target = Field("both", description="what to filter: 'both', 'phase' or 'amplitude'")

    params: Params

    @classmethod
    def edited_keys(cls, params: Params) -> frozenset[str]:
        return frozenset(target_keys(params.target))

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        for key in target_keys(self.params.target):
            values = require(state, key, self.name)
            rho = normalised_frequency_radius(values.shape[-2:], dtype=values.dtype, device=values.device)
            mask = soft_top_hat(rho, self.params.cutoff_fraction, self.params.width_fraction)
            offset = 1.0 if key == "object_amplitude" else 0.0
            spectrum = torch.fft.fft2(values - offset, dim=_LATERAL_DIMS)
            assign(values, offset + torch.fft.ifft2(spectrum * mask, dim=_LATERAL_DIMS).real)


@CONSTRAINTS.register
class KzFilter(Constraint):
    """Multilayer regulariser (PtychoShelves' regulation_multilayers), applied by a 3-D FFT over (S, Yo, Xo).

    W = 1 - (2/pi) atan((beta |kz| / sqrt(kx^2 + ky^2 + 1e-3))^2),  Wa = W · exp(-alpha (kx^2 + ky^2)),
    with k = fftfreq [cycles/sample] along each axis. phi <- Re IFFT3[Wa · FFT3 phi];
    A <- 1 + amplitude_contrast · (Re IFFT3[Wa · FFT3 A] - 1). W damps the structure that varies along z faster
    than laterally (the missing cone of depth information). For one slice only the lateral Gaussian acts.
    """

    name = "kz_filter"
    edits = ("object_amplitude", "object_phase")  # at most: ``target`` says which

    class Params(ConstraintWindow):
        beta: float = Field(1.0, ge=0, description="strength of the depth damping (β)")
        alpha: float = Field(1.0, ge=0, description="strength of the lateral Gaussian damping (α)")
        amplitude_contrast: float = Field(
            0.9, ge=0, le=1, description="the filtered amplitude f is mapped to 1 + amplitude_contrast · (f - 1)"
        )
        target: Target = Field("both", description="what to filter: 'both', 'phase' or 'amplitude'")

    params: Params

    @classmethod
    def edited_keys(cls, params: Params) -> frozenset[str]:
        return frozenset(target_keys(params.target))

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        for key in target_keys(self.params.target):
            values = require(state, key, self.name)
            weight = self._weight(values.shape[-3:], dtype=values.dtype, device=values.device)
            spectrum = torch.fft.fftn(values, dim=_VOLUME_DIMS)
            filtered = torch.fft.ifftn(spectrum * weight, dim=_VOLUME_DIMS).real
            if key == "object_amplitude":
                filtered = 1.0 + self.params.amplitude_contrast * (filtered - 1.0)
            assign(values, filtered)

    def _weight(self, shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        kz = torch.fft.fftfreq(shape[0], dtype=dtype, device=device)[:, None, None]
        ky = torch.fft.fftfreq(shape[1], dtype=dtype, device=device)[None, :, None]
        kx = torch.fft.fftfreq(shape[2], dtype=dtype, device=device)[None, None, :]
        kr2 = ky**2 + kx**2
        w = 1 - (2 / math.pi) * torch.atan((self.params.beta * kz.abs() / torch.sqrt(kr2 + 1e-3)) ** 2)
        return w * torch.exp(-self.params.alpha * kr2)
