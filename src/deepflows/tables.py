"""Small text tables: read plain or gzipped, written as TSV under a temporary name and renamed, so a reader
never sees half a table."""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from deepflows.errors import UserError


def write_tsv(rows: Iterable[dict], columns: Sequence[str], out: str | Path, delimiter: str = "\t") -> None:
    """One line per row, `columns` in order (None as empty; other keys ignored); `delimiter` "," for a CSV."""
    from deepflows.outputs import atomic_output

    with atomic_output(out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter=delimiter, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in columns} for row in rows)


def open_text(path: str | Path):
    """A text file for reading, gunzipped on the fly when its name ends in .gz (BED, VCF headers)."""
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a plain or gzipped text file; bytes that are not text (a binary file, a broken
    gzip stream) end in one UserError naming the file and the line."""
    from deepflows.inputs import check_bgzf_eof, compression

    if str(path).endswith(".gz") and compression(path)[1]:
        check_bgzf_eof(path, "file")
    number = 0
    try:
        with open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                yield number, line
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise UserError(f"{path}: line {number + 1}: cannot be read as text ({err})") from None
