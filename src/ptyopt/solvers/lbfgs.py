"""Full-batch L-BFGS with a strong-Wolfe line search on per-block scaled variables (solver 'lbfgs').

Objective. F(θ) = (1/C) Σ_c Σ_k w_k L_k(chunk c; θ): the configured loss terms with this iteration's weights,
summed over C FIXED chunks of the sorted training positions (``chunk_size`` positions each). The engine's random
groups change every iteration and ``single`` normalises per group, so only a fixed chunking keeps F the same
function across iterations, which the secant pairs and the Wolfe conditions need.

Scaled variables. Each optimised tensor b (object amplitude, object phase, probe, positions, tilts, ...) is one
block; L-BFGS works on x̃ with θ_b = s_b·x̃_b, so its gradient is g̃_b = s_b·∂F/∂θ_b and its curvature
s_b²·H_bb. L-BFGS starts from the scalar Hessian model γ·I, which fits all blocks only when their curvatures
agree; raw blocks differ by orders of magnitude (radians of phase, pixels of position, counts of probe).
``scaling``:
- ``curvature`` (default): s_b = h_b^(-1/2) with h_b = δ_bᵀ(g_b(θ+δ_b) − g_b(θ)) / δ_bᵀδ_b the curvature of F along
  the block's own steepest-descent direction δ_b ∝ −g_b (one extra gradient evaluation per block, exact for a
  quadratic). The scaled problem then has unit curvature along each block's gradient: a Jacobi preconditioner
  at block resolution, and a first step t = 1 along −g̃ is the Newton step along that direction.
  A block with h_b <= 0 (non-convex there) takes the largest positive h of the other blocks (the most cautious
  scale), and all blocks take s = 1 when none is positive.
- ``gradient``: s_b = 1/‖g_b‖, so every block's scaled gradient has unit norm at the start (free, but blind to
  curvature).
- ``none``: s_b = 1.
Scales are set whenever the history is reset (at the first iteration and when an update window switches a tensor
on or off) and kept otherwise.

Tolerances are relative: an engine iteration's inner run stops when max|g̃| <= grad_rtol·max|g̃_0| (g̃_0 at the
last reset), when a step lowers F by less than loss_rtol·|F|, when no step lowers F, or at max_iter / max_evals.
After a stop for tolerance or failed search, later iterations do nothing until the state, weights or positions
change (e.g. a constraint moved the state).

Steps. Direction −H·g̃ by the two-loop recursion (H_0 = γI, γ = sᵀy/yᵀy of the newest pair), trial step 1; with
an empty history, −g̃ with trial step 1 (curvature scaling) or 1/‖g̃‖ (unit length; other scalings). Strong-Wolfe
search by bracketing and cubic interpolation; a failed search clears the history and retries along −g̃ once.

Cost: each objective evaluation is a forward and backward pass over every L-BFGS position and counts one forward
evaluation per pattern: the start point (skipped when the last run's final point is unchanged), the line-search
trials and, at a reset, one curvature probe per block. The loss reported to the engine is F's terms at the start
of the iteration, averaged over the chunks (the engine's random groups are not used). Learning rates
(optimize.*.lr) are not used: the line search chooses the step lengths (non-finite trial values count as too long
a step), so the engine's NaN-guard halving has no effect on this solver.
Memory: 2·history_size + 4 vectors of the optimised variables; checkpoints hold the secant pairs too, so a
resumed run continues exactly (at poster scale with float32 that is ~0.1 GB per pair).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.model.tensors import STATE_KEY, TENSOR_NAMES
from ptyopt.solvers.base import SOLVERS, Batch, Capabilities, FullBatchSolver, IterationPlan, SolverContext, TrainingSet
from ptyopt.solvers.lbfgs_core import RawObjective, ScaledBlocks, SecantMemory, block_scales, minimise


class LBFGSParams(StrictModel):
    """Options of the 'lbfgs' solver."""

    history_size: int = Field(50, ge=1, description="secant pairs kept (memory: 2 vectors of the variables each)")
    max_iter: int = Field(10, ge=1, description="L-BFGS iterations (line searches) per engine iteration")
    max_evals: int = Field(20, ge=1, description="objective evaluations of the line searches per engine iteration "
                           "(one = forward + backward over every L-BFGS position; start point and probes extra)")
    line_search_evals: int = Field(10, ge=2, description="evaluations allowed to one strong-Wolfe line search")
    wolfe_c1: float = Field(1e-4, gt=0, lt=1, description="sufficient decrease: F(t) <= F(0) + c1·t·F'(0)")
    wolfe_c2: float = Field(0.9, gt=0, lt=1, description="curvature: |F'(t)| <= c2·|F'(0)| (c1 < c2 < 1)")
    grad_rtol: float = Field(1e-6, ge=0, description="stop when max|g̃| <= grad_rtol·max|g̃| at the last reset "
                             "(scaled gradient; dimensionless)")
    loss_rtol: float = Field(1e-9, ge=0, description="stop when a step lowers F by less than loss_rtol·|F|")
    scaling: Literal["curvature", "gradient", "none"] = Field(
        "curvature", description="per-block variable scale: inverse square root of the block's curvature along its "
        "gradient, inverse block gradient norm, or none")
    curvature_step: float = Field(1e-3, gt=0, description="curvature probe: RMS step per element as a fraction of "
                                  "the block's RMS value, at least 1 unit of the block (rad, px, mrad, Å, ...)")
    chunk_size: int | None = Field(None, ge=1, description="positions per forward pass (fixed chunks of the sorted "
                                   "positions); null = solver.batch_size")
    super_batch: int | None = Field(None, ge=1, description="positions in the objective: a seeded draw per engine "
                                    "iteration, fixed during its line searches; null = every training position")

    @model_validator(mode="after")
    def _wolfe_order(self) -> LBFGSParams:
        if not self.wolfe_c1 < self.wolfe_c2:
            raise ValueError(f"wolfe_c1 ({self.wolfe_c1}) must be below wolfe_c2 ({self.wolfe_c2})")
        return self


# ---- the solver ------------------------------------------------------------------------------------------------


@SOLVERS.register
class LBFGS(FullBatchSolver):
    """Full-batch L-BFGS on the configured objective; see the module docstring."""

    name = "lbfgs"
    Params = LBFGSParams
    capabilities = Capabilities(learning_rates=False)

    def __init__(self, params: LBFGSParams, context: SolverContext):
        super().__init__(params, context)
        self.memory = SecantMemory(params.history_size)
        self.blocks_key: tuple[str, ...] | None = None  # active blocks of the current scales and history
        self.scales: dict[str, float] = {}
        self.grad_reference = 0.0
        self.last: dict[str, Any] | None = None  # the accepted point of the last inner run: x, F, g̃, terms, key
        self.converged = False

    def start_iteration(self, plan: IterationPlan) -> None:
        super().start_iteration(plan)
        for name in TENSOR_NAMES:
            tensor = self.state[STATE_KEY[name]]
            tensor.grad = None
            tensor.requires_grad_(bool(plan.active.get(name, False)))

    def chunks(self, training: TrainingSet) -> list[Batch]:
        """F's fixed chunks: every training position, or a seeded super-batch drawn for this iteration."""
        positions = training.indices
        if self.params.super_batch is not None and self.params.super_batch < len(positions):
            rng = np.random.default_rng([self.context.seed, self.plan.iteration, 13])  # stream 13: L-BFGS draws
            positions = positions[np.sort(rng.choice(len(positions), self.params.super_batch, replace=False))]
        return training.chunks(self.params.chunk_size or self.context.batch_size, positions)

    def raw_objective(self, chunks: list[Batch], tensors: dict[str, Tensor]) -> RawObjective:
        """F and ∂F/∂θ_b over the chunks at the tensors' current values; aux = each term's mean over the chunks."""
        weights = self.plan.weights

        def evaluate() -> tuple[float, dict[str, Tensor], dict[str, float]]:
            for tensor in tensors.values():
                tensor.grad = None
            total = 0.0
            terms: dict[str, Any] = {}
            for chunk in chunks:
                values = self.loss_values(self.context.model(self.state, chunk.index_tensor), chunk)
                objective = sum(weights[name] * value for name, value in values.items()) / len(chunks)
                if tensors:
                    objective.backward()
                self.forward_evaluations += len(chunk.indices)
                total = total + objective.detach()
                for name, value in values.items():
                    terms[name] = terms.get(name, 0.0) + value.detach() / len(chunks)
            grads = {n: t.grad if t.grad is not None else torch.zeros_like(t) for n, t in tensors.items()}
            return float(total), grads, {name: float(value) for name, value in terms.items()}

        return evaluate

    def run_iteration(self, training: TrainingSet) -> dict[str, float]:
        """Run L-BFGS on this iteration's objective; return its terms at the state before the run."""
        chunks = self.chunks(training)
        names = tuple(name for name in TENSOR_NAMES if self.active.get(name, False))
        tensors = {name: self.state[STATE_KEY[name]] for name in names}
        raw = self.raw_objective(chunks, tensors)
        if names != self.blocks_key:
            # a tensor switched on or off: the secant pairs live in another space and the scales miss a block
            self.memory.clear()
            self.blocks_key, self.last, self.converged = names, None, False
            if not names:
                return raw()[2]
            value, grads, terms = raw()
            self.scales = block_scales(self.params.scaling, tensors, grads, raw, self.params.curvature_step)
            blocks = ScaledBlocks(tensors, self.scales)
            x, grad = blocks.pack(), blocks.scale_gradient(grads)
            self.grad_reference = float(grad.abs().max())
        else:
            if not names:
                return raw()[2]
            blocks = ScaledBlocks(tensors, self.scales)
            x = blocks.pack()
            last = self.last
            if last is not None and last["key"] == self.objective_key(chunks) and torch.equal(last["x"], x):
                value, grad, terms = last["value"], last["grad"], last["terms"]
                if self.converged:
                    return terms
            else:
                value, grads, terms = raw()
                grad = blocks.scale_gradient(grads)
                self.converged = False
        if not math.isfinite(value):
            return terms  # nothing to descend from; the engine's NaN guard rolls back
        first_step = 1.0 if self.params.scaling == "curvature" else 1.0 / max(float(torch.linalg.vector_norm(grad)),
                                                                              1e-300)
        outcome = minimise(blocks.objective(raw), x, value, grad, terms, self.memory, self.params,
                           self.grad_reference, first_step)
        blocks.unpack(outcome.x)  # the last evaluation may have been a rejected trial point
        for tensor in tensors.values():
            tensor.grad = None
        self.converged = outcome.converged
        # x as packed from the state (θ/s may round differently from outcome.x): next iteration compares bitwise
        self.last = {"x": blocks.pack(), "value": outcome.value, "grad": outcome.grad, "terms": outcome.aux,
                     "key": self.objective_key(chunks)}
        return terms

    def objective_key(self, chunks: list[Batch]) -> tuple:
        """What fixes F besides the state: the loss weights and the positions of every chunk."""
        return tuple(sorted(self.plan.weights.items())), tuple(tuple(int(i) for i in c.indices) for c in chunks)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": self.memory.state_dict(), "blocks_key": self.blocks_key,
                "scales": dict(self.scales), "grad_reference": self.grad_reference, "converged": self.converged,
                "last": None if self.last is None else dict(self.last)}

    def snapshot(self) -> dict[str, Any]:
        return self.state_dict()  # every tensor in it is replaced, never modified in place

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"])
        self.blocks_key = None if state["blocks_key"] is None else tuple(state["blocks_key"])
        self.scales = dict(state["scales"])
        self.grad_reference = float(state["grad_reference"])
        self.converged = bool(state["converged"])
        self.last = None if state["last"] is None else dict(state["last"])

