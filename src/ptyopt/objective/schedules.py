"""Schedules: one abstraction for every loss weight, learning rate and update window of a run.

A schedule maps a 1-based iteration (1 is the first) to a float. The value's unit is that of the quantity
it drives (a learning rate, a dimensionless loss weight, 0/1 for an update window). In YAML a bare number
means a constant schedule::

    weight: 0.5                                     # constant
    weight: {kind: linear, start_value: 1.0, end_value: 0.1, start_iter: 10, end_iter: 100}
    lr: {kind: piecewise, points: [[1, 0.0], [5, 1.0e-4]]}   # off until iteration 5

Fields typed ``ScheduleLike`` accept either form and always hold a ``Schedule`` after validation.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.registry import did_you_mean

SCHEDULE_KINDS = ("constant", "step", "linear", "cosine", "exponential", "piecewise")


def _check_iteration(iteration: int) -> None:
    if iteration < 1:
        raise ValueError(f"iterations are 1-based; got {iteration}")


class ConstantSchedule(StrictModel):
    """value(it) = value."""

    kind: Literal["constant"] = "constant"
    # the field is stored as value_ so that `value(iteration)` stays the one method every schedule has
    value_: float = Field(alias="value", allow_inf_nan=False, description="the value at every iteration")

    @model_serializer(mode="wrap")
    def _dump_as_value(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if "value_" in data:  # absent under by_alias=True or exclude
            data["value"] = data.pop("value_")
        return data

    def __repr_args__(self):
        return [("kind", self.kind), ("value", self.value_)]

    def value(self, iteration: int) -> float:
        _check_iteration(iteration)
        return float(self.value_)


class StepSchedule(StrictModel):
    """value(it) = initial · factor^floor((it - 1) / every): multiplied by factor every `every` iterations."""

    kind: Literal["step"] = "step"
    initial: float = Field(allow_inf_nan=False, description="value at iterations 1 .. every")
    factor: float = Field(gt=0, allow_inf_nan=False, description="multiplier applied every `every` iterations")
    every: int = Field(ge=1, description="number of iterations between two multiplications")

    def value(self, iteration: int) -> float:
        _check_iteration(iteration)
        return self.initial * self.factor ** ((iteration - 1) // self.every)


class _RampSchedule(StrictModel):
    """start_value up to start_iter, end_value from end_iter on, interpolated in between."""

    start_value: float = Field(allow_inf_nan=False, description="value at and before start_iter")
    end_value: float = Field(allow_inf_nan=False, description="value at and after end_iter")
    start_iter: int = Field(ge=1, description="iteration where the ramp starts (1-based)")
    end_iter: int = Field(ge=1, description="iteration where the ramp ends; must be > start_iter")

    @model_validator(mode="after")
    def _check_order(self):
        if self.end_iter <= self.start_iter:
            raise ValueError(
                f"end_iter ({self.end_iter}) must be > start_iter ({self.start_iter}); "
                "use a constant schedule for a value that never changes"
            )
        return self

    def _fraction(self, iteration: int) -> float:
        """t in [0, 1]: 0 at and before start_iter, 1 at and after end_iter."""
        _check_iteration(iteration)
        t = (iteration - self.start_iter) / (self.end_iter - self.start_iter)
        return min(1.0, max(0.0, t))


class LinearSchedule(_RampSchedule):
    """value(it) = start_value + (end_value - start_value) · t, t = (it - start_iter) / (end_iter - start_iter)."""

    kind: Literal["linear"] = "linear"

    def value(self, iteration: int) -> float:
        t = self._fraction(iteration)
        return self.start_value + (self.end_value - self.start_value) * t


class CosineSchedule(_RampSchedule):
    """value(it) = end_value + (start_value - end_value) · (1 + cos(π t)) / 2, t as in `linear`."""

    kind: Literal["cosine"] = "cosine"

    def value(self, iteration: int) -> float:
        t = self._fraction(iteration)
        return self.end_value + (self.start_value - self.end_value) * 0.5 * (1.0 + math.cos(math.pi * t))


class ExponentialSchedule(StrictModel):
    """value(it) = max(initial · rate^(it - 1), floor); floor is ignored when null."""

    kind: Literal["exponential"] = "exponential"
    initial: float = Field(allow_inf_nan=False, description="value at iteration 1")
    rate: float = Field(gt=0, allow_inf_nan=False, description="multiplier per iteration (< 1 decays, > 1 grows)")
    floor: float | None = Field(None, allow_inf_nan=False, description="lower bound of the value; null for none")

    @model_validator(mode="after")
    def _check_floor(self):
        if self.floor is not None and self.floor > self.initial:
            raise ValueError(f"floor ({self.floor}) must be <= initial ({self.initial}); lower floor or raise initial")
        return self

    def value(self, iteration: int) -> float:
        _check_iteration(iteration)
        # (it - 1) · log(rate) avoids the overflow of rate ** large_it when the floor takes over anyway
        log_scale = (iteration - 1) * math.log(self.rate)
        v = self.initial * math.exp(log_scale) if log_scale < 700 else math.copysign(math.inf, self.initial)
        return v if self.floor is None else max(v, self.floor)


class PiecewiseSchedule(StrictModel):
    """Values given at chosen iterations.

    'step': value of the last point at or before `it` (the first value before the first point).
    'linear': linear interpolation between points, clamped to the first/last value outside them."""

    kind: Literal["piecewise"] = "piecewise"
    points: list[tuple[int, float]] = Field(
        description="(iteration, value) pairs, iterations 1-based and strictly increasing; at least one pair"
    )
    interpolation: Literal["step", "linear"] = Field(
        "step", description="'step' holds each value until the next point; 'linear' interpolates between points"
    )

    @model_validator(mode="after")
    def _check_points(self):
        if not self.points:
            raise ValueError("points needs at least one (iteration, value) pair, e.g. [[1, 0.0], [5, 1.0]]")
        its = [it for it, _ in self.points]
        if its[0] < 1:
            raise ValueError(f"point iterations are 1-based; the first is {its[0]}")
        for a, b in zip(its, its[1:], strict=False):
            if b <= a:
                raise ValueError(f"point iterations must be strictly increasing; {b} follows {a}")
        if not all(math.isfinite(v) for _, v in self.points):
            raise ValueError("point values must be finite numbers")
        return self

    def value(self, iteration: int) -> float:
        _check_iteration(iteration)
        pts = self.points
        if iteration <= pts[0][0]:
            return float(pts[0][1])
        if iteration >= pts[-1][0]:
            return float(pts[-1][1])
        k = bisect.bisect_right([it for it, _ in pts], iteration) - 1
        (it0, v0), (it1, v1) = pts[k], pts[k + 1]
        if self.interpolation == "step":
            return float(v0)
        return v0 + (v1 - v0) * (iteration - it0) / (it1 - it0)


_ANY_SCHEDULE = (
    ConstantSchedule | StepSchedule | LinearSchedule | CosineSchedule | ExponentialSchedule | PiecewiseSchedule
)
Schedule = Annotated[_ANY_SCHEDULE, Field(discriminator="kind")]


def _coerce(raw: Any) -> Any:
    """Numbers become constant schedules; unknown or missing `kind` gets a message that says what to write."""
    if isinstance(raw, bool):
        raise ValueError("a schedule is a number or a mapping with 'kind'; got a boolean")
    if isinstance(raw, int | float):
        return {"kind": "constant", "value": raw}
    if isinstance(raw, str):
        # PyYAML reads `1e-3` (no dot) as a string; accept it as the number the user meant
        try:
            return {"kind": "constant", "value": float(raw)}
        except ValueError:
            raise ValueError(f"a schedule is a number or a mapping with 'kind'; got the string {raw!r}") from None
    if isinstance(raw, Mapping):
        kind = raw.get("kind")
        if kind is None:
            raise ValueError(f"a schedule mapping needs 'kind', one of: {', '.join(SCHEDULE_KINDS)}")
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind '{kind}'{did_you_mean(str(kind), SCHEDULE_KINDS)}")
        return raw
    if isinstance(raw, _ANY_SCHEDULE):
        return raw
    raise ValueError(f"a schedule is a number or a mapping with 'kind'; got {type(raw).__name__} {raw!r}")


ScheduleLike = Annotated[Schedule, BeforeValidator(_coerce)]
"""A number (constant) or a schedule mapping on input; always a ``Schedule`` after validation."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(ScheduleLike)


def as_schedule(x: Any) -> Schedule:
    """A schedule from a number, a mapping or a schedule; ConfigError with pydantic's reasons otherwise."""
    try:
        return _ADAPTER.validate_python(x)
    except ValidationError as err:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'schedule'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid schedule {x!r}: {reasons}") from None


def evaluate_schedules(named: Mapping[str, Any], iteration: int) -> dict[str, float]:
    """{name: value at `iteration`} for logging the history of every weight and learning rate.

    named: name -> schedule (or anything `as_schedule` accepts)."""
    return {name: as_schedule(s).value(iteration) for name, s in named.items()}
