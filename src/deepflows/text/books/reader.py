"""Books in: a Project Gutenberg or plain UTF-8 text, or a verse TSV (`book chapter verse text`, e.g. the KJV),
read into one normalised text made of paragraphs, each with its chapter.

The normalised text is the book's paragraphs joined by a blank line ("\\n\\n"), each paragraph's lines joined by
single spaces (Gutenberg hard line breaks and runs of whitespace collapsed). Character offsets of paragraphs and
sentences point into it, so `book.text[start:end]` is the sentence a hit shows.

Plain and Gutenberg texts: the licence header and footer around `*** START OF ... ***` / `*** END OF ... ***` are
dropped; the title and author come from the header's `Title:` / `Author:` lines, else from the front matter (a
short first line, then `By NAME` or `by` + `NAME`), else the file name. Single-line paragraphs such as `CHAPTER IV`
or `Chapter 4` are chapter headings (`VOLUME II` prefixes the chapters after it); they and the front matter make
no sentences. A verse TSV gives one paragraph per verse, chapter `BOOK CHAPTER` (`Genesis 1`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from deepflows.errors import UserError

TSV_HEADER = ["book", "chapter", "verse", "text"]
_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
                  re.IGNORECASE | re.MULTILINE)  # fmt: skip
_HEADER_FIELD = re.compile(r"^(Title|Author):\s*(\S.*?)\s*$", re.MULTILINE)
_NUMBER_WORD = (r"(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|[a-z]+teen|twenty|thirty|forty|"
                r"fifty|sixty|seventy|eighty|ninety)(-[a-z]+)?")
_SECTION = re.compile(rf"^(chapter|volume|book|part)\s+([ivxlcdm]+|\d+|{_NUMBER_WORD})\b[.:]?\s*(.{{0,60}})$",
                      re.IGNORECASE)  # fmt: skip
_BY = re.compile(r"^by(?:\s+(.*))?$", re.IGNORECASE)
_YEAR = re.compile(r"\s*\(?\d{4}\)?\s*$")
_LETTER = re.compile(r"[^\W\d_]")
_SMALL_WORDS = {"a", "an", "and", "as", "at", "but", "by", "for", "in", "of", "on", "or", "the", "to"}
FRONT_MATTER_PARAGRAPHS = 6  # the title block is in the first few paragraphs or not at all


@dataclass
class Paragraph:
    start: int  # character offsets in Book.text
    end: int
    chapter: int  # index into Book.chapters (-1: before any heading)
    body: bool  # makes sentences (not a heading, not front matter, has letters)


@dataclass
class Book:
    book_id: str
    title: str
    author: str
    source: str
    sha256: str
    format: str  # "gutenberg", "plain" or "verse-tsv"
    text: str
    paragraphs: list[Paragraph] = field(default_factory=list)
    chapters: list[str] = field(default_factory=list)

    def paragraph_text(self, i: int) -> str:
        return self.text[self.paragraphs[i].start : self.paragraphs[i].end]


def book_id_of(path: str | Path) -> str:
    """The book's id: its file name without suffix, reduced to letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "book"


