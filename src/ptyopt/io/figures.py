"""Summary figures (PNG) written with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_cbed_figure(
    path: str | Path,
    probe: np.ndarray,
    phase_rad: np.ndarray,
    patterns: np.ndarray,
    pacbed: np.ndarray,
    *,
    labels: tuple[str, ...] | None = None,
    dx_ang: float,
    mrad_per_px: float,
    title: str,
) -> Path:
    """Probe |psi|, projected phase, the PACBED and up to three single patterns (log scale) in one PNG.

    labels: titles of the single patterns (default "CBED #i").
    """
    path = Path(path)
    n_single = min(3, len(patterns))
    fig, axes = plt.subplots(1, 3 + n_single, figsize=(3.2 * (3 + n_single), 3.4), constrained_layout=True)
    real_extent = [0, probe.shape[1] * dx_ang, probe.shape[0] * dx_ang, 0]
    axes[0].imshow(np.abs(probe), cmap="magma", extent=real_extent)
    axes[0].set(title="probe |ψ|", xlabel="x (Å)", ylabel="y (Å)")
    obj_extent = [0, phase_rad.shape[1] * dx_ang, phase_rad.shape[0] * dx_ang, 0]
    im = axes[1].imshow(phase_rad, cmap="gray", extent=obj_extent)
    axes[1].set(title="object phase, slice sum", xlabel="x (Å)")
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="rad")
    half_y, half_x = pacbed.shape[0] // 2 * mrad_per_px, pacbed.shape[1] // 2 * mrad_per_px
    k_extent = [-half_x, half_x, half_y, -half_y]
    for ax, image, label in [(axes[2], pacbed, "PACBED")] + [
        (axes[3 + i], patterns[i], labels[i] if labels else f"CBED #{i}") for i in range(n_single)
    ]:
        ax.imshow(np.log10(np.maximum(image, image.max() * 1e-6)), cmap="inferno", extent=k_extent)
        ax.set(title=f"{label} (log)", xlabel="kx (mrad)")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
