"""SSNAL: the proximal Gauss-Newton subproblem against its KKT conditions and a long FISTA run on the explicit
linearised problem; the ssnal solver end to end on sto-tiny; option errors."""

import math

import numpy as np
import pytest
import torch

from ptyopt.config import parse_config
from ptyopt.errors import ConfigError
from ptyopt.solvers.base import Batch
from ptyopt.solvers.checks import check_config
from ptyopt.solvers.ggn import GaussNewton, NoiseModel, block_diagonal, illumination
from ptyopt.solvers.ssnal import proximal_subproblem, ssnal

from .conftest import make_solver_on, random_state, simulate

KEYS = ["object_amplitude", "object_phase"]


def flat(vec):
    return torch.cat([vec[k].reshape(-1) for k in KEYS])


def explicit_problem(problem, state, chunks, noise, diagonal):
    """A = [√h J D^-½ ; √μ I] as a dense matrix (without the √μ rows) and b, from the explicit Jacobian."""
    params = {k: state[k] for k in KEYS}
    sizes = [params[k].numel() for k in KEYS]
    indices = torch.cat([c.index_tensor for c in chunks])

    def f(x):
        parts = dict(zip(KEYS, (p.reshape(params[k].shape) for k, p in zip(KEYS, x.split(sizes), strict=True)),
                         strict=True))
        return noise.amplitude(problem.model({**state, **parts}, indices).intensities).reshape(-1)

    jacobian = torch.autograd.functional.jacobian(f, flat(params))
    scale = flat({k: diagonal[k].rsqrt() for k in KEYS})
    return math.sqrt(noise.curvature) * jacobian * scale[None, :]


def prox_flat(v, t, weights, centre, lower, upper, n_amplitude):
    """Independent prox of t·p: clamp on the amplitude part, shifted soft threshold on the phase part."""
    amplitude = torch.minimum(torch.maximum(v[:n_amplitude], lower), upper)
    shifted = centre + v[n_amplitude:]
    phase = torch.sign(shifted) * (shifted.abs() - t * weights).clamp(min=0) - centre
    return torch.cat([amplitude, phase])


def _subproblem(problem):
    """A proximal Gauss-Newton subproblem on 4 positions: L1 on the phase, an upper bound on the amplitude."""
    truth = random_state(problem, seed=1)
    state = random_state(problem, seed=2, phase_rad=0.3)
    indices = torch.tensor([0, 1, 4, 5])
    meas = simulate(problem, truth, indices)
    chunks = [Batch(indices[:2].numpy(), indices[:2], meas[:2]), Batch(indices[2:].numpy(), indices[2:], meas[2:])]
    noise = NoiseModel("gaussian", 1e-3, normaliser=4 * problem.probe_power)
    op = GaussNewton(problem.model, state, KEYS, chunks, noise, cache=True)
    gradient = op.gradient()
    diagonal = block_diagonal(op, gradient, illumination(problem.model, state, chunks, KEYS), 0.1)
    weights = torch.full_like(state["object_phase"], 2e-4)
    mu = 0.05
    lasso, prox, inverse_root = proximal_subproblem(op, diagonal, KEYS, state, weights, (None, 0.95), mu)
    start = prox.prox({k: torch.zeros_like(state[k]) for k in KEYS}, 0.0)
    return state, chunks, noise, op, diagonal, weights, mu, lasso, prox, inverse_root, start


def test_subproblem_stops_when_its_kkt_residual_stalls(make_problem):
    """A tolerance below the dtype's round-off floor: SSNAL stops after stall_alm ALM steps without a 10 % gain,
    not at max_alm, with the residual it reached meanwhile."""
    *_, lasso, prox, _, start = _subproblem(make_problem())
    result = ssnal(lasso, prox, start, tol=1e-30, max_alm=100, stall_alm=3)
    assert result.stalled and result.alm_iterations <= 20  # 12 here: the float64 floor is reached near 5e-15
    assert result.kkt < 1e-13
    converged = ssnal(lasso, prox, start, tol=1e-10)
    assert not converged.stalled and converged.kkt < 1e-10


