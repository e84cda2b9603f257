"""Checkpoints: everything needed to continue a run exactly (state, optimiser, iteration, history, RNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ptyopt.errors import DataError
from ptyopt.io.integrity import verify, write_atomically

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically with a SHA-256 sidecar: a crash while saving leaves the previous checkpoint intact."""
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def require_checkpoint(path: str | Path) -> Path:
    """``path``, or a DataError saying there is no checkpoint to resume from."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no checkpoint at {path}; run without --resume to start a new reconstruction")
    return path


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    path = require_checkpoint(path)
    verify(path, "checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise DataError(f"cannot read checkpoint {path} ({err}); delete it to start over") from None
