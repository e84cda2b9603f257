"""ePIE / rPIE / mPIE against the textbook formulas written out here, identities between them, momentum,
position correction and update windows."""

import numpy as np
import pytest
import torch

from ptyopt.solvers.classical import apply_object_change

from .conftest import make_batch, make_solver_on, random_state


def textbook_update(problem, state, batch, alpha, beta, alpha_r=1.0, beta_r=1.0):
    """Mixed-state (probe modes k) single-slice PIE for one position on integer pixels, written out:
    chi_k = F^-1[sqrt(y) Psi_k / sqrt(sum_k |Psi_k|^2)] - psi_k, psi_k = P_k O,
    O' = O + alpha sum_k conj(P_k) chi_k / ((1 - alpha_r) sum_k |P_k|^2 + alpha_r max sum_k |P_k|^2),
    P_k' = P_k + beta conj(O) chi_k / ((1 - beta_r) |O|^2 + beta_r max |O|^2).
    Returns the expected (amplitude, phase) patches, the patch slices and the probe."""
    (index,) = batch.indices
    centre = problem.model.scan.nominal_px[index] + state["position_offsets_px"][index]
    top = np.round(centre.numpy()).astype(int) - WINDOW // 2
    rows, cols = slice(top[0], top[0] + WINDOW), slice(top[1], top[1] + WINDOW)
    amplitude, phase = state["object_amplitude"][0, 0, rows, cols], state["object_phase"][0, 0, rows, cols]
    obj = amplitude * torch.exp(1j * phase)
    probe = state["probe"]
    psi = probe * obj
    far = torch.fft.fft2(psi, norm="ortho")
    measured = torch.fft.ifftshift(batch.meas[0])
    chi = torch.fft.ifft2(torch.sqrt(measured) * far / torch.sqrt((far.abs() ** 2).sum(0)), norm="ortho") - psi
    probe_power = (probe.abs() ** 2).sum(0)
    new_obj = obj + alpha * (probe.conj() * chi).sum(0) / ((1 - alpha_r) * probe_power + alpha_r * probe_power.max())
    obj_power = obj.abs() ** 2
    new_probe = probe + beta * obj.conj() * chi / ((1 - beta_r) * obj_power + beta_r * obj_power.max())
    new_phase = phase + torch.angle(new_obj * obj.conj())
    return new_obj.abs(), new_phase, (rows, cols), new_probe


WINDOW = 16


@pytest.mark.parametrize("probe_modes", [1, 2])
@pytest.mark.parametrize(("name", "options"), [
    ("epie", {"alpha": 0.7, "beta": 0.4}),
    ("rpie", {"alpha": 0.9, "beta": 0.5, "alpha_r": 0.3, "beta_r": 0.6}),
])
def test_batch_of_one_equals_the_textbook_formula(make_problem, name, options, probe_modes):
    problem = make_problem(probe_modes=probe_modes)
    state = random_state(problem, seed=1)
    truth = random_state(problem, seed=2)
    batch = make_batch(problem, truth, [5])
    before = {key: value.clone() for key, value in state.items()}
    amplitude, phase, (rows, cols), probe = textbook_update(
        problem, before, batch, options["alpha"], options["beta"], options.get("alpha_r", 1.0),
        options.get("beta_r", 1.0))
    make_solver_on(problem, name, options, state, active=("object_amplitude", "object_phase", "probe")).update(
        batch, True)
    torch.testing.assert_close(state["object_amplitude"][0, 0, rows, cols], amplitude, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state["object_phase"][0, 0, rows, cols], phase, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state["probe"], probe, rtol=1e-12, atol=1e-12)
    outside = torch.ones_like(state["object_phase"], dtype=torch.bool)
    outside[..., rows, cols] = False
    assert torch.equal(state["object_phase"][outside], before["object_phase"][outside])
    assert torch.equal(state["position_offsets_px"], before["position_offsets_px"])
    # the update is not trivially small: the formula is really exercised
    assert (state["object_phase"] - before["object_phase"]).abs().max() > 1e-2


def window_slices(problem, index):
    top = np.round(problem.model.scan.nominal_px[index].numpy()).astype(int) - WINDOW // 2
    return slice(top[0], top[0] + WINDOW), slice(top[1], top[1] + WINDOW)