def test_subproblem_meets_kkt_and_matches_fista(make_problem):
    problem = make_problem()
    state, chunks, noise, op, diagonal, weights, mu, lasso, prox, inverse_root, start = _subproblem(problem)
    result = ssnal(lasso, prox, start, tol=1e-10)
    assert result.kkt < 1e-10

    # the same problem written out densely
    k_matrix = explicit_problem(problem, state, chunks, noise, diagonal)
    b = -torch.cat([r.reshape(-1) for r in op.residuals()]) / math.sqrt(noise.curvature)
    n_amp = state["object_amplitude"].numel()
    s_phase = inverse_root["object_phase"].reshape(-1)
    phase_weights, centre = weights.reshape(-1) * s_phase, state["object_phase"].reshape(-1) / s_phase
    upper = (0.95 - state["object_amplitude"].reshape(-1)) / inverse_root["object_amplitude"].reshape(-1)
    lower = torch.full_like(upper, -torch.inf)
    hessian = k_matrix.T @ k_matrix + mu * torch.eye(k_matrix.shape[1], dtype=torch.float64)
    linear = k_matrix.T @ b

    zeta = flat(result.solution)
    kkt = torch.linalg.vector_norm(
        zeta - prox_flat(zeta - (hessian @ zeta - linear), 1.0, phase_weights, centre, lower, upper, n_amp)
    ) / (1 + torch.linalg.vector_norm(zeta))
    assert kkt < 1e-8

    lipschitz = float(torch.linalg.eigvalsh(hessian).max())
    x = y = torch.zeros_like(zeta)
    t = 1.0
    for _ in range(3000):
        x_new = prox_flat(y - (hessian @ y - linear) / lipschitz, 1 / lipschitz, phase_weights, centre, lower, upper,
                          n_amp)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_new + (t - 1) / t_new * (x_new - x)
        x, t = x_new, t_new
    assert torch.linalg.vector_norm(zeta - x) < 1e-7 * torch.linalg.vector_norm(x)
    zeros = (centre + zeta[n_amp:]) == 0
    assert torch.equal(zeros, (centre + x[n_amp:]) == 0)
    lit = diagonal["object_phase"].reshape(-1) > 1.01 * diagonal["object_phase"].min()  # illuminated pixels
    assert 0.05 < zeros[lit].double().mean() < 0.95  # the L1 term matters: some, not all, phases are zero
    at_bound = zeta[:n_amp] >= upper
    assert torch.equal(at_bound, x[:n_amp] >= upper - 1e-12) and at_bound.any()


FROZEN = {"lr": 1.0, "start_iter": None}


@pytest.mark.abtem
def test_ssnal_is_monotone_and_sparser_than_lm(tiny_config):
    """Object-only sto-tiny (true probe and positions, float32), both from the true object, 2 iterations each.
    ssnal with loss.sparse (weight 1e-3, order 1) as its L1 term and inexact subproblem solves (at most
    3 ALM × 4 Newton steps × 15 CG products, to keep the test short): its objective L + P never rises and it
    ends with a smaller phase L1 norm than lm without the L1 term."""
    from ptyopt.engine import Engine
    from ptyopt.problem import build_problem

    runs = {}
    for name, loss in (("ssnal", {"single": {}, "sparse": {"weight": 1e-3}}), ("lm", {"single": {}})):
        options = {"max_alm": 3, "max_newton": 4, "cg_max_iter": 15} if name == "ssnal" else {}
        config = tiny_config(model={"probe_init": "truth", "positions_init": "truth", "object_init": "truth"},
                             optimize={"probe": FROZEN, "positions": FROZEN},
                             solver={"name": name, "iterations": 2, "batch_size": 16, "options": options}, loss=loss)
        engine = Engine(build_problem(config), config.output.dir)
        engine.run(show_progress=False)
        runs[name] = engine
    history = np.array(runs["ssnal"].solver.objective_history)
    assert np.isfinite(history).all() and len(history) == 3
    assert (np.diff(history) <= 0).all()
    assert history[-1] < history[0]
    l1 = {name: float(engine.state["object_phase"].abs().sum()) for name, engine in runs.items()}
    costs = {name: engine.solver.forward_evaluations for name, engine in runs.items()}
    print(f"ssnal objective {history}, phase L1 ssnal {l1['ssnal']:.4g} lm {l1['lm']:.4g}, evaluations {costs}")
    assert l1["ssnal"] < 0.9 * l1["lm"]


def test_unknown_option_and_bad_sparse_order_are_config_errors(make_problem):
    problem = make_problem()
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    with pytest.raises(ConfigError, match="did you mean 'l1_weight'"):
        make_solver_on(problem, "ssnal", {"l1_weigth": 1.0}, state)
    with pytest.raises(ConfigError, match="amplitude_min"):
        make_solver_on(problem, "ssnal", {"amplitude_min": 1.0, "amplitude_max": 0.5}, state)
    raw = {"data": {"path": "x.h5"}, "loss": {"single": {}, "sparse": {"order": 2.0}}, "solver": {"name": "ssnal"}}
    with pytest.raises(ConfigError, match="loss.sparse.order: 1"):
        check_config(parse_config(raw))
