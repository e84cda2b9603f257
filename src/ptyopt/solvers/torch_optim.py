"""Automatic differentiation with any first-order torch.optim optimiser (Adam by default): one parameter group
per optimisable tensor, each with its own (scheduled) learning rate. Registered as 'adam'; every other
torch.optim class name (AdamW, SGD, ...) runs on this class too and keeps its own name."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.config import SchedulerConfig
from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.model.tensors import STATE_KEY
from ptyopt.objective.batch import batch_objective_backward, forward_passes
from ptyopt.solvers.base import SOLVERS, Batch, IterationPlan, MiniBatchSolver, SolverContext


def _optimizer(params: TorchSolver.Params, groups: list[dict]) -> torch.optim.Optimizer:
    try:
        return getattr(torch.optim, params.optimizer)(groups, **params.options)
    except TypeError as err:
        raise ConfigError(f"solver.options do not fit {params.optimizer}: {err}") from None


def _scheduler(params: TorchSolver.Params, optimizer: torch.optim.Optimizer):
    scheduler = params.lr_scheduler
    cls = getattr(torch.optim.lr_scheduler, scheduler.name, None)
    if cls is None:
        raise ConfigError(f"solver.lr_scheduler.name '{scheduler.name}' is not in torch.optim.lr_scheduler")
    try:
        return cls(optimizer, **scheduler.options)
    except TypeError as err:
        raise ConfigError(f"solver.lr_scheduler.options do not fit {scheduler.name}: {err}") from None


@SOLVERS.register
class TorchSolver(MiniBatchSolver):
    name = "adam"

    class Params(StrictModel):
        optimizer: str = Field("Adam", description="torch.optim class")
        options: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments (betas, eps, ...)")
        lr_scheduler: SchedulerConfig | None = Field(None, description="torch LR scheduler stepped every iteration")

    @classmethod
    def check_config(cls, params: Params, config: Any) -> None:
        """The optimiser's and the scheduler's keyword arguments, tried on a scratch parameter."""
        optimizer = _optimizer(params, [{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.0}])
        if params.lr_scheduler is not None:
            _scheduler(params, optimizer)

    def __init__(self, params: Params, context: SolverContext):
        super().__init__(params, context)
        groups = []
        for name, update in context.updates.items():
            if update.start_iter is None:
                continue
            tensor = context.state[STATE_KEY[name]]
            tensor.requires_grad_(True)
            groups.append({"params": [tensor], "lr": 0.0, "name": name})
        self.optimizer = _optimizer(params, groups)
        self.scheduler = None
        if params.lr_scheduler is not None:
            for group in groups:  # the scheduler scales the constant base rates of optimize.*.lr
                group["lr"] = float(context.updates[group["name"]].lr.value(1))
            self.scheduler = _scheduler(params, self.optimizer)

    def start_iteration(self, plan: IterationPlan) -> None:
        super().start_iteration(plan)
        for group in self.optimizer.param_groups:
            group["params"][0].requires_grad_(plan.active[group["name"]])
            if self.scheduler is None:
                group["lr"] = plan.learning_rates[group["name"]]
        self.optimizer.zero_grad(set_to_none=True)

    def learning_rates(self) -> dict[str, float]:
        """The plan's rates, or the torch lr_scheduler's where one sets them (the groups' rates this iteration)."""
        rates = super().learning_rates()
        if self.scheduler is not None:
            rates.update({group["name"]: float(group["lr"]) if self.plan.active[group["name"]] else 0.0
                          for group in self.optimizer.param_groups})
        return rates

    def update(self, batch: Batch, step: bool) -> dict[str, Tensor]:
        context = self.context
        chunk = context.chunk_patterns
        values = batch_objective_backward(context.model, context.state, batch.index_tensor, batch.meas,
                                          context.losses, self.plan.weights, chunk_patterns=chunk,
                                          scale=1.0 / context.grad_accumulation)
        self.forward_evaluations += len(batch.indices) * forward_passes(len(batch.indices), chunk)
        if step:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return values

    def end_iteration(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
