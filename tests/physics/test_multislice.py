import pytest
import torch

from ptyopt.physics import (
    forward_intensities,
    frequency_grid,
    gather_patches,
    make_probe,
    multislice_exit_waves,
    probe_modes,
    propagator,
    wavelength_ang,
)
from ptyopt.physics.multislice import multislice_far_field, shift_probes

LAM = wavelength_ang(300.0)
DX = 0.2


def _setup(cdtype, n_slices=3, omodes=1, pmodes=2, window=(24, 24), obj_px=(40, 44)):
    rdtype = torch.empty((), dtype=cdtype).real.dtype
    probe = probe_modes(make_probe(window, DX, 300.0, 25.0, {"defocus": 20.0}, dtype=cdtype), pmodes, 0.2)
    amplitude = 1 - 0.1 * torch.rand(omodes, n_slices, *obj_px, dtype=rdtype)
    phase = 0.3 * torch.rand(omodes, n_slices, *obj_px, dtype=rdtype)
    ky, kx = frequency_grid(window, DX, dtype=rdtype)
    props = propagator(ky, kx, torch.full((n_slices,), 2.0, dtype=rdtype), LAM)
    occupancy = torch.full((omodes,), 1.0 / omodes, dtype=rdtype)
    crop = torch.tensor([[0, 0], [5, 9], [16, 20]])
    shift = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.45, 0.1]], dtype=rdtype)
    return amplitude, phase, probe, crop, shift, props, occupancy, (ky, kx)


def test_gather_patches_matches_slicing():
    image = torch.randn(2, 3, 30, 31)
    crop = torch.tensor([[0, 0], [4, 7], [10, 15]])
    patches = gather_patches(image, crop, (8, 9))
    assert patches.shape == (3, 2, 3, 8, 9)
    for b, (y, x) in enumerate(crop.tolist()):
        torch.testing.assert_close(patches[b], image[..., y : y + 8, x : x + 9])


