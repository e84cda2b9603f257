"""LSQ-ML: the 2×2 step systems, the detector step, one update against its formula written out, momentum."""

import numpy as np
import pytest
import torch

from ptyopt.physics import DetectorResponse
from ptyopt.solvers.exitwave import modulus_constraint, normal_equations, solve_2x2
from ptyopt.solvers.lsqml import detector_change

from .conftest import make_batch, make_solver_on, random_state, simulate

WINDOW = 16


def random_system(seed=0, shape=(5, 2, 2, 6, 6)):
    generator = torch.Generator().manual_seed(seed)
    chi, r1, r2 = (torch.randn(shape, dtype=torch.complex128, generator=generator) for _ in range(3))
    r2 = r2 + 0.5 * r1  # correlated directions: the off-diagonal term matters
    return chi, [r1, r2], torch.tensor([0.7, 0.3], dtype=torch.float64)


def misfit(chi, responses, occupancy, alpha):
    """sum_{p,o} occ_o ||chi - alpha_1 r_1 - alpha_2 r_2||^2 per position."""
    rest = chi - sum(a[:, None, None, None, None] * r for a, r in zip(alpha.T, responses, strict=True))
    return (occupancy[:, None, None] * rest.abs() ** 2).sum(dim=(1, 2, 3, 4))


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_steps_solve_their_normal_equations(damping):
    chi, responses, occupancy = random_system()
    a, b = normal_equations(chi, responses, occupancy)
    d = damping * a.diagonal(dim1=-2, dim2=-1).mean(dim=0)
    alpha = solve_2x2(a, b, d)
    residual = (a + torch.diag_embed(d.expand_as(b))) @ alpha[..., None] - b[..., None]
    assert residual.abs().max() < 1e-12 * b.abs().max()


def test_each_step_minimises_the_exit_wave_misfit_along_its_direction():
    """Without damping, scanning either step (or both together) around the solution never lowers the misfit,
    and the grid minimum sits at the solution."""
    chi, responses, occupancy = random_system(seed=1)
    alpha = solve_2x2(*normal_equations(chi, responses, occupancy))
    best = misfit(chi, responses, occupancy, alpha)
    offsets = torch.linspace(-0.05, 0.05, 21, dtype=torch.float64)
    for direction in (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.6, -0.8])):
        scan = torch.stack([misfit(chi, responses, occupancy, alpha + o * direction.double()) for o in offsets])
        assert (scan >= best - 1e-10).all()
        assert (scan.argmin(dim=0) == 10).all()
    # one direction alone: the 1-D least-squares step
    alpha_1 = solve_2x2(*normal_equations(chi, responses[:1], occupancy))
    scan = torch.stack([misfit(chi, responses[:1], occupancy, alpha_1 + o) for o in offsets])
    assert (scan.argmin(dim=0) == 10).all()


def test_gaussian_detector_update_is_modulus_replacement():
    """detector_change(gaussian) = Psi' - Psi with Psi' = Psi - 1/2 g = sqrt(y)/sqrt(I + eps) Psi."""
    generator = torch.Generator().manual_seed(2)
    far_field = torch.randn(3, 2, 1, 8, 8, dtype=torch.complex128, generator=generator)
    occupancy = torch.ones(1, dtype=torch.float64)
    meas = torch.rand(3, 8, 8, dtype=torch.float64, generator=generator)
    no_psf = DetectorResponse()
    torch.testing.assert_close(detector_change(far_field, meas, occupancy, "gaussian", no_psf) + far_field,
                               modulus_constraint(far_field, meas, occupancy, no_psf), rtol=1e-13, atol=1e-14)


