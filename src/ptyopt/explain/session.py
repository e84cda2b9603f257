"""A result opened for diagnostics: its problem rebuilt from the stored config (data, preprocessing, geometry),
its state, the loss terms with the weights of its last iteration, and the objective on chosen positions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ptyopt.batching import evenly_spread
from ptyopt.errors import DataError
from ptyopt.evaluate.data_fidelity import result_config, result_state
from ptyopt.evaluate.evaluation import load_result
from ptyopt.io.result_file import ReconstructionResult
from ptyopt.model.forward import ForwardModel
from ptyopt.objective.losses import LossTerm, build_losses, loss_values
from ptyopt.problem import Problem, build_problem


@dataclass
class Session:
    """result: the file's content; problem: rebuilt from its config; state: its tensors as the model takes them;
    model: the forward model with propagators computed from the state (so slice-thickness and tilt changes act);
    losses: the config's loss terms; indices: the evenly spread positions the diagnostics average over."""

    path: Path
    result: ReconstructionResult
    problem: Problem
    state: dict[str, Tensor]
    model: ForwardModel
    losses: list[LossTerm]
    indices: np.ndarray

    @property
    def batch_size(self) -> int:
        return self.problem.config.solver.batch_size

    def state_of(self, result: ReconstructionResult) -> dict[str, Tensor]:
        """The state of another result of the same run (a snapshot)."""
        return result_state(result, self.problem)


def open_session(path: str | Path, *, data_path: str | Path | None = None, device: str = "cpu",
                 max_positions: int = 256) -> Session:
    """Open RESULT.h5 with the data of its config (or data_path). DataError when the data are missing or do not
    fit the result."""
    path = Path(path)
    result = load_result(path)
    config = result_config(result, data_path=data_path, device=device)
    if not config.data.path.exists():
        raise DataError(f"the data file of this result ({config.data.path}) is not there; give it with --data")
    problem = build_problem(config, warm_start=False)  # a DIP result's object is read as pixels
    state = result_state(result, problem)
    model = ForwardModel(config.model, problem.geometry, state, fixed_propagators=False, device=problem.device,
                         real_dtype=problem.real_dtype)
    return Session(path, result, problem, state, model, build_losses(config.loss),
                   evenly_spread(problem.dataset.n_patterns, max_positions))


def weights_at(result: ReconstructionResult, losses: list[LossTerm]) -> dict[str, float]:
    """Each term's weight at the result's last iteration: as logged (history weight_<term>), else its schedule."""
    history = result.history
    iterations = history.get("iteration")
    last = int(iterations[-1]) if iterations is not None and len(iterations) else 1
    out = {}
    for term in losses:
        logged = history.get(f"weight_{term.name}")
        out[term.name] = float(logged[-1]) if logged is not None and len(logged) else term.weight.value(last)
    return out


def batches(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def batch_terms(session: Session, state: dict[str, Tensor], chunk: np.ndarray,
                weights: dict[str, float]) -> dict[str, Tensor]:
    """Each term's weighted value w_t L_t on one batch of positions, with its graph."""
    index = torch.as_tensor(chunk, device=session.problem.device)
    values = loss_values(session.losses, session.model(state, index), session.problem.patterns(chunk))
    return {name: weights[name] * value for name, value in values.items()}


def objective(session: Session, state: dict[str, Tensor], indices: np.ndarray, weights: dict[str, float]) -> float:
    """The objective sum_t w_t L_t averaged over batches of ``indices`` of the solver's size (as the engine reports
    it)."""
    chunks = batches(indices, session.batch_size)
    with torch.no_grad():
        return sum(float(sum(batch_terms(session, state, c, weights).values())) for c in chunks) / len(chunks)
