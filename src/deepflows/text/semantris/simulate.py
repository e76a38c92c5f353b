"""A simulated Semantris game from WordNet, to compare rankers: in each round ROUND_WORDS words are drawn as the
Arcade game draws them, one of them is the target, and the clue is a synonym (another lemma of the target's most
frequent sense) or a hypernym (a lemma of that sense's hypernyms) that the game accepts with those words on screen.
A ranker orders the words by the clue; it scores top-1 (the target first) and the reciprocal rank of the target.

Ties count at their expected value under a random order: a target tied with k others and below h words has top-1
1/(k+1) if h == 0 (else 0) and reciprocal rank mean(1/(h+1), ..., 1/(h+k+1)). A ranker that scores every word the
same thus gets chance exactly (top-1 1/10, MRR 0.293 for 10 words), and one that cannot score a word (a word outside
its vocabulary) neither gains nor loses by the order the words happen to be in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deepflows.text.semantris import InvalidClue, Lexicon

ROUND_WORDS = 10
CLUE_KINDS = ("synonym", "hypernym")
_TYPABLE = re.compile(r"[a-z]+(?:[ -][a-z]+)*")  # what a player types: no proper names, digits or dots


@dataclass(frozen=True)
class Round:
    words: tuple[str, ...]
    target: int  # index into words
    clue: str
    kind: str  # "synonym" or "hypernym"


def clue_candidates(lexicon: Lexicon, word: str) -> dict[str, list[str]]:
    """The synonyms and hypernyms of the most frequent noun sense of `word`, as a player could type them (lemmas
    written in lower case by WordNet, so no proper names)."""
    wn = lexicon.wordnet
    sense = wn.synsets(word, "n")[0]
    synonyms = [w for w in sense.words if w != word]
    hypernyms = [w for h in wn.hypernyms(sense) for w in h.words]
    return {kind: list(dict.fromkeys(w for w in found if _TYPABLE.fullmatch(w)))
            for kind, found in zip(CLUE_KINDS, (synonyms, hypernyms))}  # fmt: skip


def _accepted(lexicon: Lexicon, clue: str, words: list[str]) -> bool:
    try:
        lexicon.check_clue(clue, words)
    except InvalidClue:
        return False
    return True


def simulate_rounds(lexicon: Lexicon, rng: np.random.Generator, rounds: int, n_words: int = ROUND_WORDS) -> list[Round]:
    """`rounds` rounds: the words, then a target among those with an accepted clue, a clue kind among those it has
    (each equally likely), and a clue of that kind, all drawn from `rng`. A screen where no word has an accepted
    clue is drawn again."""
    out = []
    while len(out) < rounds:
        words = lexicon.arcade_words(rng, n_words)
        options = {}
        for i, word in enumerate(words):
            kinds = {kind: [c for c in clues if _accepted(lexicon, c, words)]
                     for kind, clues in clue_candidates(lexicon, word).items()}  # fmt: skip
            kinds = {kind: clues for kind, clues in kinds.items() if clues}
            if kinds:
                options[i] = kinds
        if not options:
            continue
        target = int(rng.choice(sorted(options)))
        kind = str(rng.choice(sorted(options[target])))
        clue = str(rng.choice(options[target][kind]))
        out.append(Round(tuple(words), target, clue, kind))
    return out


def tie_aware_rank(scores: np.ndarray, target: int) -> tuple[float, float]:
    """(top-1, reciprocal rank) of `target` under `scores` (higher is better), ties at their expected value."""
    scores = np.asarray(scores, dtype=np.float64)
    higher = int((scores > scores[target]).sum())
    tied = int((scores == scores[target]).sum()) - 1
    top1 = 1.0 / (tied + 1) if higher == 0 else 0.0
    reciprocal = float(np.mean(1.0 / np.arange(higher + 1, higher + tied + 2)))
    return top1, reciprocal


def evaluate(rounds: list[Round], rankers: dict[str, Callable[[str, tuple[str, ...]], np.ndarray]]) -> dict:
    """Top-1 accuracy and MRR of each ranker (clue, words) -> scores, over all rounds and by clue kind."""
    summary = {}
    for name, ranker in rankers.items():
        results = [(r.kind, *tie_aware_rank(ranker(r.clue, r.words), r.target)) for r in rounds]
        summary[name] = {}
        for kind in ("all", *CLUE_KINDS):
            chosen = [(top1, rr) for k, top1, rr in results if kind in ("all", k)]
            summary[name][kind] = {  # None: no round of that kind
                "rounds": len(chosen),
                "top1": float(np.mean([t for t, _ in chosen])) if chosen else None,
                "mrr": float(np.mean([rr for _, rr in chosen])) if chosen else None,
            }
    return summary
