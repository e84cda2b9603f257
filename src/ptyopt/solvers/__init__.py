"""Solvers behind one contract (registry): AD with torch.optim (adam, ...), the PIE family (epie, rpie, mpie),
LSQ-ML (lsqml), full-batch L-BFGS (lbfgs) and the second-order solvers (lm, ssnal)."""

from ptyopt.solvers import lbfgs, lm, lsqml, pie, ssnal, torch_optim  # noqa: F401  (they register themselves)
from ptyopt.solvers.base import (
    SOLVERS,
    Batch,
    Capabilities,
    FullBatchSolver,
    IterationPlan,
    MiniBatchSolver,
    Solver,
    SolverContext,
    TrainingSet,
    make_solver,
)

__all__ = ["SOLVERS", "Batch", "Capabilities", "FullBatchSolver", "IterationPlan", "MiniBatchSolver", "Solver",
           "SolverContext", "TrainingSet", "make_solver"]
