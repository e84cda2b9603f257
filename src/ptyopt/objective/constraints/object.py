"""Real-space constraints on the object amplitude A and phase phi, each (omode, S, Yo, Xo)."""

from __future__ import annotations

from typing import Literal, Self

import torch
from pydantic import Field, model_validator

from ptyopt.objective.constraints.base import (
    CONSTRAINTS,
    Constraint,
    ConstraintContext,
    ConstraintWindow,
    State,
    assign,
    require,
)
from ptyopt.objective.constraints.kernels import Padding, Target, gaussian_blur_axis, scanned, target_keys

_RELAX = "result = relax · old + (1 - relax) · constrained (0: full constraint)"
_MIN_AMPLITUDE = 1e-6  # floor before the logarithm: a zero amplitude is a diverged pixel, not -inf


@CONSTRAINTS.register
class ObjectBlur(Constraint):
    """Lateral Gaussian blur of each slice: f <- g_sigma * f, separable along Y then X, edges padded (no wrap).

    g_sigma(i) ∝ exp(-i^2 / (2 sigma^2)) for |i| <= ceil(3 sigma). Constants are kept, so the amplitude of vacuum
    stays 1. It damps the pixel-scale noise that the data do not constrain (PtychoShelves' reg_mu plays this role).
    """

    name = "object_blur"
    edits = ("object_amplitude", "object_phase")  # at most: ``target`` says which

    class Params(ConstraintWindow):
        sigma_px: float = Field(0.4, gt=0, description="standard deviation of the lateral Gaussian [px]")
        target: Target = Field("both", description="what to blur: 'both', 'phase' or 'amplitude'")
        padding: Padding = Field("replicate", description="edge handling: 'replicate' or 'reflect' (never wrap)")

    params: Params

    @classmethod
    def edited_keys(cls, params: Params) -> frozenset[str]:
        return frozenset(target_keys(params.target))

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        for key in target_keys(self.params.target):
            values = require(state, key, self.name)
            blurred = gaussian_blur_axis(values, self.params.sigma_px, -2, self.params.padding)
            assign(values, gaussian_blur_axis(blurred, self.params.sigma_px, -1, self.params.padding))


@CONSTRAINTS.register
class ObjectZBlur(Constraint):
    """Gaussian blur along the slice axis: f_s <- sum_j g_sigma(j) f_{clamp(s - j)}, replicate padding.

    The padding repeats the top and bottom slices instead of wrapping, so the two surfaces never mix (a Fourier
    filter along z would). It is the real-space depth regulariser; a no-op for a single slice.
    """

    name = "object_z_blur"
    edits = ("object_amplitude", "object_phase")  # at most: ``target`` says which

    class Params(ConstraintWindow):
        sigma_slices: float = Field(1.0, gt=0, description="standard deviation of the Gaussian along z [slices]")
        target: Target = Field("both", description="what to blur: 'both', 'phase' or 'amplitude'")

    params: Params

    @classmethod
    def edited_keys(cls, params: Params) -> frozenset[str]:
        return frozenset(target_keys(params.target))

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        for key in target_keys(self.params.target):
            values = require(state, key, self.name)
            if values.shape[1] > 1:
                assign(values, gaussian_blur_axis(values, self.params.sigma_slices, 1, "replicate"))


@CONSTRAINTS.register
class AmplitudeThreshold(Constraint):
    """A <- relax · A + (1 - relax) · clamp(A, min_amplitude, max_amplitude)."""

    name = "amplitude_threshold"
    edits = ("object_amplitude",)

    class Params(ConstraintWindow):
        min_amplitude: float = Field(0.9, ge=0, description="lower bound of the transmission amplitude")
        max_amplitude: float = Field(1.1, gt=0, description="upper bound of the transmission amplitude")
        relax: float = Field(0.0, ge=0, le=1, description=_RELAX)

        @model_validator(mode="after")
        def _ordered(self) -> Self:
            if self.min_amplitude >= self.max_amplitude:
                raise ValueError(
                    f"min_amplitude ({self.min_amplitude}) must be below max_amplitude ({self.max_amplitude})"
                )
            return self

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        amplitude = require(state, "object_amplitude", self.name)
        p = self.params
        clamped = amplitude.clamp(p.min_amplitude, p.max_amplitude)
        assign(amplitude, p.relax * amplitude + (1 - p.relax) * clamped)


@CONSTRAINTS.register
class PhasePositive(Constraint):
    """phi <- relax · phi + (1 - relax) · phi+, the phase of a potential being >= 0 (phi = sigma v_z).

    'clip': phi+ = max(phi, 0). 'shift': phi+ = phi - min(min phi, 0), the minimum taken over the scanned region
    (the rest of the canvas holds only its initial values), which keeps the relative phases.
    """

    name = "phase_positive"
    edits = ("object_phase",)

    class Params(ConstraintWindow):
        mode: Literal["clip", "shift"] = Field("clip", description="'clip' negatives to 0 or 'shift' by the minimum")
        relax: float = Field(0.0, ge=0, le=1, description=_RELAX)

    params: Params

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        phase = require(state, "object_phase", self.name)
        if self.params.mode == "clip":
            positive = phase.clamp(min=0.0)
        else:
            positive = phase - scanned(phase, ctx.scan_mask).min().clamp(max=0.0)
        assign(phase, self.params.relax * phase + (1 - self.params.relax) * positive)


@CONSTRAINTS.register
class AmplitudePhaseCoupling(Constraint):
    """Complex-ratio coupling of amplitude and phase, ln A ≈ -C phi for a weakly absorbing specimen.

    C = sum |ln A| / sum |phi| over the scanned region (all modes and slices);
    A' = exp((1 - alpha_amplitude) ln A - alpha_amplitude · C · phi);
    phi' = (1 - alpha_phase) phi - (alpha_phase / C) ln A.
    alpha_amplitude = 1, alpha_phase = 0 give the phase-object coupling A = exp(-C phi). Nothing happens when
    phi ≡ 0 (C undefined); the phase is left unchanged when ln A ≡ 0 (C = 0). A is floored at 1e-6 before ln.
    """

    name = "amplitude_phase_coupling"
    edits = ("object_amplitude", "object_phase")  # at most: a part with alpha 0 is left alone

    class Params(ConstraintWindow):
        alpha_amplitude: float = Field(1.0, ge=0, le=1, description="weight of the phase-derived amplitude (α1)")
        alpha_phase: float = Field(0.0, ge=0, le=1, description="weight of the amplitude-derived phase (α2)")

    params: Params

    @classmethod
    def edited_keys(cls, params: Params) -> frozenset[str]:
        weights = {"object_amplitude": params.alpha_amplitude, "object_phase": params.alpha_phase}
        return frozenset(key for key, alpha in weights.items() if alpha > 0)

    def apply(self, state: State, ctx: ConstraintContext) -> None:
        amplitude = require(state, "object_amplitude", self.name)
        phase = require(state, "object_phase", self.name)
        log_amplitude = torch.log(amplitude.clamp(min=_MIN_AMPLITUDE))
        phase_sum = scanned(phase, ctx.scan_mask).abs().sum()
        if not phase_sum > 0:
            return
        ratio = scanned(log_amplitude, ctx.scan_mask).abs().sum() / phase_sum
        a1, a2 = self.params.alpha_amplitude, self.params.alpha_phase
        assign(amplitude, torch.exp((1 - a1) * log_amplitude - a1 * ratio * phase))
        if ratio > 0:
            assign(phase, (1 - a2) * phase - (a2 / ratio) * log_amplitude)
