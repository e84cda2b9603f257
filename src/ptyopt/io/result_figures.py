"""Figures of a reconstruction result (PNG, matplotlib's non-interactive backend): object, probe, positions,
loss history and the comparison with a ground truth. Each function writes one file and returns its path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from ptyopt.errors import DataError
from ptyopt.evaluate.phase_metrics import align_phase, phase_error_metrics  # noqa: E402
from ptyopt.io.result_file import GlobalScan  # noqa: E402

_DPI = 110


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=_DPI)
    finally:
        plt.close(fig)
    return path


def image_extent(shape: tuple[int, ...], dx: float, origin: tuple[float, float] = (0.0, 0.0)) -> list[float]:
    """imshow extent [left, right, bottom, top] placing pixel (iy, ix)'s centre at origin + (iy, ix)·dx."""
    return [origin[1] - dx / 2, origin[1] + (shape[-1] - 0.5) * dx, origin[0] + (shape[-2] - 0.5) * dx,
            origin[0] - dx / 2]


def save_object_figure(
    path: str | Path,
    phase_sum: np.ndarray,
    dx_ang: float,
    scan_positions_ang: np.ndarray | None = None,
    origin_ang: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Slice-summed object phase (Y, X) [rad] with a colour bar, in Å of the positions' frame (pixel (0, 0) at
    origin_ang (y, x) [Å], pixel dx_ang [Å]); the bounding box of scan_positions_ang (N, 2) [Å] is outlined."""
    phase = np.asarray(phase_sum, dtype=np.float64)
    if phase.ndim != 2:
        raise DataError(f"object phase has shape {phase.shape}; expected the slice sum (Y, X)")
    fig, ax = plt.subplots(figsize=(6.0, 5.2), constrained_layout=True)
    image = ax.imshow(phase, cmap="gray", extent=image_extent(phase.shape, dx_ang, origin_ang))
    fig.colorbar(image, ax=ax, shrink=0.85, label="phase (rad)")
    if scan_positions_ang is not None:
        positions = np.asarray(scan_positions_ang, dtype=np.float64)
        low, high = positions.min(axis=0), positions.max(axis=0)
        ax.add_patch(Rectangle((low[1], low[0]), high[1] - low[1], high[0] - low[0], fill=False,
                               edgecolor="tab:orange", linewidth=1.2, label="scanned region"))
        ax.legend(loc="upper right", fontsize=8)
    ax.set(title=f"object phase, slice sum ({phase.shape[0]}×{phase.shape[1]} px, {dx_ang:.4g} Å/px)",
           xlabel="x (Å)", ylabel="y (Å)")
    return save_figure(fig, path)


def save_probe_figure(path: str | Path, probe: np.ndarray, dx_ang: float, mrad_per_px: float) -> Path:
    """Each probe mode of probe (pmode, Y, X) or (Y, X) complex: |ψ| in real space [Å] with its power fraction,
    and log10 |Ψ(k)| in reciprocal space [mrad] (zero frequency centred)."""
    probe = np.asarray(probe)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3:
        raise DataError(f"probe has shape {probe.shape}; expected (pmode, Y, X) or (Y, X)")
    power = np.sum(np.abs(probe) ** 2, axis=(1, 2))
    fractions = power / power.sum() if power.sum() > 0 else np.zeros_like(power)
    n_modes = probe.shape[0]
    fig, axes = plt.subplots(2, n_modes, figsize=(3.2 * n_modes, 6.4), constrained_layout=True, squeeze=False)
    half_y, half_x = probe.shape[1] // 2 * mrad_per_px, probe.shape[2] // 2 * mrad_per_px
    k_extent = [-half_x - mrad_per_px / 2, (probe.shape[2] - probe.shape[2] // 2 - 0.5) * mrad_per_px,
                (probe.shape[1] - probe.shape[1] // 2 - 0.5) * mrad_per_px, -half_y - mrad_per_px / 2]
    for mode in range(n_modes):
        real_ax, k_ax = axes[0, mode], axes[1, mode]
        real_ax.imshow(np.abs(probe[mode]), cmap="magma", extent=image_extent(probe.shape, dx_ang))
        real_ax.set(title=f"mode {mode}: |ψ|, {100 * fractions[mode]:.1f}% power", xlabel="x (Å)", ylabel="y (Å)")
        spectrum = np.abs(np.fft.fftshift(np.fft.fft2(probe[mode], norm="ortho")))
        floor = max(float(spectrum.max()) * 1e-4, np.finfo(np.float64).tiny)
        k_ax.imshow(np.log10(np.maximum(spectrum, floor)), cmap="viridis", extent=k_extent)
        k_ax.set(title=f"mode {mode}: log10 |Ψ(k)|", xlabel="kx (mrad)", ylabel="ky (mrad)")
    fig.suptitle(f"probe, {n_modes} mode{'s' if n_modes > 1 else ''}")
    return save_figure(fig, path)


def _typical_spacing(points: np.ndarray) -> float:
    if len(points) < 2:
        return 1.0
    distances, _ = cKDTree(points).query(points, k=2)
    spacing = float(np.median(distances[:, 1]))
    return spacing if spacing > 0 else 1.0


def save_positions_figure(
    path: str | Path,
    nominal_ang: np.ndarray,
    refined_ang: np.ndarray,
    true_ang: np.ndarray | None = None,
) -> Path:
    """Nominal scan positions (N, 2) (y, x) [Å] with arrows to the refined ones, exaggerated so that the largest
    correction spans 40% of the scan step (the factor is in the title); true positions, when given, are drawn
    with the same exaggeration about the nominal ones. The y axis points down, as in the object images."""
    nominal = np.asarray(nominal_ang, dtype=np.float64)
    refined = np.asarray(refined_ang, dtype=np.float64)
    if nominal.shape != refined.shape or nominal.ndim != 2 or nominal.shape[1] != 2:
        raise DataError(f"nominal {nominal.shape} and refined {refined.shape} positions must both be (N, 2)")
    true = None if true_ang is None else np.asarray(true_ang, dtype=np.float64)
    if true is not None and true.shape != nominal.shape:
        raise DataError(f"true positions have shape {true.shape}; expected {nominal.shape} like the nominal")
    correction = refined - nominal
    largest = float(np.abs(correction).max()) if correction.size else 0.0
    scale = 0.4 * _typical_spacing(nominal) / largest if largest > 0 else 1.0
    fig, ax = plt.subplots(figsize=(6.0, 6.0), constrained_layout=True)
    ax.scatter(nominal[:, 1], nominal[:, 0], s=6, color="0.5", label="nominal")
    ax.quiver(nominal[:, 1], nominal[:, 0], scale * correction[:, 1], scale * correction[:, 0], angles="xy",
              scale_units="xy", scale=1.0, color="tab:blue", width=0.003, label="refined − nominal")
    rms_correction = float(np.sqrt(np.mean(np.sum(correction**2, axis=1))))
    title = f"positions: corrections ×{scale:.3g}, RMS {rms_correction:.3g} Å"
    if true is not None:
        shown = nominal + scale * (true - nominal)
        ax.scatter(shown[:, 1], shown[:, 0], s=14, marker="x", color="tab:red", label="true (same ×)")
        error = float(np.sqrt(np.mean(np.sum((refined - true) ** 2, axis=1))))
        title += f"\nRMS error refined vs true {error:.3g} Å"
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set(title=title, xlabel="x (Å)", ylabel="y (Å)")
    return save_figure(fig, path)


def save_loss_figure(path: str | Path, history: Mapping[str, Sequence[float]], iterations: Sequence[int]) -> Path:
    """Each loss term of history (name → one value per iteration) against iterations, log y-axis.
    Values that are not positive (a log axis cannot show them) are left out."""
    iterations = np.asarray(iterations)
    curves = {name: np.asarray(values, dtype=np.float64) for name, values in history.items()}
    for name, values in curves.items():
        if values.shape != iterations.shape:
            raise DataError(f"history '{name}' has {values.size} values for {iterations.size} iterations")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for name, values in curves.items():
        ax.plot(iterations, np.where(values > 0, values, np.nan), marker="." if values.size < 50 else None,
                label=name)
    ax.set_yscale("log")
    if curves:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set(title="loss terms", xlabel="iteration", ylabel="value (log)")
    return save_figure(fig, path)


def save_comparison_figure(
    path: str | Path,
    recon: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    metrics: Mapping[str, Any] | None = None,
    *,
    register: bool = True,
    remove_ramp: bool = False,
    dx_ang: float | None = None,
) -> Path:
    """Reconstructed phase (registered, offset removed), truth and their difference (Y, X) [rad], cropped to
    the bounding box of mask; the metrics (computed here unless given) are in the title. Axes in Å when dx_ang
    is given, else in px of the crop."""
    aligned, info = align_phase(recon, truth, mask, register=register, remove_ramp=remove_ramp)
    region = info["region"]
    if metrics is None:
        metrics = {**phase_error_metrics(aligned, truth, region), **info}
    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    truth_box = np.asarray(truth, dtype=np.float64)[box]
    shown = np.where(region[box], aligned[box], np.nan)
    difference = np.where(region[box], aligned[box] - truth_box, np.nan)
    limits = (np.nanmin(truth_box[region[box]]), np.nanmax(truth_box[region[box]]))
    bound = float(np.nanmax(np.abs(difference))) or 1.0
    extent = image_extent(truth_box.shape, dx_ang, (rows[0] * dx_ang, cols[0] * dx_ang)) if dx_ang else None
    unit = "Å" if dx_ang else "px"
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6), constrained_layout=True)
    panels = [(shown, "reconstruction (aligned)", "gray", limits), (truth_box, "truth", "gray", limits),
              (difference, "reconstruction − truth", "RdBu_r", (-bound, bound))]
    for ax, (image, label, cmap, (low, high)) in zip(axes, panels, strict=True):
        drawn = ax.imshow(image, cmap=cmap, vmin=low, vmax=high, extent=extent)
        fig.colorbar(drawn, ax=ax, shrink=0.8, label="phase (rad)")
        ax.set(title=label, xlabel=f"x ({unit})", ylabel=f"y ({unit})")
    shift = metrics["shift_px"] if "shift_px" in metrics else info["shift_px"]
    fig.suptitle(
        f"RMSE {metrics['rmse_rad']:.4g} rad, NRMSE {metrics['nrmse']:.3g}, r {metrics['pearson_r']:.4f}, "
        f"PSNR {metrics['psnr_db']:.2f} dB, shift ({shift[0]:.2f}, {shift[1]:.2f}) px"
    )
    return save_figure(fig, path)


def save_scan_model_figure(path: str | Path, nominal_ang: np.ndarray, scan: GlobalScan) -> Path:
    """The global scan model: left, the nominal grid (N, 2) [Å] and the grid the model maps it to (its
    displacement exaggerated so the largest spans 40% of a step; factor in the title) with A and the drift
    printed; right, the model's displacement (y, x) [Å] against acquisition time (when the order is known)."""
    nominal = np.asarray(nominal_ang, dtype=np.float64)
    moved = np.asarray(scan.displacement_ang, dtype=np.float64)
    largest = float(np.abs(moved).max()) if moved.size else 0.0
    scale = 0.4 * _typical_spacing(nominal) / largest if largest > 0 else 1.0
    fig, (grid, time) = plt.subplots(1, 2, figsize=(11.0, 5.0), constrained_layout=True)
    grid.scatter(nominal[:, 1], nominal[:, 0], s=5, color="0.6", label="nominal")
    shown = nominal + scale * moved
    grid.scatter(shown[:, 1], shown[:, 0], s=5, color="tab:blue", label=f"global model (×{scale:.3g})")
    a = scan.affine_matrix
    grid.set_title(f"A = [[{a[0, 0]:.4f}, {a[0, 1]:.4f}], [{a[1, 0]:.4f}, {a[1, 1]:.4f}]] (y, x)\n"
                   f"displacement ×{scale:.3g}, largest {largest:.3g} Å", fontsize=9)
    grid.invert_yaxis()
    grid.set_aspect("equal")
    grid.legend(loc="upper right", fontsize=8)
    grid.set(xlabel="x (Å)", ylabel="y (Å)")
    if scan.acquisition_time is not None:
        order = np.argsort(scan.acquisition_time)
        for axis, label in enumerate(("y", "x")):
            time.plot(scan.acquisition_time[order], moved[order, axis], lw=0.8, label=f"displacement {label}")
        drift = ", ".join(f"d{k} = ({d[0]:.3g}, {d[1]:.3g})" for k, d in enumerate(scan.drift_ang))
        time.set_title(f"global displacement vs acquisition time\ndrift coefficients [Å]: {drift}", fontsize=9)
        time.set(xlabel="acquisition time τ (first −1/2, last +1/2)", ylabel="Å")
        time.legend(fontsize=8)
    else:
        time.text(0.5, 0.5, "acquisition order unknown: no drift", ha="center", va="center")
        time.set_axis_off()
    return save_figure(fig, path)
