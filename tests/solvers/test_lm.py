"""lm: monotone objective and a final data loss at least as low as Adam's on object-only sto-tiny at the same
number of forward evaluations; cost accounting; option errors."""

import math

import numpy as np
import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.objective.losses import LossInputs

from .conftest import make_solver_on, random_state, training_set

FROZEN = {"lr": 1.0, "start_iter": None}
OBJECT = ("object_amplitude", "object_phase")


def full_data_loss(engine) -> float:
    """The configured 'single' term on all training patterns at once, at the final state."""
    indices = torch.as_tensor(engine.train_indices)
    term = next(t for t in engine.losses if t.name == "single")
    with torch.no_grad():
        out = engine.problem.model(engine.state, indices)
        inputs = LossInputs(out.intensities, engine.fetch(engine.train_indices, indices), out.phase_patches,
                            out.amplitude_patches, out.occupancy)
        return float(term(inputs))


@pytest.mark.abtem
def test_lm_is_monotone_and_beats_adam_at_equal_forward_evaluations(tiny_config):
    """Object only (true probe and positions, vacuum start), batches of 16. lm: 6 iterations of one LM step each;
    Adam: as many iterations as give the same number of forward evaluations (patterns through the model), at
    its best of three learning rates. lm's objective never rises and its final 'single' loss is <= Adam's."""
    from ptyopt.engine import Engine
    from ptyopt.problem import build_problem

    def run(name, iterations, lr=1.0):
        config = tiny_config(model={"probe_init": "truth", "positions_init": "truth"},
                             optimize={"probe": FROZEN, "positions": FROZEN, "object_phase": {"lr": lr},
                                       "object_amplitude": {"lr": lr}},
                             solver={"name": name, "iterations": iterations, "batch_size": 16})
        engine = Engine(build_problem(config), config.output.dir)
        engine.run(show_progress=False)
        return engine

    lm = run("lm", 6)
    history = np.array(lm.solver.objective_history)
    assert np.isfinite(history).all() and len(history) == 7
    assert (np.diff(history) <= 0).all()
    assert history[-1] < 0.05 * history[0]
    evaluations = lm.solver.forward_evaluations
    assert evaluations == lm.loop.history["forward_evaluations"][-1]
    n = len(lm.train_indices)
    adam_iterations = math.ceil(evaluations / n)
    adam = {lr: run("adam", adam_iterations, lr) for lr in (1e-3, 3e-3, 1e-2)}
    assert all(engine.solver.forward_evaluations >= evaluations for engine in adam.values())
    best_adam = min(full_data_loss(engine) for engine in adam.values())
    print(f"lm {full_data_loss(lm):.5g} ({evaluations} evaluations, {lm.loop.elapsed_s:.1f} s); adam "
          + ", ".join(f"lr {lr}: {full_data_loss(e):.5g} ({e.loop.elapsed_s:.1f} s)" for lr, e in adam.items()))
    assert full_data_loss(lm) <= best_adam


def test_forward_evaluations_follow_the_documented_count(make_problem):
    """One iteration, object and probe, 16 patterns, no cache: N (value, gradient and the preconditioner's
    illumination, one pass; the linearisation reuses its amplitudes) + 3N (block scales: amplitude, phase, probe)
    + N·n_CG + N (pred) + N (trial)."""
    problem = make_problem()
    truth = random_state(problem, seed=1)
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    active = ("object_amplitude", "object_phase", "probe")
    solver = make_solver_on(problem, "lm", {"cg_max_iter": 3, "max_rejections": 0}, state, active=active)
    solver.run_iteration(training_set(problem, truth, np.arange(16)))
    n = 16
    assert 1 <= solver.cg_iterations <= 3
    assert solver.forward_evaluations == n * (1 + 3 + solver.cg_iterations + 1 + 1)
    assert solver.objective_history[1] < solver.objective_history[0]


def test_mini_batch_steps_follow_the_documented_count(make_problem):
    """step_patterns 8 on 16 patterns in chunks of 4: two groups of two chunks, each with its own ratio-tested step;
    block_scales every_iteration measures the two object blocks' scales on the first group only. Work: N (value,
    gradient, illumination) + 2·8 (scales, first group) + 8·n_CG + N (pred) + N (trial); both steps lower the
    objective on the whole set."""
    from dataclasses import replace

    from ptyopt.solvers import IterationPlan, SolverContext, make_solver
    from ptyopt.solvers.ggn import objective

    problem = make_problem()
    truth = random_state(problem, seed=1)
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    state["probe"] = truth["probe"].clone()
    context = replace(SolverContext.of(problem, state, []), batch_size=4)
    solver = make_solver("lm", {"step_patterns": 8, "block_scales": "every_iteration", "max_rejections": 0}, context)
    solver.start_iteration(IterationPlan.simple(OBJECT))
    training = training_set(problem, truth, np.arange(16))
    chunks = training.chunks(16)
    noise = solver.noise.with_normaliser(16 * problem.probe_power)
    before = objective(problem.model, state, chunks, noise)
    solver.run_iteration(training)
    assert len(solver.objective_history) == 3  # the first group's start, then one step per group
    assert solver.forward_evaluations == 16 + 2 * 8 + 8 * solver.cg_iterations + 16 + 16
    assert set(solver.scales) == {"object_amplitude", "object_phase"}
    assert objective(problem.model, state, chunks, noise) < before


def test_ssnal_refuses_mini_batch_steps(synthetic_path):
    from ptyopt.config import parse_config
    from ptyopt.solvers.checks import check_config

    config = parse_config({"data": {"path": str(synthetic_path)},
                           "solver": {"name": "ssnal", "options": {"step_patterns": 16}}})
    with pytest.raises(ConfigError, match="full-batch"):
        check_config(config)


def test_amplitude_bound_is_kept(make_problem):
    """With amplitude_max the projected steps never exceed it, and the objective still decreases."""
    problem = make_problem()
    truth = random_state(problem, seed=1)
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    state["probe"] = truth["probe"].clone()
    solver = make_solver_on(problem, "lm", {"amplitude_max": 1.0, "outer_steps": 3}, state, active=OBJECT)
    solver.run_iteration(training_set(problem, truth, np.arange(16)))
    assert float(state["object_amplitude"].max()) <= 1.0
    assert (np.diff(solver.objective_history) <= 0).all() and solver.objective_history[-1] < solver.objective_history[0]


def test_bad_options_are_config_errors(make_problem):
    problem = make_problem()
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    with pytest.raises(ConfigError, match="did you mean 'cg_max_iter'"):
        make_solver_on(problem, "lm", {"cg_max_iters": 5}, state)
    with pytest.raises(ConfigError, match="noise"):
        make_solver_on(problem, "lm", {"noise": "gauss"}, state)
    with pytest.raises(ConfigError, match="damping_min"):
        make_solver_on(problem, "lm", {"damping_min": 1.0, "damping_max": 0.1}, state)
    with pytest.raises(ConfigError, match="did you mean 'lm'"):
        make_solver_on(problem, "lmm", {}, state)


def test_unsupported_tensors_are_config_errors(make_problem):
    problem = make_problem(optimize={"slice_thickness": {"lr": 1.0, "start_iter": 1}})
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    with pytest.raises(ConfigError, match="slice_thickness"):
        make_solver_on(problem, "lm", {}, state)
