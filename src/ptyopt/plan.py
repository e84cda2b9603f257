"""``ptyopt plan``: what a setup can resolve and what it will cost, before any reconstruction.

Every number comes from a closed formula of the experiment and the model (λ electron wavelength, α convergence
semi-angle, Δf defocus, s scan step, K detector pixels and dk their reciprocal size as the model sees them):

- real-space pixel dx = 1/(K·dk), probe window K·dx; largest detector angle θ_max = λ·(K/2)·dk; bright-field
  disk radius α/(λ·dk) [px]; lateral resolution limit λ/θ_max = 1/((K/2)·dk) (= 2·dx).
- probe footprint D = sqrt((2α|Δf|)² + (1.22 λ/α)²): the defocused bright-field cone in quadrature with the Airy
  diameter of the in-focus probe. Linear overlap 1 − s/D; area overlap of two disks of diameter D a step apart
  (2/π)(acos u − u·sqrt(1 − u²)), u = s/D; areal oversampling (π D²/4)/s² (probe area per scan-step area,
  Gilgenbach, Chen & LeBeau, M&M 30, 703, 2024); window oversampling K·dx/D (the window holds the probe).
- depth of field λ/α²; expected depth resolution of one projection λ/(α·θ_t) with θ_t = min(2α, θ_max): a lateral
  frequency at scattering angle θ is transferred over a band of axial frequencies of width ≈ θα/λ, and the
  bright-field overlaps reach θ = 2α. Suggested slice thickness: half the depth resolution (depth sampled at
  Nyquist), and enough slices to span the modelled thickness.
- memory per batch: ``model.memory`` (autograd's saved waves); time per iteration: a ``ptyopt bench`` record scaled
  by the FFT work N·(S·P·O)·K²·log2(K) of one iteration (the forward + backward passes are FFT-bound).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ptyopt.config import ModelConfig, ReconstructionConfig
from ptyopt.errors import ConfigError, DataError
from ptyopt.model.memory import MIB, activation_bytes_per_pattern, free_memory_bytes
from ptyopt.physics.aberrations import canonical_aberrations
from ptyopt.physics.constants import wavelength_ang as electron_wavelength_ang

BENCH_RECORDS = {"cpu": "cpu-small.json", "cuda": "poster-h200.json"}  # shipped in ptyopt/data/bench/


@dataclass(frozen=True)
class PlanInputs:
    """The setup a plan judges. dk_inv_ang and detector_px as the model sees the patterns (after resampling,
    cropping or padding); defocus_ang positive = underfocus; scan_extent_ang the (y, x) span of the positions."""

    energy_kv: float
    conv_angle_mrad: float
    step_ang: float
    dk_inv_ang: float
    detector_px: int
    n_positions: int
    scan_extent_ang: tuple[float, float]
    n_slices: int
    slice_thickness_ang: float
    defocus_ang: float = 0.0
    probe_modes: int = 1
    object_modes: int = 1
    batch_size: int = 32
    object_margin_px: int = 8
    specimen_thickness_ang: float | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = ("energy_kv", "conv_angle_mrad", "step_ang", "dk_inv_ang", "detector_px", "n_positions",
                    "n_slices", "slice_thickness_ang", "probe_modes", "object_modes", "batch_size")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"plan: {name} must be a positive number, got {value!r}")
        if self.specimen_thickness_ang is not None and not self.specimen_thickness_ang > 0:
            raise ConfigError(f"plan: specimen_thickness_ang must be positive, got {self.specimen_thickness_ang}")


def disk_overlap_fraction(step: float, diameter: float) -> float:
    """Area shared by two disks of ``diameter`` whose centres are ``step`` apart, over one disk's area."""
    u = step / diameter
    if u >= 1:
        return 0.0
    return (2 / math.pi) * (math.acos(u) - u * math.sqrt(1 - u * u))


def probe_footprint_ang(wavelength_ang: float, conv_angle_mrad: float, defocus_ang: float) -> float:
    """D = sqrt((2 α |Δf|)² + (1.22 λ/α)²) [Å]: the defocused cone in quadrature with the Airy diameter."""
    alpha = conv_angle_mrad * 1e-3
    return math.hypot(2 * alpha * abs(defocus_ang), 1.22 * wavelength_ang / alpha)


