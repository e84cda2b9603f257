"""Object constraints (real space and Fourier filters) against their formulas."""

import math

import pytest
import torch

from ptyopt.objective.constraints import CONSTRAINTS, apply_constraints
from tests.objective.constraints.helpers import make_ctx, make_state

F64 = torch.float64


def run(name, state, ctx=None, **params):
    cls = CONSTRAINTS.get(name)
    apply_constraints([cls(cls.Params(**params))], state, ctx or make_ctx(scan_mask=None))


def obj(phase, amplitude=None):
    return {"object_phase": phase, "object_amplitude": torch.ones_like(phase) if amplitude is None else amplitude}


def gaussian(sigma, radius):
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=F64) / sigma) ** 2)
    return g / g.sum()


# --- lateral blur ---------------------------------------------------------------------------------------------


def test_blur_of_an_impulse_is_the_separable_gaussian():
    phase = torch.zeros(1, 1, 15, 15, dtype=F64)
    phase[0, 0, 7, 7] = 1.0
    state = obj(phase)
    run("object_blur", state, sigma_px=1.0)
    g = gaussian(1.0, 3)
    expected = torch.zeros(15, 15, dtype=F64)
    expected[4:11, 4:11] = g[:, None] * g[None, :]
    torch.testing.assert_close(phase[0, 0], expected)
    assert math.isclose(float(phase.sum()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("padding", ["replicate", "reflect"])
def test_blur_keeps_vacuum_and_does_not_wrap(padding):
    amplitude = torch.ones(1, 2, 12, 12, dtype=F64)
    phase = torch.zeros(1, 2, 12, 12, dtype=F64)
    phase[..., :, 0] = 1.0  # a line on the left edge
    state = obj(phase, amplitude)
    run("object_blur", state, sigma_px=1.0, padding=padding)
    torch.testing.assert_close(amplitude, torch.ones_like(amplitude))
    assert torch.all(phase[..., :, -4:] == 0)  # nothing reaches the right edge
    assert torch.all(phase[..., :, 0] > 0.3)


@pytest.mark.parametrize(("target", "changed"), [("phase", "object_phase"), ("amplitude", "object_amplitude")])
def test_blur_target_selects_the_part(target, changed):
    state = make_state()
    before = {k: v.detach().clone() for k, v in state.items()}
    run("object_blur", state, target=target)
    for key in ("object_phase", "object_amplitude"):
        assert torch.equal(state[key].detach(), before[key]) == (key != changed)


# --- blur along z ------------------------------------------------------------------------------------------------


def test_z_blur_does_not_wrap_between_top_and_bottom_slices():
    phase = torch.zeros(1, 8, 6, 6, dtype=F64)
    phase[:, 0] = 1.0  # a feature in the top slice
    state = obj(phase)
    run("object_z_blur", state, sigma_slices=1.0)
    assert torch.all(phase[:, -1] == 0) and torch.all(phase[:, 4:] == 0)
    # the kernel (radius 3) with the top slice repeated: slice 0 keeps g(0) + g(-1) + g(-2) + g(-3)
    g = gaussian(1.0, 3)
    torch.testing.assert_close(phase[0, :4, 0, 0], torch.stack([g[:4].sum(), g[:3].sum(), g[:2].sum(), g[0]]))
    # a periodic blur would have leaked it into the bottom slice
    periodic = sum(w * torch.roll(torch.eye(8, dtype=F64)[0], s) for s, w in zip(range(-3, 4), g, strict=True))
    assert periodic[-1] > 0.2


def test_z_blur_keeps_a_constant_column_and_is_a_no_op_for_one_slice():
    column = torch.full((1, 5, 4, 4), 0.7, dtype=F64)
    state = obj(column.clone())
    run("object_z_blur", state)
    torch.testing.assert_close(state["object_phase"], column)
    single = make_state()
    single = {k: v.detach()[:, :1].clone() if k.startswith("object") else v.detach() for k, v in single.items()}
    before = single["object_phase"].clone()
    run("object_z_blur", single)
    assert torch.equal(single["object_phase"], before)


# --- thresholds, positivity, coupling ----------------------------------------------------------------------------


def test_amplitude_threshold_clamps_and_relaxes():
    amplitude = torch.tensor([0.5, 0.95, 1.0, 1.3], dtype=F64).reshape(1, 1, 1, 4)
    state = obj(torch.zeros_like(amplitude), amplitude.clone())
    run("amplitude_threshold", state)
    torch.testing.assert_close(state["object_amplitude"].flatten(), torch.tensor([0.9, 0.95, 1.0, 1.1], dtype=F64))
    state = obj(torch.zeros_like(amplitude), amplitude.clone())
    run("amplitude_threshold", state, min_amplitude=0.8, max_amplitude=1.0, relax=0.25)
    expected = 0.25 * amplitude + 0.75 * amplitude.clamp(0.8, 1.0)
    torch.testing.assert_close(state["object_amplitude"], expected)


def test_phase_positive_clip():
    phase = torch.tensor([-0.5, -0.1, 0.0, 0.4], dtype=F64).reshape(1, 1, 1, 4)
    state = obj(phase.clone())
    run("phase_positive", state, ctx=make_ctx(scan_mask=None))
    torch.testing.assert_close(state["object_phase"].flatten(), torch.tensor([0.0, 0.0, 0.0, 0.4], dtype=F64))
    state = obj(phase.clone())
    run("phase_positive", state, ctx=make_ctx(scan_mask=None), relax=0.5)
    torch.testing.assert_close(state["object_phase"], 0.5 * phase + 0.5 * phase.clamp(min=0))


def test_phase_positive_shift_uses_the_minimum_of_the_scanned_region():
    state = make_state()
    ctx = make_ctx()
    phase = state["object_phase"].detach()
    original = phase.clone()
    run("phase_positive", state, ctx, mode="shift")
    assert float(phase[..., ctx.scan_mask].min()) == pytest.approx(0.0, abs=1e-14)
    differences = phase - original
    torch.testing.assert_close(differences, torch.full_like(differences, float(differences.flatten()[0])))
    # a phase already positive is left alone
    positive = original - original.min() + 0.1
    state = obj(positive.clone())
    run("phase_positive", state, mode="shift")
    assert torch.equal(state["object_phase"], positive)


def test_coupling_alpha1_one_gives_the_phase_object_amplitude():
    state = make_state()
    amplitude, phase = state["object_amplitude"].detach(), state["object_phase"].detach()
    ctx = make_ctx(scan_mask=None)
    ratio = torch.log(amplitude).abs().sum() / phase.abs().sum()
    expected, phase_before = torch.exp(-ratio * phase), phase.clone()
    run("amplitude_phase_coupling", state, ctx, alpha_amplitude=1.0, alpha_phase=0.0)
    torch.testing.assert_close(amplitude, expected)
    assert torch.equal(phase, phase_before)


def test_coupling_alpha2_one_gives_the_amplitude_derived_phase_and_uses_the_scan_mask():
    state = make_state()
    amplitude, phase = state["object_amplitude"].detach(), state["object_phase"].detach()
    ctx = make_ctx()
    log_a = torch.log(amplitude)
    ratio = log_a[..., ctx.scan_mask].abs().sum() / phase[..., ctx.scan_mask].abs().sum()
    amplitude_before = amplitude.clone()
    run("amplitude_phase_coupling", state, ctx, alpha_amplitude=0.0, alpha_phase=1.0)
    torch.testing.assert_close(phase, -log_a / ratio)
    torch.testing.assert_close(amplitude, amplitude_before)


def test_coupling_is_a_no_op_for_zero_phase_and_keeps_phase_for_unit_amplitude():
    amplitude = torch.full((1, 2, 4, 4), 0.9, dtype=F64)
    state = obj(torch.zeros(1, 2, 4, 4, dtype=F64), amplitude.clone())
    run("amplitude_phase_coupling", state, alpha_phase=0.5)
    assert torch.equal(state["object_amplitude"], amplitude) and torch.all(state["object_phase"] == 0)
    phase = torch.rand(1, 2, 4, 4, dtype=F64)
    state = obj(phase.clone())
    run("amplitude_phase_coupling", state, alpha_amplitude=0.5, alpha_phase=0.5)
    assert torch.isfinite(state["object_phase"]).all() and torch.equal(state["object_phase"], phase)
    torch.testing.assert_close(state["object_amplitude"], torch.ones_like(phase))


# --- Fourier filters ---------------------------------------------------------------------------------------------


def plane_wave(shape, freqs):
    grids = torch.meshgrid(*[torch.arange(n, dtype=F64) for n in shape], indexing="ij")
    return torch.cos(2 * math.pi * sum(f * g for f, g in zip(freqs, grids, strict=True)))


def test_kr_filter_removes_high_and_keeps_low_frequencies():
    low = plane_wave((32, 32), (2 / 32, 1 / 32))  # rho = 2 |f| = 0.14
    high = plane_wave((32, 32), (0.5, 0.5))  # the corner of the spectrum, rho = sqrt(2)
    phase = (low + high).reshape(1, 1, 32, 32)
    amplitude = (1 + 0.05 * low).reshape(1, 1, 32, 32)
    state = obj(phase.clone(), amplitude.clone())
    run("kr_filter", state, cutoff_fraction=0.5, width_fraction=0.1)
    torch.testing.assert_close(state["object_phase"][0, 0], low, atol=1e-6, rtol=0)
    torch.testing.assert_close(state["object_amplitude"], amplitude, atol=1e-6, rtol=0)


def test_kr_filter_matches_the_sigmoid_at_the_cutoff():
    wave = plane_wave((40, 40), (0.125, 0.0))  # rho = 0.25 = the cutoff: M = 1/2
    state = obj(wave.reshape(1, 1, 40, 40).clone())
    run("kr_filter", state, cutoff_fraction=0.25, width_fraction=0.1, target="phase")
    torch.testing.assert_close(state["object_phase"][0, 0], 0.5 * wave)


def test_kz_filter_damps_a_plane_wave_by_the_formula():
    shape, freqs, beta, alpha = (8, 16, 16), (1 / 8, 1 / 16, 0.0), 1.0, 1.0
    wave = plane_wave(shape, freqs)
    state = obj(wave[None].clone())
    run("kz_filter", state, beta=beta, alpha=alpha, target="phase")
    kz, ky, kx = freqs
    kr2 = ky**2 + kx**2
    weight = (1 - 2 / math.pi * math.atan((beta * abs(kz) / math.sqrt(kr2 + 1e-3)) ** 2)) * math.exp(-alpha * kr2)
    assert 0.05 < weight < 0.95
    torch.testing.assert_close(state["object_phase"][0], weight * wave)


def test_kz_filter_maps_the_amplitude_towards_one_and_keeps_the_mean_phase():
    amplitude = torch.full((1, 4, 8, 8), 0.8, dtype=F64)
    phase = torch.full((1, 4, 8, 8), 0.3, dtype=F64)
    state = obj(phase.clone(), amplitude.clone())
    run("kz_filter", state, amplitude_contrast=0.9)
    torch.testing.assert_close(state["object_amplitude"], torch.full_like(amplitude, 1 + 0.9 * (0.8 - 1)))
    torch.testing.assert_close(state["object_phase"], phase)
