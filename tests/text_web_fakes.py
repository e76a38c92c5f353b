"""Stand-ins for the sentence index, the encoder and the lexicon, for the web app's tests until the real ones land:
they keep the real interfaces (SentenceIndex, load_encoder, Lexicon, rank_words)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

BOOKS = {
    "garden": ("The Garden Book", "A. Gardener", [
        "Roses need sun and water every day. The gardener waters the roses at dawn.",
        "Weeds grow fast after rain. Pull them before they seed.",
    ]),
    "sea": ("Tales of the Sea", "B. Sailor", [
        "The ship sailed across the stormy ocean. Waves broke over the deck.",
        "The captain loved the sea more than the land. He never married.",
    ]),
}
WORDS = ["apple", "river", "engine", "violin", "tiger", "castle", "pencil", "cloud", "bread", "hammer", "garden",
         "ocean", "mountain", "candle", "window", "horse", "lemon", "forest", "guitar", "bridge"]  # fmt: skip


class FakeEncoder:
    """Bag of hashed letter trigrams: texts that share words, or parts of words, score high; deterministic."""

    name, dim, max_tokens = "fake-bag-of-words", 64, 256

    def __init__(self, fingerprint: str = "f" * 64):
        self.fingerprint = fingerprint

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                for j in range(max(1, len(word) - 2)):
                    out[i, int(hashlib.sha1(word[j:j + 3].encode()).hexdigest(), 16) % self.dim] += 1
            out[i, 0] += 1e-3  # no zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class FakeIndex:
    """Exact search over BOOKS' sentences (split on '. '), with the hit fields of SentenceIndex.hit."""

    def __init__(self, encoder: FakeEncoder):
        self.encoder_name, self.encoder_fingerprint = encoder.name, encoder.fingerprint
        self.rows = []
        for book_id, (title, author, paragraphs) in BOOKS.items():
            for p, paragraph in enumerate(paragraphs):
                for m in re.finditer(r"[^.]+\.", paragraph):
                    start, end = m.start() + (len(m.group()) - len(m.group().lstrip())), m.end()
                    self.rows.append(dict(row=len(self.rows), text=paragraph[start:end], book_id=book_id,
                                          title=title, author=author, chapter="Chapter 1", paragraph=p,
                                          start=start, end=end, paragraph_text=paragraph, sentence_start=start,
                                          sentence_end=end))  # fmt: skip
        self.vectors = encoder.encode([r["text"] for r in self.rows])

    def __len__(self):
        return len(self.rows)

    def books(self):
        return [dict(book_id=b, title=t, author=a, sentences=sum(r["book_id"] == b for r in self.rows))
                for b, (t, a, _) in BOOKS.items()]  # fmt: skip

    def search(self, query_vectors, k, exact=None, book_id=None):
        scores = query_vectors @ self.vectors.T
        if book_id is not None:
            scores[:, [r["book_id"] != book_id for r in self.rows]] = -np.inf
        rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(scores, rows, axis=1)
        return np.where(np.isfinite(top), top, 0), np.where(np.isfinite(top), rows, -1)

    def hit(self, row):
        return dict(self.rows[row])


class FakeLexicon:
    """WORDS drawn at random; a clue may not share a word with one on screen."""

    def arcade_words(self, rng, n, avoid=()):
        return [w for w in (WORDS[i] for i in rng.permutation(len(WORDS))) if w not in avoid][:n]

    def blocks_phrases(self, rng, n, avoid=()):
        return [f"{a} and {b}" for a, b in zip(self.arcade_words(rng, n, avoid), self.arcade_words(rng, n, avoid))]

    def check_clue(self, clue, words):
        clue = " ".join(clue.split()).lower()
        for word in words:
            if set(clue.split()) & set(word.split()):
                raise ValueError(f"the clue may not be '{word}'")
        return clue


def fake_rank_words(encoder, clue, words):
    scores = encoder.encode(list(words)) @ encoder.encode([clue])[0]
    return sorted(zip(words, scores.tolist()), key=lambda pair: -pair[1])


def fake_app(limits=None):
    """The app over the fakes (a factory for `uvicorn --factory`)."""
    from deepflows.text.web.app import build_app
    from deepflows.text.web.limits import Limits

    encoder = FakeEncoder()
    return build_app(FakeIndex(encoder), encoder, FakeLexicon(), fake_rank_words, limits or Limits())
