"""The data misfit against what the noise alone would leave: the Poisson deviance of electron counts.

For counts y ~ Poisson(mu) the unit deviance is d(y, mu) = 2 (y ln(y/mu) - (y - mu)) (y ln y = 0 at y = 0). A model
that fits the signal but not the noise leaves sum d ≈ sum E[d(y, mu)]; E[d] = 2 E[y ln(y/mu)] is 1 + 1/(6 mu) +
O(mu^-2) for many counts and falls to 2 mu ln(1/mu)-like values for few (most of a diffraction pattern), so the
expected misfit is summed pixel by pixel instead of taken as 1 per pixel. The discrepancy ratio

    rho = sum_pixels d(y, mu) / sum_pixels E[d(Y, mu)],   Y ~ Poisson(mu)

is 1 where the model explains the data down to the noise, > 1 while signal is left, < 1 when it fits noise.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy import stats
from torch import Tensor

_TABLE_MU = np.geomspace(1e-6, 1e4, 801)


def poisson_deviance(model: Tensor, counts: Tensor) -> Tensor:
    """Unit deviances d(y, mu) elementwise (same shape), mu = model clamped to > 0, y = counts clamped to >= 0."""
    mu = model.to(torch.float64).clamp_min(1e-12)
    y = counts.to(torch.float64).clamp_min(0)
    y_log = torch.where(y > 0, y * torch.log(y.clamp_min(1e-300) / mu), torch.zeros_like(y))
    return 2 * (y_log - (y - mu))


def _expected_exact(mu: float) -> float:
    """E[d(Y, mu)] by summing the Poisson probabilities out to mu + 12 sqrt(mu) + 30."""
    y = np.arange(0, int(mu + 12 * np.sqrt(mu) + 30) + 1, dtype=np.float64)
    p = stats.poisson.pmf(y, mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        y_log = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2 * np.sum(p * y_log))  # E[Y - mu] = 0


@lru_cache(maxsize=1)
def _table() -> np.ndarray:
    return np.array([_expected_exact(mu) for mu in _TABLE_MU])


def expected_poisson_deviance(mu: Tensor) -> Tensor:
    """E[d(Y, mu)] elementwise for Y ~ Poisson(mu): a table of the exact sum, interpolated in ln mu (relative
    error < 1e-4), and 1 + 1/(6 mu) + 1/(6 mu^2) beyond mu = 1e4."""
    mu64 = mu.detach().to(torch.float64).clamp_min(_TABLE_MU[0])
    table = torch.as_tensor(_table(), device=mu.device)
    log_mu = torch.log(mu64)
    grid = torch.as_tensor(np.log(_TABLE_MU), device=mu.device)
    position = torch.clamp((log_mu - grid[0]) / (grid[1] - grid[0]), 0, len(grid) - 1 - 1e-9)
    low = position.floor().long()
    fraction = position - low
    inside = table[low] * (1 - fraction) + table[low + 1] * fraction
    asymptotic = 1 + 1 / (6 * mu64) + 1 / (6 * mu64**2)
    return torch.where(mu64 > _TABLE_MU[-1], asymptotic, inside)


def discrepancy_ratio(model: Tensor, counts: Tensor) -> tuple[float, float]:
    """(sum d(y, mu), sum E[d(Y, mu)]) over all elements; their ratio is rho of the module docstring."""
    return float(poisson_deviance(model, counts).sum()), float(expected_poisson_deviance(model).sum())
