"""Each loss term's own gradient: g_t = d(w_t L_t)/d theta for chosen state tensors, batch means over chunks of
positions as a solver sees them (diagnostics in ``explain``, gradient balancing in ``objective.weighting``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ptyopt.objective.losses import LossTerm, loss_values


def term_gradients(model: Callable, state: dict[str, Tensor], terms: Sequence[LossTerm], weights: dict[str, float],
                   patterns: Callable[[np.ndarray], Tensor], chunks: Sequence[np.ndarray],
                   keys: Sequence[str]) -> dict[str, dict[str, Tensor]]:
    """{term: {state key: g_t}} averaged over ``chunks`` (position index arrays): one forward pass per chunk, one
    backward per term. ``model(state, index_tensor)`` gives a ForwardOutput; ``patterns(chunk)`` the measured
    patterns; a term that does not reach a tensor has a zero gradient there."""
    params = {key: value.detach().clone() for key, value in state.items()}
    leaves = [params[key].requires_grad_(True) for key in keys]
    sums = {term.name: [torch.zeros_like(leaf) for leaf in leaves] for term in terms}
    for chunk in chunks:
        index = torch.as_tensor(chunk, device=leaves[0].device)
        values = loss_values(list(terms), model(params, index), patterns(chunk))
        names = [name for name, value in values.items() if value.requires_grad]
        for i, name in enumerate(names):
            grads = torch.autograd.grad(weights[name] * values[name], leaves, retain_graph=i + 1 < len(names),
                                        allow_unused=True)
            for total, grad in zip(sums[name], grads, strict=True):
                if grad is not None:
                    total += grad / len(chunks)
    return {name: dict(zip(keys, grads, strict=True)) for name, grads in sums.items()}


def norm(tensor: Tensor) -> float:
    """The Euclidean norm over all elements (complex as pairs of reals), in float64."""
    return float(torch.linalg.vector_norm(tensor.detach().to(torch.complex128 if tensor.is_complex()
                                                              else torch.float64)))
