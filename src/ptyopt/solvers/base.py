"""The solver interface the engine drives. A solver owns the update rule and nothing else: the engine owns
batches, schedules (learning rates arrive as numbers), update windows, constraints, checkpoints and the
NaN guard. Solvers register by name; ``solver.name`` in the config picks one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.objective.losses import LossInputs, LossTerm
from ptyopt.problem import Problem
from ptyopt.registry import Registry, did_you_mean

# config.optimize field -> state key
TENSOR_OF = {
    "object_amplitude": "object_amplitude",
    "object_phase": "object_phase",
    "probe": "probe",
    "positions": "position_offsets_px",
    "tilts": "tilts_mrad",
    "slice_thickness": "slice_thickness_ang",
    "occupancy": "occupancy",
}


@dataclass(frozen=True)
class Batch:
    """One mini-batch: position indices (numpy and on the device) and the measured patterns (B, K, K)."""

    indices: np.ndarray
    index_tensor: Tensor
    meas: Tensor


@dataclass
class SolverContext:
    """What a solver may use: the problem (model, geometry), the live state tensors and the loss terms."""

    problem: Problem
    state: dict[str, Tensor]
    losses: list[LossTerm]


class Solver(ABC):
    """Update rule. Per iteration the engine calls ``start_iteration``, then ``update`` for every batch
    (``step`` False while gradients accumulate), then ``end_iteration``."""

    name: ClassVar[str]

    class Params(StrictModel):
        pass

    def __init__(self, params: StrictModel, context: SolverContext):
        self.params = params
        self.context = context
        self.forward_evaluations = 0  # batch forward passes, in patterns: a device-independent cost measure

    def start_iteration(self, iteration: int, active: dict[str, bool], learning_rates: dict[str, float]) -> None:
        """Which tensors may change this iteration (config.optimize names) and their learning rates."""
        self.active, self.learning_rates = active, learning_rates

    @abstractmethod
    def update(self, batch: Batch, weights: dict[str, float], step: bool) -> dict[str, Tensor]:
        """Update the state from one batch; return each loss term's value (detached) on that batch."""

    def end_iteration(self, iteration: int) -> None:  # noqa: B027 - optional hook
        """Called after the last batch of an iteration, before the constraints."""

    def state_dict(self) -> dict[str, Any]:
        return {"forward_evaluations": self.forward_evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.forward_evaluations = int(state.get("forward_evaluations", 0))

    # shared helper for solvers that report the objective's terms
    def loss_values(self, out, batch: Batch) -> dict[str, Tensor]:
        inputs = LossInputs(out.intensities, batch.meas, out.phase_patches, out.amplitude_patches, out.occupancy)
        return {term.name: term(inputs) for term in self.context.losses}


SOLVERS: Registry[type[Solver]] = Registry("solver")


def torch_optimizer_names() -> list[str]:
    return [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
            and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n not in ("Optimizer", "LBFGS")]


def make_solver(name: str, options: dict[str, Any], context: SolverContext, lr_scheduler=None) -> Solver:
    """A registered solver by name ('adam', 'epie', ...) or any first-order torch.optim class (AdamW, SGD, ...)."""
    from pydantic import ValidationError

    from ptyopt.solvers.torch_optim import TorchSolver

    torch_name = "Adam" if name == "adam" else name if name in torch_optimizer_names() else None
    if torch_name is not None:
        return TorchSolver(TorchSolver.Params(optimizer=torch_name, options=options), context, lr_scheduler)
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver '{name}'{did_you_mean(name, [*SOLVERS.names(), *torch_optimizer_names()])}")
    cls = SOLVERS.get(name)
    try:
        params = cls.Params.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        valid = list(cls.Params.model_fields)
        hint = did_you_mean(str(first["loc"][-1]), valid) if first["type"] == "extra_forbidden" else ""
        raise ConfigError(f"solver.options.{where} for '{name}': {first['msg']}{hint}") from None
    if lr_scheduler is not None:
        raise ConfigError(f"solver.lr_scheduler is for torch optimisers; '{name}' takes schedules in optimize.*.lr")
    return cls(params, context)
