"""The sentence table: the Zarr layout shared by a book's sentence store (text-sentences), its vector store
(text-embed, the same table plus `vectors`) and the index (text-index, many books' tables end to end).

Text is kept once, as paragraphs: a UTF-8 byte blob and its byte offsets. A sentence is a paragraph row and
its character offsets in its book's normalised text (deepflows.text.books.reader), so the sentence is
`paragraph_text[start - paragraph_start : end - paragraph_start]` and a hit is shown inside its paragraph.

    sentence_paragraph int32 [n]   row in the paragraph arrays
    sentence_start, sentence_end int64 [n]   character offsets in the book's normalised text
    paragraph_index int32 [p]      the paragraph's index among all of its book's paragraphs
    paragraph_chapter int32 [p]    row in the chapter arrays, -1 before the first heading
    paragraph_start int64 [p]      character offset of the paragraph in its book's text
    paragraph_bytes uint8, paragraph_offsets int64 [p + 1]   the paragraphs' text
    chapter_bytes uint8, chapter_offsets int64 [c + 1]       chapter labels ("Volume I, Chapter IV", "Genesis 1")

Group attributes under the schema name: `books`, one entry per book in row order (book_id, title, author,
source, sha256, format, and its `rows`, `paragraphs`, `chapters` as [start, stop) ranges), and the splitter.
Per-sentence arrays share one chunk length (`chunk_rows`), so a chunk of vectors and its metadata line up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

SENTENCE_ARRAYS = {"sentence_paragraph": np.int32, "sentence_start": np.int64, "sentence_end": np.int64}
PARAGRAPH_ARRAYS = {"paragraph_index": np.int32, "paragraph_chapter": np.int32, "paragraph_start": np.int64}
TEXT_COLUMNS = ("paragraph", "chapter")
CHUNK_ROWS = 32768  # sentences per chunk: 24 MiB of float16 vectors of 384
BLOB_CHUNK = 1 << 22  # bytes per chunk of a text blob
BOOK_KEYS = ("book_id", "title", "author", "source", "sha256", "format")


@dataclass
class SentenceTable:
    """A table in memory: arrays as above, `paragraphs` and `chapters` as lists of str, `books` as attributes."""

    arrays: dict[str, np.ndarray]
    paragraphs: list[str]
    chapters: list[str]
    books: list[dict]
    splitter: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrays["sentence_start"])

    def sentences(self) -> list[str]:
        """Every sentence's text, in row order."""
        para, start, end = (self.arrays[k] for k in SENTENCE_ARRAYS)
        p_start = self.arrays["paragraph_start"]
        return [self.paragraphs[p][s - p_start[p] : e - p_start[p]] for p, s, e in zip(para, start, end)]


def encode_column(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 blob, int64 byte offsets [len + 1]) of `texts`."""
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


def decode_column(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = blob.tobytes()
    return [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]


def write_table(group, table: SentenceTable, chunk_rows: int = CHUNK_ROWS, compressors=None) -> None:
    """Write `table`'s arrays into the open Zarr group."""
    for name, dtype in {**SENTENCE_ARRAYS, **PARAGRAPH_ARRAYS}.items():
        rows = chunk_rows if name in SENTENCE_ARRAYS else max(chunk_rows, 1 << 16)
        values = np.asarray(table.arrays[name], dtype)
        array = group.create_array(name, shape=values.shape, chunks=(max(1, min(rows, len(values))),), dtype=dtype,
                                   compressors=compressors)  # fmt: skip
        array[:] = values
    for column, texts in zip(TEXT_COLUMNS, (table.paragraphs, table.chapters)):
        blob, offsets = encode_column(texts)
        for suffix, values, rows in (("bytes", blob, BLOB_CHUNK), ("offsets", offsets, 1 << 16)):
            array = group.create_array(f"{column}_{suffix}", shape=values.shape, dtype=values.dtype,
                                       chunks=(max(1, min(rows, len(values))),), compressors=compressors)  # fmt: skip
            if len(values):
                array[:] = values


