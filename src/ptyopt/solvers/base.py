"""The solver interface the engine drives. A solver owns the update rule and nothing else: the engine owns
batches, schedules (learning rates arrive as numbers), update windows, constraints, checkpoints, the NaN guard
and the switches between solvers (``solver.switch``). Solvers register by name; ``solver.name`` in the config
picks the first one.

Work accounting. Every solver counts its work in ``forward_evaluations``, in patterns: every evaluation of the
forward model on one pattern counts 1, whether plain, with a backward pass, linearised, a JVP or a VJP (a batch
of B patterns evaluated with its gradient counts B; a line search that evaluates the full objective over N
patterns three times counts 3N). The count is cumulative over the run: at a solver switch the new solver
continues the old one's count, and checkpoints keep it. The engine logs it each iteration beside the wall time
(history ``forward_evaluations``, ``wall_time_s``), so solvers of different cost per step compare on both axes.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.objective.losses import LossTerm
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
    (``step`` False while gradients accumulate), then ``end_iteration``.

    Loss reporting: ``update`` returns each loss term's value on its batch and the engine averages them over the
    batches; a solver that evaluates the objective on its own (full-batch) chunking returns {} from ``update``
    and the terms' chunk means from ``end_iteration`` instead, at the state before the iteration's update."""

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

    def end_iteration(self, iteration: int) -> dict[str, float] | None:
        """Called after the last batch of an iteration, before the constraints; returns None, or the loss terms'
        means when ``update`` reported nothing (see the class docstring)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"forward_evaluations": self.forward_evaluations}

    def snapshot(self) -> dict[str, Any]:
        """A copy of ``state_dict()`` that later updates cannot change (the engine's rollback point, taken every
        iteration). Deep by default; a solver whose tensors are replaced, never modified in place, may share them."""
        return copy.deepcopy(self.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.forward_evaluations = int(state.get("forward_evaluations", 0))

    # shared helper for solvers that report the objective's terms
    def loss_values(self, out, batch: Batch) -> dict[str, Tensor]:
        inputs = out.loss_inputs(batch.meas)
        return {term.name: term(inputs) for term in self.context.losses}


SOLVERS: Registry[type[Solver]] = Registry("solver")


def torch_optimizer_names() -> list[str]:
    return [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
            and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n not in ("Optimizer", "LBFGS")]


def torch_optimizer_name(name: str) -> str | None:
    """The torch.optim class a solver name means ('adam' -> 'Adam', 'SGD' -> 'SGD'), None for registered solvers."""
    return "Adam" if name == "adam" else name if name in torch_optimizer_names() else None


def validate_solver(name: str, options: dict[str, Any], lr_scheduler: Any = None, where: str = "solver") -> Any:
    """Check a solver name, its options (the solver's Params) and whether it takes an lr_scheduler, without building
    it; returns the validated Params (None for torch optimisers, whose options meet the class at construction).
    ``where`` is the config path used in the messages (solver, solver.switch[0], ...)."""
    from pydantic import ValidationError

    if torch_optimizer_name(name) is not None:
        return None
    if name not in SOLVERS:
        raise ConfigError(f"unknown solver '{name}' in {where}.name"
                          f"{did_you_mean(name, [*SOLVERS.names(), *torch_optimizer_names()])}")
    cls = SOLVERS.get(name)
    try:
        params = cls.Params.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        valid = list(cls.Params.model_fields)
        hint = did_you_mean(str(first["loc"][-1]), valid) if first["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{where}.options{'.' + path if path else ''} for '{name}': {first['msg']}{hint}") from None
    if lr_scheduler is not None:
        raise ConfigError(f"{where}.lr_scheduler is for torch optimisers; '{name}' takes schedules in optimize.*.lr")
    return params


def make_solver(name: str, options: dict[str, Any], context: SolverContext, lr_scheduler=None,
                where: str = "solver") -> Solver:
    """A registered solver by name ('adam', 'epie', ...) or any first-order torch.optim class (AdamW, SGD, ...)."""
    from ptyopt.solvers.torch_optim import TorchSolver

    torch_name = torch_optimizer_name(name)
    if torch_name is not None:
        return TorchSolver(TorchSolver.Params(optimizer=torch_name, options=options), context, lr_scheduler)
    params = validate_solver(name, options, lr_scheduler, where)
    return SOLVERS.get(name)(params, context)
