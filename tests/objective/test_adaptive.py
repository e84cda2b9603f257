"""Adaptive loss weights and stopping rules: each rule on a problem whose right weight is known in closed form,
the Poisson discrepancy against Monte Carlo, and the rules inside real runs (logged weights, stops, refusals)."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from ptyopt.errors import ConfigError
from ptyopt.objective.discrepancy import discrepancy_ratio, expected_poisson_deviance, poisson_deviance
from ptyopt.objective.stopping import DiscrepancyReached, ValidationPlateau, check_discrepancy, check_plateau
from ptyopt.objective.weighting import AdaptiveWeights, Discrepancy, GradientBalance, Signals, Uncertainty


def signals(values=None, norms=None, ratio=None):
    return Signals(values=values or {}, gradient_norms=lambda: norms, discrepancy=lambda: ratio)


@pytest.mark.parametrize("mu", [0.02, 0.3, 1.0, 4.0, 50.0])
def test_expected_poisson_deviance_matches_monte_carlo(mu):
    counts = torch.as_tensor(np.random.default_rng(1).poisson(mu, 400_000))
    measured = float(poisson_deviance(torch.full(counts.shape, mu), counts).mean())
    assert float(expected_poisson_deviance(torch.tensor([mu]))[0]) == pytest.approx(measured, rel=0.01)
    assert float(expected_poisson_deviance(torch.tensor([1e6]))[0]) == pytest.approx(1.0, abs=1e-5)


def test_gradient_balance_sets_the_closed_form_ratio_on_a_quadratic():
    """D = mean((Ax - b)^2) and R = mean(x^2): w_R = fraction |grad D| / |grad R| at the rule's update."""
    rng = np.random.default_rng(0)
    a, b, x = rng.normal(size=(30, 10)), rng.normal(size=30), rng.normal(size=10)
    grad_d = 2 * a.T @ (a @ x - b) / 30
    grad_r = 2 * x / 10
    rule = AdaptiveWeights(GradientBalance(fraction=0.2, every=1), ["data"], ["l2"])
    norms = {"data": np.linalg.norm(grad_d), "l2": np.linalg.norm(grad_r)}  # the data term's weight is 1
    rule.update(1, {"data": 1.0, "l2": 5.0}, signals(norms=norms))
    weights = rule.weights(2, {"data": 1.0, "l2": 5.0})
    assert weights["l2"] == pytest.approx(0.2 * np.linalg.norm(grad_d) / np.linalg.norm(grad_r))
    assert weights["data"] == 1.0
    assert np.linalg.norm(weights["l2"] * grad_r) == pytest.approx(0.2 * np.linalg.norm(grad_d))


def test_discrepancy_rule_lands_on_the_discrepancy_principle_weight():
    """Poisson counts y of mu_true, model mu = x, objective Poisson NLL + lam·sum (x - m)^2: x_lam in closed form
    per pixel; the discrepancy-principle lam* solves rho(x_lam*) = 1. Relaxing by 0.8 from lam = 10 stops in
    (0.8 lam*, lam*]."""
    rng = np.random.default_rng(3)
    mu_true = rng.uniform(2.0, 8.0, 4000)
    y = rng.poisson(mu_true).astype(float)
    m = y.mean()

    def minimiser(lam):  # d/dx [x - y ln x + lam (x - m)^2] = 0: 2 lam x^2 + (1 - 2 lam m) x - y = 0
        p, q = 2 * lam, 1 - 2 * lam * m
        return (-q + np.sqrt(q * q + 4 * p * y)) / (2 * p)

    def rho(lam):
        d, e = discrepancy_ratio(torch.as_tensor(minimiser(lam)), torch.as_tensor(y))
        return d / e

    lam_star = brentq(lambda lam: rho(lam) - 1.0, 1e-4, 10.0)
    rule = AdaptiveWeights(Discrepancy(relax=0.8, every=1), ["poisson"], ["l2"])
    scheduled = {"poisson": 1.0, "l2": 10.0}
    for iteration in range(1, 80):
        lam = rule.weights(iteration, scheduled)["l2"]
        rule.update(iteration, scheduled, signals(ratio=rho(lam)))  # the inner problem solved exactly
    final = rule.weights(80, scheduled)["l2"]
    assert rule.state["held"]
    assert 0.8 * lam_star < final <= lam_star


