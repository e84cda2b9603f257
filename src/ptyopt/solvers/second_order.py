"""Full-batch Gauss-Newton scaffolding shared by ``lm`` and ``ssnal``: the options, the value and gradient pass
over the shared fixed chunks, the block-Jacobi preconditioner, per-position 2×2 steps and the ratio-tested step
loop; the subclasses choose the object/probe block step and a non-smooth penalty. See ``lm`` for the algorithm
and the work accounting."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.model.scan_model import GLOBAL_KEYS
from ptyopt.model.tensors import STATE_KEY
from ptyopt.solvers.base import Batch, Capabilities, FullBatchSolver, IterationPlan, SolverContext, TrainingSet
from ptyopt.solvers.ggn import (
    GaussNewton,
    NoiseModel,
    Vec,
    add_illumination,
    block_diagonal,
    divide,
    dot,
    illumination_blocks,
    objective,
    per_position_steps,
    per_position_system,
)
from ptyopt.solvers.scan_steps import PositionRefinement, split_position_step

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
    outer_steps: int = Field(1, ge=1, description="Gauss-Newton (LM) steps per iteration (per group with "
                             "step_patterns)")
    step_patterns: int | None = Field(
        None, ge=1, description="patterns per Gauss-Newton step: null = every training pattern (full batch, one "
        "linearisation per outer step); a number = mini-batch steps: the fixed chunks are taken in groups of "
        "ceil(this / solver.batch_size) neighbouring chunks and each group gets its own outer_steps ratio-tested "
        "steps on its own patterns' objective, so one iteration makes many cheap steps")
    block_scales: Literal["every_step", "every_iteration"] = Field(
        "every_step", description="when the preconditioner's per-block Rayleigh scales are measured (one JVP per "
        "pattern and block): every step, or on an iteration's first step and reused by its later steps (saves "
        "up to 3 of each mini-batch step's ~7 passes; they are ratios of curvatures, alike from group to group)")
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


class SecondOrderSolver(FullBatchSolver):
    """Full-batch Gauss-Newton scaffolding: the value and gradient pass over fixed chunks, the ratio-tested step
    loop. Subclasses choose the step of the object/probe block (``block_step``) and a non-smooth term
    (``penalty``)."""

    capabilities = Capabilities(
        updates=frozenset({"object_amplitude", "object_phase", "probe", "positions", "tilts", "scan_affine",
                           "scan_drift"}),
        tilt_modes=frozenset({"each"}), learning_rates=False)

    def __init__(self, params: SecondOrderParams, context: SolverContext):
        super().__init__(params, context)
        mean_pixel = context.probe_power / float(np.prod(context.model.geometry.window_px))
        relative = params.intensity_floor if params.noise == "gaussian" else params.poisson_floor
        self.noise = NoiseModel(params.noise, relative * mean_pixel, context.probe_power)
        self.damping = params.damping_init
        self.objective_history: list[float] = []
        self.previous_step: Vec | None = None
        self.scales: dict[str, float] | None = None  # block scales kept for the iteration (block_scales)
        self.cg_iterations = 0  # GGN products spent in CG (diagnostics)

    # ---- per iteration: L and g at θ over the fixed chunks, then the Gauss-Newton steps --------------------------

    def start_iteration(self, plan: IterationPlan) -> None:
        super().start_iteration(plan)
        self.refine = PositionRefinement.of(plan.active)
        self.keys = [STATE_KEY[name] for name, on in plan.active.items() if on and STATE_KEY[name] in (
            *BLOCK_KEYS, "position_offsets_px", "tilts_mrad", *GLOBAL_KEYS)]
        if self.refine.global_model and "position_offsets_px" not in self.keys:
            self.keys.append("position_offsets_px")  # its per-position systems give the global model's step

    def value_and_gradient(self, chunks: list[Batch], noise: NoiseModel, block_keys: list[str]
                           ) -> tuple[float, Vec, dict[str, float], list[Tensor], Vec]:
        """L(θ), its gradient over ``self.keys``, the configured loss terms' chunk means, the amplitudes m(θ) per
        chunk and the block-Jacobi blocks of ``block_keys`` (``ggn.illumination``), in one forward and backward
        pass per pattern."""
        value, gradient, terms, amplitudes, sums = 0.0, {}, {}, [], {}
        canvas_px = self.state["object_phase"].shape[-2:]
        for chunk in chunks:
            params = {k: self.state[k].detach().requires_grad_(True) for k in self.keys}
            out = self.context.model({**self.state, **params}, chunk.index_tensor, keep_waves=bool(block_keys))
            self.forward_evaluations += len(chunk.indices)
            for name, term in self.loss_values(out, chunk).items():
                terms[name] = terms.get(name, 0.0) + float(term.detach()) / len(chunks)
            if block_keys:
                add_illumination(sums, out, block_keys, canvas_px)
            m = noise.amplitude(out.intensities)
            amplitudes.append(m.detach())
            chunk_value = noise.value(m, chunk.meas)
            if params:
                grads = torch.autograd.grad(chunk_value, list(params.values()), allow_unused=True)
                for key, grad in zip(params, grads, strict=True):
                    grad = torch.zeros_like(params[key]) if grad is None else grad
                    gradient[key] = gradient.get(key, 0) + grad
            value += float(chunk_value.detach())
        blocks = illumination_blocks(sums, self.state, block_keys) if block_keys else {}
        return value, gradient, terms, amplitudes, blocks

    def run_iteration(self, training: TrainingSet) -> dict[str, float]:
        chunks = training.chunks(self.context.batch_size)
        per_group = len(chunks) if self.params.step_patterns is None else max(
            1, math.ceil(self.params.step_patterns / self.context.batch_size))
        groups = [chunks[start : start + per_group] for start in range(0, len(chunks), per_group)]
        terms: dict[str, float] = {}
        self.scales: dict[str, float] | None = {} if self.params.block_scales == "every_iteration" else None
        for group in groups:  # one group (full batch) unless step_patterns is set
            for name, value in self.run_group(group).items():
                terms[name] = terms.get(name, 0.0) + value * len(group) / len(chunks)
        return terms

    def run_group(self, chunks: list[Batch]) -> dict[str, float]:
        """``outer_steps`` ratio-tested steps on the objective of these chunks' patterns; their loss terms' means."""
        n = sum(len(chunk.indices) for chunk in chunks)
        noise = self.noise.with_normaliser(n * self.context.probe_power)
        block_keys = [k for k in self.keys if k in BLOCK_KEYS]
        value, gradient, terms, amplitudes, blocks = self.value_and_gradient(chunks, noise, block_keys)
        if not self.keys:
            return terms
        if not self.objective_history:
            self.objective_history.append(value + self.penalty(self.state))
        for outer in range(self.params.outer_steps):
            op = GaussNewton(self.context.model, self.state, self.keys, chunks, noise,
                             cache=self.params.cache_linearization, amplitudes=amplitudes if outer == 0 else None)
            if outer > 0:
                value, gradient = op.value(), op.gradient()
            self.step(op, value, gradient, blocks, block_keys)
            self.forward_evaluations += op.evaluations
            self.objective_history.append(self.last_value)
        return terms

    def step(self, op: GaussNewton, value: float, gradient: Vec, blocks: Vec, block_keys: list[str]) -> None:
        """One ratio-tested step from the linearisation ``op`` at the current state."""
        params = self.params
        diagonal = block_diagonal(op, gradient, blocks, params.preconditioner_delta, self.scales) if block_keys else {}
        systems = {k: per_position_system(op, k) for k in self.keys if k not in (*BLOCK_KEYS, *GLOBAL_KEYS)}
        current = value + self.penalty(self.state)
        self.last_value = current
        for _ in range(params.max_rejections + 1):
            block = self.block_step(op, gradient, diagonal, block_keys) if block_keys else {}
            step = dict(block)
            for key, (indices, gram, rhs) in systems.items():
                limit = params.max_shift_px if key == "position_offsets_px" else params.max_tilt_step_mrad
                own = per_position_steps(gram, rhs, self.damping, limit)
                full = torch.zeros_like(self.state[key])
                if key == "position_offsets_px":  # G δ = -g here: the global model's share, offsets the rest
                    for part, value in split_position_step(
                            self.context.model.scan, indices, gram, -rhs, own, self.refine, damping=self.damping,
                            max_shift_px=limit).items():
                        if part == key:
                            full[indices] = value.to(full.dtype)
                        else:
                            step[part] = value.to(self.state[part].dtype)
                else:
                    full[indices] = own.to(full.dtype)
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
        op.evaluations += sum(len(c.indices) for c in op.chunks)
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
        # the last block step warm-starts the next CG solve, so a resumed run needs it to continue identically
        return {**super().state_dict(), "damping": self.damping, "objective_history": list(self.objective_history),
                "previous_step": None if self.previous_step is None else dict(self.previous_step),
                "cg_iterations": self.cg_iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.damping = float(state.get("damping", self.params.damping_init))
        self.objective_history = list(state.get("objective_history", []))
        previous = state.get("previous_step")
        self.previous_step = None if previous is None else {k: v.clone() for k, v in previous.items()}
        self.cg_iterations = int(state.get("cg_iterations", 0))


