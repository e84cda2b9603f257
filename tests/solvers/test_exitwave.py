"""The exit-wave machinery: forward pass, modulus constraint, detector gradients, linearised multislice,
back-propagation and the canvas scatter, against the forward model, autograd and explicit loops."""

import pytest
import torch

from ptyopt.physics import DetectorResponse, MultisliceWaves, multislice, split_positions
from ptyopt.solvers.exitwave import (
    backward_sweep,
    detector_gradient,
    exit_response,
    model_intensity,
    modulus_constraint,
    poisson_detector_step,
    scatter_patches,
)

from .conftest import random_state, simulate


@pytest.fixture
def mixed_problem(make_problem):
    """Three slices, two probe modes, two object modes (occupancy 0.7 / 0.3), band limit, last propagation."""
    problem = make_problem(n_slices=3, slice_thickness_ang=2.0, probe_modes=2, object_modes=2, band_limit=True,
                           propagate_last=True)
    state = random_state(problem, seed=7)
    state["occupancy"] = torch.tensor([0.7, 0.3], dtype=torch.float64)
    state["position_offsets_px"] = 0.4 * torch.rand(state["position_offsets_px"].shape, dtype=torch.float64) - 0.2
    return problem, state


def random_far_field(shape=(3, 2, 2, 8, 8), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=torch.complex128, generator=generator)


def test_kept_waves_match_the_forward_model(mixed_problem):
    problem, state = mixed_problem
    indices = torch.tensor([0, 5, 9, 14])
    waves = problem.model(state, indices, keep_waves=True).waves
    occupancy = problem.model.occupancy(state)
    mine = torch.fft.fftshift(model_intensity(waves.far_field, occupancy), dim=(-2, -1))
    torch.testing.assert_close(mine, simulate(problem, state, indices), rtol=1e-12, atol=1e-14)
    assert waves.incident.shape == (4, 2, 2, 3, 16, 16)


def test_scatter_equals_a_loop_of_patch_additions():
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(5, 2, 3, 4, 4, dtype=torch.complex128, generator=generator)
    crop = torch.tensor([[3, 2], [5, 2], [3, 2], [4, 7], [9, 6]])
    box = (3, 2, 10, 9)
    expected = torch.zeros(2, 3, 10, 9, dtype=torch.complex128)
    for patch, (y, x) in zip(patches, crop.tolist(), strict=True):
        expected[..., y - 3 : y + 1, x - 2 : x + 2] += patch
    torch.testing.assert_close(scatter_patches(patches, crop, box), expected, rtol=0, atol=1e-15)


def test_modulus_constraint_imposes_the_measured_intensity():
    far_field = random_far_field()
    occupancy = torch.tensor([0.7, 0.3], dtype=torch.float64)
    meas = torch.rand(3, 8, 8, dtype=torch.float64)
    projected = modulus_constraint(far_field, meas, occupancy, DetectorResponse())
    intensity = torch.fft.fftshift(model_intensity(projected, occupancy), dim=(-2, -1))
    torch.testing.assert_close(intensity, meas, rtol=1e-12, atol=1e-14)
    # the phases and the ratios between modes are kept
    ratio = projected / far_field
    torch.testing.assert_close(ratio, ratio[:, :1, :1].expand_as(ratio))
    assert torch.allclose(ratio.imag, torch.zeros_like(ratio.imag), atol=1e-14)


@pytest.mark.parametrize("blur_px", [0.0, 0.7])
@pytest.mark.parametrize("floor", [0.0, 0.2])
@pytest.mark.parametrize("noise", ["gaussian", "poisson"])
def test_detector_gradient_is_the_likelihood_gradient(noise, floor, blur_px):
    """g = 2 dL/dconj(Psi) / occ: autograd's complex gradient of L (with D I + floor · mean(y), D the detector
    PSF) divided by the mode's occupancy."""
    detector = DetectorResponse(blur_px)
    far_field = random_far_field().requires_grad_(True)
    occupancy = torch.tensor([0.7, 0.3], dtype=torch.float64)
    meas = torch.rand(3, 8, 8, dtype=torch.float64) + 0.1
    y = torch.fft.ifftshift(meas, dim=(-2, -1))
    intensity = detector.fft_layout(model_intensity(far_field, occupancy)) + floor * meas.mean(dim=(-2, -1),
                                                                                                keepdim=True)
    if noise == "gaussian":
        loss = ((intensity.sqrt() - y.sqrt()) ** 2).sum()
    else:
        loss = (intensity - y * intensity.log()).sum()
    loss.backward()
    expected = far_field.grad / occupancy[:, None, None]
    torch.testing.assert_close(detector_gradient(far_field.detach(), meas, occupancy, noise, detector, floor),
                               expected)


