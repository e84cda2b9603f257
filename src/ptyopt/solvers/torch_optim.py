"""Automatic differentiation with any first-order torch.optim optimiser (Adam by default): one parameter group
per optimisable tensor, each with its own (scheduled) learning rate."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.objective.batch import batch_objective_backward, forward_passes
from ptyopt.solvers.base import SOLVERS, TENSOR_OF, Batch, Solver, SolverContext


class TorchSolver(Solver):
    name = "adam"

    class Params(StrictModel):
        optimizer: str = Field("Adam", description="torch.optim class")
        options: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments (betas, eps, ...)")

    def __init__(self, params: Params, context: SolverContext, lr_scheduler=None):
        super().__init__(params, context)
        updates = context.problem.config.optimize
        groups = []
        for name, update in updates.__dict__.items():
            if update.start_iter is None:
                continue
            tensor = context.state[TENSOR_OF[name]]
            tensor.requires_grad_(True)
            groups.append({"params": [tensor], "lr": 0.0, "name": name})
        try:
            self.optimizer = getattr(torch.optim, params.optimizer)(groups, **params.options)
        except TypeError as err:
            raise ConfigError(f"solver.options do not fit {params.optimizer}: {err}") from None
        self.scheduler = None
        if lr_scheduler is not None:
            cls = getattr(torch.optim.lr_scheduler, lr_scheduler.name, None)
            if cls is None:
                raise ConfigError(f"solver.lr_scheduler.name '{lr_scheduler.name}' is not in torch.optim.lr_scheduler")
            for group in groups:  # the scheduler scales the constant base rates of optimize.*.lr
                group["lr"] = float(updates.__dict__[group["name"]].lr.value(1))
            try:
                self.scheduler = cls(self.optimizer, **lr_scheduler.options)
            except TypeError as err:
                raise ConfigError(f"solver.lr_scheduler.options do not fit {lr_scheduler.name}: {err}") from None

    def start_iteration(self, iteration, active, learning_rates) -> None:
        super().start_iteration(iteration, active, learning_rates)
        for group in self.optimizer.param_groups:
            group["params"][0].requires_grad_(active[group["name"]])
            if self.scheduler is None:
                group["lr"] = learning_rates[group["name"]]
        self.optimizer.zero_grad(set_to_none=True)

    def update(self, batch: Batch, weights: dict[str, float], step: bool) -> dict[str, Tensor]:
        problem = self.context.problem
        chunk = problem.memory.chunk_patterns
        values = batch_objective_backward(problem.model, self.context.state, batch.index_tensor, batch.meas,
                                          self.context.losses, weights, chunk_patterns=chunk,
                                          scale=1.0 / self.accumulate)
        self.forward_evaluations += len(batch.indices) * forward_passes(len(batch.indices), chunk)
        if step:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return values

    @property
    def accumulate(self) -> int:
        return self.context.problem.config.solver.grad_accumulation

    def end_iteration(self, iteration: int) -> None:
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


SOLVERS.register("adam")(TorchSolver)
