"""Strict, frozen pydantic base model shared by every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors and values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
