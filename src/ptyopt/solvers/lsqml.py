"""LSQ-ML: least-squares maximum-likelihood ptychography (Odstrčil, Menzel & Guizar-Sicairos 2018),
mixed-state and multislice.

Per batch:
1. Detector step Psi' = Psi - alpha_Psi g, g = 2 dL/dconj(Psi) (per unit occupancy). Gaussian (amplitude) noise:
   alpha_Psi = 1/2, which is modulus replacement; Poisson: alpha_Psi per position minimises the Poisson
   likelihood along g (a convex 1-D problem, Newton), with a detector floor eps (``poisson_floor``) in I + eps.
   chi = the exit-wave change, back-propagated through the slices as in 3PIE (``exitwave.backward_sweep``).
2. Preconditioned directions: object slice s  dO_s = sum_j sum_p conj(psi^s_jp) chi^s_jp / (W_s + delta max W_s),
   W_s = sum_j sum_p |psi^s_jp|^2; probe  dP = sum_j unshift_j(sum_o occ_o conj(t_jo0) chi^0_jpo) / (V + delta max V),
   V = sum_j sum_o occ_o |t_jo0|^2.
3. Per-position steps (alpha_O, alpha_P) minimise ||chi_j - alpha_O r_O,j - alpha_P r_P,j||^2, where r_O and r_P
   are the exit-wave responses of the two directions through the linearised multislice (one slice: dO·P and
   O·dP); the 2×2 normal equations are solved in closed form with a_ii += step_damping · mean_j(a_ii).
   Negative steps are set to 0.
4. Update: t_s += step_scale · sum_j alpha_O,j (per-position numerator) / (W_s + delta max W_s), the same for the
   probe with alpha_P,j. Positions: a Gauss-Newton shift per position for the amplitude misfit, linearised with
   the same multislice response (the probe's spatial derivative carried through the slices,
   ``exitwave.position_steps``), clipped to max_shift_px.
Optional momentum (``momentum`` eta > 0, meant for compact groups): after each iteration v <- eta v + D,
x <- x + eta v for the object and probe, D = the iteration's updates.

The engine's learning rates are not used (steps come from the least-squares solves) except for the NaN guard's
halvings (``ExitWaveSolver.step_multiplier``) and the step schedule (``step_schedule``, on the object and probe
steps: full steps decaying to a floor by default, so the result settles on noisy data); update windows are
obeyed. A detector PSF (model.detector_blur_px) enters the detector step through its adjoint
(``exitwave.detector_gradient``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.physics import DetectorResponse, shift_probes
from ptyopt.solvers.base import SOLVERS, Batch
from ptyopt.solvers.classical import ExitWaveSolver, PositionParams
from ptyopt.solvers.exitwave import (
    backward_sweep,
    damped_denominator,
    detector_gradient,
    exit_response,
    exit_wave_change,
    gather_box,
    modulus_constraint,
    normal_equations,
    object_terms,
    patch_box,
    poisson_detector_step,
    probe_terms,
    scatter_patches,
    solve_2x2,
    unshift,
)


def detector_change(far_field: Tensor, meas: Tensor, occupancy: Tensor, noise: str, detector: DetectorResponse,
                    floor: float = 0.0) -> Tensor:
    """Psi' - Psi of the detector step: modulus replacement (gaussian) or the optimal Poisson step."""
    if noise == "gaussian":
        return modulus_constraint(far_field, meas, occupancy, detector) - far_field
    alpha = poisson_detector_step(far_field, meas, occupancy, detector, floor)
    return -alpha[:, None, None, None, None] * detector_gradient(far_field, meas, occupancy, "poisson", detector,
                                                                 floor)


@SOLVERS.register
class LSQML(ExitWaveSolver):
    """Least-squares maximum likelihood with per-position optimal object and probe steps."""

    name = "lsqml"

    class Params(PositionParams):
        noise: Literal["gaussian", "poisson"] = Field(
            "gaussian", description="noise model: gaussian (on amplitudes) or poisson (counts)")
        poisson_floor: float = Field(
            0.01, ge=0, description="poisson: detector floor eps = this × the mean measured intensity, added to the "
            "model intensity; bounds the update y/(I + eps) of dark model pixels")
        delta: float = Field(0.1, gt=0, description="preconditioner floor delta: W + delta max W (object and probe)")
        step_damping: float = Field(
            0.1, ge=0, description="regulariser of the 2×2 step systems: a_ii += step_damping · mean_j(a_ii)")
        step_scale: float = Field(0.9, gt=0, le=1, description="fraction of the optimal steps applied (beta_LSQ)")
        momentum: float = Field(0.0, ge=0, lt=1, description="per-iteration momentum eta on object and probe (0 = off)")

    def __init__(self, params, context):
        super().__init__(params, context)
        self.momentum_enabled = params.momentum > 0

    def update(self, batch: Batch, step: bool) -> dict[str, Tensor]:
        with torch.no_grad():
            params = self.params
            out, values = self.forward(batch)
            waves, occupancy = out.waves, out.occupancy
            change = detector_change(waves.far_field, batch.meas, occupancy, params.noise, waves.detector,
                                     params.poisson_floor)
            chi = exit_wave_change(change, waves.propagators, waves.propagate_last)
            chis = backward_sweep(chi, waves)
            directions = []
            if any(self.object_active):
                box = patch_box(waves.crop_px, waves.probes.shape[-2:])
                object_numerator, illumination = object_terms(chis, waves.incident)
                object_denominator = damped_denominator(scatter_patches(illumination, waves.crop_px, box), params.delta)
                direction = scatter_patches(object_numerator, waves.crop_px, box) / object_denominator
                d_patches = gather_box(direction, waves.crop_px, box, waves.probes.shape[-2:])
                directions.append(exit_response(waves, d_transmissions=d_patches))
            if self.active["probe"]:
                probe_numerator, illumination = probe_terms(chis, waves.slices[0], occupancy)
                probe_parts = unshift(probe_numerator / damped_denominator(illumination, params.delta), waves.shift_px)
                d_probes = shift_probes(probe_parts.sum(dim=0), waves.shift_px)
                directions.append(exit_response(waves, d_probes=d_probes))
            if self.position_refinement.any:
                self.update_positions(batch, waves, occupancy)
            if directions:
                self.forward_evaluations += len(batch.indices) * len(directions)  # the linearised passes
                steps = self.steps(chi, directions, occupancy)
                k = 0
                if any(self.object_active):
                    weighted = steps[:, k, None, None, None, None] * object_numerator
                    self.update_object(scatter_patches(weighted, waves.crop_px, box) / object_denominator, box)
                    k += 1
                if self.active["probe"]:
                    self.update_probe((steps[:, k, None, None, None] * probe_parts).sum(dim=0))
        return values

    def steps(self, chi: Tensor, responses: list[Tensor], occupancy: Tensor) -> Tensor:
        """(B, k) applied steps: the damped least-squares solution, clipped at 0, times step_scale."""
        a, b = normal_equations(chi, responses, occupancy)
        damping = self.params.step_damping * a.diagonal(dim1=-2, dim2=-1).mean(dim=0)
        return solve_2x2(a, b, damping).clamp(min=0) * (self.params.step_scale * self.update_multiplier)

    def end_iteration(self) -> None:
        if self.momentum_enabled:
            with torch.no_grad():
                self.momentum_step(self.params.momentum, self.params.momentum)

