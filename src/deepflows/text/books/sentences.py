"""`deepflows text-sentences --book FILE --out DIR.zarr`: one book -> its sentences (pysbd), each with its
book, chapter, paragraph and character offsets, in a sentence store (deepflows.text.books.sentence_table).

pysbd is pure Python (about a thousand sentences a second on one core), so the workflow runs one job per book.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.text.books.reader import Book, read_book
from deepflows.text.books.sentence_table import CHUNK_ROWS, SENTENCES, SentenceTable, write_store

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w")
CLOSING_QUOTES = "\"\u201d"


def splitter():
    """pysbd's English segmenter, told to split inside double quotes: its rule that keeps a quotation whole makes
    a paragraph of dialogue one "sentence" (Pride and Prejudice: 3,837 sentences with that rule, 5,821 without)."""
    import pysbd
    from pysbd.between_punctuation import BetweenPunctuation
    from pysbd.lang.english import English

    class SplitQuotes(BetweenPunctuation):
        def sub_punctuation_between_double_quotes(self, txt):
            return txt

        def sub_punctuation_between_quotes_slanted(self, txt):
            return txt

    class Prose(English):
        BetweenPunctuation = SplitQuotes

    segmenter = pysbd.Segmenter(language="en", clean=False)
    segmenter.language_module = Prose
    return segmenter


def splitter_info() -> dict:
    from importlib.metadata import version

    return {"name": "pysbd", "version": version("pysbd"), "language": "en", "split_inside_quotes": True}


def sentence_spans(text: str, segment) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a paragraph. pysbd (clean=False) returns pieces of its input, so each is
    found in the text after the previous one. A piece without a word (a closing quote left alone) joins the
    sentence before it, as does a quote opening a piece when it closes a quotation still open."""
    spans: list[list[int]] = []
    cursor = 0
    for piece in segment(text):
        piece = piece.strip()
        at = text.find(piece, cursor) if piece else -1
        if at < 0:
            continue
        end = at + len(piece)
        cursor = end
        if spans and not _WORD.search(piece):
            spans[-1][1] = end
            continue
        if spans and piece[0] in CLOSING_QUOTES and _open_quote(text[: spans[-1][1]]):
            spans[-1][1] = at + 1
            at = at + 1 + len(piece[1:]) - len(piece[1:].lstrip())
        if at < end and _WORD.search(text[at:end]):
            spans.append([at, end])
        elif spans:  # punctuation alone ("* * *") before any sentence makes none
            spans[-1][1] = end
    return [(a, b) for a, b in spans]


def _open_quote(text: str) -> bool:
    """Whether a quotation opened in `text` (the paragraph up to here) is still open at its end."""
    return text.count('"') % 2 == 1 or text.count("\u201c") > text.count("\u201d")


def split_book(book: Book) -> SentenceTable:
    """The book's sentences: every body paragraph split by pysbd; offsets found in the paragraph itself (pysbd
    with clean=False returns pieces of its input), so `book.text[start:end]` is the sentence exactly."""
    segment = splitter().segment
    arrays = {k: [] for k in ("sentence_paragraph", "sentence_start", "sentence_end", "paragraph_index",
                              "paragraph_chapter", "paragraph_start")}  # fmt: skip
    paragraphs = []
    for index, paragraph in enumerate(book.paragraphs):
        if not paragraph.body:
            continue
        text = book.paragraph_text(index)
        spans = sentence_spans(text, segment)
        if not spans:
            continue
        row = len(paragraphs)
        paragraphs.append(text)
        arrays["paragraph_index"].append(index)
        arrays["paragraph_chapter"].append(paragraph.chapter)
        arrays["paragraph_start"].append(paragraph.start)
        for a, b in spans:
            arrays["sentence_paragraph"].append(row)
            arrays["sentence_start"].append(paragraph.start + a)
            arrays["sentence_end"].append(paragraph.start + b)
    arrays = {k: np.asarray(v, np.int64) for k, v in arrays.items()}
    n = len(arrays["sentence_start"])
    if n == 0:
        raise UserError(f"{book.source}: no sentences found (an empty book)")
    meta = {k: getattr(book, k) for k in ("book_id", "title", "author", "source", "sha256", "format")}
    meta.update(rows=[0, n], paragraphs=[0, len(paragraphs)], chapters=[0, len(book.chapters)])
    return SentenceTable(arrays, paragraphs, list(book.chapters), [meta], splitter_info())


def write_sentences(book_path: str | Path, out: str | Path, book_id: str | None = None, title: str | None = None,
                    author: str | None = None, chunk_rows: int = CHUNK_ROWS) -> Path:  # fmt: skip
    from deepflows.outputs import check_new_output

    out = check_new_output(out, suffix=".zarr", kind="a Zarr store")
    book = read_book(book_path, book_id, title, author)
    t0 = time.perf_counter()
    table = split_book(book)
    seconds = time.perf_counter() - t0
    log.info("%s: %d sentences in %d paragraphs, %d chapters (%s; %.0f sentences/s)", book_path, len(table),
             len(table.paragraphs), len(book.chapters), book.title, len(table) / max(seconds, 1e-9))  # fmt: skip
    return write_store(out, table, SENTENCES, chunk_rows=chunk_rows)


def add_arguments(p) -> None:
    from deepflows.arguments import positive_int

    p.add_argument("--book", required=True, help="a book: Project Gutenberg or plain UTF-8 text, or a verse TSV "
                                                 "(book chapter verse text)")  # fmt: skip
    p.add_argument("--out", required=True, help="the sentence store to write (DIR.zarr)")
    p.add_argument("--book-id", help="the book's id in the index (default: the file name without suffix)")
    p.add_argument("--title", help="the book's title (default: from the Gutenberg header or the first lines)")
    p.add_argument("--author", help="the book's author (default: from the Gutenberg header or the first lines)")
    p.add_argument("--chunk-rows", type=positive_int, default=CHUNK_ROWS,
                   help=f"sentences per Zarr chunk (default {CHUNK_ROWS})")  # fmt: skip


def run(args) -> None:
    write_sentences(args.book, args.out, args.book_id, args.title, args.author, args.chunk_rows)
