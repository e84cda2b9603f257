"""Adaptive loss weights (``loss_weighting``, one rule per run): the weights change within the run instead of
being tuned by hand over many runs. Until a rule's first update the configured weights (schedules) apply; from
then on the rule's weights replace them; they are logged per iteration (``weight_<term>``) like scheduled ones.

"Regularisers" below are all the terms that do not fit the patterns one by one (``LossTerm.fits_patterns``): the
priors (sparse, ...) and the aggregate data terms (pacbed fits the batch-mean pattern); they are what pulls the
solution away from explaining each measured pattern, so they are what these rules weigh against the data.

- ``gradient_balance``: every ``every`` iterations each regulariser r gets w_r = fraction · |g_data| / |∇L_r| on
  one tensor (the object phase by default), g_data the gradient of the weighted per-pattern data terms: its pull
  on that tensor is then ``fraction`` of the data's.
- ``discrepancy``: the regularisers' weights are multiplied by ``relax`` at every check while the data misfit is
  above what the noise explains (discrepancy ratio rho > target, ``objective.discrepancy``; electron counts
  needed), and held from the first check at which it is not: the regularisation is relaxed until the model
  explains the data down to the noise, and no further.
- ``uncertainty``: the likelihood terms (data terms) get w_t ∝ 1/L_t, the closed-form optimum of the
  homoscedastic-uncertainty objective sum_t (L_t/sigma_t^2 + ln sigma_t^2) (Kendall, Gal & Cipolla 2018), scaled
  so that they keep the configured weights' sum; regularisers keep theirs.

Each rule is pure bookkeeping over numbers the engine measures (``Signals``); its state is a plain dict saved in
checkpoints, so a resumed run continues with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from ptyopt.config_base import StrictModel


class _Rule(StrictModel):
    start_iter: int = Field(1, ge=1, description="first iteration at whose end the rule may change the weights")
    every: int = Field(5, ge=1, description="iterations between updates")
    positions: int = Field(256, ge=1, description="training positions (evenly spread) the rule measures on")

    def due(self, iteration: int) -> bool:
        return iteration >= self.start_iter and (iteration - self.start_iter) % self.every == 0


class GradientBalance(_Rule):
    rule: Literal["gradient_balance"] = "gradient_balance"
    fraction: float = Field(0.1, gt=0, description="each regulariser's gradient norm over the data terms' one")
    tensor: Literal["object_phase", "object_amplitude"] = Field(
        "object_phase", description="the state tensor whose gradient norms are balanced (with a DIP object: the "
        "network's weights)")


class Discrepancy(_Rule):
    rule: Literal["discrepancy"] = "discrepancy"
    every: int = Field(2, ge=1, description="iterations between checks")
    relax: float = Field(0.5, gt=0, lt=1, description="factor on the regularisers' weights per check above target")
    target: float = Field(1.0, gt=0, description="discrepancy ratio rho the data misfit should reach (1 = noise)")


class Uncertainty(_Rule):
    rule: Literal["uncertainty"] = "uncertainty"
    every: int = Field(1, ge=1, description="iterations between updates")


WeightingConfig = Annotated[Union[GradientBalance, Discrepancy, Uncertainty],  # noqa: UP007
                            Field(discriminator="rule")]


@dataclass
class Signals:
    """What a rule may read at the end of an iteration, computed only when it asks: ``values`` the terms' mean
    values this iteration; ``gradient_norms()`` {term: |∇(L_t)|} (unweighted) on the rule's tensor and the data
    terms' weighted gradient norm under key ``data``; ``discrepancy()`` the ratio rho."""

    values: Mapping[str, float]
    gradient_norms: Callable[[], dict[str, float]]
    discrepancy: Callable[[], float]


def balanced_weights(norms: Mapping[str, float], regularisers: list[str], fraction: float) -> dict[str, float]:
    """w_r = fraction · |g_data| / |∇L_r| (a regulariser with no gradient keeps weight 0)."""
    return {name: fraction * norms["data"] / norms[name] if norms[name] > 0 else 0.0 for name in regularisers}


def uncertainty_weights(values: Mapping[str, float], configured: Mapping[str, float]) -> dict[str, float]:
    """w_t = c / L_t over the likelihood terms, c such that sum_t w_t = sum_t configured_t."""
    inverse = {name: 1.0 / max(values[name], 1e-30) for name in configured}
    scale = sum(configured.values()) / sum(inverse.values())
    return {name: scale * value for name, value in inverse.items()}


class AdaptiveWeights:
    """The run's rule over its loss terms: ``weights(iteration, scheduled)`` gives the weights to use;
    ``update(iteration, signals)`` runs the rule when due. ``state`` (a dict) is what a checkpoint keeps."""

    def __init__(self, config: GradientBalance | Discrepancy | Uncertainty, data_terms: list[str],
                 regularisers: list[str]):
        self.config, self.data_terms, self.regularisers = config, data_terms, regularisers
        self.state: dict[str, Any] = {"weights": None, "held": False, "updates": 0}

    @property
    def needs(self) -> str:
        return {"gradient_balance": "gradients", "discrepancy": "discrepancy", "uncertainty": "values"}[
            self.config.rule]

    def weights(self, iteration: int, scheduled: Mapping[str, float]) -> dict[str, float]:
        adapted = self.state["weights"]
        return dict(scheduled) if adapted is None else {**scheduled, **adapted}

    def update(self, iteration: int, scheduled: Mapping[str, float], signals: Signals) -> None:
        config, state = self.config, self.state
        if not config.due(iteration):
            return
        current = self.weights(iteration, scheduled)
        if config.rule == "gradient_balance":
            new = balanced_weights(signals.gradient_norms(), self.regularisers, config.fraction)
        elif config.rule == "uncertainty":
            new = uncertainty_weights(signals.values, {name: scheduled[name] for name in self.data_terms})
        else:
            if state["held"]:
                return
            if signals.discrepancy() > config.target:
                new = {name: current[name] * config.relax for name in self.regularisers}
            else:
                state["held"] = True
                new = {name: current[name] for name in self.regularisers}
        state["weights"] = {**(state["weights"] or {}), **new}
        state["updates"] += 1
