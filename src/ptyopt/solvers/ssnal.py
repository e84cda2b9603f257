"""Proximal Gauss-Newton with an L1 penalty on the object phase and an amplitude box, its subproblem solved by a
semismooth Newton augmented Lagrangian method (SSNAL; Li, Sun & Toh, SIAM J. Optim. 28:433, 2018).

Objective: F(θ) = L(θ) + P(θ), L the noise-model objective of ``lm`` (``ggn.NoiseModel``), and
P(θ) = Σ_r λ_r |φ_r| (+ the indicator of amplitude_min <= A <= amplitude_max when set) with
λ_r = w · occ_o · c_r / (N · S · Y · X): c_r the number of probe windows (Y × X px) of the N training positions
that cover pixel r, S slices, occ_o the object-mode occupancy. P is then exactly the configured ``sparse`` loss
term of order 1 (occ_o · mean |φ| over the batch's phase patches) evaluated on the whole training set, weighted
by w: w = ``l1_weight`` when set, else the sparse term's weight at this iteration (0 when neither).
Note the scales: L is ½·(relative amplitude misfit)² (gaussian), not the reported normalised RMSE.
The configured loss terms are still reported (means over the chunks); they do not drive the steps.

Outer loop (``lm``'s ratio test on F): at θ, with g = ∇L and G = h JᵀJ, the object/probe step δ solves
    min_δ gᵀδ + ½ δᵀGδ + (μ/2) δᵀDδ + P(θ + δ),   μ = the LM damping λ, D the block-Jacobi diagonal,
solved in the scaled variable ζ = D^½ δ, where it is the Lasso-type problem
    min_ζ ½‖Aζ - b‖² + p(ζ),  A = [√h J D^-½ ; √μ I],  b = [-r/√h ; 0]  (r = dℓ/dm per pixel),
p(ζ) = Σ (λ_r/√D_r) |√D_r φ_r + ζ_r| + box on ζ: separable, with exact prox and a 0/1 generalised Jacobian.
SSNAL: the dual ALM on ξ (data space + parameter space) with multiplier ζ and penalty σ; inner minimisation of
ψ(ξ) = ½‖ξ‖² + ⟨b, ξ⟩ + ‖v‖²/(2σ) - e_σp(v), v = ζ - σAᵀξ, ∇ψ = ξ + b - A prox_σp(v), by semismooth Newton:
(I + σ A Π Aᵀ) d = -∇ψ by CG (Π = the prox Jacobian mask), Armijo line search on ψ; then ζ <- prox_σp(v),
σ <- min(σ·sigma_factor, sigma_max). Stops at the relative KKT residual ‖ζ - prox_p(ζ - ∇q(ζ))‖/(1 + ‖ζ‖) <=
kkt_tol (floored at 100× the real dtype's machine epsilon; the Newton systems' CG tolerance at its square
root). Positions (and per-position tilts) take ``lm``'s 2×2
Gauss-Newton steps. The ratio test uses pred = -(gᵀd + ½dᵀGd + P(θ + d) - P(θ)), d the whole step.

Forward evaluations (in patterns, each model evaluation of a pattern counts 1, GGN products included): as ``lm``,
with the CG solve replaced by SSNAL's products: per Newton step n_CG (ΠAᵀ then A: one GGN-type product each)
+ 1 (Aᵀd) + 1 (A prox), per ALM step + 1 (Aᵀ for the KKT residual), + 2 at the start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.errors import ConfigError
from ptyopt.physics import split_positions
from ptyopt.solvers.base import SOLVERS, TrainingSet
from ptyopt.solvers.exitwave import scatter_patches
from ptyopt.solvers.ggn import GaussNewton, Vec, axpy, dot, norm, pcg, scaled
from ptyopt.solvers.second_order import SecondOrderParams, SecondOrderSolver


@dataclass(frozen=True)
class SeparableProx:
    """p(ζ) = Σ_{keys in l1} Σ w |c + ζ| + indicator(lower <= ζ <= upper) for the keys in box; identity elsewhere.
    l1: key -> (w >= 0, c); box: key -> (lower, upper) (None = unbounded)."""

    l1: dict[str, tuple[Tensor, Tensor]]
    box: dict[str, tuple[Tensor | None, Tensor | None]]

    def prox(self, v: Vec, t: float) -> Vec:
        """argmin_z t p(z) + ½‖z - v‖²."""
        out = dict(v)
        for key, (w, c) in self.l1.items():
            shifted = c + v[key]
            out[key] = torch.sign(shifted) * (shifted.abs() - t * w).clamp(min=0) - c
        for key, (lower, upper) in self.box.items():
            out[key] = v[key].clamp(min=lower, max=upper)
        return out

    def mask(self, v: Vec, t: float) -> dict[str, Tensor]:
        """The diagonal 0/1 generalised Jacobian of prox_tp at v (keys not listed: identity)."""
        out = {}
        for key, (w, c) in self.l1.items():
            out[key] = ((c + v[key]).abs() > t * w).to(v[key].dtype)
        for key, (lower, upper) in self.box.items():
            inside = torch.ones_like(v[key], dtype=torch.bool)
            if lower is not None:
                inside &= v[key] > lower
            if upper is not None:
                inside &= v[key] < upper
            out[key] = inside.to(v[key].dtype)
        return out

    def value(self, z: Vec) -> float:
        """p(z) for a feasible z (the box indicator is 0 there)."""
        return float(sum((w.double() * (c + z[key]).double().abs()).sum() for key, (w, c) in self.l1.items()))


@dataclass(frozen=True)
class LassoOperator:
    """A = [K ; √mu I], b = [target ; 0]: K maps a primal Vec to a data Vec, adjoint is Kᵀ."""

    forward: Callable[[Vec], Vec]
    adjoint: Callable[[Vec], Vec]
    target: Vec
    mu: float


@dataclass(frozen=True)
class SSNALResult:
    solution: Vec
    kkt: float
    alm_iterations: int
    newton_iterations: int
    cg_iterations: int
    stalled: bool = False  # stopped because the KKT residual stopped falling (round-off), not at tol


def ssnal(op: LassoOperator, prox: SeparableProx, x0: Vec, *, tol: float, sigma_init: float = 1.0,
          sigma_factor: float = 5.0, sigma_max: float = 1e4, max_alm: int = 30, max_newton: int = 50,
          cg_max_iter: int = 100, cg_rtol: float = 1e-10, stall_alm: int = 3) -> SSNALResult:
    """min_x ½‖Ax - b‖² + p(x) by SSNAL (see the module docstring); x0 must be feasible for the box. Stops at
    KKT residual <= tol, after max_alm ALM steps, or when stall_alm ALM steps in a row did not lower the best
    KKT residual by 10 % (the round-off floor of the dtype: float32 stalls near 1e-3)."""
    root_mu = math.sqrt(op.mu)
    b = op.target

    def a_of(z: Vec) -> tuple[Vec, Vec]:
        return op.forward(z), scaled(root_mu, z)

    def at_of(u: Vec, w: Vec) -> Vec:
        return axpy(root_mu, w, op.adjoint(u))

    def kkt_of(x: Vec, ax: tuple[Vec, Vec]) -> float:
        gradient = at_of(axpy(-1.0, b, ax[0]), ax[1])  # Aᵀ(Ax - b)
        step = prox.prox(axpy(-1.0, gradient, x), 1.0)
        return norm(axpy(-1.0, step, x)) / (1 + norm(x))

    x = dict(x0)
    ax = a_of(x)
    xi = (axpy(-1.0, b, ax[0]), ax[1])  # ξ = Ax - b: the dual optimum for this x
    at_xi = at_of(*xi)
    kkt = kkt_of(x, ax)
    sigma = sigma_init
    newton = cg_total = alm = 0
    best, since_best = kkt, 0
    while alm < max_alm and kkt > tol and since_best < stall_alm:
        alm += 1

        def psi(xi_: tuple[Vec, Vec], v_: Vec, z_: Vec, sigma: float = sigma) -> float:
            envelope = prox.value(z_) + norm(axpy(-1.0, v_, z_)) ** 2 / (2 * sigma)
            return 0.5 * (dot(xi_[0], xi_[0]) + dot(xi_[1], xi_[1])) + dot(b, xi_[0]) + dot(v_, v_) / (2 * sigma) \
                - envelope

        v = axpy(-sigma, at_xi, x)
        z = prox.prox(v, sigma)
        az = a_of(z)
        grad = (axpy(-1.0, az[0], axpy(1.0, b, xi[0])), axpy(-1.0, az[1], xi[1]))
        value = psi(xi, v, z)
        inner_tol = 0.1 * max(tol, 0.1 * kkt) * (1 + norm(x))
        for _ in range(max_newton):
            gnorm = math.sqrt(dot(grad[0], grad[0]) + dot(grad[1], grad[1]))
            if gnorm <= inner_tol:
                break
            mask = prox.mask(v, sigma)

            def masked(y: Vec, mask=mask) -> Vec:
                return {k: t * mask[k] if k in mask else t for k, t in y.items()}

            def apply(y: Vec, masked=masked, sigma=sigma) -> Vec:  # (1/σ) I + Π Aᵀ A Π on the primal space
                ay = a_of(masked(y))
                return axpy(1.0 / sigma, y, masked(at_of(*ay)))

            # Newton system (I + σ A Π Aᵀ) d = -∇ψ by Woodbury: d = r - A Π y, (σ⁻¹ I + Π AᵀA Π) y = Π Aᵀ r,
            # whose condition number is bounded through μ (the dual form's grows with σ)
            r = (scaled(-1.0, grad[0]), scaled(-1.0, grad[1]))
            rhs = masked(at_of(*r))
            solve = pcg(apply, rhs, {k: torch.ones_like(t) for k, t in rhs.items()}, tol=cg_rtol * norm(rhs),
                        max_iter=cg_max_iter)  # unpreconditioned: the system is already in scaled variables
            y, used = solve.solution, solve.iterations
            ay = a_of(masked(y))
            direction = (axpy(-1.0, ay[0], r[0]), axpy(-1.0, ay[1], r[1]))
            newton += 1
            cg_total += used
            at_d = at_of(*direction)
            slope = dot(grad[0], direction[0]) + dot(grad[1], direction[1])
            if slope >= 0:  # an inexact CG solve that is no descent direction: steepest descent instead
                direction, at_d, slope = r, at_of(*r), -gnorm**2
            t = 1.0
            for _ in range(40):
                trial_xi = (axpy(t, direction[0], xi[0]), axpy(t, direction[1], xi[1]))
                trial_v = axpy(-t * sigma, at_d, v)
                trial_z = prox.prox(trial_v, sigma)
                trial_value = psi(trial_xi, trial_v, trial_z)
                if trial_value <= value + 1e-4 * t * slope:
                    break
                t *= 0.5
            xi, v, z, value = trial_xi, trial_v, trial_z, trial_value
            at_xi = axpy(t, at_d, at_xi)
            az = a_of(z)
            grad = (axpy(-1.0, az[0], axpy(1.0, b, xi[0])), axpy(-1.0, az[1], xi[1]))
        x, ax = z, az  # the multiplier update x <- prox_σp(x - σAᵀξ)
        kkt = kkt_of(x, ax)
        sigma = min(sigma * sigma_factor, sigma_max)
        best, since_best = (kkt, 0) if kkt < 0.9 * best else (best, since_best + 1)
    return SSNALResult(x, kkt, alm, newton, cg_total, stalled=kkt > tol and since_best >= stall_alm)


@SOLVERS.register
class ProximalGaussNewton(SecondOrderSolver):
    """Proximal Gauss-Newton with an SSNAL subproblem solver (L1 on the phase, box on the amplitude)."""

    name = "ssnal"

    class Params(SecondOrderParams):
        l1_weight: float | None = Field(
            None, ge=0, description="w of the phase L1 penalty (see the module docstring); null = the weight of "
            "the configured 'sparse' loss term (order 1), or 0 without one")
        kkt_tol: float = Field(1e-8, gt=0, description="relative KKT residual at which SSNAL stops")
        sigma_init: float = Field(1.0, gt=0, description="initial ALM penalty σ")
        sigma_factor: float = Field(5.0, ge=1, description="σ ×= this after every ALM step")
        sigma_max: float = Field(1e4, gt=0, description="cap of σ (larger values stall the line search in round-off)")
        max_alm: int = Field(30, ge=1, description="largest number of ALM (multiplier) updates per subproblem")
        stall_alm: int = Field(3, ge=1, description="stop a subproblem when this many ALM steps in a row did not "
                               "lower its best KKT residual by 10 % (its round-off floor: ~1e-3 in float32)")
        max_newton: int = Field(50, ge=1, description="largest number of semismooth Newton steps per ALM step")
        cg_max_iter: int = Field(100, ge=1, description="largest number of CG iterations per Newton system")
        cg_rtol: float = Field(1e-10, gt=0, lt=1, description="relative residual at which each Newton system's CG "
                               "stops (Woodbury form (1/σ + ΠAᵀAΠ) y = ΠAᵀr; d = r - AΠy cancels, so keep it tight)")

    @classmethod
    def check_config(cls, params, config) -> None:
        if params.step_patterns is not None:
            raise ConfigError("solver 'ssnal' takes full-batch steps (its L1 weights are spread over the whole scan); "
                              "remove solver.options.step_patterns or use solver.name: lm")
        sparse = config.loss.get("sparse")
        if params.l1_weight is None and sparse is not None and sparse.order != 1:
            raise ConfigError(f"solver 'ssnal' takes its L1 weight from loss.sparse, which has order "
                              f"{sparse.order}; set loss.sparse.order: 1 or solver.options.l1_weight")

    def __init__(self, params, context):
        super().__init__(params, context)
        self.weights: Tensor | None = None  # λ_r, shaped like the phase
        self.last_result: SSNALResult | None = None

    def run_iteration(self, training: TrainingSet) -> dict[str, float]:
        if self.keys:
            self.weights = self.l1_weights(torch.as_tensor(training.indices, device=training.device))
        return super().run_iteration(training)

    def l1_weights(self, indices: Tensor) -> Tensor:
        """λ_r = w · occ_o · c_r / (N · S · Y · X) (omode, S, Yo, Xo)."""
        w = self.params.l1_weight if self.params.l1_weight is not None else self.plan.weights.get("sparse", 0.0)
        model, state = self.context.model, self.state
        window = model.geometry.window_px
        phase = state["object_phase"]
        with torch.no_grad():
            crop, _ = split_positions(model.centres_px(state, indices), window)
            ones = torch.ones(len(indices), *window, dtype=phase.dtype, device=phase.device)
            coverage = scatter_patches(ones, crop, (0, 0, *phase.shape[-2:]))
            occupancy = model.occupancy(state)
        scale = w / (len(indices) * phase.shape[1] * window[0] * window[1])
        return scale * occupancy[:, None, None, None].to(phase.dtype) * coverage.expand_as(phase)

    def penalty(self, state: dict[str, Tensor]) -> float:
        if self.weights is None:
            return 0.0
        return float((self.weights.double() * state["object_phase"].double().abs()).sum())

    def block_step(self, op: GaussNewton, gradient: Vec, diagonal: Vec, keys: list[str]) -> Vec:
        params = self.params
        lasso, prox, inverse_root = proximal_subproblem(
            op, diagonal, keys, self.state, self.weights, (params.amplitude_min, params.amplitude_max), self.damping)
        start = prox.prox({k: torch.zeros_like(self.state[k]) for k in keys}, 0.0)  # ζ = 0, projected: feasible
        eps = torch.finfo(self.state["object_phase"].dtype).eps
        result = ssnal(lasso, prox, start, tol=max(params.kkt_tol, 100 * eps), sigma_init=params.sigma_init,
                       sigma_factor=params.sigma_factor, sigma_max=params.sigma_max, max_alm=params.max_alm,
                       max_newton=params.max_newton, cg_max_iter=params.cg_max_iter,
                       cg_rtol=max(params.cg_rtol, math.sqrt(eps)), stall_alm=params.stall_alm)
        self.last_result = result
        return {k: result.solution[k] * inverse_root[k] for k in keys}


def proximal_subproblem(op: GaussNewton, diagonal: Vec, keys: list[str], state: dict[str, Tensor],
                        l1_weights: Tensor | None, amplitude_bounds: tuple[float | None, float | None],
                        mu: float) -> tuple[LassoOperator, SeparableProx, Vec]:
    """The proximal Gauss-Newton subproblem in ζ = D^½ δ: A = [√h J D^-½ ; √μ I], b = [-r/√h ; 0],
    p(ζ) = Σ (λ_r/√D_r)|√D_r φ_r + ζ_r| + box((a_min - A)√D <= ζ <= (a_max - A)√D). Returns the operator, the prox
    and D^-½ (δ = D^-½ ζ). Data-space vectors are dicts {'chunk<i>': (B, K, K)}."""
    root_h = math.sqrt(op.noise.curvature)
    inverse_root = {k: diagonal[k].rsqrt() for k in keys}

    def forward(zeta: Vec) -> Vec:
        delta = {k: zeta[k] * inverse_root[k] for k in keys}
        return {f"chunk{i}": root_h * op.jvp_chunk(i, delta) for i in range(len(op.chunks))}

    def adjoint(u: Vec) -> Vec:
        back = op.vjp([u[f"chunk{i}"] for i in range(len(op.chunks))])
        return {k: root_h * back[k] * inverse_root[k] for k in keys}

    target = {f"chunk{i}": -r / root_h for i, r in enumerate(op.residuals())}
    l1, box = {}, {}
    if "object_phase" in keys and l1_weights is not None:
        s = inverse_root["object_phase"]
        l1["object_phase"] = (l1_weights * s, state["object_phase"].detach() / s)
    low, high = amplitude_bounds
    if "object_amplitude" in keys and (low is not None or high is not None):
        s, a = inverse_root["object_amplitude"], state["object_amplitude"].detach()
        box["object_amplitude"] = (None if low is None else (low - a) / s, None if high is None else (high - a) / s)
    return LassoOperator(forward, adjoint, target, mu), SeparableProx(l1, box), inverse_root
