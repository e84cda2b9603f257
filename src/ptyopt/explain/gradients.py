"""Which loss term drives which tensor: each term's share of the objective's gradient, per tensor.

With g_t = d(w_t L_t)/d theta the gradient of term t (averaged over batches, as the solver sees it) and
g = sum_t g_t the total, the share of t is <g_t, g> / <g, g> (real inner product; complex tensors as pairs of
reals): the part of the total step along g that t contributes. The shares of a tensor sum to 1 exactly; a term
with a negative share pulls against the others. |g_t| is reported beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ptyopt.explain.session import Session, batches
from ptyopt.model.dip_config import owned_keys
from ptyopt.model.tensors import STATE_KEY, TENSORS
from ptyopt.objective.gradients import term_gradients as gradients_of_terms


def refined_tensors(session: Session) -> list[str]:
    """Config names of the tensors the run refined (optimize.<name>.start_iter set), in the table's order; the
    global scan model's displacement is in the position offsets of a result, so it counts as ``positions``, and a
    result holds a DIP object as pixels, so the network's weights count as the pixels it gives."""
    config = session.problem.config
    updates = config.optimize.updates()
    names = [t.config_name for t in TENSORS if updates[t.config_name].start_iter is not None]
    if "object_dip" in names:
        owned = owned_keys(config.model)
        names = [t.config_name for t in TENSORS if t.config_name != "object_dip"
                 and (t.config_name in names or t.state_key in owned)]
    if {"scan_affine", "scan_drift"} & set(names) and "positions" not in names:
        names.append("positions")
    return [name for name in names if name not in ("scan_affine", "scan_drift")]


def term_gradients(session: Session, state: dict[str, Tensor], weights: dict[str, float], tensors: list[str],
                   indices: np.ndarray | None = None) -> dict[str, dict[str, Tensor]]:
    """{term: {tensor: g_t}}: each term's gradient (batch mean over ``indices``) for each tensor (config names)."""
    indices = session.indices if indices is None else indices
    keys = [STATE_KEY[name] for name in tensors]
    per_term = gradients_of_terms(session.model, state, session.losses, weights, session.problem.patterns,
                                  batches(indices, session.batch_size), keys)
    return {term: {name: grads[key] for name, key in zip(tensors, keys, strict=True)}
            for term, grads in per_term.items()}


def _inner(a: Tensor, b: Tensor) -> float:
    return float(torch.sum((a.conj() * b).real, dtype=torch.float64))


def gradient_shares(gradients: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
    """shares {tensor: {term: <g_t, g>/<g, g>}}, norms {tensor: {term: |g_t|}}, total_norm {tensor: |g|}."""
    terms = list(gradients)
    tensors = list(gradients[terms[0]]) if terms else []
    shares, norms, total_norm = {}, {}, {}
    for tensor in tensors:
        total = sum(gradients[term][tensor] for term in terms)
        squared = _inner(total, total)
        total_norm[tensor] = float(np.sqrt(squared))
        shares[tensor] = {term: (_inner(gradients[term][tensor], total) / squared if squared > 0 else float("nan"))
                          for term in terms}
        norms[tensor] = {term: float(np.sqrt(_inner(gradients[term][tensor], gradients[term][tensor])))
                         for term in terms}
    return {"shares": shares, "norms": norms, "total_norm": total_norm}