@pytest.mark.parametrize("blur_px", [0.0, 0.7])
def test_gaussian_detector_step_of_one_half_is_modulus_replacement(blur_px):
    """Psi - 1/2 g_gauss = sqrt(y) / sqrt(I + eps) Psi exactly: 2 (1 - sqrt(y/(I+eps))) Psi / 2 removed (with a
    detector PSF, the pulled-back ratio)."""
    detector = DetectorResponse(blur_px)
    far_field = random_far_field()
    occupancy = torch.tensor([0.7, 0.3], dtype=torch.float64)
    meas = torch.rand(3, 8, 8, dtype=torch.float64)
    stepped = far_field - 0.5 * detector_gradient(far_field, meas, occupancy, "gaussian", detector)
    torch.testing.assert_close(stepped, modulus_constraint(far_field, meas, occupancy, detector), rtol=1e-13,
                               atol=1e-14)


@pytest.mark.parametrize("blur_px", [0.0, 0.7])
def test_poisson_detector_step_minimises_the_likelihood_along_the_gradient(blur_px):
    detector = DetectorResponse(blur_px)
    far_field = random_far_field()
    occupancy = torch.tensor([0.7, 0.3], dtype=torch.float64)
    meas = torch.fft.fftshift(detector.fft_layout(model_intensity(random_far_field(seed=1), occupancy)),
                              dim=(-2, -1))
    g = detector_gradient(far_field, meas, occupancy, "poisson", detector)
    alpha = poisson_detector_step(far_field, meas, occupancy, detector)
    y = torch.fft.ifftshift(meas, dim=(-2, -1))

    def likelihood(a):
        intensity = detector.fft_layout(model_intensity(far_field - a[:, None, None, None, None] * g, occupancy))
        return (intensity - y * torch.log(intensity)).sum(dim=(-2, -1))

    best = likelihood(alpha)
    assert ((alpha > 0) & (alpha <= 0.5)).all()
    for offset in (-1e-3, 1e-3):
        assert (likelihood((alpha + offset).clamp(0, 0.5)) >= best - 1e-12).all()


def test_exit_response_is_the_derivative_of_the_multislice(mixed_problem):
    """Central finite difference of the exit wave along (d_probes, d_transmissions) vs the linearised sweep."""
    problem, state = mixed_problem
    waves = problem.model(state, torch.tensor([1, 6, 11]), keep_waves=True).waves
    generator = torch.Generator().manual_seed(3)
    d_probes = torch.randn(waves.probes.shape, dtype=torch.complex128, generator=generator)
    d_trans = torch.randn(waves.transmissions.shape, dtype=torch.complex128, generator=generator)

    def exit_wave(h):
        far, _ = multislice(waves.probes + h * d_probes, waves.transmissions + h * d_trans, waves.propagators)
        return torch.fft.ifft2(far, norm="ortho")

    h = 1e-5
    numeric = (exit_wave(h) - exit_wave(-h)) / (2 * h)
    torch.testing.assert_close(exit_response(waves, d_probes, d_trans), numeric, rtol=1e-7, atol=1e-8)


def test_backward_sweep_inverts_the_multislice_of_a_phase_object(make_problem):
    """For |t| = 1 (and no band limit) the 3PIE back-propagation is the exact inverse: an entrance change delta,
    sent through the linearised multislice, comes back as chi^0 = delta t_0 at the first slice."""
    problem = make_problem(n_slices=3, slice_thickness_ang=2.0, probe_modes=2, object_modes=2)
    state = random_state(problem, seed=7, amplitude_dip=0.0)
    waves = problem.model(state, torch.tensor([2, 7]), keep_waves=True).waves
    generator = torch.Generator().manual_seed(4)
    delta = torch.randn(waves.probes.shape, dtype=torch.complex128, generator=generator)
    chis = backward_sweep(exit_response(waves, d_probes=delta), waves)
    expected = delta[:, :, None] * waves.transmissions[:, None, :, 0]
    torch.testing.assert_close(chis[:, :, :, 0], expected, rtol=1e-10, atol=1e-12)
    # the same change at the exit is chi^2 itself
    torch.testing.assert_close(chis[:, :, :, 2], exit_response(waves, d_probes=delta))


def test_kept_waves_split_positions_like_the_model(mixed_problem):
    problem, state = mixed_problem
    indices = torch.tensor([3, 4])
    waves: MultisliceWaves = problem.model(state, indices, keep_waves=True).waves
    crop, shift = split_positions(problem.model.centres_px(state, indices), problem.geometry.window_px)
    assert torch.equal(waves.crop_px, crop) and torch.equal(waves.shift_px, shift)