def test_uncertainty_weighting_lands_on_inverse_noise_variances():
    """Two Gaussian likelihood terms measuring the same x with noise sigma_1 = 0.1 and sigma_2 = 0.4 (many
    repeats each): the rule's weights tend to the maximum-likelihood weighting 1/sigma^2 (ratio 16)."""
    rng = np.random.default_rng(2)
    x_true = rng.normal(size=50)
    a = x_true + 0.1 * rng.normal(size=(200, 50))
    b = x_true + 0.4 * rng.normal(size=(200, 50))
    rule = AdaptiveWeights(Uncertainty(every=1), ["a", "b"], [])
    scheduled = {"a": 1.0, "b": 1.0}
    for iteration in range(1, 20):
        w = rule.weights(iteration, scheduled)
        x = (w["a"] * a.mean(0) + w["b"] * b.mean(0)) / (w["a"] + w["b"])  # the weighted objective's minimiser
        values = {"a": float(np.mean((a - x) ** 2)), "b": float(np.mean((b - x) ** 2))}
        rule.update(iteration, scheduled, signals(values=values))
    w = rule.weights(20, scheduled)
    assert w["a"] / w["b"] == pytest.approx(16.0, rel=0.03)
    assert w["a"] + w["b"] == pytest.approx(2.0)  # the configured weights' sum is kept


def test_stopping_rules_on_sequences():
    plateau, state = ValidationPlateau(patience=2, min_improvement=0.01), {}
    reasons = [check_plateau(plateau, state, i, v) for i, v in enumerate([1.0, 0.9, 0.895, 0.893], 1)]
    assert reasons[:3] == [None, None, None] and "has not improved" in reasons[3]
    assert state["best_iteration"] == 4  # a smaller but insufficient improvement still updates the best
    rule = DiscrepancyReached(target=1.0)
    assert check_discrepancy(rule, 1.2) is None and "discrepancy ratio 0.9" in check_discrepancy(rule, 0.95)


# ---- inside real runs --------------------------------------------------------------------------------------

@pytest.fixture
def counts_dataset_path(tiny_dataset_path, tmp_path):
    """Poisson counts (2000 electrons per pattern) of ptyopt's own forward model of the tiny set's true object
    and probe: a model that can explain the data down to the noise exists."""
    from ptyopt.config import parse_config
    from ptyopt.data import read_dataset, write_dataset
    from ptyopt.problem import build_problem

    problem = build_problem(parse_config({
        "data": {"path": str(tiny_dataset_path)},
        "model": {"n_slices": 2, "slice_thickness_ang": 3.905, "aperture_edge": "hard", "object_init": "truth",
                  "probe_init": "truth"}}))
    with torch.no_grad():
        intensity = problem.model(problem.initial_state, torch.arange(problem.dataset.n_patterns)).intensities
    intensity = intensity.double().numpy()
    expected = intensity / intensity.sum(axis=(1, 2), keepdims=True) * 2000
    counts = np.random.default_rng(0).poisson(expected).astype(np.float32)
    return write_dataset(tmp_path / "counts.h5", read_dataset(tiny_dataset_path).replace(meas=counts, counts=True))


def adam_config(tiny_config, **sections):
    """Adam on the tiny set with a data term and a regulariser (any section may be replaced)."""
    return tiny_config(**{"optimize": {"object_phase": {"lr": 3e-3}},
                          "loss": {"single": {}, "sparse": {"weight": 0.1}}, **sections})


def test_gradient_balance_in_a_run_logs_the_measured_ratio(tiny_config):
    from ptyopt.explain.session import open_session
    from ptyopt.objective.adaptation import Adaptation
    from ptyopt.reconstruct import run_reconstruction

    config = adam_config(tiny_config, loss_weighting={"rule": "gradient_balance", "fraction": 0.3, "every": 2},
                         loss={"single": {}, "pacbed": {"weight": 0.5}, "sparse": {"weight": 0.1}})
    states = {}
    run = run_reconstruction(config, show_progress=False, callbacks=[
        lambda engine, it: states.setdefault(it, {k: v.detach().clone() for k, v in engine.state.items()})])
    weights = run.result.history["weight_sparse"]
    assert weights[0] == 0.1  # the configured weight until the rule's first update, at the end of iteration 1
    assert weights[1] != 0.1 and weights[2] == weights[1]  # then the rule's, held until its next update
    session = open_session(run.out_dir / "result.h5")
    adaptation = Adaptation(session.problem, session.losses, np.arange(session.problem.dataset.n_patterns))
    norms = adaptation.gradient_norms(states[3], {"single": 1.0, "pacbed": 1.0, "sparse": 1.0}, "object_phase")
    assert weights[3] == pytest.approx(0.3 * norms["data"] / norms["sparse"], rel=1e-3)  # set at the end of it 3,
    # from the state the iteration left
    # pacbed fits the mean pattern, not each one: it is balanced against the per-pattern term like a regulariser
    single = adaptation.gradient_norms(states[3], {"single": 1.0, "pacbed": 0.0, "sparse": 0.0}, "object_phase")
    assert norms["data"] == pytest.approx(single["data"], rel=1e-6)
    assert run.result.history["weight_pacbed"][3] == pytest.approx(0.3 * norms["data"] / norms["pacbed"], rel=1e-3)