def depth_resolution_ang(wavelength_ang: float, conv_angle_mrad: float, max_angle_mrad: float) -> float:
    """λ/(α·min(2α, θ_max)) [Å]: the axial extent of the transfer at the largest bright-field overlap angle."""
    alpha = conv_angle_mrad * 1e-3
    return wavelength_ang / (alpha * min(2 * alpha, max_angle_mrad * 1e-3))


@dataclass
class Plan:
    inputs: PlanInputs
    wavelength_ang: float
    dx_ang: float
    window_ang: float
    detector_max_angle_mrad: float
    bright_field_radius_px: float
    lateral_resolution_ang: float
    probe_footprint_ang: float
    overlap_linear: float
    overlap_area: float
    areal_oversampling: float
    window_oversampling: float
    depth_of_field_ang: float
    depth_resolution_ang: float
    modelled_thickness_ang: float
    suggested_slice_thickness_ang: float
    suggested_n_slices: int
    memory_per_batch_mib: float
    free_memory_mib: float | None
    time_per_iteration_s: float | None
    time_reference: str
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """(quantity, value) lines for the terminal table."""
        i = self.inputs
        time = ("unknown (no bench record)" if self.time_per_iteration_s is None
                else f"≈ {self.time_per_iteration_s:.3g} s ({self.time_reference})")
        free = "" if self.free_memory_mib is None else f" (free now: {self.free_memory_mib:,.0f} MiB)"
        return [
            ("beam", f"{i.energy_kv:g} kV (λ = {self.wavelength_ang:.5f} Å), α = {i.conv_angle_mrad:g} mrad, "
                     f"defocus {i.defocus_ang:g} Å"),
            ("detector", f"{i.detector_px} px of {i.dk_inv_ang:.4g} 1/Å: out to {self.detector_max_angle_mrad:.1f} "
                         f"mrad = {self.detector_max_angle_mrad / i.conv_angle_mrad:.2f} α; bright-field disk radius "
                         f"{self.bright_field_radius_px:.1f} px"),
            ("real-space pixel", f"dx = 1/(K·dk) = {self.dx_ang:.4f} Å; probe window {self.window_ang:.2f} Å"),
            ("lateral resolution limit", f"λ/θ_max = {self.lateral_resolution_ang:.3f} Å (probe alone: 0.61 λ/α = "
                                         f"{0.61 * self.wavelength_ang / (i.conv_angle_mrad * 1e-3):.3f} Å)"),
            ("probe footprint", f"D = {self.probe_footprint_ang:.3f} Å"),
            ("scan", f"{i.n_positions} positions, step {i.step_ang:g} Å"),
            ("probe overlap", f"linear 1 − s/D = {100 * self.overlap_linear:.1f} %, "
                              f"area {100 * self.overlap_area:.1f} %"),
            ("real-space oversampling", f"areal (π D²/4)/s² = {self.areal_oversampling:.2f}; "
                                        f"window K·dx/D = {self.window_oversampling:.2f}"),
            ("depth of field", f"λ/α² = {self.depth_of_field_ang:.1f} Å"),
            ("expected depth resolution", f"λ/(α·min(2α, θ_max)) = {self.depth_resolution_ang:.1f} Å (one projection)"),
            ("slicing", f"{i.n_slices} × {i.slice_thickness_ang:g} Å = {self.modelled_thickness_ang:.1f} Å modelled; "
                        f"suggested {self.suggested_n_slices} × {self.suggested_slice_thickness_ang:.2f} Å"),
            ("memory per batch", f"{self.memory_per_batch_mib:,.0f} MiB for {i.batch_size} patterns{free}"),
            ("time per iteration", time),
        ]

    def to_json(self) -> str:
        payload = asdict(self)
        payload["inputs"] = asdict(self.inputs)
        return json.dumps(payload, indent=2)


def bench_record(path: str | Path | None, device: str) -> dict[str, Any] | None:
    """A ``ptyopt bench --json`` record: the given file, else the one shipped for the device's kind (or None)."""
    if path is not None:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read the bench record {path}: {err}") from None
    name = BENCH_RECORDS.get(device.split(":")[0])
    if name is None:
        return None
    return json.loads(resources.files("ptyopt.data").joinpath("bench", name).read_text())


def fft_work(n_patterns: int, n_slices: int, probe_modes: int, object_modes: int, pattern_px: int) -> float:
    """FFT work of one iteration, N·(S·P·O)·K²·log2(K) (the multislice's passes are FFT-bound)."""
    return n_patterns * n_slices * probe_modes * object_modes * pattern_px**2 * math.log2(pattern_px)


