"""Evaluation figures (PNG, matplotlib's non-interactive backend): the aligned phase, its reference, their
difference and the FRC curve with the half-bit threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ptyopt.evaluate.evaluation import PhaseAlignment  # noqa: E402
from ptyopt.io.result_figures import image_extent, save_figure  # noqa: E402


def plot_frc(ax: plt.Axes, frc: Mapping[str, Any] | None, label: str = "FRC") -> None:
    """FRC curve and half-bit threshold against spatial frequency [1/Å] (frc as from ``FRCResult.to_dict``),
    with the resolution marked; an empty panel saying so when frc is None."""
    if frc is None:
        ax.text(0.5, 0.5, "no FRC (region too small)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    k = np.asarray(frc["spatial_frequency_inv_ang"], dtype=np.float64)
    ax.plot(k, frc["frc"], color="tab:blue", label=label)
    ax.plot(k, frc["half_bit_threshold"], color="tab:red", linestyle="--", label="half-bit threshold")
    resolution = frc.get("resolution_ang")
    if resolution:
        ax.axvline(1.0 / resolution, color="0.4", linestyle=":", label=f"resolution {resolution:.3g} Å")
    ax.axhline(0.0, color="0.8", linewidth=0.8)
    ax.set(xlabel="spatial frequency (1/Å)", ylabel="FRC", ylim=(min(-0.2, float(np.min(frc["frc"]))), 1.05),
           title="Fourier ring correlation")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, alpha=0.3)


def save_evaluation_figure(
    path: str | Path,
    alignment: PhaseAlignment,
    frc: Mapping[str, Any] | None,
    *,
    labels: Sequence[str] = ("reconstruction (aligned)", "truth"),
    title: str = "",
) -> Path:
    """Aligned phase, reference and their difference on the compared region [rad] (axes in Å of the positions'
    frame), and the FRC panel; writes one PNG and returns its path."""
    box = alignment.box
    inside = alignment.region[box]
    aligned = np.where(inside, alignment.aligned[box], np.nan)
    reference = np.where(inside, alignment.reference[box], np.nan)
    difference = aligned - reference
    limits = (float(np.nanmin(reference)), float(np.nanmax(reference)))
    bound = float(np.nanmax(np.abs(difference))) or 1.0
    dx, (y0, x0) = alignment.dx_ang, alignment.origin_ang
    extent = image_extent(inside.shape, dx, (y0 + box[0].start * dx, x0 + box[1].start * dx))
    fig, axes = plt.subplots(1, 4, figsize=(18.0, 4.4), constrained_layout=True)
    panels = [(aligned, labels[0], "gray", limits), (reference, labels[1], "gray", limits),
              (difference, f"{labels[0].split(' (')[0]} − {labels[1]}", "RdBu_r", (-bound, bound))]
    for ax, (image, label, cmap, (low, high)) in zip(axes[:3], panels, strict=True):
        drawn = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, extent=extent)
        fig.colorbar(drawn, ax=ax, shrink=0.8, label="phase (rad)")
        ax.set(title=label, xlabel="x (Å)", ylabel="y (Å)")
    plot_frc(axes[3], frc)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
