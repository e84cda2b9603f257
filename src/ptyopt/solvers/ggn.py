"""Generalised Gauss-Newton (GGN) machinery of the second-order solvers (``lm``, ``ssnal``): noise models in
amplitude coordinates, matrix-free Jacobian products over fixed chunks of positions, the block-Jacobi
preconditioner, preconditioned CG and the exact per-position 2×2 Gauss-Newton steps.

The split point is after the incoherent mode sum: the inner model is the amplitude m(θ) = sqrt(I(θ) + eps)
(B, K, K) and the outer loss ℓ(m, y) is convex in m with a constant curvature h, so G = h JᵀJ (J = dm/dθ):
- gaussian (amplitude) noise: L = ½ Σ (m - sqrt(y + eps))² / S, h = 1/S;
- poisson: L = Σ (m² - y ln m² - y + y ln y) / S (the NLL of counts y with mean I + eps); its Fisher information
  in amplitude coordinates is the constant 4 (= (dI/dm)² / I), so h = 4/S and G is Fisher scoring.
S = N · P̄ (patterns × the mean measured total intensity per pattern) makes L dimensionless and dose-invariant.

Vectors are dicts {state key: tensor}; complex tensors (the probe) are vectors of R^{2n} with the inner product
Re Σ conj(a) b, which is what ``torch.func.jvp``/``vjp`` use, so no Wirtinger bookkeeping is needed. Inner
products are accumulated in float64.

Cost accounting (``evaluations``, in patterns): every model evaluation of a pattern counts 1 — a plain forward,
a forward with backward, a linearisation, a JVP, a VJP or a GGN product Gv (one per pattern per product).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ptyopt.solvers.base import Batch
from ptyopt.solvers.exitwave import damped_denominator, scatter_patches, solve_2x2

Vec = dict[str, Tensor]


# ---- vector algebra on dicts of tensors (float64 inner products) -------------------------------------------------


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def dot(a: Vec, b: Vec) -> float:
    """Re Σ conj(a) b over the keys of ``a`` (accumulated in float64)."""
    return float(sum((_real(a[k]).double() * _real(b[k]).double()).sum() for k in a))


def norm(a: Vec) -> float:
    return math.sqrt(max(dot(a, a), 0.0))


def axpy(alpha: float, x: Vec, y: Vec) -> Vec:
    """y + alpha x."""
    return {k: y[k] + alpha * x[k] for k in y}


def scaled(alpha: float, x: Vec) -> Vec:
    return {k: alpha * v for k, v in x.items()}


def zeros_like(x: Vec) -> Vec:
    return {k: torch.zeros_like(v) for k, v in x.items()}


def multiply(x: Vec, d: Vec) -> Vec:
    """Element-wise x·d with a real diagonal d (broadcast over the real and imaginary parts)."""
    return {k: x[k] * d[k] for k in x}


def divide(x: Vec, d: Vec) -> Vec:
    return {k: x[k] / d[k] for k in x}


# ---- noise models --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseModel:
    """Outer loss in amplitude coordinates. floor: eps added to the model intensity [counts/pixel];
    normaliser: S of L = Σ ℓ / S [counts]."""

    kind: str
    floor: float
    normaliser: float = 1.0

    def with_normaliser(self, normaliser: float) -> NoiseModel:
        return replace(self, normaliser=normaliser)

    @property
    def curvature(self) -> float:
        """h of G = h JᵀJ (the exact Hessian of ℓ in m for gaussian, the Fisher information for poisson)."""
        return (1.0 if self.kind == "gaussian" else 4.0) / self.normaliser

    def amplitude(self, intensities: Tensor) -> Tensor:
        return torch.sqrt(intensities.clamp(min=0) + self.floor)

    def value(self, m: Tensor, meas: Tensor) -> Tensor:
        """Σ ℓ(m, y) / S as a float64 scalar."""
        y = meas.clamp(min=0).double()
        m = m.double()
        if self.kind == "gaussian":
            terms = 0.5 * (m - torch.sqrt(y + self.floor)) ** 2
        else:
            terms = m**2 - torch.xlogy(y, m**2) - y + torch.xlogy(y, y)
        return terms.sum() / self.normaliser

    def derivative(self, m: Tensor, meas: Tensor) -> Tensor:
        """dℓ/dm / S per pixel (the residual whose pull-back is the gradient)."""
        y = meas.clamp(min=0).to(m.dtype)
        if self.kind == "gaussian":
            return (m - torch.sqrt(y + self.floor)) / self.normaliser
        return 2 * (m - y / m) / self.normaliser


# ---- the linearised model over fixed chunks -------------------------------------------------------------------


class GaussNewton:
    """J, Jᵀ and G = h JᵀJ of the amplitudes m(θ) at the state θ, over the chunks (summed).

    keys: the state tensors that vary (θ); the other state tensors are held fixed. cache: keep one
    ``torch.func.linearize`` and one VJP closure per chunk (each product then costs one linearised pass; memory
    ~2 forward passes' activations per chunk); else every product re-runs the model on the chunk. amplitudes:
    m(θ) per chunk when the caller has them already (without cache, the construction then costs nothing).
    """

    def __init__(self, model, state: dict[str, Tensor], keys: list[str], chunks: list[Batch], noise: NoiseModel,
                 *, cache: bool, amplitudes: list[Tensor] | None = None):
        self.model, self.noise, self.chunks, self.cache = model, noise, chunks, cache
        self.base = {k: v.detach() for k, v in state.items()}
        self.params = {k: self.base[k] for k in keys}
        self.evaluations = 0
        self.amplitudes: list[Tensor] = []
        self._jvps: list[Callable] = []
        self._pullbacks: list[Callable] = []
        for chunk in chunks:
            f = self.function(chunk.index_tensor)
            if cache:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # torch.fx constant-folding notices
                    m, jvp_fn = torch.func.linearize(f, self.params)
                _, pullback = torch.func.vjp(f, self.params)
                self._jvps.append(jvp_fn)
                self._pullbacks.append(pullback)
                self.count(chunk, 2)
            elif amplitudes is not None:
                m = amplitudes[len(self.amplitudes)]
            else:
                with torch.no_grad():
                    m = f(self.params)
                self.count(chunk)
            self.amplitudes.append(m.detach())

    def count(self, chunk: Batch, passes: int = 1) -> None:
        self.evaluations += passes * len(chunk.indices)

    def function(self, indices: Tensor) -> Callable[[Vec], Tensor]:
        base, model, noise = self.base, self.model, self.noise
        return lambda params: noise.amplitude(model({**base, **params}, indices).intensities)

    def _tangent(self, v: Vec) -> Vec:
        return {k: v[k] if k in v else torch.zeros_like(p) for k, p in self.params.items()}

    def jvp_chunk(self, i: int, v: Vec) -> Tensor:
        """J_c v for chunk i, (B, K, K); keys missing in v are zero."""
        self.count(self.chunks[i])
        if self.cache:
            return self._jvps[i](self._tangent(v))
        f = self.function(self.chunks[i].index_tensor)
        return torch.func.jvp(f, (self.params,), (self._tangent(v),))[1]

    def vjp_chunk(self, i: int, u: Tensor) -> Vec:
        self.count(self.chunks[i])
        if self.cache:
            return self._pullbacks[i](u)[0]
        return torch.func.vjp(self.function(self.chunks[i].index_tensor), self.params)[1](u)[0]

    def jvp(self, v: Vec) -> list[Tensor]:
        return [self.jvp_chunk(i, v) for i in range(len(self.chunks))]

    def vjp(self, us: list[Tensor]) -> Vec:
        total: Vec | None = None
        for i, u in enumerate(us):
            part = self.vjp_chunk(i, u)
            total = part if total is None else {k: total[k] + part[k] for k in total}
        return total

    def gvp(self, v: Vec, keys: list[str] | None = None) -> Vec:
        """G v = h Jᵀ J v restricted to ``keys`` (default: the keys of v); one product per pattern."""
        keys = list(v) if keys is None else keys
        h = self.noise.curvature
        total = {k: torch.zeros_like(self.params[k]) for k in keys}
        for i, chunk in enumerate(self.chunks):
            if self.cache:
                u = self._jvps[i](self._tangent(v))
                part = self._pullbacks[i](u)[0]
            else:
                f = self.function(chunk.index_tensor)
                u = torch.func.jvp(f, (self.params,), (self._tangent(v),))[1]
                part = torch.func.vjp(f, self.params)[1](u)[0]
            self.count(chunk)
            for k in keys:
                total[k] = total[k] + h * part[k]
        return total

    def residuals(self) -> list[Tensor]:
        """dℓ/dm per chunk at θ."""
        return [self.noise.derivative(m, c.meas) for m, c in zip(self.amplitudes, self.chunks, strict=True)]

    def value(self) -> float:
        """The objective L(θ) (free: the amplitudes are known)."""
        return float(sum(self.noise.value(m, c.meas) for m, c in zip(self.amplitudes, self.chunks, strict=True)))

    def gradient(self) -> Vec:
        return self.vjp(self.residuals())

    def curvature_along(self, d: Vec) -> float:
        """dᵀ G d = h ‖J d‖² (one JVP per pattern)."""
        return self.noise.curvature * sum(float((u.double() ** 2).sum()) for u in self.jvp(d))


def objective(model, state: dict[str, Tensor], chunks: list[Batch], noise: NoiseModel) -> float:
    """L(state) over the chunks, without gradients (one forward per pattern)."""
    with torch.no_grad():
        return float(sum(noise.value(noise.amplitude(model(state, c.index_tensor).intensities), c.meas)
                         for c in chunks))


# ---- preconditioned conjugate gradients -------------------------------------------------------------------------


@dataclass(frozen=True)
class CGResult:
    solution: Vec
    iterations: int
    residual_norm: float  # sqrt(rᵀ M⁻¹ r) at exit


def pcg(apply: Callable[[Vec], Vec], rhs: Vec, diagonal: Vec, *, tol: float, max_iter: int,
        x0: Vec | None = None) -> CGResult:
    """Solve A x = rhs (A symmetric positive definite, matrix-free) by CG preconditioned with diag(M) = diagonal.

    Stops when sqrt(rᵀ M⁻¹ r) <= tol or after max_iter products. A warm start x0 is kept only when it lowers the
    quadratic ½ xᵀAx - rhsᵀx below its value 0 at x = 0 (else CG starts from 0, as in Hessian-free practice).
    All inner products in float64.
    """
    x = zeros_like(rhs)
    r = dict(rhs)
    if x0 is not None and norm(x0) > 0:
        ax0 = apply(x0)
        if 0.5 * dot(x0, ax0) - dot(rhs, x0) < 0:
            x, r = dict(x0), axpy(-1.0, ax0, rhs)
    z = divide(r, diagonal)
    rz = dot(r, z)
    p = z
    iterations = 0
    while iterations < max_iter and math.sqrt(max(rz, 0.0)) > tol:
        ap = apply(p)
        iterations += 1
        curvature = dot(p, ap)
        if curvature <= 0:
            break
        alpha = rz / curvature
        x = axpy(alpha, p, x)
        r = axpy(-alpha, ap, r)
        z = divide(r, diagonal)
        rz_new = dot(r, z)
        p = axpy(rz_new / rz, p, z)
        rz = rz_new
    return CGResult(x, iterations, math.sqrt(max(rz, 0.0)))


def forcing_tolerance(gradient_norm: float, forcing_max: float) -> float:
    """η = min(forcing_max, sqrt(‖g‖)) · ‖g‖ (superlinear inexact Newton forcing; forcing_max = 0.5 in [K21])."""
    return min(forcing_max, math.sqrt(gradient_norm)) * gradient_norm


# ---- block-Jacobi preconditioner ------------------------------------------------------------------------------


def illumination(model, state: dict[str, Tensor], chunks: list[Batch], keys: list[str]) -> Vec:
    """Unscaled diagonal blocks (one forward per pattern), each ≈ diag(G) up to a scalar:
    - object amplitude of slice s: W_s = Σ_j Σ_p occ_o |ψ^s_jpo|² (the incident-wave intensity, canvas-summed);
    - object phase: W_s · A_s² (dt/dφ = i t);
    - probe: V = Σ_j Σ_o occ_o Π_s A²_jos (the object's intensity transmission under each position), all modes.
    """
    sums: Vec = {}
    with torch.no_grad():
        for chunk in chunks:
            add_illumination(sums, model(state, chunk.index_tensor, keep_waves=True), keys,
                             state["object_phase"].shape[-2:])
    return illumination_blocks(sums, state, keys)


def add_illumination(sums: Vec, forward, keys: list[str], canvas_px: tuple[int, int]) -> None:
    """Add one chunk's share of ``illumination``'s sums from a forward pass made with keep_waves (in place)."""
    waves, occupancy = forward.waves, forward.occupancy.detach()
    with torch.no_grad():
        if "object_amplitude" in keys or "object_phase" in keys:
            incident = (waves.incident.real**2 + waves.incident.imag**2).detach().sum(dim=1)  # (B, o, S, Y, X)
            w = scatter_patches(incident * occupancy[:, None, None, None], waves.crop_px, (0, 0, *canvas_px))
            sums["amplitude"] = sums.get("amplitude", 0) + w
        if "probe" in keys:
            power = (forward.amplitude_patches.detach()**2).prod(dim=2)  # (B, o, Y, X)
            sums["probe"] = sums.get("probe", 0) + (power * occupancy[:, None, None]).sum(dim=(0, 1))


def illumination_blocks(sums: Vec, state: dict[str, Tensor], keys: list[str]) -> Vec:
    """``illumination``'s blocks from its sums over the chunks."""
    blocks: Vec = {}
    if "object_amplitude" in keys:
        blocks["object_amplitude"] = sums["amplitude"]
    if "object_phase" in keys:
        blocks["object_phase"] = sums["amplitude"] * state["object_amplitude"].detach() ** 2
    if "probe" in keys:
        blocks["probe"] = sums["probe"].expand(state["probe"].shape).clone()
    return blocks


def block_diagonal(op: GaussNewton, gradient: Vec, blocks: Vec, delta: float,
                   scales: dict[str, float] | None = None) -> Vec:
    """D_b = c_b (W_b + delta max W_b), with c_b = (g_bᵀ G_bb g_b) / (g_bᵀ diag(W_b + delta max W_b) g_b) the
    Rayleigh quotient of the true GGN block along the block's gradient: makes the blocks comparable (object ~1,
    probe ~1/counts) and D ≈ diag(G) where it matters. One JVP per pattern and block, unless ``scales`` gives
    c_b (it is filled with the measured c_b when it is an empty dict)."""
    diagonal: Vec = {}
    for key, block in blocks.items():
        floored = damped_denominator(block, delta)
        if scales is not None and key in scales:
            diagonal[key] = floored * scales[key]
            continue
        g_b = {key: gradient[key]}
        denominator = dot(g_b, multiply(g_b, {key: floored}))
        numerator = op.curvature_along(g_b) if denominator > 0 else 0.0
        scale = numerator / denominator if numerator > 0 else 1.0
        if scales is not None:
            scales[key] = scale
        diagonal[key] = floored * scale
    return diagonal


# ---- exact 2×2 Gauss-Newton steps per position -------------------------------------------------------------------


def per_position_system(op: GaussNewton, key: str) -> tuple[Tensor, Tensor, Tensor]:
    """Per-position normal equations of a per-position tensor ``key`` (N, 2) (position offsets, tilts 'each').

    Pattern j depends only on row j, so the JVPs with tangents 'all column-0 entries = 1' and 'all column-1
    entries = 1' are the per-pattern Jacobian columns a_0, a_1 (two JVPs per pattern). Returns the indices (n,),
    G_j = h [a_a·a_b] (n, 2, 2) and g_j = [a_a·r_j] (n, 2) (r = dℓ/dm) over all chunks, in float64.
    """
    h = op.noise.curvature
    ones = torch.zeros_like(op.params[key])
    grams, rhs = [], []
    columns = []
    for axis in range(2):
        tangent = ones.clone()
        tangent[:, axis] = 1
        columns.append(op.jvp({key: tangent}))
    for i, residual in enumerate(op.residuals()):
        a = torch.stack([columns[0][i], columns[1][i]], dim=1).double()  # (B, 2, K, K)
        grams.append(h * torch.einsum("bayx,bcyx->bac", a, a))
        rhs.append(torch.einsum("bayx,byx->ba", a, residual.double()))
    indices = torch.cat([c.index_tensor for c in op.chunks])
    return indices, torch.cat(grams), torch.cat(rhs)


def per_position_steps(gram: Tensor, rhs: Tensor, damping: float, max_step: float) -> Tensor:
    """δ_j = -(G_j + damping·diag(G_j) + 1e-12·tr G_j)⁻¹ g_j (n, 2), each entry clipped to ±max_step."""
    diagonal = gram.diagonal(dim1=-2, dim2=-1)
    floor = 1e-12 * diagonal.sum(-1, keepdim=True) + torch.finfo(gram.dtype).tiny
    return solve_2x2(gram, -rhs, damping * diagonal + floor).clamp(-max_step, max_step)
