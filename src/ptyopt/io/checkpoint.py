"""Checkpoints: everything needed to continue a run exactly (state, optimiser, iteration, history, RNG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ptyopt.errors import DataError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically: a crash while saving leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no checkpoint at {path}; run without --resume to start a new reconstruction")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise DataError(f"cannot read checkpoint {path} ({err}); delete it to start over") from None
