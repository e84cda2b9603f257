"""Loss terms (registry). Each term is one class with its parameters; weights are schedules.

All data terms compare model intensities ``pred`` with measured ``meas`` (B, Ky, Kx) in the same units
(the probe is scaled to the measured total intensity) and are dimensionless.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field, ValidationError
from torch import Tensor

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.objective.schedules import ScheduleLike, as_schedule
from ptyopt.physics import window_coverage
from ptyopt.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from ptyopt.model.forward import ForwardOutput

EPS = 1e-10  # keeps p-th powers of zero intensities differentiable


@dataclass(frozen=True)
class ObjectUnderBatch:
    """The object canvases (omode, S, Yo, Xo) with how many of the batch's n_windows windows (each
    window_px) cover each pixel (``coverage`` (Yo, Xo)): enough to average any per-pixel map over the
    batch's patches without gathering them."""

    phase: Tensor
    amplitude: Tensor
    coverage: Tensor
    n_windows: int
    window_px: tuple[int, int]


class LossInputs:
    """What a loss term may look at for one batch.

    pred, meas: (B, Ky, Kx) intensities; phase_patches, amplitude_patches: (B, omode, S, Y, X) object patches
    under the batch's probes, given as tensors or as zero-argument callables evaluated when a term reads them
    (``ForwardOutput`` passes its cached gathers); occupancy: (omode,). With ``canvas``, object terms use
    ``patch_mean``, which gives the same numbers from the canvases and the window coverage at a fraction of the
    cost.
    """

    def __init__(self, pred: Tensor, meas: Tensor, phase_patches: Tensor | Callable[[], Tensor],
                 amplitude_patches: Tensor | Callable[[], Tensor], occupancy: Tensor, *,
                 canvas: ObjectUnderBatch | None = None):
        self.pred, self.meas, self.occupancy, self.canvas = pred, meas, occupancy, canvas
        self._patches = {"phase": phase_patches, "amplitude": amplitude_patches}

    def _patch(self, name: str) -> Tensor:
        value = self._patches[name]
        return value() if callable(value) else value

    @property
    def phase_patches(self) -> Tensor:
        return self._patch("phase")

    @property
    def amplitude_patches(self) -> Tensor:
        return self._patch("amplitude")

    def patch_mean(self, f: Callable[[Tensor, Tensor], Tensor], *, per_mode: bool) -> Tensor:
        """Mean of the per-pixel map f(phase, amplitude) over every pixel of every slice of the batch's patches
        (pixels under several windows count several times): (omode,) when ``per_mode`` (f keeps the object-mode
        axis, which is axis -4 of both patches and canvases), else a scalar (f may reduce that axis)."""
        if self.canvas is None:
            values = f(self.phase_patches, self.amplitude_patches)
            return values.mean(dim=(0, -3, -2, -1)) if per_mode else values.mean()
        c = self.canvas
        values = f(c.phase, c.amplitude) * c.coverage
        count = c.n_windows * c.window_px[0] * c.window_px[1] * c.phase.shape[-3]
        return (values.sum(dim=(-3, -2, -1)) if per_mode else values.sum()) / count


def loss_inputs(out: ForwardOutput, meas: Tensor) -> LossInputs:
    """The loss terms' view of a forward pass on a batch with measured patterns ``meas`` (B, K, K): the
    detected intensities, and the object canvases weighted by the batch's window coverage, on which the object
    terms give the same numbers as on the gathered patches, without the gathers."""
    phase = out.state["object_phase"]
    coverage = window_coverage(out.crop_px, out.window_px, tuple(phase.shape[-2:]), dtype=phase.dtype)
    canvas = ObjectUnderBatch(phase, out.state["object_amplitude"], coverage, len(out.crop_px), out.window_px)
    return LossInputs(out.intensities, meas, lambda: out.phase_patches, lambda: out.amplitude_patches,
                      out.occupancy, canvas=canvas)


def loss_values(terms: list[LossTerm], out: ForwardOutput, meas: Tensor) -> dict[str, Tensor]:
    """Each term's value (with its graph) on one forward pass."""
    inputs = loss_inputs(out, meas)
    return {term.name: term(inputs) for term in terms}


class LossParams(StrictModel):
    weight: ScheduleLike = Field(1.0, description="weight of the term: a number or a schedule over iterations")


class LossTerm:
    name: ClassVar[str]
    is_data_term: ClassVar[bool] = False  # a likelihood of the measured data
    fits_patterns: ClassVar[bool] = False  # a data term that compares every measured pattern with its model
    Params: ClassVar[type[LossParams]] = LossParams

    def __init__(self, params: LossParams):
        self.params = params
        self.weight = as_schedule(params.weight)

    def __call__(self, inputs: LossInputs) -> Tensor:
        raise NotImplementedError


LOSSES: Registry[type[LossTerm]] = Registry("loss term")


def _normalised_rmse(pred: Tensor, meas: Tensor, power: float) -> Tensor:
    """sqrt(mean((pred^p - meas^p)^2)) / mean(meas^p), negative values clipped."""
    meas_p = meas.clamp(min=0) ** power
    model_p = (pred.clamp(min=0) + EPS) ** power
    return torch.sqrt(torch.mean((model_p - meas_p) ** 2) + EPS**2) / meas_p.mean().clamp(min=EPS)


