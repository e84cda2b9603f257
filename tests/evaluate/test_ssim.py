import numpy as np
import pytest

from ptyopt.errors import DataError
from ptyopt.evaluate.ssim import K1, K2, ssim_map, structural_similarity

from .conftest import column_phase


@pytest.fixture
def image():
    axis = np.arange(96) * 0.2
    return column_phase(axis, axis + 0.7)


def test_identical_images_give_one(image):
    assert structural_similarity(image, image, np.ptp(image)) == pytest.approx(1.0, abs=1e-12)


def test_ssim_drops_with_noise(image):
    rng = np.random.default_rng(0)
    data_range = float(np.ptp(image))
    scores = [structural_similarity(image, image + sigma * data_range * rng.normal(size=image.shape), data_range)
              for sigma in (0.01, 0.05, 0.2)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    assert scores[0] > 0.9 and scores[2] < 0.5


def test_constant_images_follow_the_luminance_formula():
    """Zero variances leave only the luminance term (2 μa μb + C1) / (μa² + μb² + C1)."""
    a, b, data_range = np.full((20, 24), 0.3), np.full((20, 24), 0.5), 2.0
    c1 = (K1 * data_range) ** 2
    expected = (2 * 0.3 * 0.5 + c1) / (0.3**2 + 0.5**2 + c1)
    np.testing.assert_allclose(ssim_map(a, b, data_range), expected, rtol=1e-12)


def test_contrast_structure_term_for_an_affine_copy():
    """b = c·a away from the means: the structure term (2σ_ab + C2)/(σ_a² + σ_b² + C2) -> 2c/(1 + c²)."""
    rng = np.random.default_rng(1)
    a = 100.0 + rng.normal(size=(64, 64))
    b = 100.0 + 0.5 * (a - 100.0)
    score = structural_similarity(a, b, data_range=1e-3, sigma_px=3.0)
    assert score == pytest.approx(2 * 0.5 / (1 + 0.5**2), rel=0.02)
    assert K2 == 0.03


def test_mask_restricts_the_mean(image):
    noisy = image.copy()
    noisy[:, 60:] += np.random.default_rng(2).normal(size=(96, 36))
    mask = np.zeros(image.shape, dtype=bool)
    mask[:, :40] = True
    assert structural_similarity(image, noisy, np.ptp(image), mask=mask) == pytest.approx(1.0, abs=1e-9)
    assert structural_similarity(image, noisy, np.ptp(image)) < 0.9


def test_ssim_rejects_bad_input(image):
    with pytest.raises(DataError, match="data_range"):
        structural_similarity(image, image, 0.0)
    with pytest.raises(DataError, match="one shape"):
        structural_similarity(image, image[:-1], 1.0)
    with pytest.raises(DataError, match="mask"):
        structural_similarity(image, image, 1.0, mask=np.zeros((3, 3), dtype=bool))
