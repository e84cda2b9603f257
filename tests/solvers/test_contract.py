"""The solver contract, checked for every registered solver and torch.optim optimisers: registering a solver
is all it takes to be tested here.

For each: what it cannot do is refused at config time (``ptyopt.solvers.checks``) and by ``make_solver``; frozen
tensors stay bit-identical; a ``state_dict`` round trip through torch.save continues identically; the work
count grows; the data loss falls on a tiny problem (the synthetic 4×4 scan of ``conftest``, float64)."""

import numpy as np
import pytest
import torch

from ptyopt.config import parse_config
from ptyopt.errors import ConfigError
from ptyopt.model.tensors import STATE_KEY, TENSOR_NAMES
from ptyopt.objective.losses import build_losses, loss_values
from ptyopt.solvers import SOLVERS, IterationPlan, SolverContext, make_solver
from ptyopt.solvers.base import solver_class
from ptyopt.solvers.checks import check_config

from .conftest import make_batch, random_state, simulate, training_set

NAMES = [*SOLVERS.names(), "AdamW", "SGD"]
GROUPS = [[0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]]
REFINED = ("object_amplitude", "object_phase", "probe")


def plan(problem, active, iteration=1):
    """The engine's plan: rates for every tensor with an update window, ``active`` open this iteration."""
    rates = {name: float(update.lr.value(iteration)) for name, update in problem.config.optimize.updates().items()
             if update.start_iter is not None}
    return IterationPlan(iteration, {name: name in active for name in TENSOR_NAMES}, rates, 1.0, {"single": 1.0})


def one_iteration(solver, problem, truth, active, iteration=1):
    """What the engine does with a solver of either kind in one iteration."""
    solver.start_iteration(plan(problem, active, iteration))
    if solver.kind == "full_batch":
        return solver.run_iteration(training_set(problem, truth, np.arange(16)))
    for group in GROUPS:
        solver.update(make_batch(problem, truth, group), True)
    solver.end_iteration()


def solver_on(problem, name, state):
    return make_solver(name, {}, SolverContext.of(problem, state, build_losses(problem.config.loss)))


def data_loss(problem, state, truth):
    indices = torch.arange(16)
    with torch.no_grad():
        out = problem.model(state, indices)
        return float(loss_values(build_losses(problem.config.loss), out, simulate(problem, truth, indices))["single"])


@pytest.fixture
def tiny(make_problem):
    """The synthetic problem with every tensor refinable from iteration 1 (so frozen means: not in the plan),
    a random true state, and a start with the true probe and a vacuum object."""
    problem = make_problem()
    truth = random_state(problem, seed=1)
    start = {key: value.clone() for key, value in problem.initial_state.items()}
    start["probe"] = truth["probe"].clone()
    return problem, truth, start


def raw_config(name, **sections):
    return {"data": {"path": "x.h5"}, "solver": {"name": name, **sections.pop("solver", {})}, **sections}


# what each object parametrisation refines: the weights of a deep-image-prior object replace the pixels it gives
PIXEL_TENSORS = [tensor for tensor in TENSOR_NAMES if tensor != "object_dip"]
DIP_TENSORS = [tensor for tensor in TENSOR_NAMES if tensor not in ("object_amplitude", "object_phase")]


def refining(tensors):
    """The config sections that refine ``tensors`` from iteration 1 (a DIP object for the network's weights)."""
    optimize = {tensor: {"lr": 1e-3, "start_iter": 1} for tensor in tensors}
    if "object_dip" not in tensors:
        return {"optimize": optimize}
    pixels = {tensor: {"start_iter": None} for tensor in ("object_amplitude", "object_phase") if tensor not in tensors}
    return {"optimize": {**pixels, **optimize}, "model": {"object_parametrisation": "dip"}}