def test_a_batch_adds_numerators_over_the_summed_illumination(make_problem):
    """Batch {0, 15}: dO = alpha sum_j conj(P_j) chi_j / max_r sum_j |P_j|^2 and
    dP = beta sum_j conj(O_j) chi_j / max sum_j |O_j|^2, i.e. the single-position (textbook) changes rescaled by
    max|P|^2 / max W and max|O_j|^2 / max V."""
    problem = make_problem(probe_modes=2)
    truth, start = random_state(problem, seed=2), random_state(problem, seed=1)
    t_start = torch.polar(start["object_amplitude"], start["object_phase"])
    changes = []
    for indices in ([0], [15], [0, 15]):
        state = {key: value.clone() for key, value in start.items()}
        make_solver_on(problem, "epie", {}, state).update(make_batch(problem, truth, indices), True)
        changes.append((torch.polar(state["object_amplitude"], state["object_phase"]) - t_start,
                        state["probe"] - start["probe"]))
    probe_power = (start["probe"].abs() ** 2).sum(0)
    illumination = torch.zeros_like(start["object_phase"][0, 0])
    obj_power = torch.zeros_like(probe_power)
    peaks = []
    for index in (0, 15):
        rows, cols = window_slices(problem, index)
        illumination[rows, cols] += probe_power
        obj_power += t_start[0, 0, rows, cols].abs() ** 2
        peaks.append((t_start[0, 0, rows, cols].abs() ** 2).max())
    expected_object = (changes[0][0] + changes[1][0]) * probe_power.max() / illumination.max()
    torch.testing.assert_close(changes[2][0], expected_object, rtol=1e-12, atol=1e-12)
    expected_probe = (changes[0][1] * peaks[0] + changes[1][1] * peaks[1]) / obj_power.max()
    torch.testing.assert_close(changes[2][1], expected_probe, rtol=1e-12, atol=1e-12)


def run_updates(problem, name, options, start, truth, batches, active=("object_amplitude", "object_phase", "probe")):
    state = {key: value.clone() for key, value in start.items()}
    solver = make_solver_on(problem, name, options, state, active=active)
    for indices in batches:
        solver.update(make_batch(problem, truth, indices), True)
    return state, solver


BATCHES = [[0, 5, 10, 15], [1, 6, 11], [2, 7, 12, 3], [4, 8, 9, 13, 14]]


def test_rpie_with_alpha_r_one_is_epie(make_problem):
    problem = make_problem(n_slices=2, probe_modes=2, object_modes=2)
    start, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    epie, _ = run_updates(problem, "epie", {"alpha": 0.8, "beta": 0.6}, start, truth, BATCHES)
    rpie, _ = run_updates(problem, "rpie", {"alpha": 0.8, "beta": 0.6, "alpha_r": 1.0, "beta_r": 1.0}, start, truth,
                          BATCHES)
    for key in epie:
        torch.testing.assert_close(rpie[key], epie[key], rtol=1e-13, atol=1e-13)
    other, _ = run_updates(problem, "rpie", {"alpha": 0.8, "beta": 0.6, "alpha_r": 0.5}, start, truth, BATCHES)
    assert (other["object_phase"] - epie["object_phase"]).abs().max() > 1e-3


def test_mpie_without_feedback_is_rpie(make_problem):
    problem = make_problem(n_slices=2, probe_modes=2)
    start, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    options = {"alpha": 0.8, "beta": 0.6, "alpha_r": 0.2, "beta_r": 0.7}
    rpie, _ = run_updates(problem, "rpie", options, start, truth, BATCHES)
    mpie, _ = run_updates(problem, "mpie", {**options, "feedback": 0.0, "momentum_every": 4}, start, truth, BATCHES)
    for key in rpie:
        torch.testing.assert_close(mpie[key], rpie[key], rtol=1e-13, atol=1e-13)


