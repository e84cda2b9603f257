"""Shared scaffolding of the exit-wave solvers (ePIE family, LSQ-ML): what they may update, the write-back of a
complex object change into amplitude and phase, position updates, momentum buffers and loss reporting.

These solvers update the object, the probe and the positions with their own step rules. The values of the
engine's learning rates (optimize.*.lr) are ignored; only their ratio to the configured schedule, which the
engine's NaN guard halves after each rollback, scales every step (``step_multiplier``, 1 in a normal run).
The update windows (start_iter, end_iter, active_when) are obeyed.
The configured loss terms are evaluated on every batch and reported, but the updates follow the algorithm's
own noise model, not the loss weights.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.objective.losses import LossInputs
from ptyopt.objective.schedules import as_schedule
from ptyopt.solvers.base import Batch, Solver, SolverContext
from ptyopt.solvers.exitwave import ExitWaves, model_intensity, position_steps

UNSUPPORTED = ("tilts", "slice_thickness", "occupancy")


class PositionParams(StrictModel):
    """Options shared by the exit-wave solvers."""

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


class ExitWaveSolver(Solver):
    """Base of the classical solvers: checks the config, reports the loss terms, applies updates."""

    def __init__(self, params: StrictModel, context: SolverContext):
        super().__init__(params, context)
        config = context.problem.config
        for name in UNSUPPORTED:
            if getattr(config.optimize, name).start_iter is not None:
                raise ConfigError(f"solver '{self.name}' updates the object, probe and positions only; set "
                                  f"optimize.{name}.start_iter: null or use solver.name: adam")
        if config.model.detector_blur_px > 0:
            raise ConfigError(f"solver '{self.name}' has no detector blur in its modulus constraint; set "
                              "model.detector_blur_px: 0 or use solver.name: adam")
        if config.solver.grad_accumulation != 1:
            raise ConfigError(f"solver '{self.name}' updates after every batch; set solver.grad_accumulation: 1 "
                              "(use solver.batch_size for larger groups)")
        self.momentum = Momentum()
        self.momentum_enabled = False  # subclasses with momentum switch it on; else no buffers are kept

    def start_iteration(self, iteration: int, active: dict[str, bool], learning_rates: dict[str, float]) -> None:
        super().start_iteration(iteration, active, learning_rates)
        self.step_multiplier = 1.0
        for name, rate in learning_rates.items():
            configured = as_schedule(getattr(self.context.problem.config.optimize, name).lr).value(iteration)
            if configured > 0:
                self.step_multiplier = min(1.0, rate / configured)  # the NaN guard's halvings
                break

    @property
    def state(self) -> dict[str, Tensor]:
        return self.context.state

    @property
    def object_active(self) -> tuple[bool, bool]:
        return self.active["object_amplitude"], self.active["object_phase"]

    def report(self, waves: ExitWaves, batch: Batch, occupancy: Tensor) -> dict[str, Tensor]:
        """The objective's terms on the batch before the update (the model's intensity convention)."""
        intensities = torch.fft.fftshift(model_intensity(waves.far_field, occupancy), dim=(-2, -1))
        inputs = LossInputs(intensities, batch.meas, waves.phase_patches, waves.amplitude_patches, occupancy)
        return {term.name: term(inputs).detach() for term in self.context.losses}

    def update_object(self, change: Tensor, box: tuple[int, int, int, int]) -> None:
        amplitude, phase = self.object_active
        apply_object_change(self.state, change, box, amplitude=amplitude, phase=phase)
        if self.momentum_enabled:
            self.momentum.record("object", change, self.state["object_phase"], box)

    def update_probe(self, change: Tensor) -> None:
        self.state["probe"].add_(change)
        if self.momentum_enabled:
            self.momentum.record("probe", change, self.state["probe"])

    def update_positions(self, batch: Batch, waves: ExitWaves, occupancy: Tensor) -> None:
        params = self.params
        steps = position_steps(waves, batch.meas, occupancy, params.max_shift_px) * (
            params.position_step * self.step_multiplier)
        self.forward_evaluations += 2 * len(batch.indices)  # the two linearised passes of the shift derivatives
        self.state["position_offsets_px"].index_add_(0, batch.index_tensor, steps.to(self.state["probe"].real.dtype))

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