@LOSSES.register
class SingleLoss(LossTerm):
    """Normalised RMSE of powered intensities: sqrt(mean((pred^p - meas^p)^2)) / mean(meas^p).

    p = 0.5 compares amplitudes (the Gaussian noise model of sqrt-counts)."""

    name = "single"
    is_data_term = True
    fits_patterns = True

    class Params(LossParams):
        dp_pow: float = Field(0.5, gt=0, description="exponent p on the intensities (0.5 = amplitude)")

    def __call__(self, inputs: LossInputs) -> Tensor:
        return _normalised_rmse(inputs.pred, inputs.meas, self.params.dp_pow)


@LOSSES.register
class PoissonLoss(LossTerm):
    """Poisson negative log-likelihood per pixel, mean(pred - meas·ln(pred + eps)) / mean(meas), offset so
    that it is 0 at pred == meas. Meant for data that are electron counts."""

    name = "poisson"
    is_data_term = True
    fits_patterns = True

    def __call__(self, inputs: LossInputs) -> Tensor:
        meas = inputs.meas.clamp(min=0)
        pred = inputs.pred.clamp(min=0) + EPS
        nll = pred - meas * torch.log(pred)
        floor = meas - meas * torch.log(meas + EPS)  # the value at pred == meas: the minimum
        return torch.mean(nll - floor) / meas.mean().clamp(min=EPS)


@LOSSES.register
class PacbedLoss(LossTerm):
    """Position-averaged CBED misfit: sqrt(mean((<pred>^p - <meas>^p)^2)) / mean(<meas>^p), <.> = batch mean.

    A low power emphasises the diffuse background (thickness, tilt)."""

    name = "pacbed"
    is_data_term = True

    class Params(LossParams):
        power: float = Field(0.2, gt=0, description="exponent p on the batch-averaged intensities")

    def __call__(self, inputs: LossInputs) -> Tensor:
        return _normalised_rmse(inputs.pred.mean(dim=0), inputs.meas.mean(dim=0), self.params.power)


@LOSSES.register
class SparseLoss(LossTerm):
    """L_n norm of the object phase under the batch: sum_o occ_o · (mean |phi_o|^n)^(1/n) [rad]."""

    name = "sparse"

    class Params(LossParams):
        order: float = Field(1.0, gt=0, description="n of the L_n norm (1 = L1)")

    def __call__(self, inputs: LossInputs) -> Tensor:
        n = self.params.order
        per_mode = inputs.patch_mean(lambda phase, _: (phase.abs() + EPS).pow(n), per_mode=True).pow(1.0 / n)
        return (inputs.occupancy * per_mode).sum()


@LOSSES.register
class SimilarityLoss(LossTerm):
    """Object-mode similarity: mean over pixels of the standard deviation across object modes of occ·phi and
    occ·A. Exactly 0 with one object mode (no NaN)."""

    name = "similarity"

    def __call__(self, inputs: LossInputs) -> Tensor:
        if len(inputs.occupancy) < 2:
            return inputs.occupancy.sum() * 0.0
        weights = inputs.occupancy[:, None, None, None]  # axis -4 is the object mode

        def spread(phase: Tensor, amplitude: Tensor) -> Tensor:
            return (weights * phase).std(dim=-4, unbiased=False) + (weights * amplitude).std(dim=-4, unbiased=False)

        return inputs.patch_mean(spread, per_mode=False)


LOSSES.alias("simlar", "similarity", "a name that says what it measures")


def parse_losses(raw: Mapping[str, Any] | None) -> dict[str, LossParams]:
    """Validate the ``loss`` section {name: params}; unknown names or keys raise ConfigError with a suggestion."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"loss must be a mapping of term name -> parameters, got {type(raw).__name__}")
    parsed: dict[str, LossParams] = {}
    for name, params in (raw or {}).items():
        name = str(name)
        if name in LOSSES and LOSSES.deprecation(name):
            warnings.warn(LOSSES.deprecation(name), FutureWarning, stacklevel=2)
            name = LOSSES.canonical(name)
            if name in (raw or {}):
                raise ConfigError(f"the loss names '{name}' twice (once by its former name); keep one")
        if isinstance(params, LossParams):
            parsed[name] = params
            continue
        cls = LOSSES.get(name)
        try:
            parsed[name] = cls.Params.model_validate(params or {})
        except ValidationError as err:
            raise ConfigError(_explain(f"loss.{name}", err, list(cls.Params.model_fields))) from None
    if parsed and not any(LOSSES.get(name).is_data_term for name in parsed):
        data_terms = [n for n in LOSSES.names() if LOSSES.get(n).is_data_term]
        raise ConfigError(f"the loss needs at least one data term ({', '.join(data_terms)})")
    return parsed


def _explain(where: str, err: ValidationError, valid: list[str]) -> str:
    messages = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            messages.append(f"unknown key '{where}.{key}'{did_you_mean(str(item['loc'][-1]), valid)}")
        else:
            messages.append(f"{where}.{key}: {item['msg']}")
    return "; ".join(messages)


def build_losses(parsed: Mapping[str, LossParams]) -> list[LossTerm]:
    return [LOSSES.get(name)(params) for name, params in parsed.items()]
