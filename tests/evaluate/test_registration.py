import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptyopt.errors import DataError
from ptyopt.evaluate.registration import apodization_window, fourier_shift_image, phase_correlation_shift

SHIFTS = [(1.3, -0.7), (-2.45, 3.17), (0.04, -0.33), (-5.5, 4.25)]


def smooth_field(shape, sigma_px, seed=0):
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")


def atom_lattice(shape, period_px=17.3, width_px=2.0):
    """Square lattice of Gaussian columns; separable, so built as an outer product."""

    def comb(n, start):
        centres = np.arange(-2, n / period_px + 2) * period_px + start
        return np.exp(-((np.arange(n)[:, None] - centres[None, :]) ** 2) / (2 * width_px**2)).sum(axis=1)

    return np.outer(comb(shape[0], 2.1), comb(shape[1], 4.6))


IMAGES = {"smooth": lambda: smooth_field((240, 260), 3.0), "lattice": lambda: atom_lattice((240, 260))}


@pytest.mark.parametrize("shape", [(32, 48), (33, 20)])
@pytest.mark.parametrize("shift", [(3, -5), (-1, 2), (0, 7)])
def test_integer_fourier_shift_equals_roll(shape, shift):
    rng = np.random.default_rng(1)
    image = rng.standard_normal(shape)
    np.testing.assert_allclose(fourier_shift_image(image, shift), np.roll(image, shift, axis=(0, 1)), atol=1e-12)
    complex_image = image + 1j * rng.standard_normal(shape)
    shifted = fourier_shift_image(complex_image, shift)
    assert np.iscomplexobj(shifted)
    np.testing.assert_allclose(shifted, np.roll(complex_image, shift, axis=(0, 1)), atol=1e-12)


def test_fourier_shift_moves_a_peak_to_larger_indices_and_composes():
    image = np.zeros((40, 30))
    image[10, 12] = 1.0
    smooth = gaussian_filter(image, 2.0, mode="wrap")
    half = fourier_shift_image(fourier_shift_image(smooth, (0.5, -0.25)), (0.5, -0.25))
    # not to round-off: an even axis's Nyquist term cannot be shifted by half a pixel and stay real
    np.testing.assert_allclose(half, fourier_shift_image(smooth, (1.0, -0.5)), atol=1e-6)
    moved = fourier_shift_image(smooth, (2.0, 3.0))
    assert np.unravel_index(np.argmax(moved), moved.shape) == (12, 15)


@pytest.mark.parametrize("kind", sorted(IMAGES))
@pytest.mark.parametrize("shift", SHIFTS)
def test_recovers_sub_pixel_shift_of_a_cropped_field(kind, shift):
    """moving = reference content displaced by `shift`, cut from a larger field (no periodic wrap)."""
    big = IMAGES[kind]()
    window = np.s_[70:166, 60:188]  # 96 × 128, non-square
    reference = big[window]
    moving = fourier_shift_image(big, shift)[window]
    estimate = phase_correlation_shift(reference, moving)
    np.testing.assert_allclose(estimate, -np.asarray(shift), atol=0.05)
    # applying the estimate undoes the displacement
    realigned = fourier_shift_image(moving, estimate)
    inner = np.s_[12:-12, 12:-12]
    assert np.abs(realigned - reference)[inner].max() < 0.02 * np.ptp(reference)


@pytest.mark.parametrize("shift", SHIFTS[:2])
def test_whitened_phase_correlation_is_accurate_without_noise(shift):
    big = atom_lattice((200, 200))
    window = np.s_[50:130, 40:150]
    estimate = phase_correlation_shift(big[window], fourier_shift_image(big, shift)[window], whiten=1e-3)
    np.testing.assert_allclose(estimate, -np.asarray(shift), atol=0.05)


def test_noise_degrades_gracefully():
    rng = np.random.default_rng(3)
    big = atom_lattice((240, 260))
    window = np.s_[70:166, 60:188]
    noise = 0.2 * big.std()
    reference = big[window] + noise * rng.standard_normal((96, 128))
    moving = fourier_shift_image(big, (1.3, -0.7))[window] + noise * rng.standard_normal((96, 128))
    np.testing.assert_allclose(phase_correlation_shift(reference, moving), (-1.3, 0.7), atol=0.1)


def test_max_shift_picks_the_lattice_equivalent_peak():
    period = 17.3
    big = atom_lattice((200, 220), period_px=period)
    window = np.s_[50:146, 40:168]
    shift = (period - 0.4, 0.3)  # one lattice vector away from (-0.4, 0.3)
    moving = fourier_shift_image(big, shift)[window]
    estimate = phase_correlation_shift(big[window], moving, max_shift_px=3)
    np.testing.assert_allclose(estimate, (0.4, -0.3), atol=0.05)


def test_upsample_one_gives_the_integer_peak():
    big = smooth_field((120, 120), 2.0)
    estimate = phase_correlation_shift(big[20:100, 20:100], np.roll(big, (3, -2), axis=(0, 1))[20:100, 20:100], 1)
    assert estimate == (-3.0, 2.0)


def test_window_is_flat_in_the_centre_and_zero_at_the_edges():
    window = apodization_window((40, 60), 0.5)
    assert window.shape == (40, 60)
    assert window[20, 30] == pytest.approx(1.0)
    assert window[0].max() == pytest.approx(0.0)
    assert window[:, -1].max() == pytest.approx(0.0)


def test_bad_input_messages():
    with pytest.raises(DataError, match="same shape"):
        phase_correlation_shift(np.zeros((10, 10)), np.zeros((10, 12)))
    bad = np.zeros((10, 10))
    bad[2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        phase_correlation_shift(bad, np.zeros((10, 10)))
    with pytest.raises(DataError, match="too small"):
        phase_correlation_shift(np.zeros((3, 10)), np.zeros((3, 10)))
