"""The exit-wave solvers behind the solver interface: registry, options, config checks, checkpoints, engine."""

import numpy as np
import pytest
import torch

from ptyopt.config import parse_config
from ptyopt.errors import ConfigError
from ptyopt.objective.losses import build_losses
from ptyopt.reconstruct import run_reconstruction
from ptyopt.solvers import SOLVERS, SolverContext, make_solver
from ptyopt.solvers.base import IterationPlan, check_capabilities
from ptyopt.solvers.lsqml import LSQML
from ptyopt.solvers.pie import EPIE, MPIE, RPIE

from .conftest import make_batch, make_solver_on, random_state

NAMES = {"epie": EPIE, "rpie": RPIE, "mpie": MPIE, "lsqml": LSQML}


@pytest.mark.parametrize("name", list(NAMES))
def test_make_solver_finds_the_new_names(make_problem, name):
    problem = make_problem()
    state = {key: value.clone() for key, value in problem.initial_state.items()}
    solver = make_solver(name, {}, SolverContext.of(problem, state, build_losses(problem.config.loss)))
    assert name in SOLVERS.names()
    assert type(solver) is NAMES[name]
    assert solver.name == name


@pytest.mark.parametrize(("name", "options", "match"), [
    ("epie", {"alpah": 0.5}, "solver.options.alpah for 'epie'.*did you mean 'alpha'"),
    ("epie", {"alpha_r": 0.5}, "solver.options.alpha_r for 'epie'.*did you mean 'alpha'"),
    ("rpie", {"alpha_r": 1.5}, "solver.options.alpha_r for 'rpie'.*less than or equal to 1"),
    ("mpie", {"friction": 1.0}, "solver.options.friction"),
    ("lsqml", {"noise": "gauss"}, "solver.options.noise for 'lsqml'.*'gaussian' or 'poisson'"),
    ("lsqml", {"step_dampng": 0.1}, "did you mean 'step_damping'"),
])
def test_bad_options_are_config_errors_with_a_suggestion(make_problem, name, options, match):
    problem = make_problem()
    state = {key: value.clone() for key, value in problem.initial_state.items()}
    with pytest.raises(ConfigError, match=match):
        make_solver(name, options, SolverContext.of(problem, state, build_losses(problem.config.loss)))


@pytest.mark.parametrize(("model", "optimize", "match"), [
    ({}, {"tilts": {"lr": 1e-3, "start_iter": 1}}, "set optimize.tilts.start_iter: null"),
    ({}, {"slice_thickness": {"lr": 1e-3, "start_iter": 3}}, "optimize.slice_thickness"),
])
def test_what_the_classical_solvers_cannot_do_is_refused(make_problem, model, optimize, match):
    problem = make_problem(optimize=optimize, **model)
    for name in NAMES:
        with pytest.raises(ConfigError, match=match):
            check_capabilities(name, SOLVERS.get(name).capabilities, problem.config.optimize.updates(),
                               problem.config.model.tilt_mode, problem.config.solver.grad_accumulation)


@pytest.mark.parametrize(("name", "options"), [
    ("mpie", {"friction": 0.5, "feedback": 0.4, "momentum_every": 6}),
    ("lsqml", {"momentum": 0.5}),
])
def test_state_dict_round_trip_continues_identically(make_problem, tmp_path, name, options):
    """Save the solver state (momentum buffers included) through torch.save mid-run, restore it on a copy of the
    tensors and a new solver: both continue identically."""
    problem = make_problem(probe_modes=2)
    state, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    solver = make_solver_on(problem, name, options, state)
    groups = [[0, 5, 10, 15], [1, 6, 11], [2, 7, 12, 3], [4, 8, 9, 13, 14]]
    for group in groups[:3]:
        solver.update(make_batch(problem, truth, group), True)
    solver.end_iteration()
    torch.save(solver.state_dict(), tmp_path / "solver.pt")
    saved = torch.load(tmp_path / "solver.pt", weights_only=False)
    assert saved["momentum"]["velocity"], "the momentum buffers are part of the checkpoint"
    copy = {key: value.clone() for key, value in state.items()}
    restored = make_solver_on(problem, name, options, copy)
    restored.load_state_dict(saved)
    assert restored.forward_evaluations == solver.forward_evaluations
    for run_solver in (solver, restored):
        for group in groups:
            run_solver.update(make_batch(problem, truth, group), True)
        run_solver.end_iteration()
    for key in state:
        torch.testing.assert_close(copy[key], state[key], rtol=0, atol=0)


def test_engine_resume_reproduces_an_uninterrupted_mpie_run(synthetic_path, tmp_path):
    """4 iterations straight vs 2 + --resume 2 (checkpointed momentum): the same object."""

    def config(iterations, out):
        return parse_config({
            "data": {"path": str(synthetic_path)},
            "model": {"precision": "float64", "object_margin_px": 2, "probe_modes": 2},
            "optimize": {"probe": {"lr": 1.0, "start_iter": 2}, "positions": {"lr": 1.0, "start_iter": 3}},
            "solver": {"name": "mpie", "iterations": iterations, "batch_size": 5,
                       "options": {"momentum_every": 7}},
            "output": {"dir": str(out), "checkpoint_every": 1},
        })

    straight = run_reconstruction(config(4, tmp_path / "a"), show_progress=False)
    run_reconstruction(config(2, tmp_path / "b"), show_progress=False)
    resumed = run_reconstruction(config(4, tmp_path / "b"), show_progress=False, resume=True)
    np.testing.assert_array_equal(resumed.result.object_phase, straight.result.object_phase)
    np.testing.assert_array_equal(resumed.result.probe, straight.result.probe)
    history = straight.result.history
    assert np.all(np.diff(history["forward_evaluations"]) > 0)
    assert np.isfinite(history["single"]).all()


@pytest.mark.parametrize("name", ["epie", "lsqml"])
def test_learning_rates_only_carry_the_nan_guards_halving(make_problem, name):
    """Rates 1000× the configured ones change nothing; rates at half the configured ones (the engine's NaN guard
    after one rollback) halve the object and probe changes."""
    problem = make_problem(optimize={"object_phase": {"lr": 2e-3}, "object_amplitude": {"lr": 1e-3},
                                     "probe": {"lr": 1e-4}})
    start, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    configured = {"object_amplitude": 1e-3, "object_phase": 2e-3, "probe": 1e-4, "positions": 5e-4}
    t_start = torch.polar(start["object_amplitude"], start["object_phase"])
    changes = []
    for factor in (1.0, 1000.0, 0.5):
        state = {key: value.clone() for key, value in start.items()}
        solver = make_solver_on(problem, name, {}, state, active=("object_amplitude", "object_phase", "probe"))
        rates = {key: factor * value for key, value in configured.items()}
        # the engine scales the rates and passes the NaN guard's factor (never above 1) beside them
        solver.start_iteration(IterationPlan(1, {key: key in rates and key != "positions" for key in rates}, rates,
                                             min(factor, 1.0), {"single": 1.0}))
        solver.update(make_batch(problem, truth, [0, 5, 10, 15]), True)
        changes.append((torch.polar(state["object_amplitude"], state["object_phase"]) - t_start,
                        state["probe"] - start["probe"]))
    for full, same, half in zip(*changes, strict=True):
        torch.testing.assert_close(same, full, rtol=0, atol=0)
        torch.testing.assert_close(half, 0.5 * full, rtol=1e-10, atol=1e-12)