def decode(path: str | Path) -> tuple[str, str]:
    """(text with \\n line ends and no BOM, sha256 of the bytes); one line for a binary or non-UTF-8 file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a book file") from None
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    if b"\x00" in data[:65536]:
        raise UserError(f"{path}: a binary file (NUL bytes), not a text book")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                        "convert it, e.g. iconv -f latin1 -t utf-8") from None  # fmt: skip
    return text.replace("\r\n", "\n").replace("\r", "\n"), hashlib.sha256(data).hexdigest()


def read_book(path: str | Path, book_id: str | None = None, title: str | None = None,
              author: str | None = None) -> Book:  # fmt: skip
    """Read a book file (format found from its content); `book_id`, `title`, `author` override what is found."""
    path = Path(path)
    raw, sha256 = decode(path)
    if raw.split("\n", 1)[0].rstrip().split("\t") == TSV_HEADER:
        book = _verse_tsv(path, raw)
    else:
        book = _prose(path, raw)
    book.sha256 = sha256
    book.book_id = book_id or book_id_of(path)
    book.title = title or book.title or book.book_id
    book.author = author if author is not None else book.author
    if not any(p.body for p in book.paragraphs):
        raise UserError(f"{path}: no text to split into sentences (an empty book)")
    return book


def _verse_tsv(path: Path, raw: str) -> Book:
    book = Book("", "", "", str(path), "", "verse-tsv", "")
    pieces, chapter_of, offset = [], {}, 0
    for number, line in enumerate(raw.split("\n")[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise UserError(f"{path}: line {number}: expected 4 tab-separated fields ({' '.join(TSV_HEADER)}), "
                            f"found {len(fields)}")  # fmt: skip
        text = " ".join(fields[3].split())
        if not text:
            continue
        label = f"{fields[0].strip()} {fields[1].strip()}"
        chapter = chapter_of.setdefault(label, len(chapter_of))
        start = offset + (2 if pieces else 0)
        book.paragraphs.append(Paragraph(start, start + len(text), chapter, bool(_LETTER.search(text))))
        pieces.append(text)
        offset = start + len(text)
    book.text, book.chapters = "\n\n".join(pieces), list(chapter_of)
    return book


def _prose(path: Path, raw: str) -> Book:
    header, body, fmt = "", raw, "plain"
    start = _START.search(raw)
    if start:
        header, body, fmt = raw[: start.start()], raw[start.end() :], "gutenberg"
    end = _END.search(body)
    if end:
        body, fmt = body[: end.start()], "gutenberg"
    fields = {name.lower(): value for name, value in _HEADER_FIELD.findall(header)}
    blocks = [block.split("\n") for block in re.split(r"\n[ \t\f\v]*\n", body)]
    blocks = [[" ".join(line.split()) for line in block if line.strip()] for block in blocks]
    blocks = [lines for lines in blocks if lines]
    text = "\n\n".join(" ".join(lines) for lines in blocks)
    book = Book("", fields.get("title", ""), fields.get("author", ""), str(path), "", fmt, text)
    front = _front_matter(blocks)
    if front is not None:
        skipped, title, author = front
        book.title = book.title or title
        book.author = book.author or author
    else:
        skipped = 0
    offset, volume = 0, ""
    for i, lines in enumerate(blocks):
        paragraph = " ".join(lines)
        section = _SECTION.match(paragraph) if len(lines) == 1 else None
        chapter, body = len(book.chapters) - 1, False
        if section and section.group(1).lower() in ("volume", "book", "part"):
            volume = f"{section.group(1).capitalize()} {section.group(2)}"
        elif section:
            book.chapters.append(f"{volume + ', ' if volume else ''}Chapter {section.group(2)}")
            chapter = len(book.chapters) - 1
        else:
            body = i >= skipped and bool(_LETTER.search(paragraph))
        book.paragraphs.append(Paragraph(offset, offset + len(paragraph), chapter, body))
        offset += len(paragraph) + 2
    return book


def _front_matter(blocks: list[list[str]]) -> tuple[int, str, str] | None:
    """(paragraphs it takes, title, author) of a title block: a short single-line first paragraph, then `By NAME`
    or `by` + `NAME` and year lines such as `(1814)`; None when the book does not open so."""
    if not blocks or len(blocks[0]) != 1 or len(blocks[0][0]) > 80 or _SECTION.match(blocks[0][0]):
        return None
    title, author, i = _title_case(blocks[0][0]), "", 1
    while i < min(len(blocks), FRONT_MATTER_PARAGRAPHS) and len(blocks[i]) <= 2:
        line = " ".join(blocks[i])
        by = _BY.match(line)
        if by and not author:
            name = by.group(1) or (" ".join(blocks[i + 1]) if i + 1 < len(blocks) else "")
            i += 1 if by.group(1) else 2
            author = _YEAR.sub("", name).strip()
        elif not _LETTER.search(line):  # (1814)
            i += 1
        else:
            break
    if not author:  # a first line alone is no title block: it may be the text's first sentence
        return None
    return i, title, author


def _title_case(line: str) -> str:
    """`PRIDE AND PREJUDICE` -> `Pride and Prejudice`; a title not all in capitals is kept as it is."""
    if line != line.upper():
        return line
    words = line.lower().split()
    return " ".join(w if j and w in _SMALL_WORDS else w.capitalize() for j, w in enumerate(words))
