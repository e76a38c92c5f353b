#!/usr/bin/env python3
"""Talk to Books examples for the README: five general questions (fixed before any result was seen) and the
three sentences of the books index that respond best to each, with book and chapter, as Markdown.

    python bench/text_examples.py [--index results/text/books/index] [--exact] [-k 3]
                                  [--out bench/out/text_examples.md]

The questions are encoded by the index's own encoder (deepflows.text.index.search.query_encoder); search is the
index's default (IVF-PQ with exact re-ranking when it has one) unless --exact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT  # noqa: E402

QUESTIONS = (
    "What makes a good marriage?",
    "Is it wise to judge a person by first impressions?",
    "How should we treat the poor?",
    "Why do people fear death?",
    "Can money buy happiness?",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "results" / "text" / "books" / "index")
    parser.add_argument("--exact", action="store_true", help="score every sentence (default: the index's default)")
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT / "text_examples.md")
    args = parser.parse_args()
    from deepflows.text.index import SentenceIndex
    from deepflows.text.index.search import query_encoder, search_text

    index = SentenceIndex.open(args.index)
    encoder = query_encoder(index)
    search = "exact" if args.exact or index.approximate is None else (
        f"IVF-PQ (nprobe {index.approximate['nprobe']}, {index.approximate['rerank']} x k re-ranked exactly)")
    lines = [f"Index: {len(index):,} sentences of {len(index.books())} books, encoder {index.encoder_name}; "
             f"search: {search}.", ""]  # fmt: skip
    for question in QUESTIONS:
        lines += [f"**{question}**", ""]
        for hit in search_text(index, encoder, question, args.k, True if args.exact else None):
            where = f"{hit['title']}, {hit['chapter']}" if hit["chapter"] else hit["title"]
            lines.append(f"1. {hit['text']} — *{where}* ({hit['score']:.3f})")
        lines.append("")
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
