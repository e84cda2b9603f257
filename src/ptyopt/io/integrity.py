"""Files that are never half-written and never loaded silently when damaged: atomic writes with a SHA-256
sidecar (``NAME.sha256``), checked on load."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ptyopt.errors import DataError


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's content, read in chunks (large data files included)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` then rename over ``path``, so a crash at any point leaves the previous file intact; the
    content's SHA-256 goes to ``path.sha256`` (renamed right after the file; ``verify`` accepts the pending
    hash of a crash between the two renames)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(tmp)
    pending = path.with_name(path.name + ".sha256.tmp")
    pending.write_text(file_sha256(tmp) + "\n")
    _fsync(pending)
    os.replace(tmp, path)
    os.replace(pending, _sidecar(path))
    return path


def verify(path: str | Path, what: str) -> None:
    """DataError when ``path`` does not match its recorded SHA-256 (files written without one pass)."""
    path = Path(path)
    sidecar = _sidecar(path)
    pending = path.with_name(path.name + ".sha256.tmp")
    if not sidecar.exists() and not pending.exists():
        return
    digest = file_sha256(path)
    if sidecar.exists() and digest == sidecar.read_text().strip():
        return
    if pending.exists() and pending.read_text().strip() == digest:
        os.replace(pending, sidecar)  # the writer stopped between renaming the file and its hash: finish it
        return
    raise DataError(f"the {what} {path} does not match its recorded SHA-256 ({sidecar.name}): it is truncated or "
                    "corrupted; it was not loaded")
