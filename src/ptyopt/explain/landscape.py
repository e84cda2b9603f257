"""Loss-landscape cuts: the objective along one physical parameter around the result, everything else fixed.

Parameters: ``defocus`` (added to every probe mode in its spectrum, Å, positive = underfocus), ``slice_thickness``
(every slice's, Å), ``tilt_y`` / ``tilt_x`` (added to every position's tilt, mrad), and ``position:N``, a map
over (dy, dx) of position N moved [Å]. The objective is the run's own, sum_t w_t L_t at the result's last weights,
over an evenly spread set of positions; for a moved position, the data terms of that position alone. Object-only
terms do not change along the global cuts, so their shape is the data terms'. The minimum is the best sampled
point refined by a parabola through it and its neighbours (along each axis of a map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ptyopt.errors import ConfigError
from ptyopt.explain.session import Session, objective
from ptyopt.model.forward import ForwardOutput
from ptyopt.objective.losses import loss_values
from ptyopt.physics.aberrations import canonical_aberrations
from ptyopt.physics.probe import add_aberrations
from ptyopt.registry import did_you_mean

# parameter -> (unit, default half range of the cut)
CUTS: dict[str, tuple[str, float]] = {
    "defocus": ("Å", 50.0), "slice_thickness": ("Å", 1.0), "tilt_y": ("mrad", 2.0), "tilt_x": ("mrad", 2.0),
    "position": ("Å", 0.5),
}


@dataclass
class Cut:
    """offsets (P,): the changes applied (along both axes of a position map); objective: its values there, (P,), or
    (P, P) over (dy, dx) for a position; reference: the parameter's value at offset 0 (the initial probe's defocus
    for ``defocus``, a position's (y, x)); best_offset: the minimum (a float, or (dy, dx) for a position)."""

    parameter: str
    index: int | None
    unit: str
    offsets: np.ndarray
    objective: np.ndarray
    reference: float | tuple[float, float]
    best_offset: float | tuple[float, float]

    @property
    def best_value(self) -> float | tuple[float, float]:
        if isinstance(self.best_offset, tuple):
            return (self.reference[0] + self.best_offset[0], self.reference[1] + self.best_offset[1])
        return self.reference + self.best_offset

    def to_dict(self) -> dict:
        return {"parameter": self.parameter, "index": self.index, "unit": self.unit,
                "offsets": self.offsets.tolist(), "objective": self.objective.tolist(),
                "reference": self.reference, "best_offset": self.best_offset, "best_value": self.best_value}


def parse_cut(text: str, n_positions: int) -> tuple[str, int | None]:
    """'defocus' -> ('defocus', None); 'position:12' -> ('position', 12); a ConfigError for anything else."""
    name, _, index_text = text.partition(":")
    if name not in CUTS:
        raise ConfigError(f"unknown cut '{name}'{did_you_mean(name, list(CUTS))}; cuts: {', '.join(CUTS)}")
    if name != "position":
        if index_text:
            raise ConfigError(f"the cut '{name}' takes no position index")
        return name, None
    if not index_text:
        return name, n_positions // 2
    try:
        index = int(index_text)
    except ValueError:
        raise ConfigError(f"the position of '{text}' must be an integer, e.g. position:12") from None
    if not 0 <= index < n_positions:
        raise ConfigError(f"position {index} does not exist; the scan has {n_positions} positions")
    return name, index


def changed_state(session: Session, name: str, offset: float) -> dict[str, Tensor]:
    """The session's state with ``offset`` (in the parameter's unit) applied to a global parameter."""
    state = dict(session.state)
    geometry = session.problem.geometry
    if name == "defocus":
        state["probe"] = add_aberrations(state["probe"], geometry.dx_ang, geometry.wavelength_ang,
                                         {"defocus": offset})
    elif name == "slice_thickness":
        state["slice_thickness_ang"] = state["slice_thickness_ang"] + offset
    elif name.startswith("tilt"):
        tilts = state["tilts_mrad"].clone()
        tilts[:, 0 if name == "tilt_y" else 1] += offset
        state["tilts_mrad"] = tilts
    else:
        raise ConfigError(f"changed_state does not move a position ({name}); position maps use position_map")
    return state


