"""ePIE, rPIE and mPIE (Maiden & Rodenburg 2009; Maiden, Johnson & Li 2017), mixed-state and multislice (3PIE,
Maiden, Humphry & Rodenburg 2012).

Per batch: one forward pass keeping every slice's incident wave psi^s; modulus replacement in the far field;
the exit-wave change chi is back-propagated slice by slice (``exitwave.backward_sweep``). With W_s the batch's
illumination sum_j sum_p |psi^s_jp|^2 on the canvas and V = sum_j sum_o occ_o |t_jo0|^2 in the probe window:

    object slice s:  t_s <- t_s + alpha · sum_j sum_p conj(psi^s_jp) chi^s_jp / D(W_s, alpha_r)
    probe mode p:    P_p <- P_p + beta  · sum_j unshift_j(sum_o occ_o conj(t_jo0) chi^0_jpo / D(V, beta_r))

with D(W, a) = (1 - a) W + a max W: a = 1 is ePIE (max|P|^2, max|O|^2), a < 1 is rPIE. A batch of one
position, one slice and one mode is textbook sequential ePIE; larger batches add the positions' numerators and
normalise by their summed illumination (no overshoot where batch windows overlap). All updates are computed from
the state before the batch. Positions: a Gauss-Newton shift per position for the amplitude misfit, with the
probe's spatial derivative carried through the slices (``exitwave.position_steps``), clipped to max_shift_px.

mPIE adds momentum every ``momentum_every`` updated positions (PtyLab's form): v <- friction·v + D, x <- x +
feedback·v for the complex object and the probe, D = the rPIE updates since the last momentum step. With
feedback = 0 mPIE is rPIE.

The engine's learning rates are not used (steps come from solver.options) except for the NaN guard's halvings
(``ExitWaveSolver.step_multiplier``); alpha and beta are also multiplied by ``step_schedule`` (full steps decaying
to a floor by default, so the result settles on noisy data); update windows are obeyed. With a detector PSF
(model.detector_blur_px) the modulus replacement is the detector step pulled back through the PSF
(``exitwave.modulus_constraint``).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.solvers.base import SOLVERS, Batch
from ptyopt.solvers.classical import ExitWaveSolver, PositionParams
from ptyopt.solvers.exitwave import (
    backward_sweep,
    blended_denominator,
    exit_wave_change,
    modulus_constraint,
    object_terms,
    patch_box,
    probe_terms,
    scatter_patches,
    unshift,
)


@SOLVERS.register
class EPIE(ExitWaveSolver):
    """ePIE: O += alpha conj(P) chi / max|P|^2, P += beta conj(O) chi / max|O|^2 (mixed-state, multislice)."""

    name = "epie"

    class Params(PositionParams):
        alpha: float = Field(1.0, gt=0, le=2, description="object step (ePIE alpha)")
        beta: float = Field(1.0, gt=0, le=2, description="probe step (ePIE beta)")

    def blends(self) -> tuple[float, float]:
        """(object, probe) weights a of max|.|^2 in the denominator (1 - a)|.|^2 + a max|.|^2."""
        return 1.0, 1.0

    def update(self, batch: Batch, step: bool) -> dict[str, Tensor]:
        with torch.no_grad():
            out, values = self.forward(batch)
            waves, occupancy = out.waves, out.occupancy
            target = modulus_constraint(waves.far_field, batch.meas, occupancy, waves.detector)
            chi = exit_wave_change(target - waves.far_field, waves.propagators, waves.propagate_last)
            chis = backward_sweep(chi, waves)
            object_blend, probe_blend = self.blends()
            object_change = probe_change = None
            if any(self.object_active):
                numerator, illumination = object_terms(chis, waves.incident)
                box = patch_box(waves.crop_px, waves.probes.shape[-2:])
                denominator = blended_denominator(scatter_patches(illumination, waves.crop_px, box), object_blend)
                step = self.params.alpha * self.update_multiplier
                object_change = step * scatter_patches(numerator, waves.crop_px, box) / denominator
            if self.active["probe"]:
                numerator, illumination = probe_terms(chis, waves.slices[0], occupancy)
                probe_change = self.params.beta * self.update_multiplier * unshift(
                    numerator / blended_denominator(illumination, probe_blend), waves.shift_px).sum(dim=0)
            if self.position_refinement.any:
                self.update_positions(batch, waves, occupancy)
            if object_change is not None:
                self.update_object(object_change, box)
            if probe_change is not None:
                self.update_probe(probe_change)
            self.after_update(len(batch.indices))
        return values

    def after_update(self, n_positions: int) -> None:
        """Hook after each batch (mPIE's momentum)."""


@SOLVERS.register
class RPIE(EPIE):
    """rPIE: denominators (1 - alpha_r)|P|^2 + alpha_r max|P|^2 (object) and the same with beta_r, |O|^2 (probe)."""

    name = "rpie"

    class Params(EPIE.Params):
        alpha_r: float = Field(0.1, ge=0, le=1, description="object: weight of max|P|^2 in the denominator "
                               "(1 = ePIE, 0 = PIE division by |P|^2)")
        beta_r: float = Field(1.0, ge=0, le=1, description="probe: weight of max|O|^2 in the denominator")

    def blends(self) -> tuple[float, float]:
        return self.params.alpha_r, self.params.beta_r


@SOLVERS.register
class MPIE(RPIE):
    """mPIE: rPIE plus momentum on the object and the probe every ``momentum_every`` updated positions."""

    name = "mpie"

    class Params(RPIE.Params):
        friction: float = Field(0.7, ge=0, lt=1, description="eta: velocity v <- eta v + (updates since last step)")
        feedback: float = Field(0.3, ge=0, le=1, description="gamma: momentum step x <- x + gamma v")
        momentum_every: int = Field(20, ge=1, description="updated positions between momentum steps")

    def __init__(self, params, context):
        super().__init__(params, context)
        self.momentum_enabled = True
        self.positions_since_momentum = 0

    def after_update(self, n_positions: int) -> None:
        self.positions_since_momentum += n_positions
        if self.positions_since_momentum >= self.params.momentum_every:
            self.momentum_step(self.params.friction, self.params.feedback)
            self.positions_since_momentum = 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "positions_since_momentum": self.positions_since_momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.positions_since_momentum = int(state.get("positions_since_momentum", 0))
