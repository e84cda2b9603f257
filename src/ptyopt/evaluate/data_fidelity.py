"""Data fidelity of a finished reconstruction: its state run through the forward model against the data.

R = Σ |√I_model − √I_meas| / Σ √I_meas over every pattern and detector pixel (the crystallographic R-factor of
research/simulation.md §5); the problem (data, preprocessing, geometry, model) is rebuilt from the result's
resolved config, so the patterns are compared exactly as the reconstruction saw them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml

from ptyopt.config import ReconstructionConfig, parse_config
from ptyopt.errors import DataError
from ptyopt.io.result_file import ReconstructionResult

if TYPE_CHECKING:
    from ptyopt.problem import Problem


def result_config(
    result: ReconstructionResult, *, data_path: str | Path | None = None, device: str = "cpu"
) -> ReconstructionConfig:
    """The result's resolved config, with the data file replaced by data_path when given and the device set."""
    try:
        raw = yaml.safe_load(result.config) if result.config else None
    except yaml.YAMLError as err:
        raise DataError(f"the result's stored config is not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise DataError("the result holds no resolved config; the data R-factor needs it")
    raw["device"] = device
    if data_path is not None:
        raw.setdefault("data", {})["path"] = str(data_path)
    return parse_config(raw)


def result_state(result: ReconstructionResult, problem: Problem) -> dict[str, torch.Tensor]:
    """The result's state as the tensors ``problem.model`` takes, on the problem's device and dtype."""
    initial = problem.initial_state
    real, device = problem.real_dtype, problem.device
    complex_dtype = torch.complex64 if real == torch.float32 else torch.complex128
    geometry = problem.geometry
    checks = {"object_phase": result.object_phase, "object_amplitude": result.object_amplitude,
              "probe": result.probe}
    for name, array in checks.items():
        if tuple(np.shape(array)) != tuple(initial[name].shape):
            raise DataError(
                f"the result's {name} has shape {np.shape(array)} but its config on this data gives "
                f"{tuple(initial[name].shape)}; was it reconstructed from another data file?"
            )
    positions = np.asarray(result.positions_ang, dtype=np.float64)
    if positions.shape != geometry.nominal_positions_ang.shape:
        raise DataError(
            f"the result has {positions.shape[0]} positions but the data give {len(geometry.nominal_positions_ang)}"
        )
    offsets_px = (positions - geometry.nominal_positions_ang) / geometry.dx_ang

    def tensor(array, dtype=real):
        return torch.as_tensor(np.asarray(array), device=device).to(dtype)

    return {
        "object_amplitude": tensor(result.object_amplitude),
        "object_phase": tensor(result.object_phase),
        "probe": tensor(result.probe, complex_dtype),
        "position_offsets_px": tensor(offsets_px),
        "tilts_mrad": tensor(result.tilts_mrad),
        "slice_thickness_ang": tensor(np.reshape(result.slice_thickness_ang, -1)),
        "occupancy": tensor(np.reshape(result.occupancy, -1)),
        # the result's positions are final: all of their displacement sits in the offsets
        "scan_affine": torch.zeros_like(initial["scan_affine"]),
        "scan_drift_px": torch.zeros_like(initial["scan_drift_px"]),
    }


def model_r_factor(problem: Problem, state: dict[str, torch.Tensor], *, batch_size: int = 64) -> float:
    """R = Σ|√I_model − √I_meas| / Σ√I_meas of ``problem.model`` on ``state`` over all positions, in batches."""
    numerator = denominator = 0.0
    with torch.no_grad():
        for start in range(0, problem.dataset.n_patterns, batch_size):
            stop = min(start + batch_size, problem.dataset.n_patterns)
            indices = torch.arange(start, stop, device=problem.device)
            predicted = problem.model(state, indices).intensities.to(torch.float64).clamp_min(0)
            measured = problem.patterns(np.arange(start, stop)).to(torch.float64).clamp_min(0)
            root = measured.sqrt()
            numerator += float((predicted.sqrt() - root).abs().sum())
            denominator += float(root.sum())
    if not denominator > 0:
        raise DataError("the measured patterns are zero everywhere; the R-factor is undefined")
    return numerator / denominator


def result_r_factor(
    result: ReconstructionResult,
    *,
    data_path: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> float:
    """Final data R-factor of a result on the data of its config (or on data_path). Raises DataError (or
    ConfigError) when the config or the data file is missing or does not fit the result."""
    from ptyopt.problem import build_problem

    config = result_config(result, data_path=data_path, device=device)
    if not config.data.path.exists():
        raise DataError(f"data file {config.data.path} not found; give the data file explicitly")
    problem = build_problem(config, warm_start=False)  # the result's object is read as pixels
    return model_r_factor(problem, result_state(result, problem), batch_size=batch_size)