def reference_value(session: Session, name: str, index: int | None) -> float | tuple[float, float]:
    state, problem = session.state, session.problem
    if name == "defocus":  # the probe's defocus is only known as the initial probe's
        return -canonical_aberrations(problem.dataset.aberrations).get("C10", 0.0)
    if name == "slice_thickness":
        return float(state["slice_thickness_ang"].mean())
    if name.startswith("tilt"):
        return float(state["tilts_mrad"][:, 0 if name == "tilt_y" else 1].mean())
    y, x = session.result.positions_ang[index]
    return (float(y), float(x))


def position_map(session: Session, index: int, offsets: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """The data terms sum_t w_t L_t of position ``index`` alone moved by every (dy, dx) of offsets × offsets [Å]
    (P, P): one forward pass over all the moved copies, then each copy's terms on its own pattern. Object-only
    terms are left out: they would only see which patch the moved probe's window covers."""
    problem = session.problem
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    moved = torch.as_tensor(np.stack([dy.ravel(), dx.ravel()], axis=1) / problem.geometry.dx_ang,
                            dtype=problem.real_dtype, device=problem.device)
    indices = torch.full((len(moved),), index, device=problem.device)
    data_terms = [term for term in session.losses if term.is_data_term]
    measured = problem.patterns(np.array([index]))
    values = np.empty(len(moved))
    with torch.no_grad():
        for start in range(0, len(moved), 256):
            chunk = slice(start, start + 256)
            out = session.model(session.state, indices[chunk], moved_px=moved[chunk])
            for i in range(out.intensities.shape[0]):
                one = ForwardOutput(out.intensities[i : i + 1], out.occupancy, session.state, out.crop_px[i : i + 1],
                                    out.window_px)
                terms = loss_values(data_terms, one, measured)
                values[start + i] = float(sum(weights[name] * value for name, value in terms.items()))
    return values.reshape(len(offsets), len(offsets))


def parabola_minimum(x: np.ndarray, y: np.ndarray) -> float:
    """The sampled minimum of y(x), refined by the vertex of the parabola through it and its two neighbours."""
    best = int(np.argmin(y))
    if best == 0 or best == len(x) - 1:
        return float(x[best])
    coefficients = np.polyfit(x[best - 1 : best + 2], y[best - 1 : best + 2], 2)
    if coefficients[0] <= 0:
        return float(x[best])
    return float(np.clip(-coefficients[1] / (2 * coefficients[0]), x[best - 1], x[best + 1]))


def checked_range(session: Session, name: str, half_range: float | None, points: int) -> float:
    """The cut's half range (the parameter's default when None); a ConfigError for one that cannot be cut."""
    half_range = CUTS[name][1] if half_range is None else half_range
    if not half_range > 0 or points < 3:
        raise ConfigError(f"a cut needs a positive range and at least 3 points, got ±{half_range} and {points}")
    if name == "slice_thickness":
        thinnest = float(session.state["slice_thickness_ang"].min())
        if half_range >= thinnest:
            raise ConfigError(f"the slice-thickness cut ±{half_range} Å would make the {thinnest:.3g} Å slices "
                              "vanish; give a smaller --cut-range")
    return half_range


def landscape_cut(session: Session, name: str, weights: dict[str, float], *, index: int | None = None,
                  half_range: float | None = None, points: int = 21) -> Cut:
    """The objective at ``points`` offsets evenly in [-half_range, +half_range] of parameter ``name`` (a
    points × points map for a position)."""
    unit = CUTS[name][0]
    half_range = checked_range(session, name, half_range, points)
    offsets = np.linspace(-half_range, half_range, points)
    reference = reference_value(session, name, index)
    if name == "position":
        values = position_map(session, index, offsets, weights)
        row, col = np.unravel_index(np.argmin(values), values.shape)
        best = (parabola_minimum(offsets, values[:, col]), parabola_minimum(offsets, values[row]))
        return Cut(name, index, unit, offsets, values, reference, best)
    values = np.array([objective(session, changed_state(session, name, float(offset)), session.indices,
                                 weights) for offset in offsets])
    return Cut(name, index, unit, offsets, values, reference, parabola_minimum(offsets, values))