def textbook_lsqml(problem, state, batch, delta, damping, scale):
    """One position, one slice, one mode, written out (Odstrčil et al. 2018, Gaussian noise):
    chi = F^-1[sqrt(y) Psi/|Psi|] - P O;  dO = conj(P) chi / (|P|^2 + delta max|P|^2);
    dP = conj(O) chi / (|O|^2 + delta max|O|^2); (alpha_O, alpha_P) from the damped 2×2 normal equations of
    ||chi - alpha_O dO P - alpha_P O dP||^2; O' = O + scale alpha_O dO, P' = P + scale alpha_P dP."""
    (index,) = batch.indices
    top = np.round(problem.model.scan.nominal_px[index].numpy()).astype(int) - WINDOW // 2
    rows, cols = slice(top[0], top[0] + WINDOW), slice(top[1], top[1] + WINDOW)
    phase = state["object_phase"][0, 0, rows, cols]
    obj = state["object_amplitude"][0, 0, rows, cols] * torch.exp(1j * phase)
    probe = state["probe"][0]
    far = torch.fft.fft2(probe * obj, norm="ortho")
    measured = torch.fft.ifftshift(batch.meas[0])
    chi = torch.fft.ifft2(torch.sqrt(measured) * far / far.abs(), norm="ortho") - probe * obj
    d_obj = probe.conj() * chi / (probe.abs() ** 2 + delta * (probe.abs() ** 2).max())
    d_probe = obj.conj() * chi / (obj.abs() ** 2 + delta * (obj.abs() ** 2).max())
    r1, r2 = d_obj * probe, obj * d_probe
    a11, a22 = (r1.abs() ** 2).sum() * (1 + damping), (r2.abs() ** 2).sum() * (1 + damping)
    a12 = (r1.conj() * r2).sum().real
    b1, b2 = (r1.conj() * chi).sum().real, (r2.conj() * chi).sum().real
    det = a11 * a22 - a12**2
    alpha_obj, alpha_probe = (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det
    assert alpha_obj > 0 and alpha_probe > 0
    new_obj = obj + scale * alpha_obj * d_obj
    return new_obj.abs(), phase + torch.angle(new_obj * obj.conj()), (rows, cols), probe + scale * alpha_probe * d_probe


def test_one_update_equals_its_formula(make_problem):
    problem = make_problem()
    state, truth = random_state(problem, seed=1), random_state(problem, seed=2)
    batch = make_batch(problem, truth, [6])
    options = {"delta": 0.2, "step_damping": 0.15, "step_scale": 0.8}
    amplitude, phase, (rows, cols), probe = textbook_lsqml(problem, state, batch, 0.2, 0.15, 0.8)
    make_solver_on(problem, "lsqml", options, state, active=("object_amplitude", "object_phase", "probe")).update(
        batch, True)
    torch.testing.assert_close(state["object_amplitude"][0, 0, rows, cols], amplitude, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state["object_phase"][0, 0, rows, cols], phase, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state["probe"][0], probe, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("noise", ["gaussian", "poisson"])
def test_updates_lower_the_misfit_of_a_multislice_mixed_state_problem(make_problem, noise):
    problem = make_problem(n_slices=2, slice_thickness_ang=2.0, probe_modes=2)
    truth = random_state(problem, seed=2)
    state = {key: value.clone() for key, value in truth.items()}  # the probe and positions start at the truth
    state["object_phase"].zero_()
    state["object_amplitude"].fill_(1.0)
    indices = list(range(16))
    meas = simulate(problem, truth, indices)

    def amplitude_error():
        return float(((simulate(problem, state, indices).sqrt() - meas.sqrt()) ** 2).sum() / meas.sum())

    before = amplitude_error()
    solver = make_solver_on(problem, "lsqml", {"noise": noise}, state, active=("object_phase", "object_amplitude",
                                                                                "probe"))
    for _ in range(5):
        for group in ([0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]):
            solver.update(make_batch(problem, truth, group), True)
    assert amplitude_error() < 0.2 * before


def test_momentum_after_an_iteration(make_problem):
    """momentum eta: at the end of an iteration v = eta v + D, x <- x + eta v (D = the iteration's updates)."""
    problem = make_problem(probe_modes=2)
    start, truth = random_state(problem, seed=3), random_state(problem, seed=4)
    runs = {}
    for eta in (0.0, 0.5):
        state = {key: value.clone() for key, value in start.items()}
        solver = make_solver_on(problem, "lsqml", {"momentum": eta}, state)
        for group in ([0, 5, 10, 15], [1, 6, 11, 12]):
            solver.update(make_batch(problem, truth, group), True)
        solver.end_iteration()
        runs[eta] = state
    d = runs[0.0]["probe"] - start["probe"]
    torch.testing.assert_close(runs[0.5]["probe"], runs[0.0]["probe"] + 0.5 * d, rtol=1e-12, atol=1e-12)
