"""Books in: Gutenberg, plain and verse-TSV books read into paragraphs and chapters, their sentences (pysbd) with
offsets that point at the sentence, the sentence store of text-sentences, and bad books refused with one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.text.books.reader import read_book
from deepflows.text.books.corpus import resolve_books
from deepflows.text.books.sentence_table import SENTENCES, load_table, open_store
from deepflows.text.books.sentences import split_book, splitter, sentence_spans, write_sentences

GUTENBERG = """\ufeffThe Project Gutenberg eBook of The Lighthouse Keeper

This eBook is for the use of anyone anywhere in the United States and most other parts of the world.

Title: The Lighthouse Keeper

Author: Ada Q. Example

*** START OF THE PROJECT GUTENBERG EBOOK THE LIGHTHOUSE KEEPER ***




THE LIGHTHOUSE KEEPER

By Ada Q. Example



CHAPTER I.


Mr. Grey kept the light on the
rock for thirty years. He never missed a night.

"Do you not tire of it?" asked the
visitor. "I should. The sea is so loud."

"Never," said he.


CHAPTER II.

A storm came in the spring of that year; the lamp
went out at midnight.

* * * * *

Dr. Lamb arrived by boat at dawn.

*** END OF THE PROJECT GUTENBERG EBOOK THE LIGHTHOUSE KEEPER ***

