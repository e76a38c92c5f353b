"""Word similarity against human judgements: Spearman's rho between a model's similarity of word pairs and the mean
human rating, as SimLex-999 (similarity) and WordSim-353 (relatedness) are scored.

A model may not know every word (a co-occurrence model knows only its corpus's vocabulary): rho is then taken over
the pairs it covers, and the count of those is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepflows.errors import UserError


def read_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """(word 1, word 2, mean human score) of a tab-separated ratings file ('#' lines are comments)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read word-pair ratings ({err})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            pairs.append((fields[0].strip().lower(), fields[1].strip().lower(), float(fields[2])))
        except (IndexError, ValueError):
            raise UserError(f"{path}:{number}: not a 'word<TAB>word<TAB>score' line") from None
    if not pairs:
        raise UserError(f"{path}: no word pairs")
    return pairs


def spearman(similarity: Callable[[str, str], float | None], pairs: list[tuple[str, str, float]]) -> dict:
    """rho over the pairs `similarity` covers (it returns None for a pair it cannot score; rho is None when it covers
    fewer than three), and how many those are."""
    from scipy.stats import spearmanr

    model, human = [], []
    for a, b, score in pairs:
        value = similarity(a, b)
        if value is not None:
            model.append(value)
            human.append(score)
    rho = float(spearmanr(model, human).statistic) if len(model) > 2 else None
    return {"rho": rho, "covered": len(model), "pairs": len(pairs)}


def embedding_similarity(encode: Callable[[list[str]], np.ndarray], words: list[str]) -> Callable[[str, str], float]:
    """Cosine of unit embeddings, each of `words` encoded once."""
    unique = sorted(set(words))
    vectors = dict(zip(unique, encode(unique)))
    return lambda a, b: float(vectors[a] @ vectors[b])
