"""The books of a corpus as the workflow's config names them (`text.books`): files, folders of books, globs, or
entries with a title and author of their own; one book id per file, unique across the corpus."""

from __future__ import annotations

from glob import glob
from pathlib import Path

from deepflows.errors import UserError
from deepflows.text.books.reader import book_id_of

BOOK_SUFFIXES = (".txt", ".tsv")


def book_files(spec: str) -> list[Path]:
    """The book files a `text.books` path names: the file, a folder's *.txt and *.tsv, or a glob's matches."""
    if Path(spec).is_dir():
        return sorted(p for p in Path(spec).iterdir() if p.suffix in BOOK_SUFFIXES and p.is_file())
    return [Path(p) for p in sorted(glob(spec)) if Path(p).is_file()] or ([Path(spec)] if Path(spec).is_file() else [])


def resolve_books(entries: list) -> list[dict]:
    """[{book_id, path, title, author}] of the config's `text.books` entries, in order; a folder gives its *.txt
    and *.tsv files sorted by name. One line for a path that names no book or a book id given twice."""
    books, seen = [], {}
    for i, entry in enumerate(entries):
        entry = {"path": entry} if isinstance(entry, str) else dict(entry)
        spec = str(entry["path"])
        where = f"text.books[{i}]"
        paths = book_files(spec)
        if not paths:
            raise UserError(f"{where}: {spec}: no book file (*{', *'.join(BOOK_SUFFIXES)}) found")
        if len(paths) > 1 and any(entry.get(k) for k in ("book_id", "title", "author")):
            raise UserError(f"{where}: {spec}: book_id, title and author name one book, but it matches {len(paths)}")
        for path in paths:
            book_id = entry.get("book_id") or book_id_of(path)
            if book_id in seen:
                raise UserError(f"{where}: {path}: book id {book_id!r} is also {seen[book_id]}; set book_id")
            seen[book_id] = str(path)
            books.append({"book_id": book_id, "path": str(path), "title": entry.get("title"),
                          "author": entry.get("author")})  # fmt: skip
    return books
