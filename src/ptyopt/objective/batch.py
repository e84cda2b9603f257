"""The objective on one batch and its gradient, in one pass or chunk by chunk with the same result."""

from __future__ import annotations

import torch
from torch import Tensor

from ptyopt.objective.losses import LossTerm, loss_values


def forward_passes(n_patterns: int, chunk_patterns: int) -> int:
    """Forward passes per pattern that ``batch_objective_backward`` makes: 1, or 2 when the batch is chunked."""
    return 2 if chunk_patterns < n_patterns else 1


def batch_objective_backward(model, state: dict[str, Tensor], indices: Tensor, meas: Tensor,
                             losses: list[LossTerm], weights: dict[str, float], *, chunk_patterns: int,
                             scale: float = 1.0) -> dict[str, Tensor]:
    """Accumulate d(scale · sum_t w_t L_t)/d(state) into the state tensors' ``.grad``; return each term (detached).

    With chunk_patterns < batch, the batch's intensities are first computed chunk by chunk without a graph, the
    loss terms (which couple the whole batch: normalisation, PACBED mean) and their gradient with respect to the
    intensities are formed once, and each chunk is then run again with its graph and back-propagated with its
    slice of that gradient: the same loss and gradient to round-off, for one extra forward pass per chunk.
    """
    n = len(indices)
    chunked = forward_passes(n, chunk_patterns) > 1
    chunks = [slice(i, i + chunk_patterns) for i in range(0, n, chunk_patterns)] if chunked else []
    if chunks:
        with torch.no_grad():
            intensities = torch.cat([model(state, indices[c]).intensities for c in chunks])
        intensities.requires_grad_(True)
        out = model.output(state, indices, intensities)
    else:
        out = model(state, indices)
    values = loss_values(losses, out, meas)
    _backward(sum(weights[name] * value for name, value in values.items()) * scale)
    if chunks and intensities.grad is not None:
        for c in chunks:
            chunk_intensities = model(state, indices[c]).intensities
            if chunk_intensities.requires_grad:
                chunk_intensities.backward(intensities.grad[c])
    return {name: value.detach() for name, value in values.items()}


def _backward(total: Tensor) -> None:
    if total.requires_grad:
        total.backward()