Section 1. General Terms of Use and Redistributing Project Gutenberg electronic works. Licence text here.
"""

VERSES = """book\tchapter\tverse\ttext
Genesis\t1\t1\tIn the beginning God created the heaven and the earth.
Genesis\t1\t2\tAnd the earth was without form, and void. And darkness was upon the face of the deep.
Genesis\t2\t1\tThus the heavens and the earth were finished.
Exodus\t1\t1\tNow these are the names of the children of Israel.
"""


@pytest.fixture
def gutenberg(tmp_path) -> Path:
    path = tmp_path / "lighthouse.txt"
    path.write_text(GUTENBERG.replace("\n", "\r\n"), encoding="utf-8")  # a Windows file, with a BOM
    return path


@pytest.fixture
def verses(tmp_path) -> Path:
    path = tmp_path / "bible.tsv"
    path.write_text(VERSES)
    return path


def sentences_of(book):
    table = split_book(book)
    return table, table.sentences()


def test_gutenberg_book(gutenberg):
    book = read_book(gutenberg)
    assert (book.book_id, book.title, book.author, book.format) == ("lighthouse", "The Lighthouse Keeper",
                                                                    "Ada Q. Example", "gutenberg")  # fmt: skip
    assert book.sha256 == hashlib.sha256(gutenberg.read_bytes()).hexdigest()
    assert "Gutenberg" not in book.text and "Licence" not in book.text
    assert book.chapters == ["Chapter I", "Chapter II"]
    table, sentences = sentences_of(book)
    assert sentences == ["Mr. Grey kept the light on the rock for thirty years.", "He never missed a night.",
                         '"Do you not tire of it?" asked the visitor.', '"I should.', 'The sea is so loud."',
                         '"Never," said he.', "A storm came in the spring of that year; the lamp went out at midnight.",
                         "Dr. Lamb arrived by boat at dawn."]  # fmt: skip
    chapters = [table.chapters[table.arrays["paragraph_chapter"][p]] for p in table.arrays["sentence_paragraph"]]
    assert chapters == ["Chapter I"] * 6 + ["Chapter II"] * 2
    for p, start, end, text in zip(*(table.arrays[k] for k in ("sentence_paragraph", "sentence_start",
                                                                 "sentence_end")), sentences):  # fmt: skip
        assert book.text[start:end] == text  # offsets into the book's normalised text
        index = table.arrays["paragraph_index"][p]
        assert book.paragraph_text(index) == table.paragraphs[p]


def test_plain_book_title_block_and_file_name_fallback(tmp_path):
    titled = tmp_path / "persuasion-like.txt"
    titled.write_text("PRIDE AND PATIENCE\n\nby\n\nJ. Writer (1811)\n\n(1811)\n\nChapter 1\n\nIt rained. It poured.\n")
    book = read_book(titled)
    assert (book.title, book.author, book.format, book.chapters) == ("Pride and Patience", "J. Writer", "plain",
                                                                     ["Chapter 1"])  # fmt: skip
    assert sentences_of(book)[1] == ["It rained.", "It poured."]
    untitled = tmp_path / "notes_2024.txt"
    untitled.write_text("A first line that is a sentence.\n\nAnother paragraph here.\n")
    book = read_book(untitled)
    assert (book.title, book.author) == ("notes_2024", "")
    assert sentences_of(book)[1] == ["A first line that is a sentence.", "Another paragraph here."]
    assert read_book(untitled, "n1", "Notes", "Me").title == "Notes"


def test_verse_tsv(verses):
    book = read_book(verses)
    assert book.format == "verse-tsv" and book.chapters == ["Genesis 1", "Genesis 2", "Exodus 1"]
    assert len(book.paragraphs) == 4
    table, sentences = sentences_of(book)
    assert sentences[:3] == ["In the beginning God created the heaven and the earth.",
                             "And the earth was without form, and void.",
                             "And darkness was upon the face of the deep."]  # fmt: skip
    chapters = [table.chapters[table.arrays["paragraph_chapter"][p]] for p in table.arrays["sentence_paragraph"]]
    assert chapters == ["Genesis 1", "Genesis 1", "Genesis 1", "Genesis 2", "Exodus 1"]
    assert list(table.arrays["paragraph_index"]) == [0, 1, 2, 3]


def test_verse_tsv_bad_line(tmp_path):
    path = tmp_path / "broken.tsv"
    path.write_text(VERSES + "Exodus\t1\tno verse number here\n")
    with pytest.raises(UserError, match=r"broken\.tsv: line 6: expected 4 tab-separated fields"):
        read_book(path)


def test_quotes_are_split_and_closing_quotes_stay_with_their_sentence():
    text = 'He said "Go. Now." Then he left. "Is it far? Tell me." She laughed.'
    assert [text[a:b] for a, b in sentence_spans(text, splitter().segment)] == [
        'He said "Go.', 'Now."', "Then he left.", '"Is it far? Tell me."', "She laughed."]  # fmt: skip


def test_sentence_store_round_trip_in_several_chunks(gutenberg, tmp_path):
    out = write_sentences(gutenberg, tmp_path / "book.zarr", chunk_rows=3)
    table, group, meta = load_table(out)
    book = read_book(gutenberg)
    assert table.sentences() == split_book(book).sentences()
    assert group["sentence_start"].chunks == (3,) and group["sentence_start"].nchunks == 3  # 8 sentences
    assert meta["books"][0]["sha256"] == book.sha256 and meta["books"][0]["title"] == "The Lighthouse Keeper"
    assert meta["splitter"]["name"] == "pysbd" and meta["splitter"]["version"]
    assert open_store(out, (SENTENCES,))[1] == SENTENCES


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    rc = main(argv)
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("name, content, problem", [
    ("empty.txt", b"", "no text to split into sentences (an empty book)"),
    ("blank.txt", b"\n\n   \n\n* * *\n", "no text to split into sentences (an empty book)"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file (NUL bytes)"),
    ("latin1.txt", "Caf\u00e9 society.\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 3)"),
])  # fmt: skip
def test_bad_books_refused_with_one_line_and_no_output(tmp_path, capsys, name, content, problem):
    book = tmp_path / name
    book.write_bytes(content)
    out = tmp_path / "out" / "s.zarr"
    out.parent.mkdir()
    rc, err = run_cli(["text-sentences", "--book", str(book), "--out", str(out)], capsys)
    assert rc == 2 and err[-1].startswith(f"deepflows text-sentences: error: {book}: {problem}")
    assert [line for line in err if "error:" in line] == [err[-1]]
    assert list(out.parent.iterdir()) == []


def test_corpus_entries(tmp_path, gutenberg, verses):
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "b.txt").write_text("One. Two.\n")
    (folder / "a.tsv").write_text(VERSES)
    (folder / "notes.md").write_text("not a book\n")
    books = resolve_books([str(gutenberg), {"path": str(verses), "title": "Bible", "author": ""}, str(folder)])
    assert [(b["book_id"], b["title"]) for b in books] == [("lighthouse", None), ("bible", "Bible"), ("a", None),
                                                           ("b", None)]  # fmt: skip
    with pytest.raises(UserError, match="book id 'lighthouse' is also"):
        resolve_books([str(gutenberg), str(gutenberg)])
    with pytest.raises(UserError, match=r"text.books\[0\]: .*nothing\*.txt: no book file"):
        resolve_books([str(tmp_path / "nothing*.txt")])


# --- the real books (../shared/data/text/books) -------------------------------------------------------------
AUSTEN = {"emma": ("Emma", 55), "mansfieldpark": ("Mansfield Park", 48), "northangerabbey": ("Northanger Abbey", 31),
          "persuasion": ("Persuasion", 24), "prideprejudice": ("Pride and Prejudice", 61),
          "sensesensibility": ("Sense and Sensibility", 50)}  # fmt: skip


@pytest.mark.realdata
@pytest.mark.parametrize("book_id", sorted(AUSTEN))
def test_real_austen(shared_data, book_id):
    book = read_book(shared_data / "text" / "books" / f"{book_id}.txt")
    assert (book.title, len(book.chapters)) == AUSTEN[book_id]
    assert book.author == "Jane Austen"
    body = [i for i, p in enumerate(book.paragraphs) if p.body]
    assert not book.paragraph_text(body[0]).startswith(("By ", "by", "("))  # the title block makes no sentences
    if book_id == "persuasion":  # the splitting itself: about 3 s
        table, sentences = sentences_of(book)
        starts, ends = table.arrays["sentence_start"], table.arrays["sentence_end"]
        assert all(book.text[a:b] == s for a, b, s in zip(starts, ends, sentences))
        assert 3000 < len(sentences) < 4500 and np.all(np.diff(starts) > 0)


@pytest.mark.realdata
def test_real_kjv(shared_data):
    book = read_book(shared_data / "text" / "books" / "kjv.tsv", title="The Bible (King James Version)", author="")
    assert len(book.paragraphs) == 31102 and len(book.chapters) == 1189
    assert book.chapters[0] == "Genesis 1" and book.chapters[-1] == "Revelation 22"
    assert book.paragraph_text(0) == "In the beginning God created the heaven and the earth."
