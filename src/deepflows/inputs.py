"""Input paths, held to one rule for every stage: a missing file, a directory or a device where a file
belongs, and (unless allowed) an empty file are refused before any work, naming the file and what it is."""

from __future__ import annotations

import os
from pathlib import Path

from deepflows.errors import UserError

# The 28-byte empty BGZF block that ends every complete BGZF file: BAM, BCF, bgzipped VCF, BED or FASTA (SAM
# spec, section 4.1.2). htslib only warns when it is missing, and reads a truncated file as a shorter one.
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


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


def compression(path: str | Path) -> tuple[bool, bool]:
    """(gzip, BGZF) from the first bytes of a file (BGZF: gzip with the BC extra field)."""
    with open(path, "rb") as handle:
        magic = handle.read(18)
    is_gzip = magic[:2] == b"\x1f\x8b"
    return is_gzip, is_gzip and len(magic) >= 14 and bool(magic[3] & 4) and magic[12:14] == b"BC"


def check_bgzf_eof(path: str | Path, what: str) -> None:
    """Refuse a BGZF file without its end-of-file block: truncated (a copy cut short, a full disk)."""
    path = Path(path)
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size < len(BGZF_EOF):
            raise UserError(f"{path}: truncated {what} ({size} bytes)")
        handle.seek(size - len(BGZF_EOF))
        if handle.read() != BGZF_EOF:
            raise UserError(f"{path}: truncated {what} (no BGZF end-of-file block); re-copy or regenerate it")
