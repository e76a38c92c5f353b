"""Hostile indexes for `deepflows serve`: refused at start-up in one line, before any port is opened. A missing
index directory is MINIMAL's case (test_hostile_stages.py); here: a directory that is not an index, a file, and an
index built by another encoder than the one served. `--check` stops a wrongly accepted index short of serving."""

from __future__ import annotations

import pytest
from hostile_cases import Case, check_case, params

SERVE = "serve --index {index} --check"


def empty_dir(d, valid, work):
    (d / "books.index").mkdir()
    return {"index": d / "books.index"}


def a_file(d, valid, work):
    (d / "books.index").write_text("Emma Woodhouse, handsome, clever, and rich\n")
    return {"index": d / "books.index"}


def other_encoder_index(d, valid, work):
    from text_books import build_tiny_index, other_encoder

    return {"index": build_tiny_index(d / "other", model=str(other_encoder(d / "model")))}


CASES = [
    Case("own-serve-not-an-index", "serve", SERVE, empty_dir, (), ("books.index",), ("not a sentence index",)),
    Case("own-serve-a-file", "serve", SERVE, a_file, (), ("books.index",), ("not a directory",)),
    Case("own-serve-other-encoder", "serve", SERVE, other_encoder_index, (), ("tiny.index",),
         ("another encoder|not by the one served",), timeout=300),
]  # fmt: skip


@pytest.mark.parametrize("case", params(CASES))
def test_serve_refuses(case, valid, work):
    check_case(case, valid, work)
