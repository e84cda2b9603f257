"""Solvers behind one interface (registry): AD with torch.optim (adam, ...), and classical ones to come."""

from ptyopt.solvers import torch_optim  # noqa: F401  (registers 'adam')
from ptyopt.solvers.base import SOLVERS, Batch, Solver, SolverContext, make_solver

__all__ = ["SOLVERS", "Batch", "Solver", "SolverContext", "make_solver"]
