"""Figures of ``ptyopt explain``: one PNG per diagnostic (matplotlib, non-interactive)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.explain.landscape import Cut
from ptyopt.explain.probe_depth import ProbeDepth
from ptyopt.io.result_figures import plt, save_figure


def save_probe_depth_figure(path: Path, depth: ProbeDepth) -> Path:
    """x–depth sections of the intensity through each probe's centre row, and its RMS radius and core fraction."""
    n = len(depth.indices)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4.2), constrained_layout=True)
    window = depth.intensity.shape[-1]
    extent = [-(window // 2) * depth.dx_ang, (window - 1 - window // 2) * depth.dx_ang,
              float(depth.depth_ang[-1]), float(depth.depth_ang[0])]
    for ax, label, index, cube in zip(axes[:n], depth.labels, depth.indices, depth.intensity, strict=True):
        section = cube[:, cube.shape[1] // 2, :]
        ax.imshow(np.sqrt(section / section.max()), aspect="auto", extent=extent, cmap="magma",
                  interpolation="nearest")
        ax.set(title=f"{label} (position {index})", xlabel="x (Å)", ylabel="depth of slice entrance (Å)")
    ax = axes[n]
    for label, rms, core in zip(depth.labels, depth.rms_radius_ang, depth.core_fraction, strict=True):
        line, = ax.plot(depth.depth_ang, rms, marker="o", label=f"{label}: RMS radius")
        ax.plot(depth.depth_ang, core * rms.max(), linestyle="--", color=line.get_color(),
                label=f"{label}: within {depth.core_radius_ang:g} Å (× {rms.max():.2f})")
    ax.set(xlabel="depth (Å)", ylabel="RMS radius (Å)", title="spread and channelling")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def save_gradient_share_figure(path: Path, iterations: list[int], shares: list[dict[str, Any]]) -> Path:
    """Each term's share of each tensor's gradient over the iterations (one panel per tensor)."""
    tensors = list(shares[0]["shares"])
    fig, axes = plt.subplots(1, len(tensors), figsize=(4.0 * len(tensors), 3.6), constrained_layout=True,
                             squeeze=False)
    for ax, tensor in zip(axes[0], tensors, strict=True):
        terms = list(shares[0]["shares"][tensor])
        for term in terms:
            ax.plot(iterations, [s["shares"][tensor][term] for s in shares], marker="o", label=term)
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.set(title=tensor, xlabel="iteration", ylabel="share of the gradient")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_landscape_figure(path: Path, cut: Cut) -> Path:
    """The objective along the cut (a map over (dy, dx) for a position) with its minimum marked."""
    fig, ax = plt.subplots(figsize=(5.6, 4.4 if cut.objective.ndim == 2 else 3.8), constrained_layout=True)
    if cut.objective.ndim == 2:
        half = cut.offsets[-1]
        image = ax.imshow(cut.objective, extent=[-half, half, half, -half], cmap="viridis")
        fig.colorbar(image, ax=ax, label="objective")
        ax.plot(0, 0, "w+", markersize=12, label="the result")
        ax.plot(cut.best_offset[1], cut.best_offset[0], "rx", markersize=10,
                label=f"minimum ({cut.best_offset[0]:+.3f}, {cut.best_offset[1]:+.3f}) Å")
        ax.set(xlabel="dx (Å)", ylabel="dy (Å)", title=f"objective of position {cut.index} moved")
        ax.legend(fontsize=8, loc="lower right")
        return save_figure(fig, path)
    ax.plot(cut.offsets, cut.objective, marker="o")
    ax.axvline(cut.best_offset, color="tab:red", linestyle="--", label=f"minimum {cut.best_offset:+.3g} {cut.unit}")
    ax.axvline(0, color="0.5", linewidth=0.8, label="the result")
    ax.set(xlabel=f"change of {cut.parameter} ({cut.unit})", ylabel="objective",
           title=f"objective along {cut.parameter}\nbest ≈ {cut.best_value:.4g} {cut.unit} "
                 f"(result: {cut.reference:.4g})")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_position_field_figure(path: Path, nominal_ang: np.ndarray, field: dict[str, Any]) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.6), constrained_layout=True)
    for ax, key, title in ((axes[0], "displacement_ang", f"correction (RMS {field['rms_ang']:.3f} Å)"),
                           (axes[1], "local_ang", f"best affine removed (RMS {field['local_rms_ang']:.3f} Å)")):
        d = field[key]
        arrows = ax.quiver(nominal_ang[:, 1], nominal_ang[:, 0], d[:, 1], d[:, 0], np.linalg.norm(d, axis=1),
                           angles="xy", cmap="viridis")
        fig.colorbar(arrows, ax=ax, label="|Δr| (Å)")
        ax.set(title=title, xlabel="x (Å)", ylabel="y (Å)", aspect="equal")
        ax.invert_yaxis()
    return save_figure(fig, path)


def save_residual_figure(path: Path, residuals: np.ndarray, scan_shape: tuple[int, int] | None,
                         nominal_ang: np.ndarray) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2), constrained_layout=True)
    if scan_shape is not None and int(np.prod(scan_shape)) == residuals.size:
        image = axes[0].imshow(residuals.reshape(scan_shape), cmap="inferno")
        axes[0].set(xlabel="scan column", ylabel="scan row")
    else:
        image = axes[0].scatter(nominal_ang[:, 1], nominal_ang[:, 0], c=residuals, s=8, cmap="inferno")
        axes[0].set(xlabel="x (Å)", ylabel="y (Å)", aspect="equal")
        axes[0].invert_yaxis()
    fig.colorbar(image, ax=axes[0], label="R-factor of the pattern")
    axes[0].set_title("data residual per position")
    axes[1].hist(residuals, bins=40, color="tab:orange")
    axes[1].set(xlabel="R-factor of the pattern", ylabel="positions", title=f"median {np.median(residuals):.4f}")
    return save_figure(fig, path)


def save_slice_frc_figure(path: Path, per_slice: list[dict[str, Any]]) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), constrained_layout=True)
    colours = plt.cm.viridis(np.linspace(0, 1, len(per_slice)))
    for entry, colour in zip(per_slice, colours, strict=True):
        frc = entry["frc"]
        axes[0].plot(frc["spatial_frequency_inv_ang"], frc["frc"], color=colour, label=f"slice {entry['slice']}")
    axes[0].plot(per_slice[0]["frc"]["spatial_frequency_inv_ang"], per_slice[0]["frc"]["half_bit_threshold"], "k--",
                 label="half-bit")
    axes[0].set(xlabel="spatial frequency (1/Å)", ylabel="FRC", title="half-dataset FRC per slice")
    axes[0].legend(fontsize=7, ncol=2)
    resolution = [np.nan if e["frc_resolution_ang"] is None else e["frc_resolution_ang"] for e in per_slice]
    axes[1].plot([e["slice"] for e in per_slice], resolution, marker="o")
    axes[1].set(xlabel="slice", ylabel="FRC resolution (Å)", title="resolution through the depth")
    return save_figure(fig, path)