def test_unit_transmission_is_free_space_propagation(cdtype):
    _, _, probe, crop, shift, props, _, (ky, kx) = _setup(cdtype, n_slices=4)
    ones = torch.ones(3, 1, 4, 24, 24, dtype=cdtype)
    probes = shift_probes(probe, shift)
    exit_waves = multislice_exit_waves(probes, ones, props)[:, :, 0]
    free = torch.fft.ifft2(torch.fft.fft2(probes) * propagator(ky, kx, 3 * 2.0, LAM))  # S-1 propagations
    tol = 1e-5 if cdtype == torch.complex64 else 1e-12
    torch.testing.assert_close(exit_waves, free, atol=tol, rtol=tol)
    far = multislice_far_field(probes, ones, props, propagate_last=True)[:, :, 0]
    expected = torch.fft.fft2(probes, norm="ortho") * propagator(ky, kx, 4 * 2.0, LAM)
    torch.testing.assert_close(far, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("omodes", [1, 2])
def test_pattern_sums_to_probe_power_for_phase_object(cdtype, omodes):
    amplitude, phase, probe, crop, shift, props, occupancy, _ = _setup(cdtype, omodes=omodes)
    intensities = forward_intensities(torch.ones_like(amplitude), phase, probe, crop, shift, props, occupancy)
    assert intensities.shape == (3, 24, 24) and intensities.dtype == probe.real.dtype
    power = (probe.abs() ** 2).sum()
    tol = 1e-5 if cdtype == torch.complex64 else 1e-12
    torch.testing.assert_close(intensities.sum(dim=(-2, -1)), power.expand(3), rtol=tol, atol=0)


def test_batch_and_modes_vectorisation_equal_loops():
    amplitude, phase, probe, crop, shift, props, _, _ = _setup(torch.complex128, omodes=2)
    occupancy = torch.tensor([0.7, 0.3], dtype=torch.float64)
    batch = forward_intensities(amplitude, phase, probe, crop, shift, props, occupancy)
    for b in range(3):
        total = 0
        for o in range(2):
            for p in range(probe.shape[0]):
                single = forward_intensities(
                    amplitude[o : o + 1], phase[o : o + 1], probe[p : p + 1], crop[b : b + 1], shift[b : b + 1],
                    props, torch.ones(1, dtype=torch.float64),
                )
                total = total + occupancy[o] * single[0]
        torch.testing.assert_close(batch[b], total)


def test_dc_at_centre_and_integer_position_equivalence():
    """A 1-px probe shift and a 1-px crop move give the same pattern (single slice, compact probe)."""
    amplitude, phase, probe, *_ , occupancy, _ = _setup(torch.complex128, n_slices=1, pmodes=1, window=(32, 32))
    ky, kx = frequency_grid((32, 32), DX, dtype=torch.float64)
    props = propagator(ky, kx, torch.tensor([2.0], dtype=torch.float64), LAM)
    probe = probe * torch.exp(-((torch.arange(32) - 16.0) ** 2)[:, None] / 30 - ((torch.arange(32) - 16.0) ** 2) / 30)
    a = forward_intensities(amplitude, phase, probe, torch.tensor([[3, 4]]), torch.tensor([[1.0, 0.0]],
                            dtype=torch.float64), props, occupancy)
    b = forward_intensities(amplitude, phase, probe, torch.tensor([[2, 4]]), torch.tensor([[0.0, 0.0]],
                            dtype=torch.float64), props, occupancy)
    assert not torch.allclose(a, b, atol=1e-8)  # different object pixels under the probe ...
    c = forward_intensities(amplitude, phase, probe, torch.tensor([[4, 4]]), torch.tensor([[0.0, 0.0]],
                            dtype=torch.float64), props, occupancy)
    torch.testing.assert_close(a, c, atol=1e-8, rtol=1e-4)  # ... the probe is where crop + shift say
    vacuum = forward_intensities(torch.ones_like(amplitude), torch.zeros_like(phase), probe,
                                 torch.tensor([[0, 0]]), torch.zeros(1, 2, dtype=torch.float64), props, occupancy)
    assert torch.argmax(vacuum[0]).item() == 16 * 32 + 16


def test_per_position_tilt_propagators_broadcast():
    amplitude, phase, probe, crop, shift, _, occupancy, (ky, kx) = _setup(torch.complex128)
    tilts = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    dz = torch.full((3,), 2.0, dtype=torch.float64)
    batch = forward_intensities(amplitude, phase, probe, crop, shift, propagator(ky, kx, dz, LAM, tilt_mrad=tilts),
                                occupancy)
    for b in range(3):
        one = forward_intensities(amplitude, phase, probe, crop[b : b + 1], shift[b : b + 1],
                                  propagator(ky, kx, dz, LAM, tilt_mrad=tilts[b]), occupancy)
        torch.testing.assert_close(batch[b], one[0])


def test_gradcheck_all_parameters():
    """float64 gradients of the forward model w.r.t. phase, amplitude, probe, shifts and tilts."""
    torch.manual_seed(1)
    window, obj_px = (8, 8), (14, 14)
    ky, kx = frequency_grid(window, DX, dtype=torch.float64)
    probe0 = probe_modes(make_probe(window, DX, 300.0, 30.0, dtype=torch.complex128), 2, 0.2)
    amplitude0 = 1 - 0.1 * torch.rand(2, 2, *obj_px, dtype=torch.float64)
    phase0 = 0.5 * torch.rand(2, 2, *obj_px, dtype=torch.float64)
    crop = torch.tensor([[1, 2], [5, 4]])
    occupancy = torch.tensor([0.6, 0.4], dtype=torch.float64)

    def f(amplitude, phase, probe, shift, tilt, dz):
        props = propagator(ky, kx, dz, LAM, tilt_mrad=tilt)
        return forward_intensities(amplitude, phase, probe, crop, shift, props, occupancy)

    inputs = (
        amplitude0.requires_grad_(),
        phase0.requires_grad_(),
        probe0.clone().requires_grad_(),
        torch.tensor([[0.2, -0.3], [0.4, 0.1]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64, requires_grad=True),
        torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_window_coverage_counts_the_windows():
    from ptyopt.physics import window_coverage

    crop = torch.tensor([[0, 0], [2, 3], [2, 3], [9, 10], [5, 0]])
    window, canvas = (4, 5), (13, 15)
    expected = torch.zeros(canvas)
    for y, x in crop.tolist():
        expected[y : y + window[0], x : x + window[1]] += 1
    torch.testing.assert_close(window_coverage(crop, window, canvas), expected)


def test_gather_patches_backward_is_the_scatter_add():
    """The gradient of a gather is the sum of the patch gradients over the windows (overlaps add)."""
    image = torch.randn(2, 3, 12, 13, dtype=torch.complex128, requires_grad=True)
    crop = torch.tensor([[0, 0], [2, 3], [2, 3], [4, 5]])
    grad = torch.randn(4, 2, 3, 8, 8, dtype=torch.complex128)
    gather_patches(image, crop, (8, 8)).backward(grad)
    expected = torch.zeros_like(image)
    for j, (y, x) in enumerate(crop.tolist()):
        expected[..., y : y + 8, x : x + 8] += grad[j]
    torch.testing.assert_close(image.grad, expected)


def test_slice_list_and_tensor_give_the_same_far_field():
    from ptyopt.physics import gather_slices

    obj = torch.polar(1 - 0.1 * torch.rand(2, 3, 20, 20, dtype=torch.float64),
                      torch.rand(2, 3, 20, 20, dtype=torch.float64))
    crop = torch.tensor([[0, 0], [3, 4], [10, 11]])
    probes = torch.randn(3, 2, 8, 8, dtype=torch.complex128)
    props = torch.polar(torch.ones(1, 8, 8, dtype=torch.float64), torch.rand(1, 8, 8, dtype=torch.float64))
    as_tensor = multislice_far_field(probes, gather_patches(obj, crop, (8, 8)), props)
    as_list = multislice_far_field(probes, gather_slices(obj, crop, (8, 8)), props)
    torch.testing.assert_close(as_list, as_tensor, rtol=0, atol=0)


def test_transmission_gradients_forward_and_reverse():
    """The custom backward and jvp of t = A exp(i phi) against finite differences and torch.func."""
    from ptyopt.physics import transmission

    a = (1 - 0.2 * torch.rand(3, 4, dtype=torch.float64)).requires_grad_()
    p = (2 * torch.rand(3, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(transmission, (a, p))
    assert torch.autograd.gradcheck(lambda phase: transmission(a.detach(), phase), (p,))
    da, dp = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    _, tangent = torch.func.jvp(transmission, (a.detach(), p.detach()), (da, dp))
    reference = torch.func.jvp(torch.polar, (a.detach(), p.detach()), (da, dp))[1]
    torch.testing.assert_close(tangent, reference)
    batched = torch.func.vmap(transmission)(a.detach()[None].expand(2, -1, -1), p.detach()[None].expand(2, -1, -1))
    torch.testing.assert_close(batched[0], torch.polar(a.detach(), p.detach()))


def test_abs_squared_gradients_forward_and_reverse():
    """The custom backward and jvp of |z|² against finite differences and autograd through Re² + Im²."""
    from ptyopt.physics.multislice import abs_squared

    z = torch.randn(2, 3, 4, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(abs_squared, (z,))
    assert torch.autograd.gradgradcheck(abs_squared, (z,))
    dz = torch.randn(2, 3, 4, dtype=torch.complex128)
    _, tangent = torch.func.jvp(abs_squared, (z.detach(),), (dz,))
    reference = torch.func.jvp(lambda w: w.real**2 + w.imag**2, (z.detach(),), (dz,))[1]
    torch.testing.assert_close(tangent, reference)
    batched = torch.func.vmap(abs_squared)(z.detach()[None].expand(2, -1, -1, -1))
    torch.testing.assert_close(batched[1], z.detach().abs() ** 2)
