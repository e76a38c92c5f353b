#!/usr/bin/env python3
"""Talk to Books' encoder: response retrieval on held-out chit-chat conversations, and STS-B, for BM25, TF-IDF,
the pretrained all-MiniLM-L6-v2 and fine-tuned encoders side by side.

    python bench/text_response.py [--chats ../shared/data/text/chitchat/dataset.json.gz]
                                  [--sts ../shared/data/text/stsbenchmark] [--model NAME=DIR ...]
                                  [--split test] [--out bench/out/text_response]

Retrieval (deepflows.text.response.retrieval): every turn of the split's conversations is a query, every turn of them a
candidate, the real next turn the answer; recall@1, recall@10, MRR. The split is by conversation (sha256 of its
id: deepflows.text.response.chitchat); the fine-tuned encoder never saw a test conversation. STS-B test: Spearman x 100 of
the cosine against the gold scores. --model defaults to resources/models/text-response when it exists.
Prints Markdown; JSON to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "text"


def main() -> None:
    from deepflows.text.response.chitchat import read_conversations, split
    from deepflows.text.encoder import load_encoder
    from deepflows.text.response.retrieval import bm25_ranks, encoder_ranks, retrieval_task, summarise, tfidf_ranks
    from deepflows.text.encoder.sts import read_sts, sts_spearman

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chats", type=Path, default=SHARED / "chitchat" / "dataset.json.gz")
    p.add_argument("--sts", type=Path, default=SHARED / "stsbenchmark")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a fine-tuned encoder")
    p.add_argument("--split", default="test", choices=["tune", "test"])
    p.add_argument("--out", type=Path, default=OUT / "text_response")
    args = p.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    if not models and (ROOT / "resources" / "models" / "text-response" / "model.json").is_file():
        models["fine-tuned (shipped)"] = str(ROOT / "resources" / "models" / "text-response")

    conversations = read_conversations(args.chats)
    held_out, train = split(conversations, args.split), split(conversations, "train")
    texts, queries, answers = retrieval_task(held_out)
    sts = read_sts(args.sts / "sts-test.csv")
    rows = {}

    def record(name: str, ranks, encoder=None, seconds: float = 0.0) -> None:
        rows[name] = {**summarise(ranks), "seconds": round(seconds, 1)}
        if encoder is not None:
            rows[name]["stsb_test_spearman"] = sts_spearman(encoder.encode, *sts)
            rows[name]["fingerprint"] = encoder.fingerprint
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr)

    start = time.perf_counter()
    record("BM25", bm25_ranks(texts, queries, answers), seconds=time.perf_counter() - start)
    start = time.perf_counter()
    train_turns = [t for c in train for t in c.turns]
    record("TF-IDF", tfidf_ranks(texts, queries, answers, train_turns), seconds=time.perf_counter() - start)
    for name, model in {"all-MiniLM-L6-v2 (pretrained)": None, **models}.items():
        encoder = load_encoder(model)
        start = time.perf_counter()
        ranks = encoder_ranks(encoder.encode, texts, queries, answers)
        record(name, ranks, encoder, time.perf_counter() - start)

    summary = {"split": args.split, "conversations": len(held_out), "queries": len(queries),
               "candidates": len(texts), "chats": str(args.chats), "models": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"Response retrieval, chit-chat {args.split} split: {len(held_out)} conversations, {len(queries):,} "
          f"queries, each against all {len(texts):,} turns\n")
    print("| ranker | recall@1 | recall@10 | MRR | median rank | STS-B test Spearman |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        stsb = f"{r['stsb_test_spearman']:.2f}" if "stsb_test_spearman" in r else "-"
        print(f"| {name} | {r['recall@1']:.4f} | {r['recall@10']:.4f} | {r['mrr']:.4f} | {r['median_rank']:.0f} "
              f"| {stsb} |")


if __name__ == "__main__":
    main()
