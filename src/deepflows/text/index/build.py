"""`deepflows text-index --shards VEC.zarr... --out INDEX_DIR`: every book's vector store -> one sentence index
(deepflows.text.index): the tables end to end with their vectors in one Zarr group, and, when the corpus has at
least `--min-approx` sentences, a faiss IVF-PQ index beside it.

Shards must come from one encoder (the same fingerprint) and hold different books.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.text.index import ivfpq
from deepflows.text.index import APPROX_FILE, STORE
from deepflows.text.books.sentence_table import CHUNK_ROWS, INDEX, VECTORS, compressors, concatenate, load_table, write_store

log = logging.getLogger(__name__)
MIN_APPROX = 10_000


def read_shards(paths) -> tuple[list, list, dict]:
    """(tables, vector arrays, encoder attributes) of the shards, checked to agree on the encoder and to hold
    each book once."""
    tables, vectors, first, seen = [], [], None, {}
    for path in paths:
        table, group, meta = load_table(path, (VECTORS,))
        encoder = meta.get("encoder") or {}
        if first is None:
            first = (path, encoder)
        elif (encoder.get("fingerprint"), encoder.get("dim")) != (first[1].get("fingerprint"), first[1].get("dim")):
            raise UserError(f"{path}: embedded by {encoder.get('name')} (fingerprint {encoder.get('fingerprint')}), "
                            f"but {first[0]} by {first[1].get('name')} (fingerprint {first[1].get('fingerprint')}); "
                            "embed every book with one encoder")  # fmt: skip
        for book in table.books:
            if book["book_id"] in seen:
                raise UserError(f"{path}: book {book['book_id']!r} is also in {seen[book['book_id']]}; "
                                "give each book once (or another --book-id)")  # fmt: skip
            seen[book["book_id"]] = path
        tables.append(table)
        vectors.append(group["vectors"])
    if first is None:
        raise UserError("no shards given")
    return tables, vectors, first[1]


def build_index(shards, out: str | Path, approx: str = "ivfpq", min_approx: int = MIN_APPROX,
                chunk_rows: int = CHUNK_ROWS, **approx_options) -> Path:  # fmt: skip
    """Write the index directory `out` from the vector stores `shards` (see the module doc)."""
    from deepflows.outputs import check_new_output, output_directory

    out = check_new_output(out)
    tables, vectors, encoder = read_shards([Path(p) for p in shards])
    table = concatenate(tables)
    n, dim = len(table), int(encoder["dim"])
    params = ivfpq.parameters(n, dim, **approx_options) if approx == "ivfpq" and n >= min_approx else None
    if approx == "ivfpq" and params is None:
        log.info("%d sentences: fewer than --min-approx %d, no approximate index (exact search only)", n, min_approx)

    with output_directory(out) as tmp:

        def fill(group):
            array = group.create_array("vectors", shape=(n, dim), chunks=(chunk_rows, dim), dtype=np.float16,
                                       compressors=compressors())  # fmt: skip
            _gather(vectors, array, chunk_rows)
            if params is None:
                return {"encoder": encoder, "approx": None}
            t0 = time.perf_counter()
            index = ivfpq.build(array, params, chunk_rows)
            ivfpq.write(index, tmp / APPROX_FILE)
            from deepflows.store.integrity import file_sha256

            file = tmp / APPROX_FILE
            log.info("IVF-PQ built in %.1f s", time.perf_counter() - t0)
            described = {**params, "file": APPROX_FILE, "bytes": file.stat().st_size, "sha256": file_sha256(file)}
            return {"encoder": encoder, "approx": described}

        write_store(tmp / STORE, table, INDEX, {"shards": [str(p) for p in shards]}, chunk_rows, fill)
    log.info("%s: %d sentences of %d books", out, n, len(table.books))
    return out


def _gather(sources, target, chunk_rows: int) -> None:
    """The shards' vectors end to end into `target`, written in whole chunks (a buffer of one chunk)."""
    buffer, filled, written = np.empty((chunk_rows, target.shape[1]), np.float16), 0, 0
    for source in sources:
        for start in range(0, source.shape[0], source.chunks[0]):
            block = source[start : start + source.chunks[0]]
            while len(block):
                take = min(len(block), chunk_rows - filled)
                buffer[filled : filled + take], block, filled = block[:take], block[take:], filled + take
                if filled == chunk_rows:
                    target[written : written + chunk_rows] = buffer
                    written, filled = written + chunk_rows, 0
    if filled:
        target[written : written + filled] = buffer[:filled]


def add_arguments(p) -> None:
    from deepflows.arguments import non_negative_int, positive_int

    p.add_argument("--shards", nargs="+", required=True, help="the books' vector stores (deepflows text-embed)")
    p.add_argument("--out", required=True, help="the index directory to write")
    p.add_argument("--approx", choices=("ivfpq", "none"), default="ivfpq",
                   help="approximate index: faiss IVF-PQ (default), or none (exact search only)")  # fmt: skip
    p.add_argument("--min-approx", type=non_negative_int, default=MIN_APPROX,
                   help=f"build the approximate index from this many sentences on (default {MIN_APPROX})")  # fmt: skip
    p.add_argument("--nlist", type=positive_int, help="IVF lists (default: about 4 sqrt(n), a power of two)")
    p.add_argument("--pq-m", dest="m", type=positive_int, default=ivfpq.DEFAULTS["m"],
                   help=f"PQ codes per vector; must divide the dimension (default {ivfpq.DEFAULTS['m']})")  # fmt: skip
    p.add_argument("--pq-bits", dest="bits", type=positive_int, default=ivfpq.DEFAULTS["bits"],
                   help=f"bits per PQ code (default {ivfpq.DEFAULTS['bits']})")  # fmt: skip
    p.add_argument("--nprobe", type=positive_int, default=ivfpq.DEFAULTS["nprobe"],
                   help=f"lists searched per query by default (default {ivfpq.DEFAULTS['nprobe']})")  # fmt: skip
    p.add_argument("--rerank", type=positive_int, default=ivfpq.DEFAULTS["rerank"],
                   help="approximate search scores rerank x k IVF-PQ candidates exactly by default (1: none; "
                        f"default {ivfpq.DEFAULTS['rerank']})")  # fmt: skip
    p.add_argument("--train-size", type=positive_int,
                   help="vectors drawn to train IVF-PQ (default: 39 per list, at least 50,000, at most 160,000)")
    p.add_argument("--seed", type=non_negative_int, default=ivfpq.DEFAULTS["seed"], help="seed of the training draw")
    p.add_argument("--chunk-rows", type=positive_int, default=CHUNK_ROWS,
                   help=f"sentences per Zarr chunk (default {CHUNK_ROWS})")  # fmt: skip


def run(args) -> None:
    if args.bits > 16:
        raise UserError(f"--pq-bits {args.bits}: at most 16")
    build_index(args.shards, args.out, args.approx, args.min_approx, args.chunk_rows, nlist=args.nlist, m=args.m,
                bits=args.bits, nprobe=args.nprobe, rerank=args.rerank, train_size=args.train_size,
                seed=args.seed)  # fmt: skip
