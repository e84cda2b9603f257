"""The numerical core of the 'lbfgs' solver (solvers/lbfgs.py): the secant memory and two-loop recursion, a
strong-Wolfe line search with cubic interpolation, the inner L-BFGS loop with relative tolerances, and the
per-block scaled variables θ_b = s_b·x̃_b with their scales. Independent of the forward model: the tests run it
on exact least-squares problems."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ptyopt.solvers.lbfgs import LBFGSParams

RawObjective = Callable[[], tuple[float, dict[str, Tensor], Any]]  # F, ∂F/∂θ_b at the tensors' current values, aux
Objective = Callable[[Tensor], tuple[float, Tensor, Any]]  # x̃ -> F, g̃, aux


# ---- the core routine: quasi-Newton directions, line search, inner loop ----------------------------------------


class SecantMemory:
    """The last ``size`` secant pairs (s, y); the tensors are never modified in place (snapshots may share them)."""

    def __init__(self, size: int):
        self.size = size
        self.pairs: list[tuple[Tensor, Tensor, float]] = []  # (s, y, 1/(yᵀs))

    def clear(self) -> None:
        self.pairs = []

    def push(self, s: Tensor, y: Tensor) -> bool:
        """Keep the pair when yᵀs > 0 (positive curvature, guaranteed by the strong Wolfe conditions)."""
        ys = float(torch.dot(y, s))
        if not ys > 1e-12 * float(torch.linalg.vector_norm(y) * torch.linalg.vector_norm(s)):
            return False
        self.pairs = [*self.pairs[-(self.size - 1):], (s, y, 1.0 / ys)] if self.size > 1 else [(s, y, 1.0 / ys)]
        return True

    def direction(self, grad: Tensor) -> Tensor:
        """d = −H·g by the two-loop recursion, H_0 = γI with γ = sᵀy/yᵀy of the newest pair."""
        q = grad.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            alpha = rho * float(torch.dot(s, q))
            q.add_(y, alpha=-alpha)
            alphas.append(alpha)
        if self.pairs:
            s, y, rho = self.pairs[-1]
            q.mul_(1.0 / (rho * float(torch.dot(y, y))))
        for (s, y, rho), alpha in zip(self.pairs, reversed(alphas), strict=True):
            beta = rho * float(torch.dot(y, q))
            q.add_(s, alpha=alpha - beta)
        return q.neg_()

    def state_dict(self) -> dict[str, Any]:
        return {"pairs": list(self.pairs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs = list(state["pairs"])


@dataclass(frozen=True)
class Trial:
    """A point x + t·d of a line search: F, g̃ and the slope F'(t) = g̃ᵀd."""

    t: float
    value: float
    grad: Tensor | None
    slope: float
    aux: Any = None


def cubic_minimiser(a: Trial, b: Trial) -> float | None:
    """Minimiser of the cubic c(z) = F_a + F'_a z + B z² + C z³ (z = t − a.t) through both points' values and
    slopes; None when it has no local minimum. c'(z) = 0 at z = −F'_a/(B + √(B² − 3C F'_a)) (the form without
    cancellation for B >= 0) or (√(B² − 3C F'_a) − B)/(3C)."""
    h = b.t - a.t
    if h == 0 or not all(map(math.isfinite, (a.value, b.value, a.slope, b.slope))):
        return None
    mean_curvature = (b.value - a.value - a.slope * h) / (h * h)  # B + C h
    slope_change = (b.slope - a.slope) / h  # 2B + 3C h
    cubic = (slope_change - 2 * mean_curvature) / h
    quadratic = 3 * mean_curvature - slope_change
    discriminant = quadratic * quadratic - 3 * cubic * a.slope
    if discriminant < 0:
        return None
    root = math.sqrt(discriminant)
    if quadratic >= 0:
        z = -a.slope / (quadratic + root) if quadratic + root > 0 else None
    else:
        z = (root - quadratic) / (3 * cubic) if cubic != 0 else None
    return None if z is None or not math.isfinite(z) else a.t + z


