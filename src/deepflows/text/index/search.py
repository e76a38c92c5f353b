"""`deepflows text-search --index DIR --query TEXT`: the sentences of the index that best respond to a query,
as a table (score, book, chapter, sentence) or JSON. The query is encoded by the index's own encoder: the
pretrained one, or the fine-tuned model the index was built with (--model), checked by its fingerprint."""

from __future__ import annotations

import json
import sys

from deepflows.errors import UserError
from deepflows.text.index import SentenceIndex

MAX_QUERY_CHARS = 2000  # the encoder reads 256 tokens at most; a longer query is a mistake, not a question


def query_encoder(index: SentenceIndex, model=None):
    """The encoder that made the index (pretrained, or the fine-tuned `model`); refused if it is another one."""
    from deepflows.text.encoder import load_encoder

    encoder = load_encoder(model or index.meta["encoder"].get("model"))
    if encoder.fingerprint != index.encoder_fingerprint:
        raise UserError(f"{index.path}: built with encoder {index.encoder_name} (fingerprint "
                        f"{index.encoder_fingerprint}), not {encoder.name} ({encoder.fingerprint}); give its --model")
    return encoder


def search_text(index: SentenceIndex, encoder, query: str, k: int = 10, exact: bool | None = None,
                book_id: str | None = None) -> list[dict]:  # fmt: skip
    """The top k hits of `query` (each `index.hit(row)` with its score), best first."""
    query = " ".join(query.split())
    if not query:
        raise UserError("--query: empty")
    if len(query) > MAX_QUERY_CHARS:
        raise UserError(f"--query: {len(query)} characters; at most {MAX_QUERY_CHARS}")
    scores, rows = index.search(encoder.encode([query]), k, exact=exact, book_id=book_id)
    return [{"score": float(s), **index.hit(r)} for s, r in zip(scores[0], rows[0]) if r >= 0]


def markdown(hits: list[dict]) -> str:
    lines = ["| score | book | chapter | sentence |", "|---:|---|---|---|"]
    for h in hits:
        cells = [f"{h['score']:.3f}", h["title"], h["chapter"] or "-", h["text"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def add_arguments(p) -> None:
    from deepflows.arguments import positive_int

    p.add_argument("--index", required=True, help="the index directory (deepflows text-index)")
    p.add_argument("--query", required=True, help="a question or statement")
    p.add_argument("-k", type=positive_int, default=10, help="hits to show (default 10)")
    p.add_argument("--exact", action="store_true", help="score every sentence (default: the approximate index "
                                                         "when the index has one)")  # fmt: skip
    p.add_argument("--book", help="search this book only (its book id)")
    p.add_argument("--model", help="the fine-tuned encoder the index was built with (default: the one it names)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> None:
    index = SentenceIndex.open(args.index)
    hits = search_text(index, query_encoder(index, args.model), args.query, args.k, True if args.exact else None,
                       args.book)  # fmt: skip
    if args.json:
        keep = ("score", "row", "book_id", "title", "author", "chapter", "paragraph", "text")
        json.dump([{key: h[key] for key in keep} for h in hits], sys.stdout, indent=2)
        print()
    else:
        print(markdown(hits))
