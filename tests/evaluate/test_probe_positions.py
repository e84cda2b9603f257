import numpy as np
import pytest

from ptyopt.errors import DataError
from ptyopt.evaluate.probe_positions import position_errors, probe_overlap
from ptyopt.evaluate.registration import fourier_shift_image

K = 64
DX = 0.2  # Å
WAVELENGTH_ANG = 0.019687  # 300 kV


def make_probe(defocus_ang: float) -> np.ndarray:
    """Aperture (20 mrad) probe with a defocus, (K, K) complex, centred by its own FFT layout."""
    k = np.hypot(np.fft.fftfreq(K, DX)[:, None], np.fft.fftfreq(K, DX)[None, :])
    aperture = k * WAVELENGTH_ANG <= 0.020
    chi = np.pi * WAVELENGTH_ANG * defocus_ang * k**2
    return np.fft.fftshift(np.fft.ifft2(aperture * np.exp(-1j * chi)))


def test_same_probe_times_a_global_phase_overlaps_fully():
    probe = make_probe(30.0)
    out = probe_overlap(probe * np.exp(1.3j) * 2.5, probe)
    assert out["probe_overlap"] == pytest.approx(1.0, abs=1e-12)
    assert out["probe_overlap_mixed"] == pytest.approx(1.0, abs=1e-12)


def test_defocused_probe_overlaps_less():
    probe = make_probe(30.0)
    out = probe_overlap(make_probe(130.0), probe)
    assert out["probe_overlap"] < 0.8
    closer = probe_overlap(make_probe(40.0), probe)
    assert out["probe_overlap"] < closer["probe_overlap"] < 1.0


def test_registration_undoes_a_probe_shift():
    probe = make_probe(30.0)
    moved = fourier_shift_image(probe, (2.3, -1.6)) * np.exp(0.4j)
    unregistered = probe_overlap(moved, probe, register=False)
    registered = probe_overlap(moved, probe)
    assert unregistered["probe_overlap"] < 0.9
    assert registered["probe_overlap"] > 0.999
    np.testing.assert_allclose(registered["probe_shift_px"], (-2.3, 1.6), atol=0.05)


def test_mixed_state_overlap_counts_the_power_in_other_modes():
    """Modes (P, Q) with Q ⟂ P holding a power fraction f: dominant overlap 1, mixed sqrt(1 − f)."""
    probe = make_probe(30.0)
    other = np.random.default_rng(0).normal(size=probe.shape) * np.abs(probe)
    other = other - np.vdot(probe, other) / np.vdot(probe, probe) * probe
    fraction = 0.2
    other *= np.sqrt(fraction / (1 - fraction) * np.sum(np.abs(probe) ** 2) / np.sum(np.abs(other) ** 2))
    out = probe_overlap(np.stack([probe, other]), probe[None])
    assert out["probe_overlap"] == pytest.approx(1.0, abs=1e-9)
    assert out["probe_overlap_mixed"] == pytest.approx(np.sqrt(1 - fraction), rel=1e-9)


def test_probe_overlap_rejects_different_windows():
    with pytest.raises(DataError, match="window"):
        probe_overlap(np.ones((1, 32, 32)), np.ones((64, 64)))


def test_position_errors_with_and_without_mean_removal():
    rng = np.random.default_rng(0)
    truth = np.stack(np.meshgrid(np.arange(6) * 1.5, np.arange(7) * 1.5, indexing="ij"), -1).reshape(-1, 2)
    jitter = rng.normal(0, 0.05, truth.shape)
    jitter -= jitter.mean(axis=0)
    offset = np.array([0.3, -0.4])
    nominal = truth + rng.normal(0, 0.2, truth.shape)
    out = position_errors(truth + offset + jitter, truth, nominal)
    jitter_rms = np.sqrt(np.mean(np.sum(jitter**2, axis=1)))
    assert out["position_rms_error_centred_ang"] == pytest.approx(jitter_rms, rel=1e-12)
    assert out["position_rms_error_ang"] == pytest.approx(np.sqrt(0.5**2 + jitter_rms**2), rel=1e-12)
    np.testing.assert_allclose(out["position_mean_offset_ang"], offset, atol=1e-12)
    nominal_rms = np.sqrt(np.mean(np.sum((nominal - truth) ** 2, axis=1)))
    assert out["nominal_rms_error_ang"] == pytest.approx(nominal_rms, rel=1e-12)
    assert out["nominal_rms_error_centred_ang"] <= out["nominal_rms_error_ang"]
    exact = position_errors(truth + offset, truth)
    assert exact["position_rms_error_centred_ang"] == pytest.approx(0.0, abs=1e-12)
    assert exact["position_rms_error_ang"] == pytest.approx(0.5)
    assert "nominal_rms_error_ang" not in exact
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        position_errors(truth[:-1], truth)
