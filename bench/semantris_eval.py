#!/usr/bin/env python3
"""Semantris: how well the sentence encoder associates words, against human judgements and in a simulated game.

    python bench/semantris_eval.py [--model DIR] [--rounds 1000] [--seed 0] [--wordnet /usr/share/wordnet]
                                   [--data ../shared/data/text] [--out bench/out/semantris_eval]

1. Word similarity: Spearman's rho between cosine similarity and the mean human rating on SimLex-999 and
   WordSim-353, with the pairs each model covers: the pretrained encoder, the fine-tuned one (--model), and the
   co-occurrence baselines (PPMI vectors from the books, sparse and SVD-reduced).
2. A simulated game (deepflows.text.semantris.simulate): --rounds seeded rounds of 10 Arcade words, the clue a WordNet
   synonym or hypernym of the target that the game accepts. Top-1 accuracy and MRR, over all rounds and by clue
   kind, of: the encoder(s); a string-similarity baseline (difflib's ratio between clue and word); the PPMI
   baselines (cosine of the clue's and the word's vectors; a word or clue outside the books' vocabulary scores
   lowest, and the coverage is reported); and chance (every word scored alike).

The co-occurrence vectors are built from the books in DATA/books: each *.txt split into paragraphs at blank lines,
kjv.tsv one unit per verse; window WINDOW, context smoothing ALPHA, words seen MIN_COUNT times (deepflows.text.semantris.ppmi;
those settings are the literature's defaults, not tuned here). Prints JSON, then Markdown tables; writes
summary.json, summary.md and semantris_eval.png (top-1 and MRR per ranker and clue kind) into --out, replaced if
there.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT

from deepflows.errors import UserError
from deepflows.outputs import atomic_output
from deepflows.text.semantris import ppmi
from deepflows.text.semantris import Lexicon
from deepflows.text.semantris.simulate import CLUE_KINDS, evaluate, simulate_rounds
from deepflows.text.semantris.wordsim import embedding_similarity, read_pairs, spearman

TEXT_DATA = ROOT.parent / "shared" / "data" / "text"
NORMS = {"SimLex-999": "word_norms/simlex999.txt", "WordSim-353": "word_norms/wordsim353.tsv"}
SVD_DIM = 300


def book_units(folder: Path) -> list[str]:
    """The books' body paragraphs (a verse TSV's verses), read as the sentence index reads them
    (deepflows.text.books: Gutenberg boilerplate, headings and front matter left out)."""
    from deepflows.text.books.corpus import book_files
    from deepflows.text.books.reader import read_book

    units = []
    for path in book_files(str(folder)):
        book = read_book(path)
        units += [book.paragraph_text(i) for i, p in enumerate(book.paragraphs) if p.body]
    if not units:
        raise UserError(f"{folder}: no books (*.txt, *.tsv)")
    return units


def encoder_ranker(encoder, texts: set[str]):
    """(clue, words) -> cosines, with every text of the game encoded once."""
    ordered = sorted(texts)
    vectors = dict(zip(ordered, encoder.encode(ordered)))
    return lambda clue, words: np.array([vectors[w] for w in words]) @ vectors[clue]


def vectors_ranker(vectors: ppmi.WordVectors):
    """(clue, words) -> cosines; -2, below any cosine, for a word the vectors cannot score (for every word when they
    cannot score the clue)."""

    def rank(clue: str, words) -> np.ndarray:
        scores = [vectors.similarity(clue, w) for w in words]
        return np.array([-2.0 if s is None else s for s in scores])

    return rank


def string_ranker(clue: str, words) -> np.ndarray:
    return np.array([difflib.SequenceMatcher(None, clue, w).ratio() for w in words])


def chance_ranker(clue: str, words) -> np.ndarray:
    return np.zeros(len(words))


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(report: dict) -> str:
    lines = ["Word similarity: Spearman's rho of cosine vs human ratings (pairs covered / all):", "",
             "| model | " + " | ".join(NORMS) + " |", "|---" * (len(NORMS) + 1) + "|"]  # fmt: skip
    for model, scores in report["word_similarity"].items():
        cells = [f"{_f(s['rho'])} ({s['covered']}/{s['pairs']})" for s in scores.values()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    head = f"{report['rounds']} rounds of {report['words_per_round']} words (seed {report['seed']})"
    lines += game_table(f"Simulated game: {head}", report["game"])
    lines += game_table("The same, on the rounds whose clue and target are both in the PPMI vocabulary (there PPMI "
                        "still meets only the on-screen words it knows: the others score lowest, so its figures are "
                        "optimistic)", report["game_ppmi_covered"])  # fmt: skip
    cov = report["ppmi_coverage"]
    lines += ["", f"PPMI vocabulary: {cov['vocabulary']:,} words from {cov['units']:,} paragraphs and verses; it "
              f"knows {cov['clues']:.1%} of the clues, {cov['targets']:.1%} of the targets, "
              f"{cov['screen_words']:.1%} of the words on screen, and both clue and target in {cov['both']:.1%} of "
              "rounds."]  # fmt: skip
    return "\n".join(lines)


def game_table(title: str, game: dict) -> list[str]:
    counts = {kind: game["chance"][kind]["rounds"] for kind in ("all", *CLUE_KINDS)}
    lines = ["", f"{title}; top-1 accuracy / MRR ({', '.join(f'{k}: {n}' for k, n in counts.items())} rounds):", "",
             "| ranker | all | synonym clue | hypernym clue |", "|---|---|---|---|"]  # fmt: skip
    for ranker, by_kind in game.items():
        cells = [f"{_f(by_kind[k]['top1'])} / {_f(by_kind[k]['mrr'])}" for k in ("all", *CLUE_KINDS)]
        lines.append(f"| {ranker} | " + " | ".join(cells) + " |")
    return lines


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    game = report["game"]
    kinds = ("all", *CLUE_KINDS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    width = 0.8 / len(game)
    for ax, metric, label in zip(axes, ("top1", "mrr"), ("top-1 accuracy", "mean reciprocal rank")):
        for i, (ranker, by_kind) in enumerate(game.items()):
            ax.bar(np.arange(len(kinds)) + (i - (len(game) - 1) / 2) * width, [by_kind[k][metric] or 0 for k in kinds],
                   width, label=ranker)  # fmt: skip
        ax.set_xticks(np.arange(len(kinds)), [f"{k}\n({game['chance'][k]['rounds']} rounds)" for k in kinds])
        ax.set_xlabel("clue kind")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.set_title(f"{label}, {report['words_per_round']} words on screen")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), title="ranker")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    from deepflows.outputs import save_figure

    save_figure(fig, out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a fine-tuned encoder directory (e.g. resources/models/text-response)")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wordnet", help="WordNet folder (default /usr/share/wordnet)")
    parser.add_argument("--data", default=str(TEXT_DATA), help="the text data folder (word_norms/, books/)")
    parser.add_argument("--out", default=str(OUT / "semantris_eval"))
    args = parser.parse_args(argv)
    from deepflows.text.encoder import load_encoder

    data = Path(args.data)
    started = time.perf_counter()
    encoders = {"encoder (pretrained)": load_encoder(None)}
    if args.model:
        encoders["encoder (fine-tuned)"] = load_encoder(args.model)
    units = book_units(data / "books")
    vectors = {"PPMI": ppmi.WordVectors.from_texts(units),
               f"PPMI-SVD{SVD_DIM}": ppmi.WordVectors.from_texts(units, dim=SVD_DIM)}  # fmt: skip

    norms = {name: read_pairs(data / path) for name, path in NORMS.items()}
    word_similarity = {}
    for name, encoder in encoders.items():
        similar = embedding_similarity(encoder.encode, [w for pairs in norms.values() for p in pairs for w in p[:2]])
        word_similarity[f"{name}: {encoder.name}"] = {n: spearman(similar, pairs) for n, pairs in norms.items()}
    for name, v in vectors.items():
        word_similarity[name] = {n: spearman(v.similarity, pairs) for n, pairs in norms.items()}

    lexicon = Lexicon.load(args.wordnet)
    rounds = simulate_rounds(lexicon, np.random.default_rng(args.seed), args.rounds)
    texts = {t for r in rounds for t in (r.clue, *r.words)}
    rankers = {name: encoder_ranker(encoder, texts) for name, encoder in encoders.items()}
    rankers |= {"string (difflib)": string_ranker}
    rankers |= {name: vectors_ranker(v) for name, v in vectors.items()}
    rankers["chance"] = chance_ranker
    known = vectors["PPMI"].vector
    covered = [r for r in rounds if known(r.clue) is not None and known(r.words[r.target]) is not None]
    report = {
        "rounds": len(rounds), "seed": args.seed, "words_per_round": len(rounds[0].words),
        "arcade_pool": len(lexicon.arcade_pool), "word_similarity": word_similarity,
        "game": evaluate(rounds, rankers), "game_ppmi_covered": evaluate(covered, rankers),
        "ppmi_coverage": {
            "vocabulary": len(vectors["PPMI"].vocabulary), "units": len(units),
            "clues": float(np.mean([known(r.clue) is not None for r in rounds])),
            "targets": float(np.mean([known(r.words[r.target]) is not None for r in rounds])),
            "screen_words": float(np.mean([known(w) is not None for r in rounds for w in r.words])),
            "both": len(covered) / len(rounds),
        },
        "examples": [{"words": r.words, "target": r.words[r.target], "clue": r.clue, "kind": r.kind}
                     for r in rounds[:5]],
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    text = markdown(report)
    print(json.dumps(report, indent=2))
    print(text)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        tmp.mkdir()
        (tmp / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "summary.md").write_text(text + "\n")
        plot(report, tmp / "semantris_eval.png")
        if out.exists():
            shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        sys.exit(f"semantris_eval: error: {err}")