def strong_wolfe(phi: Callable[[float], Trial], start: Trial, t: float, c1: float, c2: float,
                 max_evals: int) -> tuple[Trial | None, int]:
    """Bracket then zoom (cubic interpolation, kept 10 % inside the bracket) until
    F(t) <= F(0) + c1·t·F'(0) and |F'(t)| <= c2·|F'(0)|. Non-finite values count as too long a step.
    Returns the Wolfe point, else the lowest point with sufficient decrease, else None; and the evaluations."""

    def decreases(trial: Trial) -> bool:
        return math.isfinite(trial.value) and trial.value <= start.value + c1 * trial.t * start.slope

    def flat(trial: Trial) -> bool:
        return math.isfinite(trial.slope) and abs(trial.slope) <= -c2 * start.slope

    evals = 0
    previous = start
    lo = hi = None
    while evals < max_evals:
        trial = phi(t)
        evals += 1
        if not decreases(trial) or (previous is not start and trial.value >= previous.value):
            lo, hi = previous, trial
            break
        if flat(trial):
            return trial, evals
        if trial.slope >= 0:
            lo, hi = trial, previous
            break
        guess = cubic_minimiser(previous, trial)
        previous, t = trial, min(max(guess if guess is not None else 4 * t, 2 * t), 10 * t)
    if hi is None:
        return (previous if previous is not start else None), evals
    while evals < max_evals:
        low, high = min(lo.t, hi.t), max(lo.t, hi.t)
        width = high - low
        if width <= 1e-12 * max(high, 1e-300):
            break
        guess = cubic_minimiser(lo, hi)
        t = 0.5 * (low + high) if guess is None else min(max(guess, low + 0.1 * width), high - 0.1 * width)
        trial = phi(t)
        evals += 1
        if not decreases(trial) or trial.value >= lo.value:
            hi = trial
        else:
            if flat(trial):
                return trial, evals
            if trial.slope * (hi.t - lo.t) >= 0:
                hi = lo
            lo = trial
    return (lo if lo is not start else None), evals


@dataclass
class Outcome:
    """End of one inner run: the accepted point, its F, g̃ and aux, the work done and why it stopped."""

    x: Tensor
    value: float
    grad: Tensor
    aux: Any
    iterations: int
    evaluations: int
    reason: Literal["gradient", "loss change", "line search", "iterations", "evaluations"]

    @property
    def converged(self) -> bool:
        return self.reason in ("gradient", "loss change", "line search")


def minimise(fun: Objective, x: Tensor, value: float, grad: Tensor, aux: Any, memory: SecantMemory,
             params: LBFGSParams, grad_reference: float, first_step: float) -> Outcome:
    """L-BFGS from x (with F = value, g̃ = grad there) for at most params.max_iter iterations.

    The direction is −H·g̃ from ``memory`` (which is updated); with an empty memory it is −g̃ with trial step
    ``first_step``, else the trial step is 1. A failed line search clears the memory and retries along −g̃ once.
    """
    evaluations = 0
    reason: Any = "iterations"
    iteration = 0
    while iteration < params.max_iter:
        if float(grad.abs().max()) <= params.grad_rtol * grad_reference:
            reason = "gradient"
            break
        if evaluations >= params.max_evals:
            reason = "evaluations"
            break
        direction = memory.direction(grad)
        slope = float(torch.dot(grad, direction))
        if not slope < 0:  # rounding in the two-loop recursion; steepest descent is always a descent direction
            memory.clear()
            direction, slope = -grad, -float(torch.dot(grad, grad))
        start = Trial(0.0, value, grad, slope)

        def phi(t: float, x: Tensor = x, direction: Tensor = direction) -> Trial:
            f, g, extra = fun(x + t * direction)
            return Trial(t, f, g, float(torch.dot(g, direction)), extra)

        budget = min(params.line_search_evals, params.max_evals - evaluations)
        trial, used = strong_wolfe(phi, start, 1.0 if memory.pairs else first_step, params.wolfe_c1,
                                   params.wolfe_c2, budget)
        evaluations += used
        if trial is None:
            if memory.pairs:  # the quasi-Newton model misled the search: forget it, try steepest descent
                memory.clear()
                continue
            reason = "line search"
            break
        iteration += 1
        step = trial.t * direction
        memory.push(step, trial.grad - grad)
        decrease = value - trial.value
        x, value, grad, aux = x + step, trial.value, trial.grad, trial.aux
        if decrease <= params.loss_rtol * abs(value):
            reason = "loss change"
            break
    return Outcome(x, value, grad, aux, iteration, evaluations, reason)


