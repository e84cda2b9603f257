"""GGN machinery against the explicit Jacobian of a tiny float64 multislice problem (2 slices, 2 probe modes,
4 positions, 16-px detector): G v = h JᵀJ v, g = Jᵀ r, the PCG solve of (G + λD) δ = -g, the 2×2 position steps."""

import numpy as np
import pytest
import torch

from ptyopt.solvers.base import Batch
from ptyopt.solvers.ggn import (
    GaussNewton,
    NoiseModel,
    block_diagonal,
    dot,
    illumination,
    pcg,
    per_position_steps,
    per_position_system,
)

from .conftest import random_state, simulate

KEYS = ["object_amplitude", "object_phase", "probe", "position_offsets_px"]
INDICES = [0, 1, 4, 5]


def flatten(vec, keys):
    return torch.cat([(torch.view_as_real(vec[k]) if vec[k].is_complex() else vec[k]).reshape(-1) for k in keys])


def unflatten(x, like, keys):
    out, start = {}, 0
    for k in keys:
        t = like[k]
        shape = (*t.shape, 2) if t.is_complex() else t.shape
        size = int(np.prod(shape))
        part = x[start : start + size].reshape(shape)
        out[k] = torch.view_as_complex(part) if t.is_complex() else part
        start += size
    return out


@pytest.fixture
def setup(make_problem):
    """A problem, a state away from the truth (positions off the integer grid), measured data of the truth,
    the linearisation (cached and not) and the explicit Jacobian of m = sqrt(I + eps) w.r.t. the real-flattened
    parameters."""
    problem = make_problem(n_slices=2, probe_modes=2)
    truth = random_state(problem, seed=1)
    state = random_state(problem, seed=2, phase_rad=0.3)
    state["position_offsets_px"] = 0.3 * torch.rand(state["position_offsets_px"].shape, dtype=torch.float64) - 0.15
    indices = torch.tensor(INDICES)
    meas = simulate(problem, truth, indices)
    chunks = [Batch(indices[:2].numpy(), indices[:2], meas[:2]), Batch(indices[2:].numpy(), indices[2:], meas[2:])]
    return problem, state, chunks


def explicit_jacobian(problem, state, chunks, noise, keys):
    params = {k: state[k] for k in keys}
    indices = torch.cat([c.index_tensor for c in chunks])

    def f(x):
        merged = {**state, **unflatten(x, params, keys)}
        return noise.amplitude(problem.model(merged, indices).intensities).reshape(-1)

    return torch.autograd.functional.jacobian(f, flatten(params, keys))


@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
@pytest.mark.parametrize("cache", [True, False])
def test_ggn_product_and_gradient_match_the_explicit_jacobian(setup, kind, cache):
    problem, state, chunks = setup
    noise = NoiseModel(kind, 1e-3, normaliser=7.0)
    op = GaussNewton(problem.model, state, KEYS, chunks, noise, cache=cache)
    jacobian = explicit_jacobian(problem, state, chunks, noise, KEYS)
    generator = torch.Generator().manual_seed(3)
    v = {k: torch.randn(state[k].shape, dtype=state[k].dtype, generator=generator) for k in KEYS}
    expected = noise.curvature * jacobian.T @ (jacobian @ flatten(v, KEYS))
    got = flatten(op.gvp(v), KEYS)
    assert torch.linalg.vector_norm(got - expected) < 1e-10 * torch.linalg.vector_norm(expected)
    residual = torch.cat([r.reshape(-1) for r in op.residuals()])
    expected_gradient = jacobian.T @ residual
    gradient = flatten(op.gradient(), KEYS)
    assert torch.linalg.vector_norm(gradient - expected_gradient) < 1e-10 * torch.linalg.vector_norm(expected_gradient)
    # the GGN is symmetric positive semidefinite
    g_dense = noise.curvature * jacobian.T @ jacobian
    eigenvalues = torch.linalg.eigvalsh(g_dense)
    assert eigenvalues.min() > -1e-12 * eigenvalues.max()


@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
def test_pcg_solves_the_damped_system(setup, kind):
    """PCG on (G + λD) δ = -g (object amplitude, phase, probe) run to a tight tolerance equals the dense solve."""
    problem, state, chunks = setup
    keys = KEYS[:3]
    noise = NoiseModel(kind, 1e-3, normaliser=50.0)
    op = GaussNewton(problem.model, state, keys, chunks, noise, cache=True)
    gradient = op.gradient()
    diagonal = block_diagonal(op, gradient, illumination(problem.model, state, chunks, keys), 0.1)
    damping = 1e-2

    def apply(v):
        return {k: p + damping * diagonal[k] * v[k] for k, p in op.gvp(v).items()}

    rhs = {k: -gradient[k] for k in keys}
    result = pcg(apply, rhs, diagonal, tol=1e-14 * np.sqrt(dot(rhs, rhs)), max_iter=3000)
    jacobian = explicit_jacobian(problem, state, chunks, noise, keys)
    d_flat = torch.cat([(torch.stack([diagonal[k], diagonal[k]], dim=-1) if state[k].is_complex() else diagonal[k])
                        .reshape(-1) for k in keys])  # D acts on the real and imaginary parts alike
    system = noise.curvature * jacobian.T @ jacobian + damping * torch.diag(d_flat)
    expected = torch.linalg.solve(system, -flatten(gradient, keys))
    got = flatten(result.solution, keys)
    assert torch.linalg.vector_norm(got - expected) < 1e-8 * torch.linalg.vector_norm(expected)
    # warm-started from the solution, CG has nothing left to do
    again = pcg(apply, rhs, diagonal, tol=1e-6 * np.sqrt(dot(rhs, rhs)), max_iter=5, x0=result.solution)
    assert again.iterations == 0


def test_per_position_steps_match_the_explicit_jacobian(setup):
    """The damped 2×2 Gauss-Newton step of each position equals the solve with its two explicit Jacobian columns."""
    problem, state, chunks = setup
    noise = NoiseModel("gaussian", 1e-3, normaliser=3.0)
    key = "position_offsets_px"
    op = GaussNewton(problem.model, state, [key], chunks, noise, cache=False)
    indices, gram, rhs = per_position_system(op, key)
    damping = 0.3
    steps = per_position_steps(gram, rhs, damping, max_step=100.0)
    jacobian = explicit_jacobian(problem, state, chunks, noise, [key])  # (B·K·K, N·2)
    residual = torch.cat([r.reshape(-1) for r in op.residuals()])
    pixels = chunks[0].meas[0].numel()
    assert steps.abs().max() > 1e-4  # the positions are off the truth: the steps are not trivial
    for row, index in enumerate(indices.tolist()):
        rows = slice(row * pixels, (row + 1) * pixels)
        columns = jacobian[rows, 2 * index : 2 * index + 2]
        g_j = noise.curvature * columns.T @ columns
        system = g_j + torch.diag(damping * g_j.diagonal() + 1e-12 * g_j.trace())
        expected = torch.linalg.solve(system, -(columns.T @ residual[rows]))
        torch.testing.assert_close(steps[row], expected, rtol=1e-10, atol=1e-14)
        # other positions do not affect this pattern
        others = torch.ones(jacobian.shape[1], dtype=torch.bool)
        others[2 * index : 2 * index + 2] = False
        assert jacobian[rows][:, others].abs().max() == 0