def test_validation_plateau_stops_the_run_and_a_resume_has_nothing_to_do(tiny_config):
    from ptyopt.reconstruct import run_reconstruction

    config = adam_config(tiny_config, solver={"validation_fraction": 0.2, "iterations": 6, "stop_when": [
        {"kind": "validation_plateau", "patience": 1, "min_improvement": 0.9}]})
    run = run_reconstruction(config, show_progress=False)
    assert run.result.attrs["stopped_at"] == 2 and "has not improved" in run.result.attrs["stop_reason"]
    assert len(run.result.history["iteration"]) == 2
    again = run_reconstruction(config, show_progress=False, resume=True)
    assert again.result.attrs["stopped_at"] == 2 and len(again.result.history["iteration"]) == 2


def test_discrepancy_stop_on_poisson_counts(tiny_config, counts_dataset_path):
    """LSQ-ML (Poisson noise model, the true probe) from a vacuum object: the run stops at the first iteration
    whose discrepancy ratio is at or below 1, i.e. at the expected misfit of the noise."""
    from ptyopt.reconstruct import run_reconstruction

    ratios = {}
    config = tiny_config(data={"path": str(counts_dataset_path)}, loss={"poisson": {}},
                         model={"probe_init": "truth"}, optimize={"positions": {"start_iter": None}},
                         solver={"name": "lsqml", "options": {"noise": "poisson"}, "iterations": 15,
                                 "stop_when": [{"kind": "discrepancy", "target": 1.0}]})

    def record(engine, iteration):
        ratios[iteration] = engine.adaptation.discrepancy(iteration, engine.state)

    run = run_reconstruction(config, show_progress=False, callbacks=[record])
    stop = run.result.attrs["stopped_at"]
    assert 1 < stop < 15, ratios
    assert ratios[stop] <= 1.0 < ratios[stop - 1]
    assert ratios[stop] == pytest.approx(1.0, abs=0.05)
    assert "discrepancy ratio" in run.result.attrs["stop_reason"]


@pytest.mark.parametrize(("sections", "message"), [
    ({"loss_weighting": {"rule": "discrepancy"}}, "needs data in electron counts"),
    ({"solver": {"stop_when": [{"kind": "discrepancy"}]}}, "needs data in electron counts"),
    ({"loss_weighting": {"rule": "gradient_balance"}, "loss": {"single": {}}}, "do not fit each pattern"),
])
def test_rules_the_data_cannot_support_are_refused_before_anything_is_written(tiny_config, sections, message):
    from ptyopt.reconstruct import run_reconstruction

    config = tiny_config(**sections)
    with pytest.raises(ConfigError, match=message):
        run_reconstruction(config, show_progress=False)
    assert not config.output.dir.exists()


def test_plateau_without_validation_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="set solver.validation_fraction"):
        tiny_config(solver={"stop_when": [{"kind": "validation_plateau"}]})


def test_adaptive_weights_resume_exactly(tiny_config, tmp_path):
    from ptyopt.reconstruct import run_reconstruction

    rule = {"rule": "gradient_balance", "fraction": 0.3, "every": 1}
    whole = run_reconstruction(adam_config(tiny_config, loss_weighting=rule, solver={"iterations": 4},
                                           output={"dir": str(tmp_path / "whole")}), show_progress=False)
    split = adam_config(tiny_config, loss_weighting=rule, solver={"iterations": 2},
                        output={"dir": str(tmp_path / "split"), "checkpoint_every": 2})
    run_reconstruction(split, show_progress=False)
    resumed = run_reconstruction(split.model_copy(update={"solver": split.solver.model_copy(
        update={"iterations": 4})}), show_progress=False, resume=True)
    np.testing.assert_allclose(resumed.result.history["weight_sparse"], whole.result.history["weight_sparse"],
                               rtol=1e-6)


def test_a_solver_that_fits_its_own_likelihood_says_the_weighting_is_unused(tiny_config):
    from ptyopt.solvers.checks import check_config

    notes = check_config(tiny_config(solver={"name": "lsqml"}, loss_weighting={"rule": "uncertainty"}))
    assert any("fits its own likelihood: loss_weighting" in note for note in notes)
    assert not any("loss_weighting" in note for note in check_config(tiny_config(loss_weighting={
        "rule": "uncertainty"})))


def test_gradient_balance_with_a_dip_object_balances_the_network_weights(tiny_config):
    from ptyopt.reconstruct import run_reconstruction

    config = tiny_config(
        model={"object_parametrisation": "dip", "dip": {"channels": 8, "levels": 1}},
        optimize={"object_amplitude": {"start_iter": None}, "object_phase": {"start_iter": None},
                  "object_dip": {"lr": 3e-3, "start_iter": 1}},
        loss={"single": {}, "sparse": {"weight": 0.1}}, solver={"iterations": 2},
        loss_weighting={"rule": "gradient_balance", "fraction": 0.2, "every": 1})
    weights = run_reconstruction(config, show_progress=False).result.history["weight_sparse"]
    assert weights[0] == 0.1 and np.isfinite(weights[1]) and weights[1] > 0 and weights[1] != 0.1
