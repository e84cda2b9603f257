"""Check the torchvision stand-in's gaussian_blur against a direct 2-D convolution.

The reference pads with numpy's 'reflect' mode (same as torch's) and sums the 2-D Gaussian kernel
exp(-(x^2/(2 sx^2) + y^2/(2 sy^2))), normalised, over every pixel window: no separability assumed.
Run:  PYTHONPATH=scripts/ptyrad_compare /work/ptyrad_venv/bin/python scripts/ptyrad_compare/check_blur.py
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision.transforms.functional import gaussian_blur  # noqa: E402


def reference(img: np.ndarray, kx: int, ky: int, sx: float, sy: float) -> np.ndarray:
    xs = np.arange(kx) - (kx - 1) / 2
    ys = np.arange(ky) - (ky - 1) / 2
    k2 = np.exp(-0.5 * ((xs[None, :] / sx) ** 2 + (ys[:, None] / sy) ** 2))
    k2 /= k2.sum()
    lead = img.shape[:-2]
    h, w = img.shape[-2:]
    flat = img.reshape(-1, h, w).astype(np.float64)
    out = np.empty_like(flat)
    for n in range(flat.shape[0]):
        p = np.pad(flat[n], ((ky // 2, ky // 2), (kx // 2, kx // 2)), mode="reflect")
        for i in range(h):
            for j in range(w):
                out[n, i, j] = np.sum(p[i : i + ky, j : j + kx] * k2)
    return out.reshape(*lead, h, w)


def main() -> int:
    rng = np.random.default_rng(0)
    cases = [
        ((2, 3, 17, 19), 5, 0.4),            # PtyRAD's obj_rblur: (omode, Nz, Ny, Nx), int kernel, float sigma
        ((4, 16, 16), 5, 1.0),               # detector blur of a batch of patterns
        ((2, 8, 8), [5, 3], [1.3, 0.6]),     # anisotropic: [kx, ky], [sx, sy]
        ((11, 13), 7, None),                 # plain 2-D, sigma derived from the kernel size
        ((1, 2, 3, 9, 10), [3, 5], [0.8]),   # rank 5, one-element sigma
    ]
    worst = 0.0
    for shape, ks, sg in cases:
        a = rng.standard_normal(shape).astype(np.float64)
        got = gaussian_blur(torch.from_numpy(a), kernel_size=ks, sigma=sg).numpy()
        kx, ky = (ks, ks) if isinstance(ks, int) else (ks[0], ks[-1])
        if sg is None:
            sx, sy = (0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in (kx, ky))
        elif isinstance(sg, (int, float)):
            sx = sy = float(sg)
        else:
            sx, sy = float(sg[0]), float(sg[-1])
        ref = reference(a, kx, ky, sx, sy)
        err = float(np.max(np.abs(got - ref)))
        worst = max(worst, err)
        print(f"shape={shape} kernel_size={ks} sigma={sg}: max |stand-in - direct 2-D conv| = {err:.2e}")
    # float32 path and an integer image
    a32 = rng.standard_normal((3, 12, 12)).astype(np.float32)
    err32 = float(np.max(np.abs(gaussian_blur(torch.from_numpy(a32), 5, 0.7).numpy() - reference(a32, 5, 5, 0.7, 0.7))))
    print(f"float32: max error = {err32:.2e}")
    ai = rng.integers(0, 255, (2, 10, 10)).astype(np.uint8)
    gi = gaussian_blur(torch.from_numpy(ai), 3, 1.0).numpy()
    erri = int(np.max(np.abs(gi.astype(int) - np.round(reference(ai, 3, 3, 1.0, 1.0)).astype(int))))
    print(f"uint8: dtype kept = {gi.dtype == np.uint8}, max |difference| after rounding = {erri}")
    ok = worst < 1e-12 and err32 < 1e-5 and erri <= 1 and gi.dtype == np.uint8
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
