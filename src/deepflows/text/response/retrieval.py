"""Response retrieval, as Talk to Books is judged: each turn of the held-out conversations is a query, every turn of
those conversations a candidate, and the query's real next turn the one right answer. Scores from any ranker
(the encoder's cosine, BM25, TF-IDF) become recall@k and mean reciprocal rank.

A candidate that scores exactly as the right answer shares its rank at random (the expected rank of the answer
among its ties), so a ranker that gives many candidates the same score (BM25 on a query with no known word) is
not credited with the best of them. The query's own turn is not a candidate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deepflows.text.response.chitchat import Conversation


def retrieval_task(conversations: list[Conversation]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(candidates: every turn, query rows: turns that have a next turn, answer rows: that next turn), as indices
    into candidates (queries are candidates too)."""
    texts, queries, answers = [], [], []
    for c in conversations:
        base = len(texts)
        texts += c.turns
        queries += range(base, base + len(c.turns) - 1)
        answers += range(base + 1, base + len(c.turns))
    return texts, np.asarray(queries), np.asarray(answers)


def expected_ranks(scores: np.ndarray, answers: np.ndarray, own: np.ndarray) -> np.ndarray:
    """1-based expected rank of candidate answers[i] in row i of scores [q, n], ties broken at random and the
    query's own candidate own[i] left out."""
    scores = np.array(scores, np.float64, copy=True)
    rows = np.arange(len(scores))
    scores[rows, own] = -np.inf
    right = scores[rows, answers][:, None]
    above = (scores > right).sum(axis=1)
    ties = (scores == right).sum(axis=1) - 1
    return 1 + above + ties / 2


def summarise(ranks: np.ndarray) -> dict:
    return {"queries": int(len(ranks)), "recall@1": float(np.mean(ranks <= 1)), "recall@10": float(np.mean(ranks <= 10)),
            "mrr": float(np.mean(1 / ranks)), "median_rank": float(np.median(ranks))}  # fmt: skip


def ranks_by_blocks(score_rows: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, answers: np.ndarray,
                    block: int = 512) -> np.ndarray:  # fmt: skip
    """Expected ranks for every query; score_rows(query rows) -> scores [len, n] of those queries against all
    candidates, called a block of queries at a time so that the q x n matrix never exists whole."""
    out = [expected_ranks(score_rows(queries[i:i + block]), answers[i:i + block], queries[i:i + block])
           for i in range(0, len(queries), block)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros(0)


def encoder_ranks(encode, texts: list[str], queries: np.ndarray, answers: np.ndarray) -> np.ndarray:
    vectors = encode(texts)
    return ranks_by_blocks(lambda rows: vectors[rows] @ vectors.T, queries, answers)


def tfidf_ranks(texts: list[str], queries: np.ndarray, answers: np.ndarray, fit_on: list[str]) -> np.ndarray:
    """TF-IDF (word unigrams and bigrams, sublinear tf, IDF from `fit_on`: the training turns), cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit(fit_on)
    matrix = vectorizer.transform(texts)
    return ranks_by_blocks(lambda rows: (matrix[rows] @ matrix.T).toarray(), queries, answers)


def bm25_ranks(texts: list[str], queries: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Okapi BM25 (bm25s defaults: k1 1.5, b 0.75; English stop words) over the candidates."""
    import bm25s

    corpus = bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=False)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    empty = np.zeros(len(texts))  # a query of stop words only: no candidate scores

    def scores(rows):
        return np.stack([retriever.get_scores(corpus[r]) if corpus[r] else empty for r in rows])

    return ranks_by_blocks(scores, queries, answers)
