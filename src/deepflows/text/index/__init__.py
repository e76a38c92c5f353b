"""The sentence index: what Talk to Books searches. One directory (deepflows text-index) holding

    sentences.zarr   the sentence table of every book end to end and its float16 vectors (one sealed Zarr group,
                     schema deepflows.sentence_index; attributes: books, encoder, approximate index)
    ivfpq.faiss      the approximate index (faiss IVF-PQ), when the corpus was large enough to build one

    idx = SentenceIndex.open(path)
    scores, rows = idx.search(query_vectors, k)       # best first; exact=None: approximate when there is one
    idx.hit(rows[0, 0])                               # the sentence inside its paragraph, its book and chapter

Exact search scores every row (deepflows.text.index.topk): the vectors stay in memory when they fit `memory_budget`,
else they are streamed from the Zarr chunks for each search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.text.books.sentence_table import INDEX, open_store

STORE = "sentences.zarr"
APPROX_FILE = "ivfpq.faiss"
MEMORY_BUDGET = 1 << 30  # bytes of float16 vectors kept in memory for exact search; more are streamed
METADATA = ("sentence_paragraph", "sentence_start", "sentence_end", "paragraph_index", "paragraph_chapter",
            "paragraph_start", "paragraph_offsets", "chapter_offsets")  # fmt: skip


class SentenceIndex:
    def __init__(self, path: Path, group, meta: dict, approx, memory_budget: int):
        self.path, self._group, self.meta, self._approx = path, group, meta, approx
        encoder = meta.get("encoder") or {}
        self.encoder_name, self.encoder_fingerprint = str(encoder.get("name")), str(encoder.get("fingerprint"))
        self.dim = int(encoder.get("dim", 0))
        self.chunk_rows = int(meta["chunk_rows"])
        self._vectors = group["vectors"]
        self._n = int(meta["sentences"])
        self._columns = {name: group[name][:] for name in METADATA}  # small: 36 bytes a sentence at most
        self._books = list(meta["books"])
        self._book_starts = np.array([b["rows"][0] for b in self._books], np.int64)
        # the text too, when it fits: a hit then decodes no chunk
        self._blobs = {c: group[f"{c}_bytes"] for c in ("paragraph", "chapter")}
        self._blobs = {c: b[:] if b.nbytes <= memory_budget else b for c, b in self._blobs.items()}
        self._resident = None
        if self._vectors.nbytes <= memory_budget:
            self._resident = [self._vectors[s : s + self.chunk_rows] for s in range(0, self._n, self.chunk_rows)]

    @classmethod
    def open(cls, path: str | Path, verify: bool = True, memory_budget: int = MEMORY_BUDGET) -> SentenceIndex:
        """Open the index directory `path`; one line (UserError) naming it when it is not an index, incomplete
        or corrupt (sizes always checked; every byte against its sha256 too when `verify`)."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: {'not a directory' if path.exists() else 'not found'}; "
                            "expected an index directory (deepflows text-index)")  # fmt: skip
        if not (path / STORE).exists():
            raise UserError(f"{path}: not a sentence index (no {STORE}; make one with deepflows text-index)")
        group, _, meta = open_store(path / STORE, (INDEX,), verify=verify)
        try:
            if group["vectors"].shape != (meta["sentences"], meta["encoder"]["dim"]):
                raise ValueError(f"vectors of shape {group['vectors'].shape} for {meta['sentences']} sentences")
            approx = _open_approx(path, meta.get("approx"), verify)
            return cls(path, group, meta, approx, memory_budget)
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path}: incomplete or malformed sentence index ({type(err).__name__}: {err})") from None

    def __len__(self) -> int:
        return self._n

    @property
    def approximate(self) -> dict | None:
        """The approximate index's parameters, or None when there is none."""
        return self.meta["approx"] if self._approx is not None else None

    def books(self) -> list[dict]:
        return [{"book_id": b["book_id"], "title": b["title"], "author": b["author"],
                 "sentences": b["rows"][1] - b["rows"][0]} for b in self._books]  # fmt: skip

    def book_rows(self, book_id: str) -> tuple[int, int]:
        for book in self._books:
            if book["book_id"] == book_id:
                return int(book["rows"][0]), int(book["rows"][1])
        raise UserError(f"{self.path}: no book {book_id!r} in the index")

    def search(self, query_vectors, k: int = 10, exact: bool | None = None, book_id: str | None = None,
               nprobe: int | None = None, rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(scores float32 [q, k], rows int64 [q, k]) of the k best rows by inner product, best first; k is cut
        to the rows searched. exact=None: the approximate index when there is one; `book_id`: that book's rows
        only. Approximate search takes `rerank` x k candidates from IVF-PQ (probing `nprobe` lists; defaults:
        the index's) and scores them exactly; it marks rows it could not fill with -1 (score -inf)."""
        queries = np.asarray(query_vectors, np.float32)
        queries = queries[None] if queries.ndim == 1 else queries
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise UserError(f"query vectors of shape {tuple(np.shape(query_vectors))}; this index holds {self.dim}-"
                            f"dimensional vectors ({self.encoder_name})")  # fmt: skip
        low, high = self.book_rows(book_id) if book_id is not None else (0, self._n)
        k = min(int(k), high - low)
        if k < 1:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if exact is None:
            exact = self._approx is None
        if not exact:
            if self._approx is None:
                raise UserError(f"{self.path}: the index has no approximate index (built with --approx none or "
                                "too few sentences); search it exactly")  # fmt: skip
            from deepflows.text.index import ivfpq
            from deepflows.text.index.topk import rescore

            params = self.meta["approx"]
            factor = rerank or params.get("rerank", 1)
            bounds = (low, high) if book_id is not None else ()
            scores, rows = ivfpq.search(self._approx, queries, k * factor, nprobe or params["nprobe"], *bounds)
            return rescore(queries, rows, self.vectors_of, k) if factor > 1 else (scores, rows)
        from deepflows.text.index.topk import exact_topk

        return exact_topk(queries, self._blocks(low, high), self.chunk_rows, k, low, high)

    def _blocks(self, low: int, high: int):
        """(first row, reader) of the chunks holding rows low..high-1."""
        first = (low // self.chunk_rows) * self.chunk_rows
        for start in range(first, high, self.chunk_rows):
            if self._resident is not None:
                block = self._resident[start // self.chunk_rows]
                yield start, lambda block=block: block
            else:
                yield start, lambda start=start: self._vectors[start : start + self.chunk_rows]

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """float16 vectors of the sorted `rows`: from memory, or only the Zarr chunks that hold them."""
        if self._resident is None:
            return self._vectors.oindex[np.asarray(rows, np.int64)]
        chunk = self.chunk_rows
        return np.stack([self._resident[r // chunk][r % chunk] for r in rows]) if len(rows) else np.zeros((0, self.dim))

    def hit(self, row: int) -> dict:
        """The sentence of `row`: its text, book, chapter and paragraph, and where it lies in the paragraph."""
        row = int(row)
        if not 0 <= row < self._n:
            raise UserError(f"{self.path}: no sentence {row} (the index holds {self._n})")
        c = self._columns
        p = int(c["sentence_paragraph"][row])
        paragraph = self._text("paragraph", p)
        p_start = int(c["paragraph_start"][p])
        start, end = int(c["sentence_start"][row]), int(c["sentence_end"][row])
        chapter = int(c["paragraph_chapter"][p])
        book = self._books[int(np.searchsorted(self._book_starts, row, side="right")) - 1]
        return {"row": row, "text": paragraph[start - p_start : end - p_start], "book_id": book["book_id"],
                "title": book["title"], "author": book["author"],
                "chapter": self._text("chapter", chapter) if chapter >= 0 else "",
                "paragraph": int(c["paragraph_index"][p]), "start": start, "end": end, "paragraph_text": paragraph,
                "sentence_start": start - p_start, "sentence_end": end - p_start}  # fmt: skip

    def _text(self, column: str, i: int) -> str:
        offsets = self._columns[f"{column}_offsets"]
        return bytes(self._blobs[column][int(offsets[i]) : int(offsets[i + 1])]).decode("utf-8")


def _open_approx(path: Path, approx: dict | None, verify: bool):
    """The faiss index the store's attributes describe, checked against their size and sha256; None if none."""
    if not approx:
        return None
    from deepflows.store.integrity import file_sha256
    from deepflows.text.index import ivfpq

    file = path / approx["file"]
    if not file.is_file() or file.stat().st_size != approx["bytes"]:
        state = "missing" if not file.is_file() else f"{file.stat().st_size} bytes, expected {approx['bytes']}"
        raise UserError(f"{path}: approximate index {approx['file']} is {state}; run text-index again")
    if verify and file_sha256(file) != approx["sha256"]:
        raise UserError(f"{path}: approximate index {approx['file']} is corrupt (sha256 differs); run text-index again")
    return ivfpq.read(file)
