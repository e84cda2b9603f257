"""Solvers behind one interface (registry): AD with torch.optim (adam, ...), the PIE family (epie, rpie, mpie)
and LSQ-ML (lsqml)."""

from ptyopt.solvers import lsqml, pie, torch_optim  # noqa: F401  (register 'adam', 'epie', 'rpie', 'mpie', 'lsqml')
from ptyopt.solvers.base import SOLVERS, Batch, Solver, SolverContext, make_solver

__all__ = ["SOLVERS", "Batch", "Solver", "SolverContext", "make_solver"]