def estimate_time_s(inputs: PlanInputs, record: dict[str, Any] | None) -> tuple[float | None, str]:
    if record is None:
        return None, ""
    try:
        reference = fft_work(record["patterns"], record["n_slices"], record["probe_modes"],
                             record.get("object_modes", 1), record["pattern_px"])
        measured = float(record["median_iteration_s"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"the bench record lacks {err}; give a file written by 'ptyopt bench --json'") from None
    work = fft_work(inputs.n_positions, inputs.n_slices, inputs.probe_modes, inputs.object_modes, inputs.detector_px)
    label = (f"scaled from bench '{record.get('preset', '?')}' on {record.get('device', '?')}: "
             f"{measured:.3g} s/it, Adam")
    return measured * work / reference, label


def make_plan(inputs: PlanInputs, record: dict[str, Any] | None = None) -> Plan:
    """The plan of a setup: the formulas of the module docstring and the warnings they raise."""
    i = inputs
    wavelength = electron_wavelength_ang(i.energy_kv)
    dx = 1.0 / (i.detector_px * i.dk_inv_ang)
    max_angle_mrad = wavelength * (i.detector_px / 2) * i.dk_inv_ang * 1e3
    footprint = probe_footprint_ang(wavelength, i.conv_angle_mrad, i.defocus_ang)
    depth_res = depth_resolution_ang(wavelength, i.conv_angle_mrad, max_angle_mrad)
    suggested_dz = depth_res / 2
    modelled = i.n_slices * i.slice_thickness_ang
    thickness = i.specimen_thickness_ang or modelled
    model = ModelConfig(n_slices=i.n_slices, probe_modes=i.probe_modes, object_modes=i.object_modes)
    window = (i.detector_px, i.detector_px)
    per_pattern = activation_bytes_per_pattern(model, window, complex_itemsize=8)
    canvas = [math.ceil(extent / dx) + i.detector_px + 2 * i.object_margin_px + 1 for extent in i.scan_extent_ang]
    fixed = canvas[0] * canvas[1] * i.n_slices * i.object_modes * 8 * 6
    free = _free_bytes(i.device)
    seconds, reference = estimate_time_s(i, record)
    alpha = i.conv_angle_mrad * 1e-3
    plan = Plan(
        inputs=i, wavelength_ang=wavelength, dx_ang=dx, window_ang=i.detector_px * dx,
        detector_max_angle_mrad=max_angle_mrad, bright_field_radius_px=alpha / (wavelength * i.dk_inv_ang),
        lateral_resolution_ang=wavelength / (max_angle_mrad * 1e-3), probe_footprint_ang=footprint,
        overlap_linear=max(0.0, 1 - i.step_ang / footprint),
        overlap_area=disk_overlap_fraction(i.step_ang, footprint),
        areal_oversampling=math.pi * footprint**2 / 4 / i.step_ang**2,
        window_oversampling=i.detector_px * dx / footprint,
        depth_of_field_ang=wavelength / alpha**2, depth_resolution_ang=depth_res,
        modelled_thickness_ang=modelled, suggested_slice_thickness_ang=suggested_dz,
        suggested_n_slices=max(1, math.ceil(thickness / suggested_dz - 1e-9)),
        memory_per_batch_mib=(fixed + i.batch_size * per_pattern) / MIB,
        free_memory_mib=None if free is None else free / MIB, time_per_iteration_s=seconds, time_reference=reference,
    )
    plan.warnings = plan_warnings(plan)
    return plan


def plan_warnings(plan: Plan) -> list[str]:
    """What in a setup is unsafe, each with what to change."""
    i, out = plan.inputs, []
    pixel_mrad = plan.wavelength_ang * i.dk_inv_ang * 1e3
    if i.conv_angle_mrad >= plan.detector_max_angle_mrad:
        out.append(f"aperture clipped: the bright-field disk (α = {i.conv_angle_mrad:g} mrad) reaches past the "
                   f"detector edge ({plan.detector_max_angle_mrad:.1f} mrad); crop or bin less, or pad the patterns")
    elif plan.detector_max_angle_mrad < 2 * i.conv_angle_mrad + 2 * pixel_mrad:
        out.append(f"little dark field: the detector ends at {plan.detector_max_angle_mrad:.1f} mrad, less than 2α "
                   f"+ 2 px ({2 * i.conv_angle_mrad + 2 * pixel_mrad:.1f} mrad); the lateral resolution stays near "
                   "the probe's and multislice depth information is weak — keep more of the detector")
    if plan.overlap_linear < 0.5:
        out.append(f"undersampled scan: probe overlap {100 * plan.overlap_linear:.0f} % (step {i.step_ang:g} Å, probe "
                   f"footprint {plan.probe_footprint_ang:.2f} Å); use a step ≤ {plan.probe_footprint_ang / 2:.2f} Å "
                   "or more defocus")
    if plan.window_oversampling < 2:
        out.append(f"probe window too small: the probe footprint ({plan.probe_footprint_ang:.2f} Å) fills more than "
                   f"half the {plan.window_ang:.2f} Å window, so it wraps around; pad the patterns (smaller dk) or "
                   "use less defocus")
    if i.slice_thickness_ang < plan.depth_resolution_ang / 10:
        out.append(f"slices thinner than the depth resolution can support: {i.slice_thickness_ang:g} Å slices, depth "
                   f"resolution ≈ {plan.depth_resolution_ang:.1f} Å; neighbouring slices are set by the "
                   "regularisers, not the data (suggested ≈ {:.2f} Å)".format(plan.suggested_slice_thickness_ang))
    elif i.slice_thickness_ang > 2 * plan.depth_resolution_ang:
        out.append(f"slices thicker than twice the depth resolution ({i.slice_thickness_ang:g} Å vs "
                   f"{plan.depth_resolution_ang:.1f} Å): depth detail the data hold is averaged away")
    if i.specimen_thickness_ang is not None and abs(plan.modelled_thickness_ang / i.specimen_thickness_ang - 1) > 0.1:
        out.append(f"the slices model {plan.modelled_thickness_ang:.1f} Å but the specimen is "
                   f"{i.specimen_thickness_ang:g} Å thick; adjust model.n_slices or model.slice_thickness_ang")
    if plan.free_memory_mib is not None and plan.memory_per_batch_mib > 0.7 * plan.free_memory_mib:
        out.append(f"a batch needs ≈ {plan.memory_per_batch_mib:,.0f} MiB of {plan.free_memory_mib:,.0f} MiB free: "
                   "it will run in chunks (slower); lower solver.batch_size or the probe/object modes")
    return out


def _free_bytes(device: str) -> int | None:
    """The free memory of ``device`` here, or None when it is not present on this machine (planning for another)."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"plan: unknown device '{device}' (e.g. cpu, cuda, cuda:1)") from None
    try:
        return free_memory_bytes(parsed)
    except (RuntimeError, AssertionError):
        return None


def inputs_from_config(config: ReconstructionConfig, specimen_thickness_ang: float | None = None) -> PlanInputs:
    """The plan inputs of a reconstruction config: its data file's experiment (with the config's overrides), the
    detector after the preprocessing, the model's slicing and modes, the solver's batch."""
    from ptyopt.data import Preprocessor
    from ptyopt.problem import load_dataset

    dataset = load_dataset(config)
    geometry = Preprocessor(config.data.preprocess, dataset).geometry
    ky, kx = geometry.shape_px
    if ky != kx:
        raise DataError(f"the preprocessed detector is {ky}×{kx}; reconstruction needs a square detector")
    positions = np.asarray(dataset.positions_ang, dtype=float)
    step = dataset.step_ang or _median_step(positions)
    defocus = -canonical_aberrations(dataset.aberrations).get("C10", 0.0)
    return PlanInputs(
        energy_kv=dataset.energy_kv, conv_angle_mrad=dataset.conv_angle_mrad, step_ang=float(step),
        dk_inv_ang=1.0 / (ky * geometry.pixel_size_ang[0]), detector_px=int(ky), n_positions=dataset.n_patterns,
        scan_extent_ang=tuple(float(v) for v in np.ptp(positions, axis=0)), n_slices=config.model.n_slices,
        slice_thickness_ang=config.model.slice_thickness_ang, defocus_ang=float(defocus),
        probe_modes=config.model.probe_modes, object_modes=config.model.object_modes,
        batch_size=config.solver.batch_size, object_margin_px=config.model.object_margin_px,
        specimen_thickness_ang=specimen_thickness_ang, device=config.device,
    )


def _median_step(positions: np.ndarray) -> float:
    """Median nearest-neighbour distance of the positions [Å] (a scan without a nominal step)."""
    from scipy.spatial import cKDTree

    if len(positions) < 2:
        raise DataError("plan needs at least two scan positions")
    distances, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(distances[:, 1]))
