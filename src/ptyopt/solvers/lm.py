"""Levenberg-Marquardt on the generalised Gauss-Newton matrix, matrix-free (Kandel et al. 2021), full batch.

Objective: the solver's own noise model in amplitude coordinates (``ggn.NoiseModel``: gaussian = ½Σ(√(I+eps) -
√(y+eps))²/S, poisson = the count NLL with Fisher scoring), summed over all training patterns, S = N·P̄. The
configured loss terms are still evaluated on every engine batch and reported, but they do not drive the steps;
the engine's learning rates are ignored (update windows are obeyed).

Per iteration: ``update`` records each engine batch (indices, patterns), reports the loss terms and accumulates
L and its gradient g at the current state θ (one forward+backward per pattern). ``end_iteration`` then takes
``outer_steps`` LM steps over a FIXED chunking of the recorded positions (sorted, chunks of solver.batch_size):
1. linearise m(θ) per chunk; block-Jacobi diagonal D (``ggn.illumination`` × per-block Rayleigh scales);
2. object amplitude/phase and probe: PCG on (G + λD) δ = -g, preconditioned by D, forcing tolerance
   η = min(forcing_max, sqrt(‖g‖))·‖g‖ in the D⁻¹-norm ‖g‖ = sqrt(gᵀD⁻¹g), warm-started from the last step;
   positions (and per-position tilts): exact damped 2×2 Gauss-Newton steps per position (two JVPs);
3. trial θ' = Π(θ + δ) (Π: the amplitude box, if set); ρ = (L(θ) - L(θ'))/pred with the exact model decrease
   pred = -(gᵀd + ½ dᵀGd), d = θ' - θ (one JVP); ρ < 0.25: λ ×= 4, ρ > 0.75: λ /= 4; ρ < 1e-4: reject and
   re-solve from the same linearisation with the larger λ (if the projection was active, first try a projected
   scaled-gradient line search θ(t) = Π(θ - t D⁻¹g), Armijo L(θ(t)) <= L(θ) + 1e-4 gᵀ(θ(t) - θ)).
Accepted steps never raise L, so the solver's objective is monotone within and across iterations (unless the
engine's constraints move the state between iterations). ``objective_history`` keeps L after every outer step.

Forward evaluations (``forward_evaluations``, in patterns; each model evaluation of a pattern counts 1, plain,
with backward, linearised, JVP, VJP or one GGN product Gv): per iteration N (update) + N (preconditioner) and per
outer step N (or 2N with cached linearisations) + N per active block (block scales) + 2N (positions) + [N
(gradient, outer steps after the first)] and per try N·n_CG + N (pred) + N (trial loss).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.solvers.base import SOLVERS, TENSOR_OF, Batch, Solver, SolverContext
from ptyopt.solvers.ggn import (
    Chunk,
    GaussNewton,
    NoiseModel,
    Vec,
    axpy,
    block_diagonal,
    divide,
    dot,
    forcing_tolerance,
    illumination,
    objective,
    pcg,
    per_position_steps,
    per_position_system,
)

BLOCK_KEYS = ("object_amplitude", "object_phase", "probe")
ACCEPT = 1e-4


class SecondOrderParams(StrictModel):
    """Options shared by lm and ssnal."""

    noise: Literal["gaussian", "poisson"] = Field(
        "gaussian", description="noise model: gaussian (on amplitudes, G = JᵀJ) or poisson (counts, Fisher scoring)")
    intensity_floor: float = Field(
        1e-6, ge=0, description="gaussian: eps = this × the mean measured intensity per pixel in sqrt(I + eps), "
        "keeps the amplitude differentiable at I = 0")
    poisson_floor: float = Field(
        0.01, gt=0, description="poisson: detector floor eps = this × the mean measured intensity per pixel, "
        "added to the model intensity")
    outer_steps: int = Field(1, ge=1, description="Gauss-Newton (LM) steps per iteration")
    damping_init: float = Field(1e-2, gt=0, description="initial damping λ of (G + λD) (dimensionless: D ≈ diag G)")
    damping_min: float = Field(1e-8, gt=0, description="lower bound of λ")
    damping_max: float = Field(1e10, gt=0, description="upper bound of λ")
    damping_factor: float = Field(4.0, gt=1, description="λ ×= this when ρ < 0.25, λ /= this when ρ > 0.75")
    max_rejections: int = Field(6, ge=0, description="rejected trials (λ raised each time) per outer step")
    preconditioner_delta: float = Field(
        0.1, gt=0, description="floor of the block-Jacobi diagonal: W + delta·max W (unlit pixels stay damped)")
    cache_linearization: bool = Field(
        False, description="keep a linearisation and a VJP closure per chunk (faster products, ~2 forward passes "
        "of activations per pattern in memory); false re-runs the model for every product")
    max_shift_px: float = Field(0.5, gt=0, description="largest position change per step and axis [px]")
    max_tilt_step_mrad: float = Field(1.0, gt=0, description="largest per-position tilt change per step [mrad]")
    amplitude_min: float | None = Field(None, ge=0, description="lower bound of the object amplitude (null = none)")
    amplitude_max: float | None = Field(None, gt=0, description="upper bound of the object amplitude (null = none)")

    @model_validator(mode="after")
    def _ordered(self) -> SecondOrderParams:
        low, high = self.amplitude_min, self.amplitude_max
        if low is not None and high is not None and low > high:
            raise ConfigError(f"amplitude_min {self.amplitude_min} > amplitude_max {self.amplitude_max}")
        if self.damping_min > self.damping_max:
            raise ConfigError(f"damping_min {self.damping_min} > damping_max {self.damping_max}")
        return self


class SecondOrderSolver(Solver):
    """Full-batch Gauss-Newton scaffolding: batch recording, fixed chunks, the ratio-tested step loop.
    Subclasses choose the step of the object/probe block (``block_step``) and a non-smooth term (``penalty``)."""

    def __init__(self, params: SecondOrderParams, context: SolverContext):
        super().__init__(params, context)
        config = context.problem.config
        for name in ("slice_thickness", "occupancy"):
            if getattr(config.optimize, name).start_iter is not None:
                raise ConfigError(f"solver '{self.name}' does not refine {name}; set optimize.{name}.start_iter: "
                                  "null or use solver.name: adam")
        if config.optimize.tilts.start_iter is not None and config.model.tilt_mode != "each":
            raise ConfigError(f"solver '{self.name}' refines per-position tilts only; set model.tilt_mode: each or "
                              "optimize.tilts.start_iter: null")
        problem = context.problem
        mean_pixel = problem.probe_power / float(np.prod(problem.geometry.window_px))
        relative = params.intensity_floor if params.noise == "gaussian" else params.poisson_floor
        self.noise = NoiseModel(params.noise, relative * mean_pixel, problem.probe_power)
        self.damping = params.damping_init
        self.objective_history: list[float] = []
        self.previous_step: Vec | None = None
        self.cg_iterations = 0  # GGN products spent in CG (diagnostics)

    @property
    def state(self) -> dict[str, Tensor]:
        return self.context.state

    # ---- per batch: record, report, accumulate L and g -------------------------------------------------------

    def start_iteration(self, iteration: int, active: dict[str, bool], learning_rates: dict[str, float]) -> None:
        super().start_iteration(iteration, active, learning_rates)
        self.keys = [TENSOR_OF[name] for name, on in active.items() if on and TENSOR_OF[name] in (
            *BLOCK_KEYS, "position_offsets_px", "tilts_mrad")]
        self.records: list[Batch] = []
        self.value_sum = 0.0
        self.gradient_sum: Vec = {}
        self.iteration = iteration

    def update(self, batch: Batch, weights: dict[str, float], step: bool) -> dict[str, Tensor]:
        params = {k: self.state[k].detach().requires_grad_(True) for k in self.keys}
        out = self.context.problem.model({**self.state, **params}, batch.index_tensor)
        self.forward_evaluations += len(batch.indices)
        values = {name: value.detach() for name, value in self.loss_values(out, batch).items()}
        value = self.noise.value(self.noise.amplitude(out.intensities), batch.meas)
        if params:
            grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
            for key, grad in zip(params, grads, strict=True):
                grad = torch.zeros_like(params[key]) if grad is None else grad
                self.gradient_sum[key] = self.gradient_sum.get(key, 0) + grad
        self.value_sum += float(value.detach())
        self.records.append(batch)
        return values

    def chunks(self) -> list[Chunk]:
        """The recorded positions, sorted, in fixed chunks of solver.batch_size."""
        indices = torch.cat([b.index_tensor for b in self.records])
        meas = torch.cat([b.meas for b in self.records])
        order = torch.argsort(indices)
        indices, meas = indices[order], meas[order]
        size = self.context.problem.config.solver.batch_size
        return [Chunk(indices[i : i + size], meas[i : i + size]) for i in range(0, len(indices), size)]

    # ---- per iteration: the Gauss-Newton steps -------------------------------------------------------------------

    def end_iteration(self, iteration: int) -> None:
        if not self.keys or not self.records:
            return
        chunks = self.chunks()
        n = sum(int(c.indices.numel()) for c in chunks)
        noise = self.noise.with_normaliser(n * self.context.problem.probe_power)
        scale = self.noise.normaliser / noise.normaliser  # batch sums used S = P̄; the objective uses S = N P̄
        value = self.value_sum * scale
        gradient = {k: g * scale for k, g in self.gradient_sum.items()}
        model = self.context.problem.model
        block_keys = [k for k in self.keys if k in BLOCK_KEYS]
        blocks = illumination(model, self.state, chunks, block_keys) if block_keys else {}
        self.forward_evaluations += n if block_keys else 0
        if not self.objective_history:
            self.objective_history.append(value + self.penalty(self.state))
        for outer in range(self.params.outer_steps):
            op = GaussNewton(model, self.state, self.keys, chunks, noise, cache=self.params.cache_linearization)
            if outer > 0:
                value, gradient = op.value(), op.gradient()
            self.step(op, value, gradient, blocks, block_keys)
            self.forward_evaluations += op.evaluations
            self.objective_history.append(self.last_value)

    def step(self, op: GaussNewton, value: float, gradient: Vec, blocks: Vec, block_keys: list[str]) -> None:
        """One ratio-tested step from the linearisation ``op`` at the current state."""
        params = self.params
        diagonal = block_diagonal(op, gradient, blocks, params.preconditioner_delta) if block_keys else {}
        systems = {k: per_position_system(op, k) for k in self.keys if k not in BLOCK_KEYS}
        current = value + self.penalty(self.state)
        self.last_value = current
        for _ in range(params.max_rejections + 1):
            block = self.block_step(op, gradient, diagonal, block_keys) if block_keys else {}
            step = dict(block)
            for key, (indices, gram, rhs) in systems.items():
                limit = params.max_shift_px if key == "position_offsets_px" else params.max_tilt_step_mrad
                full = torch.zeros_like(self.state[key])
                full[indices] = per_position_steps(gram, rhs, self.damping, limit).to(full.dtype)
                step[key] = full
            trial = self.project({k: self.state[k] + d for k, d in step.items()})
            step = {k: trial[k] - self.state[k] for k in trial}
            projected = any(not torch.equal(trial[k], self.state[k] + block[k]) for k in block)
            predicted = -(dot(gradient, step) + 0.5 * op.curvature_along(step)) - (
                self.penalty({**self.state, **trial}) - self.penalty(self.state))
            trial_value = self.evaluate(op, trial)
            ratio = (current - trial_value) / predicted if predicted > 0 else -math.inf
            if ratio >= ACCEPT:
                self.accept(trial, block, trial_value)
                if ratio < 0.25:
                    self.damping = min(self.damping * params.damping_factor, params.damping_max)
                elif ratio > 0.75:
                    self.damping = max(self.damping / params.damping_factor, params.damping_min)
                return
            self.previous_step = block
            if projected and self.projected_gradient(op, current, gradient, diagonal):
                return
            self.damping = min(self.damping * params.damping_factor, params.damping_max)

    def evaluate(self, op: GaussNewton, trial: Vec) -> float:
        """The solver's full objective (noise model + penalty) at the trial state (one forward per pattern)."""
        state = {**self.state, **trial}
        op.evaluations += sum(int(c.indices.numel()) for c in op.chunks)
        return objective(op.model, state, op.chunks, op.noise) + self.penalty(state)

    def accept(self, trial: Vec, block: Vec, value: float) -> None:
        with torch.no_grad():
            for key, tensor in trial.items():
                self.state[key].copy_(tensor)
        self.previous_step = block
        self.last_value = value

    def projected_gradient(self, op: GaussNewton, current: float, gradient: Vec, diagonal: Vec) -> bool:
        """Armijo search along the projected scaled gradient Π(θ - t D⁻¹g), t = 1, 1/2, ... (8 tries)."""
        direction = divide({k: gradient[k] for k in diagonal}, diagonal)
        t = 1.0
        for _ in range(8):
            trial = self.project({k: self.state[k] - t * direction[k] for k in direction})
            change = {k: trial[k] - self.state[k] for k in trial}
            trial_value = self.evaluate(op, trial)
            if trial_value <= current + ACCEPT * dot(gradient, change) and trial_value < current:
                self.accept(trial, {}, trial_value)
                return True
            t *= 0.5
        return False

    def project(self, trial: Vec) -> Vec:
        """Π: the object amplitude clamped to [amplitude_min, amplitude_max] (when set)."""
        low, high = self.params.amplitude_min, self.params.amplitude_max
        if "object_amplitude" in trial and (low is not None or high is not None):
            trial = {**trial, "object_amplitude": trial["object_amplitude"].clamp(min=low, max=high)}
        return trial

    # ---- hooks ------------------------------------------------------------------------------------------------

    def penalty(self, state: dict[str, Tensor]) -> float:
        """Non-smooth part of the objective (none for LM)."""
        return 0.0

    def block_step(self, op: GaussNewton, gradient: Vec, diagonal: Vec, keys: list[str]) -> Vec:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "damping": self.damping, "objective_history": list(self.objective_history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.damping = float(state.get("damping", self.params.damping_init))
        self.objective_history = list(state.get("objective_history", []))
        self.previous_step = None


@SOLVERS.register("lm")
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