def read_table(group, path: str | Path) -> SentenceTable:
    """The whole table of an open group (a book or a few: the index reads its arrays lazily instead)."""
    try:
        arrays = {name: group[name][:] for name in {**SENTENCE_ARRAYS, **PARAGRAPH_ARRAYS}}
        columns = [decode_column(group[f"{c}_bytes"][:], group[f"{c}_offsets"][:]) for c in TEXT_COLUMNS]
    except (KeyError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a complete sentence table ({type(err).__name__}: {err})") from None
    return SentenceTable(arrays, columns[0], columns[1], [])


def concatenate(tables: list[SentenceTable]) -> SentenceTable:
    """Tables end to end: paragraph and chapter rows shifted, book ranges moved to their new rows."""
    dtypes = {**SENTENCE_ARRAYS, **PARAGRAPH_ARRAYS}
    arrays: dict[str, list] = {name: [] for name in dtypes}
    paragraphs, chapters, books, rows = [], [], [], 0
    for t in tables:
        shift = {"rows": rows, "paragraphs": len(paragraphs), "chapters": len(chapters)}
        for name in dtypes:
            values = np.asarray(t.arrays[name])
            if name == "sentence_paragraph":
                values = values + shift["paragraphs"]
            elif name == "paragraph_chapter":
                values = np.where(values < 0, values, values + shift["chapters"])
            arrays[name].append(values)
        books += [{**book, **{k: [book[k][0] + v, book[k][1] + v] for k, v in shift.items()}} for book in t.books]
        paragraphs += t.paragraphs
        chapters += t.chapters
        rows += len(t)
    joined = {k: np.concatenate(v).astype(dtypes[k]) if v else np.zeros(0, dtypes[k]) for k, v in arrays.items()}
    return SentenceTable(joined, paragraphs, chapters, books, tables[0].splitter if tables else {})


# --- stores: a table (and what a stage adds to it) in one sealed Zarr group ---------------------------------
SENTENCES = "deepflows.sentences"
VECTORS = "deepflows.sentence_vectors"
INDEX = "deepflows.sentence_index"
SCHEMA_VERSION = 1


def compressors():
    import zarr

    return zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def write_store(out: str | Path, table: SentenceTable, schema: str, attrs: dict | None = None,
                chunk_rows: int = CHUNK_ROWS, fill=None) -> Path:  # fmt: skip
    """Write `table` to the new store `out` (whole or not at all); `fill(group)` adds arrays (vectors), and may
    return more attributes, before the store is sealed with its attributes and integrity manifest. Nothing
    that varies between runs (times, hosts) goes into it: the same inputs give the same bytes."""
    import zarr

    from deepflows.outputs import atomic_output
    from deepflows.store.integrity import seal

    meta = {"books": table.books, "splitter": table.splitter, "sentences": len(table),
            "paragraphs": len(table.paragraphs), "chunk_rows": chunk_rows, **(attrs or {})}  # fmt: skip
    with atomic_output(out) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        write_table(group, table, chunk_rows, compressors())
        if fill is not None:
            meta.update(fill(group) or {})
        seal(group, tmp, {"schema": schema, "schema_version": SCHEMA_VERSION, schema: meta})
    return Path(out)


def open_store(path: str | Path, schemas: tuple[str, ...], verify: bool = True) -> tuple:
    """(zarr group, its schema, its metadata) of a sealed store of one of `schemas`, checked against its integrity
    manifest (sizes always, checksums too when `verify`); one line naming the path when it is not one."""
    import zarr

    from deepflows.store.integrity import MADE_BY, root_attributes
    from deepflows.store.integrity import verify as verify_store

    path = Path(path)
    attrs = root_attributes(path)
    schema = attrs.get("schema")
    if schema not in schemas or not isinstance(attrs.get(schema), dict):
        wanted = " or ".join(f"a {s.split('.')[-1].replace('_', ' ')} store ({MADE_BY[s]})" for s in schemas)
        raise UserError(f"{path}: not {wanted}")
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path}: {schema} schema version {attrs.get('schema_version')}, expected {SCHEMA_VERSION}; "
                        f"run {MADE_BY[schema]} again")  # fmt: skip
    if verify:
        verify_store(path, attrs, made_by=MADE_BY[schema])
    else:
        _check_sizes(path, attrs, MADE_BY[schema])
    return zarr.open_group(str(path), mode="r"), schema, attrs[schema]


def _check_sizes(path: Path, attrs: dict, made_by: str) -> None:
    """The cheap half of an integrity check: every listed file there, at its size (no checksums)."""
    files = (attrs.get("integrity") or {}).get("files")
    if not isinstance(files, dict):
        raise UserError(f"{path}: store has no integrity manifest; run {made_by} again")
    for rel, entry in files.items():
        file = path / rel
        size = file.stat().st_size if file.is_file() else None
        if size != entry[0]:
            state = "is missing" if size is None else f"is {size} bytes, the manifest says {entry[0]}"
            raise UserError(f"{path}: {rel} {state}; run {made_by} again")


def load_table(path: str | Path, schemas: tuple[str, ...] = (SENTENCES, VECTORS)) -> tuple:
    """(table with its books and splitter, zarr group, metadata) of a book's sentence or vector store."""
    group, _, meta = open_store(path, schemas)
    table = read_table(group, path)
    table.books, table.splitter = meta.get("books", []), meta.get("splitter", {})
    if len(table) != meta.get("sentences"):
        raise UserError(f"{path}: holds {len(table)} sentences, its attributes say {meta.get('sentences')}")
    return table, group, meta
