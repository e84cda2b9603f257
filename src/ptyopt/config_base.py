"""Strict, frozen pydantic base model shared by every configuration section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors and values are immutable once validated. A section given in part keeps the
    defaults it does not name: ``optimize: {probe: {start_iter: 2}}`` keeps the default probe lr."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _merge_over_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = data
        for name, info in cls.model_fields.items():
            default, given = info.default, data.get(name)
            if isinstance(default, BaseModel) and isinstance(given, dict):
                # what the default names beyond its own field defaults; one level is enough, because the nested
                # section merges its own fields when it is validated
                explicit = default.model_dump(exclude_unset=True)
                if explicit:
                    merged = dict(merged) if merged is data else merged
                    merged[name] = {**explicit, **given}
        return merged
