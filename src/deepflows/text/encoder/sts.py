"""STS Benchmark: Spearman's rho (x100) between the encoder's cosine similarity of sentence pairs and the gold
0-5 similarity scores, the figure sentence-encoder model cards quote (all-MiniLM-L6-v2: 82.0 on test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepflows.errors import UserError

SPLITS = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}


def read_sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(first sentences, second sentences, gold scores) of one STS-B file: tab-separated genre, file, year, id,
    score, sentence 1, sentence 2 (and, on some lines, two source columns)."""
    first, second, gold = [], [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read an STS-B file ({err})") from None
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        try:
            score = float(fields[4])
            first.append(fields[5])
            second.append(fields[6])
        except (IndexError, ValueError):
            raise UserError(f"{path}:{number}: not an STS-B line (genre, file, year, id, score, s1, s2)") from None
        gold.append(score)
    if not gold:
        raise UserError(f"{path}: no sentence pairs")
    return first, second, np.asarray(gold)


def sts_spearman(encode, first: list[str], second: list[str], gold: np.ndarray) -> float:
    """Spearman's rho x 100 of cos(encode(first), encode(second)) against gold; `encode` returns unit vectors."""
    from scipy.stats import spearmanr

    a, b = encode(first), encode(second)
    return float(spearmanr((a * b).sum(axis=1), gold).statistic * 100)
