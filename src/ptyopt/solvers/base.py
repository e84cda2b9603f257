"""The solver contract the engine drives. A solver owns the update rule and nothing else: the engine owns
batches, schedules (learning rates arrive as numbers), update windows, constraints, checkpoints, the NaN guard
and the switches between solvers (``solver.switch``). Solvers register by name (``@SOLVERS.register`` reads
``cls.name``); ``solver.name`` in the config picks the first one.

Two kinds, one contract each:
- ``MiniBatchSolver`` (adam and torch.optim, epie/rpie/mpie, lsqml): per iteration ``start_iteration(plan)``,
  then ``update(batch, step)`` for every engine batch (``step`` False while gradients accumulate), then
  ``end_iteration()``. ``update`` returns each loss term's value on its batch; the engine averages them.
- ``FullBatchSolver`` (lbfgs, lm, ssnal): per iteration ``start_iteration(plan)`` then one
  ``run_iteration(training)``, which sees every training position through the shared chunker
  (``TrainingSet.chunks``: fixed chunks of the sorted positions) and returns the loss terms' means over its
  chunks at the state before the iteration's update.

What a solver may read is its ``SolverContext`` (the model, the live state, the loss terms, the update windows,
a few numbers of the run), never the whole config. What it can do is declared in ``capabilities`` and checked
once at config time (``ptyopt.solvers.checks``), so a run never starts with a solver that would refuse later.

Work accounting. Every solver counts its work in ``forward_evaluations``, in patterns: every evaluation of the
forward model on one pattern counts 1, whether plain, with a backward pass, linearised, a JVP or a VJP (a batch
of B patterns evaluated with its gradient counts B; a line search that evaluates the full objective over N
patterns three times counts 3N). The count is cumulative over the run: at a solver switch the new solver
continues the old one's count, and checkpoints keep it. The engine logs it each iteration beside the wall time
(history ``forward_evaluations``, ``wall_time_s``), so solvers of different cost per step compare on both axes.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.model.dip_config import DIP_SOLVERS_HINT
from ptyopt.model.tensors import TENSOR_NAMES
from ptyopt.objective.losses import LossTerm, loss_values
from ptyopt.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from ptyopt.config import TensorUpdate
    from ptyopt.model.forward import ForwardModel, ForwardOutput
    from ptyopt.problem import Problem


@dataclass(frozen=True)
class Batch:
    """A group of positions: indices (numpy and on the device) and their measured patterns (B, K, K)."""

    indices: np.ndarray
    index_tensor: Tensor
    meas: Tensor


@dataclass(frozen=True)
class TrainingSet:
    """The training positions (sorted) and how to fetch their patterns (preprocessed, on the device).
    ``chunks`` is the one chunker of the full-batch solvers."""

    indices: np.ndarray
    fetch: Callable[[np.ndarray, Tensor], Tensor]
    device: torch.device

    def chunks(self, size: int, positions: np.ndarray | None = None) -> list[Batch]:
        """Fixed chunks of ``size`` of the sorted ``positions`` (default: every training position)."""
        positions = self.indices if positions is None else np.sort(positions)
        out = []
        for start in range(0, len(positions), size):
            part = positions[start : start + size]
            index_tensor = torch.as_tensor(part, device=self.device)
            out.append(Batch(part, index_tensor, self.fetch(part, index_tensor)))
        return out


@dataclass(frozen=True)
class IterationPlan:
    """What the engine decided for one iteration. active and learning_rates are keyed by ``optimize`` name;
    learning_rates are the scheduled rates times ``lr_multiplier``, the NaN guard's factor (1 in a normal run,
    times solver.nan_lr_factor after each rollback), which the exit-wave solvers apply to their own steps (the
    full-batch solvers choose their steps by line search or damping and do not use it)."""

    iteration: int
    active: Mapping[str, bool]
    learning_rates: Mapping[str, float]
    lr_multiplier: float
    weights: Mapping[str, float]

    @staticmethod
    def simple(active: tuple[str, ...] | list[str], *, iteration: int = 1, lr: float = 1.0,
               lr_multiplier: float = 1.0, weights: Mapping[str, float] | None = None) -> IterationPlan:
        """A plan that opens the windows of ``active`` (for scripts and tests); ``weights`` must name every
        configured loss term (default: the default loss, ``single``)."""
        return IterationPlan(iteration, {name: name in active for name in TENSOR_NAMES},
                             {name: lr for name in active}, lr_multiplier, dict(weights or {"single": 1.0}))


@dataclass(frozen=True)
class SolverContext:
    """What a solver may use: the forward model, the live state tensors, the loss terms, the optimize section's
    update windows and rates (by name), and the numbers of the run a solver needs (the mean measured pattern
    total ``probe_power`` [counts], the seed, solver.batch_size, solver.grad_accumulation, the memory plan's
    patterns per forward pass)."""

    model: ForwardModel
    state: dict[str, Tensor]
    losses: list[LossTerm]
    updates: Mapping[str, TensorUpdate]
    probe_power: float
    device: torch.device
    seed: int
    batch_size: int
    grad_accumulation: int
    chunk_patterns: int

    @classmethod
    def of(cls, problem: Problem, state: dict[str, Tensor], losses: list[LossTerm],
           window: tuple[int, int | None] = (1, None)) -> SolverContext:
        """The context of a solver that runs iterations [start, end) of ``problem`` (its updates: the tensors
        refined within them)."""
        config = problem.config
        return cls(problem.model, state, losses, config.optimize.updates(window), problem.probe_power, problem.device,
                   config.seed, config.solver.batch_size, config.solver.grad_accumulation,
                   problem.memory.chunk_patterns)


@dataclass(frozen=True)
class Capabilities:
    """What a solver can do, checked once against the config (``ptyopt.solvers.checks``).

    updates: the ``optimize`` tensors it can refine; tilt_modes: the model.tilt_mode values under which it
    refines tilts; learning_rates: optimize.*.lr sets its step sizes (else its own rules do and only the NaN
    guard's factor scales them); grad_accumulation: it accepts solver.grad_accumulation > 1; loss_terms: it
    minimises the configured loss terms with their weights (else it fits its own likelihood and only reports
    them)."""

    updates: frozenset[str] = field(default_factory=lambda: frozenset(TENSOR_NAMES))
    tilt_modes: frozenset[str] = frozenset({"global", "each"})
    learning_rates: bool = True
    grad_accumulation: bool = True
    loss_terms: bool = True


def check_capabilities(name: str, capabilities: Capabilities, updates: Mapping[str, TensorUpdate], tilt_mode: str,
                       grad_accumulation: int, object_parametrisation: str = "pixels") -> None:
    """ConfigError when the optimize section (``updates``), model.tilt_mode, solver.grad_accumulation or
    model.object_parametrisation ask solver ``name`` for something it cannot do. A solver that cannot refine
    optimize.object_dip (one that updates pixels from exit waves or by Gauss-Newton steps) refuses a DIP object."""
    if object_parametrisation == "dip" and "object_dip" not in capabilities.updates:
        raise ConfigError(f"solver '{name}' cannot use a deep-image-prior object (model.object_parametrisation: dip): "
                          "it updates object pixels, not the network's weights (optimize.object_dip); "
                          f"{DIP_SOLVERS_HINT}, or set model.object_parametrisation: pixels")
    refined = [tensor for tensor, update in updates.items() if update.start_iter is not None]
    unsupported = [tensor for tensor in refined if tensor not in capabilities.updates]
    if unsupported:
        can = ", ".join(t for t in TENSOR_NAMES if t in capabilities.updates)
        raise ConfigError(f"solver '{name}' refines {can} only; set optimize.{unsupported[0]}.start_iter: null "
                          "or use solver.name: adam")
    if "tilts" in refined and tilt_mode not in capabilities.tilt_modes:
        modes = " or ".join(sorted(capabilities.tilt_modes))
        raise ConfigError(f"solver '{name}' refines tilts only with model.tilt_mode: {modes}; set model.tilt_mode: "
                          f"{sorted(capabilities.tilt_modes)[0]} or optimize.tilts.start_iter: null")
    if grad_accumulation != 1 and not capabilities.grad_accumulation:
        raise ConfigError(f"solver '{name}' updates after every batch; set solver.grad_accumulation: 1 "
                          "(use solver.batch_size for larger groups)")


class Solver(ABC):
    """Update rule; see the module docstring for the two kinds."""

    name: ClassVar[str]
    kind: ClassVar[Literal["mini_batch", "full_batch"]]
    capabilities: ClassVar[Capabilities] = Capabilities()

    class Params(StrictModel):
        pass

    def __init__(self, params: StrictModel, context: SolverContext):
        self.params = params
        self.context = context
        self.forward_evaluations = 0  # batch forward passes, in patterns: a device-independent cost measure
        self.plan: IterationPlan | None = None

    @classmethod
    def check_config(cls, params: StrictModel, config: Any) -> None:  # noqa: B027  (an optional hook)
        """Solver-specific checks of the whole config beyond ``capabilities`` (raise ConfigError); none here."""
        return None

    def start_iteration(self, plan: IterationPlan) -> None:
        """Which tensors may change this iteration, their rates, the loss weights and the NaN guard's factor."""
        self.plan = plan

    def learning_rates(self) -> dict[str, float]:
        """This iteration's learning rate of each scheduled tensor, by ``optimize`` name (the history's
        ``lr_<name>``): the plan's rate where the tensor's update window is open, 0 where it keeps the tensor
        frozen, NaN for every tensor when the solver chooses its own steps (``capabilities.learning_rates``
        false). Called after ``start_iteration``."""
        plan = self.plan
        if not self.capabilities.learning_rates:
            return {name: math.nan for name in plan.learning_rates}
        return {name: float(rate) if plan.active[name] else 0.0 for name, rate in plan.learning_rates.items()}

    @property
    def active(self) -> Mapping[str, bool]:
        return self.plan.active

    @property
    def state(self) -> dict[str, Tensor]:
        return self.context.state

    def loss_values(self, out: ForwardOutput, batch: Batch) -> dict[str, Tensor]:
        """The configured loss terms on one forward pass (with their graphs)."""
        return loss_values(self.context.losses, out, batch.meas)

    def state_dict(self) -> dict[str, Any]:
        return {"forward_evaluations": self.forward_evaluations}

    def snapshot(self) -> dict[str, Any]:
        """A copy of ``state_dict()`` that later updates cannot change (the engine's rollback point, taken every
        iteration). Deep by default; a solver whose tensors are replaced, never modified in place, may share them."""
        return copy.deepcopy(self.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.forward_evaluations = int(state.get("forward_evaluations", 0))


class MiniBatchSolver(Solver):
    kind = "mini_batch"

    @abstractmethod
    def update(self, batch: Batch, step: bool) -> dict[str, Tensor]:
        """Update the state from one batch; return each loss term's value (detached) on that batch."""

    def end_iteration(self) -> None:
        """Called after the last batch of an iteration, before the constraints."""


class FullBatchSolver(Solver):
    kind = "full_batch"

    @abstractmethod
    def run_iteration(self, training: TrainingSet) -> dict[str, float]:
        """One iteration on every training position; returns the loss terms' means (see the module docstring)."""


SOLVERS: Registry[type[Solver]] = Registry("solver")


def torch_optimizer_names() -> list[str]:
    return [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
            and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n not in ("Optimizer", "LBFGS")]


def torch_optimizer_name(name: str) -> str | None:
    """The torch.optim class a solver name means ('adam' -> 'Adam', 'SGD' -> 'SGD'), None for registered solvers."""
    return "Adam" if name == "adam" else name if name in torch_optimizer_names() else None


def solver_class(name: str) -> type[Solver]:
    """The class that runs solver ``name`` (torch.optim names run on the 'adam' class)."""
    return SOLVERS.get("adam" if torch_optimizer_name(name) is not None else name)


def solver_params(name: str, options: Mapping[str, Any], lr_scheduler: Any = None, where: str = "solver") -> Any:
    """Check a solver name, its options (the solver's Params) and whether it takes an lr_scheduler, without building
    it; returns the validated Params. ``where`` is the config path used in the messages (solver,
    solver.switch[0], ...)."""
    from pydantic import ValidationError

    torch_name = torch_optimizer_name(name)
    if torch_name is None and name not in SOLVERS:
        raise ConfigError(f"unknown solver '{name}' in {where}.name"
                          f"{did_you_mean(name, [*SOLVERS.names(), *torch_optimizer_names()])}")
    cls = solver_class(name)
    raw = dict(options)
    if torch_name is not None:  # the torch.optim class, its keyword arguments and its LR scheduler
        raw = {"optimizer": torch_name, "options": raw, "lr_scheduler": lr_scheduler}
    try:
        params = cls.Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        valid = list(cls.Params.model_fields)
        hint = did_you_mean(str(first["loc"][-1]), valid) if first["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{where}.options{'.' + path if path else ''} for '{name}': {first['msg']}{hint}") from None
    if lr_scheduler is not None and torch_name is None:
        raise ConfigError(f"{where}.lr_scheduler is for torch optimisers; '{name}' takes schedules in optimize.*.lr")
    return params


def make_solver(name: str, options: Mapping[str, Any], context: SolverContext, lr_scheduler: Any = None,
                where: str = "solver") -> Solver:
    """A registered solver by name ('adam', 'epie', ...) or any first-order torch.optim class (AdamW, SGD, ...)."""
    params = solver_params(name, options, lr_scheduler, where)
    cls = solver_class(name)
    model = context.model.config  # also checked at config time; here for solvers built directly
    check_capabilities(name, cls.capabilities, context.updates, model.tilt_mode, context.grad_accumulation,
                       model.object_parametrisation)
    solver = cls(params, context)
    solver.name = name  # 'SGD' runs on the torch.optim class registered as 'adam', and says so
    return solver
