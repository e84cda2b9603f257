import matplotlib.pyplot as plt
import numpy as np
import pytest

from ptyopt.errors import DataError
from ptyopt.evaluate.registration import fourier_shift_image
from ptyopt.io.result_figures import (
    save_comparison_figure,
    save_loss_figure,
    save_object_figure,
    save_positions_figure,
    save_probe_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=8_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert not plt.get_fignums()  # the figure was closed


@pytest.fixture
def lattice():
    y, x = np.mgrid[:90, :100].astype(float)
    return 0.5 * (np.cos(2 * np.pi * y / 13.0) + 1) * (np.cos(2 * np.pi * x / 13.0) + 1)


@pytest.fixture
def positions():
    return np.stack(np.meshgrid(np.arange(6) * 1.5, np.arange(7) * 1.5, indexing="ij"), -1).reshape(-1, 2)


def test_object_figure(tmp_path, lattice, positions):
    path = save_object_figure(tmp_path / "sub" / "object.png", lattice, 0.2, positions, origin_ang=(-4.0, -3.0))
    assert path == tmp_path / "sub" / "object.png"
    assert_png(path)
    with pytest.raises(DataError, match=r"expected the slice sum \(Y, X\)"):
        save_object_figure(tmp_path / "bad.png", lattice[None], 0.2)


def test_probe_figure(tmp_path):
    y, x = np.mgrid[-32:32, -32:32].astype(float)
    mode0 = np.exp(-(x**2 + y**2) / 50.0) * np.exp(1j * 0.01 * (x**2 + y**2))
    probe = np.stack([mode0, 0.4 * mode0 * x / 8, 0.2 * mode0 * y / 8]).astype(np.complex64)
    assert_png(save_probe_figure(tmp_path / "probe.png", probe, 0.15, 1.2))
    assert_png(save_probe_figure(tmp_path / "probe1.png", probe[0], 0.15, 1.2))


def test_positions_figure(tmp_path, positions):
    rng = np.random.default_rng(0)
    true = positions + 0.05 * rng.standard_normal(positions.shape)
    refined = true + 0.01 * rng.standard_normal(positions.shape)
    assert_png(save_positions_figure(tmp_path / "positions.png", positions, refined, true))
    assert_png(save_positions_figure(tmp_path / "positions_nominal.png", positions, positions.copy()))
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        save_positions_figure(tmp_path / "bad.png", positions, refined[:-1])


def test_loss_figure(tmp_path):
    iterations = list(range(1, 41))
    history = {"single": [1.0 / i for i in iterations], "pacbed": [0.1 * np.exp(-i / 10) for i in iterations],
               "sparse": [0.0] + [0.01] * 39}
    assert_png(save_loss_figure(tmp_path / "loss.png", history, iterations))
    with pytest.raises(DataError, match="'single' has 3 values for 40 iterations"):
        save_loss_figure(tmp_path / "bad.png", {"single": [1.0, 2.0, 3.0]}, iterations)


def test_comparison_figure(tmp_path, lattice):
    mask = np.zeros(lattice.shape, dtype=bool)
    mask[15:75, 20:85] = True
    recon = fourier_shift_image(lattice, (0.6, -1.2)) + 0.3 + 0.02 * np.random.default_rng(1).standard_normal(
        lattice.shape)
    assert_png(save_comparison_figure(tmp_path / "comparison.png", recon, lattice, mask, dx_ang=0.2))
    metrics = {"rmse_rad": 0.1, "nrmse": 0.05, "pearson_r": 0.9, "psnr_db": 26.0, "shift_px": [0.0, 0.0]}
    assert_png(save_comparison_figure(tmp_path / "given.png", recon, lattice, mask, metrics, register=False))