# ---- scaled variables ------------------------------------------------------------------------------------------


class ScaledBlocks:
    """Flat scaled variables x̃ of a set of tensors (complex ones through their real view): θ_b = s_b·x̃_b."""

    def __init__(self, tensors: dict[str, Tensor], scales: dict[str, float]):
        self.tensors = tensors
        self.scales = scales

    @staticmethod
    def real(tensor: Tensor) -> Tensor:
        return torch.view_as_real(tensor) if tensor.is_complex() else tensor

    def pack(self) -> Tensor:
        return torch.cat([self.real(t).detach().reshape(-1) / self.scales[n] for n, t in self.tensors.items()])

    def unpack(self, x: Tensor) -> None:
        """Write θ_b = s_b·x̃_b into the tensors in place."""
        offset = 0
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                view = self.real(tensor)
                view.copy_((self.scales[name] * x[offset: offset + view.numel()]).view_as(view))
                offset += view.numel()

    def scale_gradient(self, grads: dict[str, Tensor]) -> Tensor:
        """g̃ = s_b·∂F/∂θ_b, flat (torch's complex gradient is ∂F/∂Re + i·∂F/∂Im, i.e. the real view's gradient)."""
        return torch.cat([self.real(grads[n]).reshape(-1) * self.scales[n] for n in self.tensors])

    def objective(self, raw: RawObjective) -> Objective:
        def fun(x: Tensor) -> tuple[float, Tensor, Any]:
            self.unpack(x)
            value, grads, aux = raw()
            return value, self.scale_gradient(grads), aux

        return fun


def block_scales(mode: str, tensors: dict[str, Tensor], grads: dict[str, Tensor], raw: RawObjective,
                 step: float) -> dict[str, float]:
    """s_b per block (see the module docstring); ``grads`` are ∂F/∂θ_b at the tensors' current values. The
    curvature probes move one block at a time by δ_b and put it back; each costs one evaluation of ``raw``."""
    norms = {n: float(torch.linalg.vector_norm(ScaledBlocks.real(g))) for n, g in grads.items()}
    if mode == "none":
        return dict.fromkeys(tensors, 1.0)
    if mode == "gradient":
        return {n: 1.0 / norms[n] if norms[n] > 0 else 1.0 for n in tensors}
    curvature: dict[str, float] = {}
    for name, tensor in tensors.items():
        if not norms[name] > 0:
            continue
        view = ScaledBlocks.real(tensor)
        rms = float(torch.linalg.vector_norm(view.detach())) / math.sqrt(view.numel())
        delta = ScaledBlocks.real(grads[name]) * (-step * max(rms, 1.0) * math.sqrt(view.numel()) / norms[name])
        with torch.no_grad():
            view.add_(delta)
        try:
            _, probed, _ = raw()
        finally:
            with torch.no_grad():
                view.sub_(delta)
        change = ScaledBlocks.real(probed[name]) - ScaledBlocks.real(grads[name])
        curvature[name] = float((delta * change).sum()) / float((delta * delta).sum())
    positive = [h for h in curvature.values() if h > 0 and math.isfinite(h)]
    fallback = max(positive) if positive else 1.0
    scales = {}
    for name in tensors:
        h = curvature.get(name, fallback)
        scales[name] = 1.0 / math.sqrt(h if h > 0 and math.isfinite(h) else fallback) if positive else 1.0
    return scales
