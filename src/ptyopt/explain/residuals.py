"""Where the model fails: the data residual of every position, and the position-correction field."""

from __future__ import annotations

import numpy as np
import torch

from ptyopt.evaluate.probe_positions import without_affine
from ptyopt.explain.session import Session, batches


def position_residuals(session: Session) -> np.ndarray:
    """R_n = sum_k |sqrt(I_model) - sqrt(I_meas)| / sum_k sqrt(I_meas) of every pattern n (N,): the data R-factor
    pattern by pattern (its weighted mean is the result's R-factor)."""
    problem = session.problem
    out = np.empty(problem.dataset.n_patterns)
    with torch.no_grad():
        for chunk in batches(np.arange(problem.dataset.n_patterns), max(session.batch_size, 64)):
            index = torch.as_tensor(chunk, device=problem.device)
            model = session.model(session.state, index).intensities.double().clamp_min(0).sqrt()
            meas = problem.patterns(chunk).double().clamp_min(0).sqrt()
            ratio = (model - meas).abs().sum(dim=(-2, -1)) / meas.sum(dim=(-2, -1)).clamp_min(1e-30)
            out[chunk] = ratio.cpu().numpy()
    return out


def residual_summary(residuals: np.ndarray, worst: int = 5) -> dict:
    order = np.argsort(residuals)[::-1][:worst]
    return {"median": float(np.median(residuals)), "p95": float(np.percentile(residuals, 95)),
            "max": float(residuals.max()), "worst_positions": order.tolist(),
            "worst_values": residuals[order].tolist()}


def position_field(session: Session) -> dict:
    """The correction each position received (refined - nominal, (N, 2) [Å]) and what no affine map explains."""
    result = session.result
    moved = np.asarray(result.positions_ang) - np.asarray(result.nominal_positions_ang)
    local = without_affine(moved, np.asarray(result.nominal_positions_ang))
    rms = lambda d: float(np.sqrt(np.mean(np.sum(d**2, axis=1))))  # noqa: E731
    return {"displacement_ang": moved, "local_ang": local, "rms_ang": rms(moved), "local_rms_ang": rms(local),
            "max_ang": float(np.max(np.linalg.norm(moved, axis=1))),
            "mean_ang": moved.mean(axis=0).tolist()}
