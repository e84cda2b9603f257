import pytest
import torch

from ptyopt.physics import fourier_shift


@pytest.mark.parametrize("shift", [(1, 0), (0, -3), (5, 7), (-2, 11)])
def test_integer_shift_equals_roll(shift, cdtype):
    images = torch.randn(3, 16, 24, dtype=cdtype)
    out = fourier_shift(images, torch.tensor([shift] * 3, dtype=images.real.dtype))
    tol = 1e-5 if cdtype == torch.complex64 else 1e-12
    torch.testing.assert_close(out, torch.roll(images, shifts=shift, dims=(-2, -1)), atol=tol, rtol=tol)


def test_real_input_stays_real():
    images = torch.randn(2, 16, 16, dtype=torch.float64)
    out = fourier_shift(images, torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64))
    assert not out.is_complex()
    torch.testing.assert_close(out[0], torch.roll(images[0], (1, 2), (-2, -1)))


def test_shift_and_back_is_identity(cdtype):
    images = torch.randn(4, 20, 20, dtype=cdtype)
    shifts = torch.rand(4, 2, dtype=images.real.dtype) * 6 - 3
    back = fourier_shift(fourier_shift(images, shifts), -shifts)
    tol = 1e-5 if cdtype == torch.complex64 else 1e-12
    torch.testing.assert_close(back, images, atol=tol, rtol=tol)


def test_subpixel_shift_moves_centroid():
    y = torch.arange(32, dtype=torch.float64)[:, None]
    x = torch.arange(32, dtype=torch.float64)[None, :]
    blob = torch.exp(-((y - 16) ** 2 + (x - 16) ** 2) / 8)
    out = fourier_shift(blob, torch.tensor([0.3, -1.7], dtype=torch.float64))
    cy, cx = (out * y).sum() / out.sum(), (out * x).sum() / out.sum()
    assert cy.item() == pytest.approx(16.3, abs=1e-6) and cx.item() == pytest.approx(14.3, abs=1e-6)
