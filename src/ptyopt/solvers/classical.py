"""Shared scaffolding of the exit-wave solvers (ePIE family, LSQ-ML): what they may update, the write-back of a
complex object change into amplitude and phase, position updates, momentum buffers and loss reporting.

These solvers update the object, the probe and the positions with their own step rules, from the forward
model's own pass (``ForwardModel(..., keep_waves=True)``), so they run whatever the model includes (detector
response, tilts, ...). The engine's learning rates (optimize.*.lr) are not used; only the NaN guard's factor
(``IterationPlan.lr_multiplier``, 1 in a normal run, smaller after each rollback) scales every step. The update
windows (start_iter, end_iter, active_when) are obeyed. The configured loss terms are evaluated on every batch
and reported, but the updates follow the algorithm's own noise model, not the loss weights.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.model.forward import ForwardOutput
from ptyopt.objective.schedules import ScheduleLike, as_schedule
from ptyopt.physics import MultisliceWaves
from ptyopt.solvers.base import Batch, Capabilities, IterationPlan, MiniBatchSolver, SolverContext
from ptyopt.solvers.exitwave import position_steps, position_system
from ptyopt.solvers.scan_steps import PositionRefinement, split_position_step

# Levenberg damping of the global scan model's step from one batch, relative to its diagonal: a batch that
# cannot tell two of its parameters apart (e.g. the affine over a compact group) then takes a short step in
# that direction instead of an arbitrary long one; small enough not to slow a well-posed step.
GLOBAL_DAMPING = 1e-3


# The default step schedule of the exit-wave solvers: full steps at first, then a decay to a floor, so that on
# noisy data the object and probe settle instead of drifting (measured, issue 22: with constant steps LSQ-ML's r
# falls by 0.006 and ePIE's by 0.0025 between iterations 12 and 30 on sto-small 32×32 at 1e5 e/Å², while the data
# misfit keeps falling: each batch's full step moves the estimate by as much as the noise of that batch). The floor
# keeps the object able to follow positions, probe and tilts refined late.
DEFAULT_STEP_SCHEDULE = {"kind": "exponential", "initial": 1.0, "rate": 0.9, "floor": 0.25}


class PositionParams(StrictModel):
    """Options shared by the exit-wave solvers."""

    step_schedule: ScheduleLike = Field(
        default_factory=lambda: as_schedule(DEFAULT_STEP_SCHEDULE),
        description="factor on every object and probe step, per iteration (a number or a schedule; 1 = the "
        "algorithm's own steps); the default decays to a floor so the result settles on noisy data")
    position_step: float = Field(
        1.0, gt=0, le=1, description="fraction of the least-squares position shift applied per update"
    )
    max_shift_px: float = Field(0.5, gt=0, le=0.5, description="largest position change per update and axis [px]")


def apply_object_change(state: dict[str, Tensor], change: Tensor, box: tuple[int, int, int, int], *,
                        amplitude: bool, phase: bool) -> None:
    """t <- t + change on the box (omode, S, h, w) of the canvas, written back as A = |t_new| and
    phi <- phi + angle(t_new conj(t_old)): the phase stays unwrapped (no 2 pi jumps in thick specimens)."""
    y0, x0, h, w = box
    amp = state["object_amplitude"][..., y0 : y0 + h, x0 : x0 + w]
    phi = state["object_phase"][..., y0 : y0 + h, x0 : x0 + w]
    old = torch.polar(amp, phi)
    new = old + change
    if phase:
        phi.add_(torch.angle(new * old.conj()))
    if amplitude:
        amp.copy_(new.abs())


class Momentum:
    """Heavy-ball momentum on the complex object transmission and the probe, from the solver's own updates
    (constraints are not amplified): per momentum step v <- friction·v + D, x <- x + feedback·v, where D is the
    sum of the updates since the last step."""

    def __init__(self) -> None:
        self.velocity: dict[str, Tensor] = {}
        self.pending: dict[str, Tensor] = {}

    def record(self, name: str, change: Tensor, like: Tensor, box: tuple[int, int, int, int] | None = None) -> None:
        pending = self.pending.get(name)
        if pending is None:
            pending = self.pending[name] = torch.zeros(like.shape, dtype=change.dtype, device=change.device)
        if box is None:
            pending.add_(change)
        else:
            y0, x0, h, w = box
            pending[..., y0 : y0 + h, x0 : x0 + w].add_(change)

    def step(self, name: str, friction: float, feedback: float) -> Tensor | None:
        """The change feedback·v to apply to ``name`` now, or None when it had no update since the last step."""
        pending = self.pending.pop(name, None)
        if pending is None:
            return None
        velocity = self.velocity.get(name)
        velocity = pending if velocity is None else friction * velocity + pending
        self.velocity[name] = velocity
        return feedback * velocity

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": dict(self.velocity), "pending": dict(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = {k: v.clone() for k, v in state["velocity"].items()}
        self.pending = {k: v.clone() for k, v in state["pending"].items()}


class ExitWaveSolver(MiniBatchSolver):
    """Base of the classical solvers: the forward pass with its waves, loss reporting, updates."""

    capabilities = Capabilities(updates=frozenset({"object_amplitude", "object_phase", "probe", "positions",
                                                   "scan_affine", "scan_drift"}),
                                learning_rates=False, grad_accumulation=False, loss_terms=False)

    def __init__(self, params: StrictModel, context: SolverContext):
        super().__init__(params, context)
        self.momentum = Momentum()
        self.momentum_enabled = False  # subclasses with momentum switch it on; else no buffers are kept

    def start_iteration(self, plan: IterationPlan) -> None:
        super().start_iteration(plan)
        self.step_multiplier = plan.lr_multiplier  # the NaN guard's halvings (on every step)
        # object and probe steps: also the step schedule
        self.update_multiplier = plan.lr_multiplier * self.params.step_schedule.value(plan.iteration)

    @property
    def object_active(self) -> tuple[bool, bool]:
        return self.active["object_amplitude"], self.active["object_phase"]

    def forward(self, batch: Batch) -> tuple[ForwardOutput, dict[str, Tensor]]:
        """The model's pass on the batch with its waves, and the objective's terms there (before the update)."""
        out = self.context.model(self.state, batch.index_tensor, keep_waves=True)
        self.forward_evaluations += len(batch.indices)
        return out, {name: value.detach() for name, value in self.loss_values(out, batch).items()}

    def update_object(self, change: Tensor, box: tuple[int, int, int, int]) -> None:
        amplitude, phase = self.object_active
        apply_object_change(self.state, change, box, amplitude=amplitude, phase=phase)
        if self.momentum_enabled:
            self.momentum.record("object", change, self.state["object_phase"], box)

    def update_probe(self, change: Tensor) -> None:
        self.state["probe"].add_(change)
        if self.momentum_enabled:
            self.momentum.record("probe", change, self.state["probe"])

    @property
    def position_refinement(self) -> PositionRefinement:
        return PositionRefinement.of(self.active)

    def update_positions(self, batch: Batch, waves: MultisliceWaves, occupancy: Tensor) -> None:
        """Gauss-Newton shifts of the batch's positions, split between the global scan model and the offsets
        (``scan_steps``), times position_step (and the NaN guard's factor)."""
        params = self.params
        gram, rhs = position_system(waves, batch.meas, occupancy)
        self.forward_evaluations += 2 * len(batch.indices)  # the two linearised passes of the shift derivatives
        steps = split_position_step(self.context.model.scan, batch.index_tensor, gram, rhs,
                                    position_steps(gram, rhs, params.max_shift_px), self.position_refinement,
                                    damping=GLOBAL_DAMPING, max_shift_px=params.max_shift_px)
        scale = params.position_step * self.step_multiplier
        for key, step in steps.items():
            step = scale * step.to(self.state[key].dtype)
            if key == "position_offsets_px":
                self.state[key].index_add_(0, batch.index_tensor, step)
            else:
                self.state[key].add_(step)

    def momentum_step(self, friction: float, feedback: float) -> None:
        """Apply the momentum of every tensor that is still active (others drop their pending updates)."""
        if any(self.object_active):
            change = self.momentum.step("object", friction, feedback)
            if change is not None:
                box = (0, 0, *change.shape[-2:])
                amplitude, phase = self.object_active
                apply_object_change(self.state, change, box, amplitude=amplitude, phase=phase)
        else:
            self.momentum.pending.pop("object", None)
        if self.active["probe"]:
            change = self.momentum.step("probe", friction, feedback)
            if change is not None:
                self.state["probe"].add_(change)
        else:
            self.momentum.pending.pop("probe", None)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "momentum": self.momentum.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.momentum.load_state_dict(state.get("momentum", {"velocity": {}, "pending": {}}))
