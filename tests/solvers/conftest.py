"""Small synthetic problems for the exit-wave solvers, built with ptyopt's own forward model (no abTEM).

The dataset file only fixes the geometry (16-px detector, 0.25 Å pixels, a 4×4 raster of 2-px steps, so every
probe sits on integer pixels); the measured patterns of a test come from ``simulate`` on a chosen true state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptyopt.config import parse_config
from ptyopt.data import Dataset4D, write_dataset
from ptyopt.objective.losses import build_losses
from ptyopt.problem import build_problem
from ptyopt.solvers import Batch, IterationPlan, SolverContext, TrainingSet, make_solver

WINDOW_PX = 16
DX_ANG = 0.25


@pytest.fixture(scope="session")
def synthetic_path(tmp_path_factory):
    scan = (4, 4)
    meas = np.ones((scan[0] * scan[1], WINDOW_PX, WINDOW_PX), dtype=np.float32)
    dataset = Dataset4D.from_raster(meas, scan, 2 * DX_ANG, energy_kv=300.0, conv_angle_mrad=20.0,
                                    dk_inv_ang=1.0 / (WINDOW_PX * DX_ANG), aberrations={"defocus": 20.0})
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "synthetic.h5", dataset)


@pytest.fixture
def make_problem(synthetic_path, tmp_path):
    """make_problem(**model) -> Problem in float64 (model options override n_slices, probe_modes, ...)."""

    def make(optimize=None, **model):
        raw = {
            "data": {"path": str(synthetic_path)},
            "model": {"precision": "float64", "object_margin_px": 2, "aperture_edge": "hard", **model},
            "optimize": optimize or {},
            "output": {"dir": str(tmp_path / "out")},
        }
        return build_problem(parse_config(raw))

    return make


def random_state(problem, seed: int, phase_rad: float = 0.6, amplitude_dip: float = 0.2) -> dict[str, torch.Tensor]:
    """The problem's initial state with a random object (smooth-ish phase, amplitude in [1 - dip, 1])
    and a probe with a random phase error, so that conj() and max|.|^2 matter in every formula."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: value.clone() for key, value in problem.initial_state.items()}
    shape = state["object_phase"].shape
    state["object_phase"] = phase_rad * torch.rand(shape, generator=generator, dtype=torch.float64)
    state["object_amplitude"] = 1 - amplitude_dip * torch.rand(shape, generator=generator, dtype=torch.float64)
    error = torch.polar(torch.ones_like(state["probe"].real),
                        0.3 * torch.randn(state["probe"].shape, generator=generator, dtype=torch.float64))
    state["probe"] = state["probe"] * error
    return state


def simulate(problem, state, indices) -> torch.Tensor:
    """Noise-free patterns (B, K, K) of ``state`` at the positions ``indices`` (the model's convention)."""
    with torch.no_grad():
        return problem.model(state, torch.as_tensor(indices)).intensities


def make_batch(problem, truth_state, indices) -> Batch:
    indices = np.asarray(indices)
    return Batch(indices, torch.as_tensor(indices), simulate(problem, truth_state, indices))


def training_set(problem, truth_state, indices) -> TrainingSet:
    """The positions ``indices`` as a full-batch solver's training set, their patterns simulated from the truth."""
    return TrainingSet(np.sort(np.asarray(indices)), lambda part, _: simulate(problem, truth_state, part),
                       problem.device)


def make_solver_on(problem, name: str, options: dict, state: dict, active=("object_amplitude", "object_phase",
                   "probe", "positions")):
    """A solver on ``state`` (tensors updated in place), its update windows opened for ``active``."""
    solver = make_solver(name, options, SolverContext.of(problem, state, build_losses(problem.config.loss)))
    solver.start_iteration(IterationPlan.simple(active))
    return solver
