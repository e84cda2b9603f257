"""Levenberg-Marquardt on the generalised Gauss-Newton matrix, matrix-free (Kandel et al. 2021), full batch.

Objective: the solver's own noise model in amplitude coordinates (``ggn.NoiseModel``: gaussian = ½Σ(√(I+eps) -
√(y+eps))²/S, poisson = the count NLL with Fisher scoring), summed over all training patterns, S = N·P̄. The
configured loss terms are still evaluated on every chunk and reported, but they do not drive the steps;
the engine's learning rates are not used (update windows are obeyed).

Per iteration (``run_iteration``, on the shared fixed chunking of the training positions: sorted, chunks of
solver.batch_size, all of them at once or, with ``step_patterns``, in groups of neighbouring chunks, each group
in turn): L and its gradient g at the current state θ with the loss terms' report and the preconditioner's
illumination (one forward+backward per pattern), then ``outer_steps`` LM steps:
1. linearise m(θ) per chunk; block-Jacobi diagonal D (``ggn.illumination`` × per-block Rayleigh scales);
2. object amplitude/phase and probe: PCG on (G + λD) δ = -g, preconditioned by D, forcing tolerance
   η = min(forcing_max, sqrt(‖g‖))·‖g‖ in the D⁻¹-norm ‖g‖ = sqrt(gᵀD⁻¹g), warm-started from the last step;
   positions (and per-position tilts): exact damped 2×2 Gauss-Newton steps per position (two JVPs);
3. trial θ' = Π(θ + δ) (Π: the amplitude box, if set); ρ = (L(θ) - L(θ'))/pred with the exact model decrease
   pred = -(gᵀd + ½ dᵀGd), d = θ' - θ (one JVP); ρ < 0.25: λ ×= 4, ρ > 0.75: λ /= 4; ρ < 1e-4: reject and
   re-solve from the same linearisation with the larger λ (if the projection was active, first try a projected
   scaled-gradient line search θ(t) = Π(θ - t D⁻¹g), Armijo L(θ(t)) <= L(θ) + 1e-4 gᵀ(θ(t) - θ)).
Accepted steps never raise L, so the solver's objective is monotone within and across iterations (unless the
engine's constraints move the state between iterations; with ``step_patterns``, L is each group's own and only
its own steps are monotone). ``objective_history`` keeps L after every outer step.

Forward evaluations (``forward_evaluations``, in patterns; each model evaluation of a pattern counts 1, plain,
with backward, linearised, JVP, VJP or one GGN product Gv): per group N (value, gradient and
illumination; the first linearisation reuses its amplitudes) and per outer step [N after the first] (2N with
cached linearisations) + N per active block (block scales) +
2N (positions) + [N (gradient, outer steps after the first)] and per try N·n_CG + N (pred) + N (trial loss).
"""

from __future__ import annotations

import math

from pydantic import Field

from ptyopt.solvers.base import SOLVERS
from ptyopt.solvers.ggn import GaussNewton, Vec, axpy, divide, dot, forcing_tolerance, pcg
from ptyopt.solvers.second_order import SecondOrderParams, SecondOrderSolver


@SOLVERS.register
class LevenbergMarquardt(SecondOrderSolver):
    """Matrix-free LM: PCG on (G + λD) δ = -g for the object and probe, 2×2 GN steps per position."""

    name = "lm"

    class Params(SecondOrderParams):
        cg_max_iter: int = Field(20, ge=1, description="largest number of CG iterations (GGN products) per solve")
        forcing_max: float = Field(
            0.5, gt=0, lt=1, description="CG stops at ‖r‖ <= min(forcing_max, sqrt(‖g‖))·‖g‖ (D⁻¹-norms)")
        warm_start: bool = Field(True, description="start CG from the previous step (kept only if it helps)")

    def block_step(self, op: GaussNewton, gradient: Vec, diagonal: Vec, keys: list[str]) -> Vec:
        damping = self.damping

        def apply(v: Vec) -> Vec:
            return axpy(damping, {k: v[k] * diagonal[k] for k in v}, op.gvp(v))

        rhs = {k: -gradient[k] for k in keys}
        gradient_norm = math.sqrt(max(dot(rhs, divide(rhs, diagonal)), 0.0))
        warm = self.previous_step if self.params.warm_start else None
        if warm is not None and set(warm) != set(keys):
            warm = None
        result = pcg(apply, rhs, diagonal, tol=forcing_tolerance(gradient_norm, self.params.forcing_max),
                     max_iter=self.params.cg_max_iter, x0=warm)
        self.cg_iterations += result.iterations + (warm is not None)  # the warm start's check costs one product
        return result.solution
