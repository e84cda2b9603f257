"""Constraints between iterations: the common interface, the registry, parsing and the fixed execution order.

A constraint is an in-place operation on the optimisable state, run once per iteration after all mini-batches,
under ``torch.no_grad``. Each one has its own schedule window (start_iter, step, end_iter). Nothing runs unless
the config names it: an empty ``constraints`` section applies nothing ("no hidden regularisation").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field, ValidationError, model_validator
from torch import Tensor

if TYPE_CHECKING:
    from ptyopt.model.scan_model import ScanModel

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.registry import Registry, did_you_mean

State = MutableMapping[str, Tensor]

# Order of application within one iteration: probe first, then object, then positions and tilts. The mask comes
# before the orthogonalisation (which re-sorts the modes) and the fixed intensity restores the power the mask
# removed; positivity and thresholds come after the filters so that their bounds hold at the end.
EXECUTION_ORDER: tuple[str, ...] = (
    "probe_fourier_mask",
    "probe_orthogonalize",
    "probe_fixed_intensity",
    "object_blur",
    "object_z_blur",
    "kr_filter",
    "kz_filter",
    "amplitude_phase_coupling",
    "object_z_recenter",
    "amplitude_threshold",
    "phase_positive",
    "scan_model_fit",
    "position_recenter",
    "tilt_smooth",
)


class ConstraintWindow(StrictModel):
    """When a constraint runs: at iterations start_iter, start_iter + step, ... before end_iter."""

    start_iter: int = Field(1, ge=1, description="first iteration (1-based) at which the constraint runs")
    step: int = Field(1, ge=1, description="run every `step` iterations from start_iter")
    end_iter: int | None = Field(None, description="iteration from which it no longer runs (exclusive); null: never")

    @model_validator(mode="after")
    def _window_not_empty(self) -> ConstraintWindow:
        if self.end_iter is not None and self.end_iter <= self.start_iter:
            raise ValueError(
                f"end_iter ({self.end_iter}) must be larger than start_iter ({self.start_iter}); "
                "remove the constraint to switch it off"
            )
        return self


@dataclass(frozen=True, eq=False)
class ConstraintContext:
    """What a constraint may need besides the state, fixed for one application.

    iteration: 1-based; dx_ang: real-space pixel of probe and object [Å]; wavelength_ang [Å];
    conv_angle_mrad: aperture semi-angle [mrad]; probe_power: target sum |P|^2 fixed at initialisation;
    scan_shape: raster (Ny, Nx) with n = iy * Nx + ix, or None for a non-raster scan;
    scan_mask: (Yo, Xo) bool, the scanned region of the object canvas, or None (the whole canvas);
    refined: the ``optimize`` tensors refined at this iteration (a constraint changes no frozen tensor);
    scan_model: the run's ``model.scan_model.ScanModel`` (the global scan model's design), or None.
    """

    iteration: int
    dx_ang: float
    wavelength_ang: float
    conv_angle_mrad: float
    probe_power: float
    scan_shape: tuple[int, int] | None = None
    scan_mask: Tensor | None = None
    refined: frozenset[str] = frozenset()
    scan_model: ScanModel | None = None

    def __post_init__(self) -> None:
        if self.iteration < 1:
            raise ValueError(f"iteration is 1-based, got {self.iteration}")


class Constraint(ABC):
    """One in-place operation on the state. Subclasses set ``name`` and a nested ``Params(ConstraintWindow)``."""

    name: ClassVar[str]
    edits: ClassVar[tuple[str, ...]]  # the state keys apply() may change; every registered constraint declares them
    Params: ClassVar[type[ConstraintWindow]] = ConstraintWindow

    def __init__(self, params: ConstraintWindow) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} expects {self.Params.__qualname__}, got {type(params).__name__}")
        self.params = params

    def active(self, iteration: int) -> bool:
        """True at iteration >= start_iter with (iteration - start_iter) % step == 0 and iteration < end_iter."""
        p = self.params
        if iteration < p.start_iter or (iteration - p.start_iter) % p.step != 0:
            return False
        return p.end_iter is None or iteration < p.end_iter

    @classmethod
    def edited_keys(cls, params: ConstraintWindow) -> frozenset[str]:
        """The state keys ``apply`` may change with ``params`` (``edits``, narrowed where a parameter says what)."""
        return frozenset(cls.edits)

    @abstractmethod
    def apply(self, state: State, ctx: ConstraintContext) -> None:
        """Modify the state in place (the caller holds torch.no_grad)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def _has_a_place(cls: type[Constraint]) -> None:
    if cls.name not in EXECUTION_ORDER:
        raise RuntimeError(f"constraint '{cls.name}' has no place in EXECUTION_ORDER")
    if not getattr(cls, "edits", ()):
        raise RuntimeError(f"constraint '{cls.name}' does not declare the state keys it edits (class attribute edits)")


CONSTRAINTS: Registry[type[Constraint]] = Registry("constraint", check=_has_a_place)


def require(state: State, key: str, constraint: str) -> Tensor:
    """state[key], or a ConfigError naming the constraint that needs it."""
    try:
        return state[key]
    except KeyError:
        raise ConfigError(f"constraint '{constraint}' needs '{key}' in the state; remove the constraint") from None


def assign(target: Tensor, value: Tensor) -> None:
    """In-place update that keeps the tensor object (optimisers hold references to it)."""
    target.copy_(value.to(target.dtype))


def _explain(name: str, cls: type[Constraint], err: ValidationError) -> str:
    valid = list(cls.Params.model_fields)
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown parameter '{key}' of constraint '{name}'{did_you_mean(key, valid)}")
        elif item["type"] == "value_error":
            parts.append(f"constraint '{name}': {item.get('ctx', {}).get('error', item['msg'])}")
        else:
            parts.append(f"constraint '{name}': {key}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(parts)


def parse_constraints(raw: Mapping[str, Mapping | ConstraintWindow | None]) -> dict[str, ConstraintWindow]:
    """Validate each entry with its constraint's Params; null means all defaults.

    Raises ConfigError for an unknown constraint or parameter, with the closest valid name. Entries that are
    already validated Params pass through, so parsing is idempotent.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"constraints must be a mapping of name -> parameters, got {type(raw).__name__}")
    parsed: dict[str, ConstraintWindow] = {}
    for name, entry in raw.items():
        cls = CONSTRAINTS.get(str(name))
        if isinstance(entry, cls.Params):
            parsed[name] = entry
            continue
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"constraint '{name}' takes a mapping of parameters (or null for the defaults), "
                f"got {type(entry).__name__}"
            )
        try:
            parsed[name] = cls.Params.model_validate(dict(entry))
        except ValidationError as err:
            raise ConfigError(_explain(name, cls, err)) from None
    return parsed


def build_constraints(parsed: Mapping[str, ConstraintWindow]) -> list[Constraint]:
    """Instantiate the configured constraints in EXECUTION_ORDER, whatever the order of the config."""
    for name in parsed:
        CONSTRAINTS.get(name)
    return [CONSTRAINTS.get(name)(parsed[name]) for name in EXECUTION_ORDER if name in parsed]


def apply_constraints(constraints: Iterable[Constraint], state: State, ctx: ConstraintContext) -> list[str]:
    """Apply the constraints active at ctx.iteration, in the given order, in place; return their names."""
    applied = []
    with torch.no_grad():
        for constraint in constraints:
            if constraint.active(ctx.iteration):
                constraint.apply(state, ctx)
                applied.append(constraint.name)
    return applied
