"""Input paths, held to one rule for every stage: a missing file, a directory or a device where a file
belongs, and (unless allowed) an empty file are refused before any work, naming the file and what it is."""

from __future__ import annotations

from pathlib import Path

from deepflows.errors import UserError


def require_file(path: str | Path, what: str, *, empty_ok: bool = False) -> Path:
    """`path` as a Path when it is a non-empty regular file (`empty_ok`: an empty one too)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise UserError(f"{path}: {what} is {kind}")
    if not empty_ok and path.stat().st_size == 0:
        raise UserError(f"{path}: {what} is empty")
    return path
