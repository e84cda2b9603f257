"""Stopping rules without ground truth (``solver.stop_when``): a run ends when more iterations stop helping
instead of at a fixed count; the iteration it stopped at and why are logged (``stopped_at``, ``stop_reason``).

- ``validation_plateau``: the held-out validation loss (``solver.validation_fraction`` > 0; the data terms on
  patterns never used for updates, measured every iteration) has not improved by more than ``min_improvement``
  (relative) on its best for ``patience`` iterations: further iterations fit noise, not signal.
- ``discrepancy``: the data misfit has reached what the noise explains, discrepancy ratio rho <= ``target``
  (``objective.discrepancy``; electron counts needed), checked every ``every`` iterations.

The state (best value, its iteration, checks since) is a plain dict saved in checkpoints.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from ptyopt.config_base import StrictModel


class ValidationPlateau(StrictModel):
    kind: Literal["validation_plateau"] = "validation_plateau"
    patience: int = Field(3, ge=1, description="iterations without improvement before stopping")
    min_improvement: float = Field(1e-3, ge=0, description="relative fall of the validation loss that counts")
    start_iter: int = Field(1, ge=1, description="first iteration checked")


class DiscrepancyReached(StrictModel):
    kind: Literal["discrepancy"] = "discrepancy"
    target: float = Field(1.0, gt=0, description="stop once the discrepancy ratio rho is at or below this")
    every: int = Field(1, ge=1, description="iterations between checks")
    positions: int = Field(256, ge=1, description="training positions (evenly spread) the misfit is measured on")
    start_iter: int = Field(1, ge=1, description="first iteration checked")


StopCondition = Annotated[Union[ValidationPlateau, DiscrepancyReached], Field(discriminator="kind")]  # noqa: UP007


def check_plateau(rule: ValidationPlateau, state: dict[str, Any], iteration: int, value: float) -> str | None:
    """Update the plateau state with this iteration's validation loss; the reason to stop, or None."""
    best = state.get("best", math.inf)
    if value < best * (1 - rule.min_improvement):
        state.update(best=value, best_iteration=iteration, since=0)
        return None
    if value < best:
        state.update(best=value, best_iteration=iteration)
    state["since"] = state.get("since", 0) + 1
    if state["since"] >= rule.patience:
        return (f"validation loss {value:.5g} has not improved by {100 * rule.min_improvement:g} % on its best "
                f"{state['best']:.5g} (iteration {state['best_iteration']}) for {rule.patience} iterations")
    return None


def check_discrepancy(rule: DiscrepancyReached, ratio: float) -> str | None:
    if ratio <= rule.target:
        return (f"the data misfit reached what the noise explains: discrepancy ratio {ratio:.4f} <= "
                f"{rule.target:g}")
    return None