@pytest.mark.parametrize("name", NAMES)
def test_what_a_solver_cannot_do_is_refused_at_config_time(name, make_problem):
    capabilities = solver_class(name).capabilities
    unsupported = [tensor for tensor in TENSOR_NAMES if tensor not in capabilities.updates]
    for tensor in unsupported:
        sections = refining([tensor])
        refusal = (rf"solver '{name}' cannot use a deep-image-prior object .*use solver.name: adam"
                   if tensor == "object_dip" else rf"solver '{name}' refines .* only; set optimize.{tensor}.start_iter")
        with pytest.raises(ConfigError, match=refusal):
            check_config(parse_config(raw_config(name, **sections)))
        problem = make_problem(optimize=sections["optimize"], **sections.get("model", {}))
        with pytest.raises(ConfigError, match=refusal if tensor == "object_dip" else
                           rf"optimize.{tensor}.start_iter: null"):
            solver_on(problem, name, {k: v.clone() for k, v in problem.initial_state.items()})
    for mode in ("global", "each"):
        raw = raw_config(name, optimize={"tilts": {"lr": 1e-3, "start_iter": 1}}, model={"tilt_mode": mode})
        if "tilts" in capabilities.updates and mode not in capabilities.tilt_modes:
            with pytest.raises(ConfigError, match=rf"solver '{name}' refines tilts only with model.tilt_mode"):
                check_config(parse_config(raw))
    if not capabilities.grad_accumulation:
        with pytest.raises(ConfigError, match="set solver.grad_accumulation: 1"):
            check_config(parse_config(raw_config(name, solver={"grad_accumulation": 2})))
    if not unsupported and capabilities.tilt_modes == {"global", "each"}:  # everything is accepted
        for tensors in (PIXEL_TENSORS, DIP_TENSORS):
            check_config(parse_config(raw_config(name, **refining(tensors))))


@pytest.mark.parametrize("name", NAMES)
def test_frozen_tensors_stay_bit_identical(name, tiny):
    problem, truth, start = tiny
    state = {key: value.clone() for key, value in start.items()}
    solver = solver_on(problem, name, state)
    one_iteration(solver, problem, truth, active=("object_phase",))
    assert not torch.equal(state["object_phase"], start["object_phase"])
    for key in start:
        if key != "object_phase":
            assert torch.equal(state[key].detach(), start[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name, tiny, tmp_path):
    problem, truth, start = tiny
    state = {key: value.clone() for key, value in start.items()}
    solver = solver_on(problem, name, state)
    one_iteration(solver, problem, truth, REFINED, iteration=1)
    torch.save(solver.state_dict(), tmp_path / "solver.pt")
    copy = {key: value.detach().clone() for key, value in state.items()}
    restored = solver_on(problem, name, copy)
    restored.load_state_dict(torch.load(tmp_path / "solver.pt", weights_only=False))
    assert restored.forward_evaluations == solver.forward_evaluations
    for run in (solver, restored):
        one_iteration(run, problem, truth, REFINED, iteration=2)
    assert restored.forward_evaluations == solver.forward_evaluations
    for key in state:
        assert torch.equal(copy[key].detach(), state[key].detach()), key


@pytest.mark.parametrize("name", NAMES)
def test_work_is_counted_and_the_loss_falls(name, tiny):
    problem, truth, start = tiny
    state = {key: value.clone() for key, value in start.items()}
    solver = solver_on(problem, name, state)
    before = data_loss(problem, start, truth)
    counts = []
    for iteration in (1, 2):
        one_iteration(solver, problem, truth, REFINED, iteration)
        counts.append(solver.forward_evaluations)
    assert counts[0] >= 16 and np.all(np.diff(counts) > 0)
    assert data_loss(problem, state, truth) < before


@pytest.mark.parametrize("name", NAMES)
def test_every_solver_is_of_one_kind_with_its_contract(name, tiny):
    problem, _, start = tiny
    assert solver_on(problem, name, {key: value.clone() for key, value in start.items()}).name == name
    cls = solver_class(name)
    method = {"mini_batch": "update", "full_batch": "run_iteration"}[cls.kind]
    assert callable(getattr(cls, method)) and set(cls.capabilities.updates) <= set(STATE_KEY)
