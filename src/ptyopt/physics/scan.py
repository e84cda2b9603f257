"""The global scan model: an affine map of the commanded scan plus a drift polynomial in acquisition time.

A probe position is

    r_n = r_nom,n + M (r_nom,n - c) + sum_{k=0..K} d_k tau_n^k + o_n

with r_nom the commanded (nominal) positions, c their centroid, M = A - I the deformation of the scan axes
(A: rotation, scale, shear, asymmetry of the scan coils' calibration), d_k (2,) the drift coefficients (d_0 a
translation, d_1 the drift over the whole acquisition, ...), tau_n in [-1/2, 1/2] the pattern's acquisition time
normalised over the scan, and o_n the per-position offsets (jitter). Every term is linear in its parameters, so
the model's Jacobian is a design matrix Phi (N, P) shared by both axes:

    displacement_a(n) = sum_j theta[a, j] Phi[n, j],   Phi[n] = (u_y, u_x, 1, tau, ..., tau^K),  u = r_nom - c,
    theta[a] = (M[a, y], M[a, x], d_0[a], ..., d_K[a])  for the axes a = (y, x).

Lengths are in whatever unit the positions use (Å in the simulation, object pixels in the model).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def affine_matrix(rotation_mrad: float = 0.0, scale: float = 0.0, shear: float = 0.0,
                  asymmetry: float = 0.0) -> np.ndarray:
    """A (2, 2) acting on (y, x) vectors: A = R(rotation) (1 + scale) [[1 + asym/2, shear/2], [shear/2, 1 - asym/2]].

    rotation_mrad: turns the scan axes from x towards y [mrad]; scale: relative change of the step (0.02 = 2 %
    larger); shear: symmetric shear (the angle between the scan axes departs from 90° by ``shear`` rad);
    asymmetry: relative difference of the y and x steps.
    """
    angle = rotation_mrad * 1e-3
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    stretch = (1 + scale) * np.array([[1 + asymmetry / 2, shear / 2], [shear / 2, 1 - asymmetry / 2]])
    return rotation @ stretch


def normalised_time(acquisition_index: np.ndarray) -> np.ndarray:
    """tau in [-1/2, 1/2]: acquisition indices (N,) (order or time of each pattern) mapped linearly, first -> -1/2,
    last -> +1/2 (all 0 for a single pattern)."""
    index = np.asarray(acquisition_index, dtype=np.float64)
    span = float(index.max() - index.min()) if index.size else 0.0
    return np.zeros_like(index) if span == 0 else (index - index.min()) / span - 0.5


def scan_design(centred: Tensor, time: Tensor | None, drift_order: int) -> Tensor:
    """Phi (N, 2 + drift_order + 1): (u_y, u_x, 1, tau, ..., tau^K); without a time only (u_y, u_x, 1)
    (drift_order must then be 0)."""
    if time is None and drift_order > 0:
        raise ValueError("a drift of order > 0 needs the acquisition time of every pattern")
    ones = torch.ones_like(centred[:, :1])
    powers = [ones] if time is None else [time[:, None] ** k for k in range(drift_order + 1)]
    return torch.cat([centred, *powers], dim=1)


def orthogonal_drift_design(design: Tensor) -> Tensor:
    """The design (N, 3 + K) with each drift column tau^k (k >= 1, columns 3...) replaced by its part orthogonal to
    every column before it (Gram-Schmidt over the N positions, in float64).

    On a raster scan tau is almost an affine function of the position (tau ≈ u_y / (Ny step) plus a small
    saw-tooth within each row), so raw drift coefficients and the affine are nearly degenerate: a fit trades
    them against each other in huge, cancelling amounts. Orthogonal columns make every coefficient well defined:
    the affine takes whatever an affine map explains, drift coefficient k what only time order explains. On an
    ideal raster (no fly-back time) tau is exactly affine in the position, so a linear drift IS an affine
    distortion: its column is zero (d_1 cannot act) and the affine reports it; quadratic and higher drift, and
    linear drift of a scan whose time is not affine in position, stay with the drift.
    """
    columns = list(design.to(torch.float64).unbind(dim=1))
    for k in range(3, len(columns)):
        size = torch.linalg.vector_norm(columns[k])
        for j in range(k):
            norm2 = torch.dot(columns[j], columns[j])
            if norm2 > 0:
                columns[k] = columns[k] - torch.dot(columns[j], columns[k]) / norm2 * columns[j]
        if torch.linalg.vector_norm(columns[k]) <= 1e-6 * size:
            columns[k] = torch.zeros_like(columns[k])  # nothing beyond the affine: this drift term cannot act
    return torch.stack(columns, dim=1).to(design.dtype)


def scan_displacement(deformation: Tensor, drift: Tensor, centred: Tensor, time: Tensor | None) -> Tensor:
    """Displacement (N, 2) of the global model in the raw basis: M u_n + sum_k d_k tau_n^k = Phi_n theta.

    deformation: M = A - I (2, 2); drift: (K + 1, 2) coefficients d_k; centred: u = r_nom - c (N, 2);
    time: tau (N,) in [-1/2, 1/2], or None (then only d_0 is allowed).
    """
    return scan_design(centred, time, drift.shape[0] - 1) @ coefficients(deformation, drift).T


def coefficients(deformation: Tensor, drift: Tensor) -> Tensor:
    """theta (2, P) of the design-matrix form: theta[a] = (M[a, y], M[a, x], d_0[a], ..., d_K[a])."""
    return torch.cat([deformation, drift.T], dim=1)


def split_coefficients(theta: Tensor) -> tuple[Tensor, Tensor]:
    """(M (2, 2), drift (K + 1, 2)) from theta (2, P); inverse of ``coefficients``."""
    return theta[:, :2], theta[:, 2:].T


def global_step(gram: Tensor, rhs: Tensor, design: Tensor, damping: float = 1e-9) -> Tensor:
    """Gauss-Newton step of theta (2, P) from per-position normal equations.

    Each position n has a 2×2 system G_n delta_n = g_n for its own shift; the shift is delta_n = J_n dtheta with
    J_n = I_2 ⊗ Phi_n, so the global step solves (sum_n J_n^T G_n J_n + damping·diag) dtheta = sum_n J_n^T g_n:
    a (2P × 2P) system, Levenberg-damped relative to its diagonal (damping also keeps columns the batch
    cannot determine, e.g. the affine over a compact group, from blowing up). gram (N, 2, 2), rhs (N, 2),
    design (N, P) -> (2, P).
    """
    n_params = design.shape[1]
    dtype = torch.float64
    g, r, phi = gram.to(dtype), rhs.to(dtype), design.to(dtype)
    normal = torch.einsum("nab,ni,nj->aibj", g, phi, phi).reshape(2 * n_params, 2 * n_params)
    right = torch.einsum("na,ni->ai", r, phi).reshape(2 * n_params)
    diagonal = normal.diagonal()
    floor = 1e-12 * diagonal.sum() + torch.finfo(dtype).tiny
    normal = normal + torch.diag(damping * diagonal + floor)
    return torch.linalg.solve(normal, right).reshape(2, n_params).to(design.dtype)


def least_squares_fit(displacement: Tensor, design: Tensor) -> Tensor:
    """theta (2, P) minimising sum_n |displacement_n - theta Phi_n|^2 (displacement (N, 2), design (N, P))."""
    solution = torch.linalg.lstsq(design.to(torch.float64), displacement.to(torch.float64)).solution  # (P, 2)
    return solution.T.to(displacement.dtype)


def warp_image(image: Tensor, deformation: Tensor, centre_px: Tensor) -> Tensor:
    """The image (..., Y, X) carried along by the affine map r -> c + (I + D)(r - c) of its pixel grid:
    out(r) = in(c + (I + D)^-1 (r - c)), bicubic, edges extended. deformation: D (2, 2) on (y, x) [px/px];
    centre_px: c (2,) [px]."""
    height, width = image.shape[-2:]
    eye = torch.eye(2, dtype=torch.float64, device=image.device)
    inverse = torch.linalg.inv(eye + deformation.to(torch.float64))
    centre = centre_px.to(torch.float64)
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=image.device),
                                torch.arange(width, dtype=torch.float64, device=image.device), indexing="ij")
    source = (torch.stack([rows, cols], dim=-1) - centre) @ inverse.T + centre
    grid = torch.stack([2 * source[..., 1] / (width - 1) - 1, 2 * source[..., 0] / (height - 1) - 1], dim=-1)
    flat = image.reshape(1, -1, height, width)
    warped = F.grid_sample(flat, grid[None].to(image.dtype), mode="bicubic", padding_mode="border",
                           align_corners=True)
    return warped.reshape(image.shape)
