"""Hand-made result and dataset files for the evaluation tests (no abTEM, no reconstruction runs)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ptyopt.config import dump_config, parse_config
from ptyopt.data import Dataset4D, GroundTruth, write_dataset
from ptyopt.io.result_file import ReconstructionResult, write_result

PERIOD_ANG = 3.905


def column_phase(y_ang: np.ndarray, x_ang: np.ndarray, width_ang: float = 0.35) -> np.ndarray:
    """Analytic projected phase [rad] of a square lattice of Gaussian columns (well sampled at 0.2 Å)."""
    def comb(coord):
        centres = np.arange(-4, 30) * PERIOD_ANG + 0.4
        return np.exp(-((coord[:, None] - centres[None, :]) ** 2) / (2 * width_ang**2)).sum(axis=1)

    return 0.9 * np.outer(comb(np.asarray(y_ang)), comb(np.asarray(x_ang)))


def make_result(phase_slices, dx_ang, origin_ang, positions_ang, *, probe=None, nominal_ang=None, config=""):
    """A ReconstructionResult of one object mode with phase_slices (S, Y, X) [rad]."""
    phase = np.asarray(phase_slices, dtype=np.float64)[None]
    positions = np.asarray(positions_ang, dtype=np.float64)
    return ReconstructionResult(
        object_phase=phase, object_amplitude=np.ones_like(phase), occupancy=np.ones(1),
        probe=np.ones((1, 8, 8), dtype=np.complex128) if probe is None else probe,
        positions_ang=positions, nominal_positions_ang=positions if nominal_ang is None else nominal_ang,
        tilts_mrad=np.zeros((1, 2)), slice_thickness_ang=np.array([2.0]), dx_ang=dx_ang,
        origin_ang=tuple(origin_ang), config=config,
    )


def run_forward(problem, state):
    with torch.no_grad():
        return problem.model(state, torch.arange(problem.dataset.n_patterns)).intensities.numpy()


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> dict:
    """A dataset whose patterns ptyopt's own forward model computed from a known state (float64), with that state
    as its truth, and the matching result file. 8×8 scan, 1 Å step, 16 px detector of 0.25 1/Å (dx 0.25 Å)."""
    from ptyopt.problem import build_problem
    from ptyopt.reconstruct import result_from_state

    folder: Path = tmp_path_factory.mktemp("synthetic")
    metadata = {"energy_kv": 300.0, "conv_angle_mrad": 20.0, "dk_inv_ang": 0.25, "aberrations": {"defocus": 20.0}}
    placeholder = Dataset4D.from_raster(np.ones((64, 16, 16)), (8, 8), 1.0, **metadata)
    data_path = write_dataset(folder / "data.h5", placeholder)
    config = parse_config({
        "data": {"path": str(data_path)},
        "model": {"n_slices": 2, "slice_thickness_ang": 2.0, "precision": "float64", "object_margin_px": 4},
        "output": {"dir": str(folder / "out")},
    })
    problem = build_problem(config)
    geometry = problem.geometry
    rng = np.random.default_rng(1)
    state = dict(problem.initial_state)
    yy = geometry.origin_ang[0] + np.arange(geometry.canvas_px[0]) * geometry.dx_ang
    xx = geometry.origin_ang[1] + np.arange(geometry.canvas_px[1]) * geometry.dx_ang
    columns = column_phase(yy, xx)
    phase = np.stack([0.4 * columns, 0.6 * columns])[None]
    state["object_phase"] = torch.as_tensor(phase)
    state["position_offsets_px"] = torch.as_tensor(rng.normal(0, 0.3, (64, 2)))
    meas = run_forward(problem, state)
    positions = geometry.nominal_positions_ang + state["position_offsets_px"].numpy() * geometry.dx_ang
    truth = GroundTruth(phase_slices=phase[0], dx_ang=geometry.dx_ang, slice_thickness_ang=2.0,
                        origin_ang=geometry.origin_ang, positions_ang=positions,
                        probe=state["probe"].numpy()[0], probe_dx_ang=geometry.dx_ang)
    write_dataset(data_path, placeholder.replace(meas=meas, truth=truth))
    result = result_from_state(problem, state, {"total": np.ones(3)}, dump_config(config))
    result_path = write_result(folder / "out" / "result.h5", result)
    return {"folder": folder, "data_path": data_path, "result_path": result_path, "result": result,
            "problem": problem, "state": state, "meas": meas}
