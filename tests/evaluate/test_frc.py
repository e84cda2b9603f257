import numpy as np
import pytest

from ptyopt.errors import DataError
from ptyopt.evaluate.frc import fourier_ring_correlation, half_bit_threshold
from ptyopt.evaluate.registration import fourier_shift_image

DX = 0.2  # Å


def test_half_bit_threshold_formula():
    assert half_bit_threshold(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-4)
    assert half_bit_threshold(np.array([100.0]))[0] == pytest.approx((0.2071 + 0.19102) / (1.2071 + 0.09102))
    assert half_bit_threshold(np.array([1e12]))[0] == pytest.approx(0.2071 / 1.2071, rel=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (48, 80)])
def test_frc_of_an_image_with_itself_is_one_everywhere(shape):
    image = np.random.default_rng(0).normal(size=shape)
    frc = fourier_ring_correlation(image, image, DX)
    np.testing.assert_allclose(frc.frc, 1.0, atol=1e-12)
    assert frc.resolution_ang is None
    n_rings = min(shape) // 2
    assert len(frc.frc) == len(frc.n_pixels) == len(frc.threshold) == n_rings
    # rings of width 1/(min(Y, X)·dx) up to Nyquist 1/(2 dx)
    np.testing.assert_allclose(frc.spatial_frequency_inv_ang, np.arange(1, n_rings + 1) / (min(shape) * DX))
    assert frc.spatial_frequency_inv_ang[-1] == pytest.approx(1 / (2 * DX))
    assert (frc.n_pixels > 0).all()
    # the rings up to Nyquist hold about the pixels of the inscribed disc (minus the DC pixel)
    assert frc.n_pixels.sum() == pytest.approx(np.pi * (n_rings + 0.5) ** 2 * max(shape) / min(shape), rel=0.05)


def test_frc_of_independent_noise_crosses_the_threshold_in_the_first_rings():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(128, 128)), rng.normal(size=(128, 128))
    frc = fourier_ring_correlation(a, b, DX)
    first_below = int(np.argmax(frc.frc < frc.threshold))
    assert frc.frc[first_below] < frc.threshold[first_below]
    assert first_below <= 3
    assert frc.resolution_ang >= 1 / frc.spatial_frequency_inv_ang[3]
    assert np.abs(frc.frc[10:]).mean() < 0.1  # no correlation at all


def test_frc_equals_snr_over_one_plus_snr():
    """a = s + n1, b = s + n2 with equal signal and noise powers: FRC = SNR/(1 + SNR) = 1/2 on every ring."""
    rng = np.random.default_rng(4)
    signal = rng.normal(size=(256, 256))
    a, b = signal + rng.normal(size=signal.shape), signal + rng.normal(size=signal.shape)
    frc = fourier_ring_correlation(a, b, DX)
    assert frc.frc[20:].mean() == pytest.approx(0.5, abs=0.02)


def test_frc_resolution_of_a_band_limited_signal():
    """Common signal only below k_c, independent noise everywhere: the FRC crosses near k_c."""
    rng = np.random.default_rng(5)
    shape = (256, 256)
    ky = np.fft.fftfreq(shape[0], DX)[:, None]
    kx = np.fft.fftfreq(shape[1], DX)[None, :]
    k_cut = 1.0  # 1/Å, i.e. 1 Å
    spectrum = np.fft.fft2(rng.normal(size=shape)) * (np.hypot(ky, kx) < k_cut)
    signal = 10 * np.fft.ifft2(spectrum).real
    frc = fourier_ring_correlation(signal + rng.normal(size=shape), signal + rng.normal(size=shape), DX)
    assert frc.resolution_ang == pytest.approx(1 / k_cut, rel=0.05)


def test_apodisation_suppresses_the_edge_streaks_of_a_shifted_ramp():
    """Two images with large unrelated content plus a common ramp: the periodic edge jump correlates the images
    along the axes unless apodised."""
    rng = np.random.default_rng(6)
    ramp = np.linspace(0, 50, 64)[None, :] * np.ones((64, 1))
    a, b = ramp + rng.normal(size=(64, 64)), ramp + rng.normal(size=(64, 64))
    raw = fourier_ring_correlation(a, b, DX, apodize=False)
    apodized = fourier_ring_correlation(a, b, DX)
    assert raw.frc[10:].mean() > 3 * abs(apodized.frc[10:].mean())


def test_frc_rejects_bad_input():
    image = np.zeros((32, 32))
    with pytest.raises(DataError, match="one shape"):
        fourier_ring_correlation(image, np.zeros((32, 30)), DX)
    with pytest.raises(DataError, match="too small"):
        fourier_ring_correlation(np.zeros((4, 32)), np.zeros((4, 32)), DX)
    with pytest.raises(DataError, match="NaN"):
        fourier_ring_correlation(image, np.full((32, 32), np.nan), DX)


def test_frc_curve_is_json_ready():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32))
    curve = fourier_ring_correlation(image, fourier_shift_image(image, (0.3, 0)), DX).to_dict()
    assert set(curve) == {"resolution_ang", "spatial_frequency_inv_ang", "frc", "half_bit_threshold", "n_pixels"}
    assert all(isinstance(v, float) for v in curve["frc"]) and all(isinstance(v, int) for v in curve["n_pixels"])
