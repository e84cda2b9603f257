"""The run's adaptive loss weights and stopping rules, wired to its problem and state: what the engine asks at
each iteration (the weights to use; after the iteration, the rule's update; after recording it, whether to stop).
The measurements (gradient norms per term, the discrepancy ratio) are taken on an evenly spread subset of the
training positions, without gradients on the state, at most once per iteration."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ptyopt.batching import evenly_spread
from ptyopt.errors import ConfigError
from ptyopt.model.dip_config import owned_keys
from ptyopt.model.tensors import STATE_KEY
from ptyopt.objective.discrepancy import discrepancy_ratio
from ptyopt.objective.gradients import norm, term_gradients
from ptyopt.objective.losses import LossTerm
from ptyopt.objective.stopping import DiscrepancyReached, ValidationPlateau, check_discrepancy, check_plateau
from ptyopt.objective.weighting import AdaptiveWeights, Signals

if TYPE_CHECKING:
    from ptyopt.problem import Problem


def _chunks(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


class Adaptation:
    """Adaptive weights (``loss_weighting``) and stopping rules (``solver.stop_when``) of one run. Refuses at
    construction (before anything is written) what the data cannot support: a misfit against the noise needs
    electron counts."""

    def __init__(self, problem: Problem, losses: list[LossTerm], train_indices: np.ndarray):
        config = problem.config
        self.problem, self.losses = problem, losses
        self.stop_rules = list(config.solver.stop_when)
        rule = config.loss_weighting
        data = [term.name for term in losses if term.is_data_term]
        # what gradient balancing and the discrepancy rule adjust: every term that does not fit the patterns one
        # by one (the regularisers and aggregate data terms such as pacbed), against the terms that do
        regularisers = [term.name for term in losses if not term.fits_patterns]
        self.weighting = None if rule is None else AdaptiveWeights(rule, data, regularisers)
        wants_counts = [name for name, on in (
            ("loss_weighting.rule: discrepancy", rule is not None and rule.rule == "discrepancy"),
            ("solver.stop_when discrepancy", any(isinstance(r, DiscrepancyReached) for r in self.stop_rules)))
            if on]
        if wants_counts and not problem.dataset.counts:
            raise ConfigError(f"{wants_counts[0]} compares the misfit with Poisson noise, which needs data in "
                              "electron counts; this dataset is not marked as counts (the file's 'counts' "
                              "attribute, or experiment.counts: true when the patterns are raw counts)")
        if rule is not None and rule.rule == "gradient_balance" and not regularisers:
            raise ConfigError("loss_weighting.rule: gradient_balance sets the weights of the terms that do not fit "
                              "each pattern (regularisers such as sparse, aggregate terms such as pacbed), but the "
                              "loss has none; add one or choose another rule")
        sizes = [r.positions for r in (rule, *self.stop_rules) if r is not None and hasattr(r, "positions")]
        self.indices = train_indices[evenly_spread(len(train_indices), max(sizes, default=1))]
        self.plateau: dict[str, Any] = {}
        self._ratio: tuple[int, float] | None = None

    # ---- what the engine asks ----------------------------------------------------------------------------

    @property
    def needs_validation(self) -> bool:
        return any(isinstance(rule, ValidationPlateau) for rule in self.stop_rules)

    def weights(self, iteration: int, scheduled: dict[str, float]) -> dict[str, float]:
        return scheduled if self.weighting is None else self.weighting.weights(iteration, scheduled)

    def end_iteration(self, iteration: int, state: dict[str, torch.Tensor], values: dict[str, float],
                      scheduled: dict[str, float]) -> None:
        """The weighting rule's update at the end of ``iteration`` (when it is due)."""
        if self.weighting is None:
            return
        tensor = getattr(self.weighting.config, "tensor", "object_phase")
        if tensor in owned_keys(self.problem.config.model):  # a DIP object: the network's weights are what moves
            tensor = STATE_KEY["object_dip"]
        self.weighting.update(iteration, scheduled, Signals(
            values=values, gradient_norms=lambda: self.gradient_norms(state, scheduled, tensor),
            discrepancy=lambda: self.discrepancy(iteration, state)))

    def should_stop(self, iteration: int, state: dict[str, torch.Tensor], validation: float | None) -> str | None:
        """The reason to stop after ``iteration``, or None."""
        for rule in self.stop_rules:
            if iteration < rule.start_iter:
                continue
            if isinstance(rule, ValidationPlateau) and validation is not None:
                reason = check_plateau(rule, self.plateau, iteration, validation)
            elif isinstance(rule, DiscrepancyReached) and (iteration - rule.start_iter) % rule.every == 0:
                reason = check_discrepancy(rule, self.discrepancy(iteration, state))
            else:
                reason = None
            if reason:
                return reason
        return None

    # ---- state (rolled back with the engine's snapshots, kept in checkpoints) -----------------------------

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({"weighting": None if self.weighting is None else self.weighting.state,
                              "plateau": self.plateau})

    def load_state_dict(self, saved: dict[str, Any] | None) -> None:
        self._ratio = None  # a rollback repeats the iteration from another state: measure again
        if not saved:
            return
        if self.weighting is not None and saved.get("weighting") is not None:
            self.weighting.state = copy.deepcopy(saved["weighting"])
        self.plateau = copy.deepcopy(saved.get("plateau", {}))

    # ---- measurements -------------------------------------------------------------------------------------

    def discrepancy(self, iteration: int, state: dict[str, torch.Tensor]) -> float:
        """rho on the subset (``objective.discrepancy``), once per iteration."""
        if self._ratio is not None and self._ratio[0] == iteration:
            return self._ratio[1]
        problem, deviance, expected = self.problem, 0.0, 0.0
        with torch.no_grad():
            for chunk in _chunks(self.indices, problem.config.solver.batch_size):
                index = torch.as_tensor(chunk, device=problem.device)
                d, e = discrepancy_ratio(problem.model(state, index).intensities, problem.patterns(chunk))
                deviance, expected = deviance + d, expected + e
        self._ratio = (iteration, deviance / expected)
        return self._ratio[1]

    def gradient_norms(self, state: dict[str, torch.Tensor], weights: dict[str, float], key: str) -> dict[str, float]:
        """{term: |∇L_t|} on state[key] (unweighted) and ``data``: |sum_d w_d ∇L_d| over the terms that fit each
        pattern (``LossTerm.fits_patterns``)."""
        unit = {term.name: 1.0 for term in self.losses}
        grads = term_gradients(self.problem.model, state, self.losses, unit, self.problem.patterns,
                               _chunks(self.indices, self.problem.config.solver.batch_size), [key])
        norms = {name: norm(g[key]) for name, g in grads.items()}
        data = sum(weights[t.name] * grads[t.name][key] for t in self.losses if t.fits_patterns)
        norms["data"] = norm(data) if isinstance(data, torch.Tensor) else 0.0
        return norms
