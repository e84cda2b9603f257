"""Stand-in for ``torchvision.transforms.functional.gaussian_blur`` (tensors only).

Semantics follow the documented torchvision behaviour:

* ``kernel_size``: an odd positive int, or a pair ``[kx, ky]`` (width first, then height);
* ``sigma``: a positive float, a one-element list, or a pair ``[sx, sy]``; ``None`` derives it from the
  kernel size as ``0.3 * ((k - 1) * 0.5 - 1) + 0.8``;
* the blur acts on the last two dimensions (H, W) of a tensor of any rank >= 2, each 2-D image on its own;
* borders use reflect padding of half the kernel size; the kernel is a normalised sampled Gaussian;
* integer inputs are blurred in float32 and rounded back to their dtype.

Implemented as two 1-D convolutions (rows, then columns), which equals the 2-D convolution with the
outer-product kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur"]


def _pair_ints(kernel_size) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        kx = ky = kernel_size
    elif isinstance(kernel_size, Sequence) and len(kernel_size) in (1, 2):
        kx = int(kernel_size[0])
        ky = int(kernel_size[-1])
    else:
        raise TypeError(f"kernel_size must be an int or a sequence of 1 or 2 ints, got {kernel_size!r}")
    for k in (kx, ky):
        if k <= 0 or k % 2 == 0:
            raise ValueError(f"kernel_size must contain odd positive integers, got {kernel_size!r}")
    return kx, ky


def _pair_sigmas(sigma, kx: int, ky: int) -> tuple[float, float]:
    if sigma is None:
        return tuple(0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in (kx, ky))  # type: ignore[return-value]
    if isinstance(sigma, (int, float)):
        sx = sy = float(sigma)
    elif isinstance(sigma, Sequence) and len(sigma) in (1, 2):
        sx = float(sigma[0])
        sy = float(sigma[-1])
    else:
        raise TypeError(f"sigma must be a number or a sequence of 1 or 2 numbers, got {sigma!r}")
    if sx <= 0 or sy <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    return sx, sy


def _gauss1d(size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    half = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64, device=device) - half
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).to(dtype)


def gaussian_blur(img: torch.Tensor, kernel_size, sigma=None) -> torch.Tensor:
    """Gaussian-blur the last two dimensions of ``img`` (see the module docstring for the semantics)."""
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"this stand-in only blurs torch tensors, got {type(img).__name__}")
    if img.ndim < 2:
        raise ValueError(f"img must have at least 2 dimensions, got shape {tuple(img.shape)}")
    if img.is_complex():
        raise TypeError("gaussian_blur does not take complex tensors")
    kx, ky = _pair_ints(kernel_size)
    sx, sy = _pair_sigmas(sigma, kx, ky)

    out_dtype = img.dtype
    work_dtype = img.dtype if img.is_floating_point() else torch.float32
    h, w = img.shape[-2:]
    x = img.reshape(-1, 1, h, w).to(work_dtype)

    px, py = kx // 2, ky // 2
    if px:
        wx = _gauss1d(kx, sx, work_dtype, img.device).view(1, 1, 1, kx)
        x = F.conv2d(F.pad(x, (px, px, 0, 0), mode="reflect"), wx)
    if py:
        wy = _gauss1d(ky, sy, work_dtype, img.device).view(1, 1, ky, 1)
        x = F.conv2d(F.pad(x, (0, 0, py, py), mode="reflect"), wy)

    x = x.reshape(img.shape)
    if not img.is_floating_point():
        x = torch.round(x).to(out_dtype)
    return x