def test_mpie_momentum_step_follows_its_formula(make_problem):
    """Momentum every 7 positions: after batches of 4 + 3 positions (first step) and 4 + 5 (second step),
    v1 = D1, x <- x + gamma v1; v2 = eta v1 + D2, x <- x + gamma v2, D = the rPIE updates since the last step."""
    problem = make_problem(probe_modes=2)
    start, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    options = {"alpha": 0.8, "beta": 0.6, "alpha_r": 0.2}
    eta, gamma = 0.6, 0.4
    mpie, solver = run_updates(problem, "mpie", {**options, "friction": eta, "feedback": gamma, "momentum_every": 7},
                               start, truth, BATCHES[:2])
    rpie, _ = run_updates(problem, "rpie", options, start, truth, BATCHES[:2])
    d1 = rpie["probe"] - start["probe"]
    torch.testing.assert_close(mpie["probe"], rpie["probe"] + gamma * d1, rtol=1e-12, atol=1e-12)
    object_d1 = (torch.polar(rpie["object_amplitude"], rpie["object_phase"])
                 - torch.polar(start["object_amplitude"], start["object_phase"]))
    torch.testing.assert_close(solver.momentum.velocity["object"], object_d1, rtol=1e-12, atol=1e-12)
    after_first = {key: value.clone() for key, value in mpie.items()}
    for indices in BATCHES[2:]:
        solver.update(make_batch(problem, truth, indices), True)
    rpie, _ = run_updates(problem, "rpie", options, after_first, truth, BATCHES[2:])
    d2 = rpie["probe"] - after_first["probe"]
    torch.testing.assert_close(mpie["probe"], rpie["probe"] + gamma * (eta * d1 + d2), rtol=1e-12, atol=1e-12)


def test_object_write_back_keeps_the_phase_unwrapped():
    """phi = 3.1 rad plus a change that rotates t by +0.2 rad: the phase becomes 3.3, not 3.3 - 2 pi."""
    state = {"object_amplitude": torch.full((1, 1, 4, 4), 0.9, dtype=torch.float64),
             "object_phase": torch.full((1, 1, 4, 4), 3.1, dtype=torch.float64)}
    old = torch.polar(state["object_amplitude"], state["object_phase"])
    change = old * (1.05 * np.exp(0.2j) - 1)
    apply_object_change(state, change[..., 1:3, 1:4], (1, 1, 2, 3), amplitude=True, phase=True)
    inside = (..., slice(1, 3), slice(1, 4))
    torch.testing.assert_close(state["object_phase"][inside], torch.full((1, 1, 2, 3), 3.3, dtype=torch.float64))
    torch.testing.assert_close(state["object_amplitude"][inside], torch.full((1, 1, 2, 3), 0.945, dtype=torch.float64))
    assert torch.equal(state["object_phase"][..., 0, :], torch.full((1, 1, 4), 3.1, dtype=torch.float64))


def test_update_windows_are_obeyed(make_problem):
    problem = make_problem(probe_modes=2)
    start, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    state, _ = run_updates(problem, "epie", {}, start, truth, BATCHES[:1], active=("object_phase",))
    assert not torch.equal(state["object_phase"], start["object_phase"])
    for key in ("object_amplitude", "probe", "position_offsets_px"):
        assert torch.equal(state[key], start[key]), key


@pytest.mark.parametrize("n_slices", [1, 3])
@pytest.mark.parametrize("name", ["epie", "rpie", "mpie"])
def test_position_correction_moves_towards_the_true_shift(make_problem, name, n_slices):
    """Data from positions shifted by (+0.3, -0.2) px; with the object and probe known, updates of the positions
    alone move every offset that way at once and then converge (Gauss-Newton on the amplitudes)."""
    problem = make_problem(n_slices=n_slices, slice_thickness_ang=2.0)
    truth = random_state(problem, seed=5, phase_rad=1.0)
    true_offset = torch.tensor([0.3, -0.2], dtype=torch.float64)
    truth["position_offsets_px"] += true_offset
    start = {**truth, "position_offsets_px": torch.zeros_like(truth["position_offsets_px"])}
    state, solver = run_updates(problem, name, {}, start, truth, [list(range(16))], active=("positions",))
    first = state["position_offsets_px"].clone()
    assert (torch.sign(first) == torch.sign(true_offset)).all()
    assert ((first - true_offset).norm(dim=1) < 0.5 * true_offset.norm()).all()
    for _ in range(3):
        solver.update(make_batch(problem, truth, list(range(16))), True)
    assert (state["position_offsets_px"] - true_offset).norm(dim=1).max() < 1e-4
