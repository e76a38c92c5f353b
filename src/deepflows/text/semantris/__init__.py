"""Semantris: the words of the game, the rules a clue must keep, and the ranking of the words on screen by a clue.

    from deepflows.text.semantris import Lexicon, rank_words
    lex = Lexicon.load()                             # WordNet at /usr/share/wordnet
    words = lex.arcade_words(np.random.default_rng(0), 10)
    clue = lex.check_clue("puppy", words)           # InvalidClue if it is, or inflects, a word on screen
    rank_words(encoder, clue, words)                 # [(word, cosine)], best first

Arcade words are common concrete nouns: single lower-case WordNet nouns whose most frequent sense is a thing (an
animal, artefact, body part, food, natural object, plant or substance), tagged at least ARCADE_MIN_TAGS times in
WordNet's semantic concordances (cntlist), mostly as that sense and mostly as a noun, not the plural of another
noun, and not in the blocklist (deepflows/data/semantris_blocklist.txt: obscure technical words the frequency
signal lets through, and words better kept off a game's screen). Blocks phrases are WordNet's tagged noun
collocations ("living room", "post office") made of common words.

A clue may not be a word on screen nor share a token with one, up to inflection ("dogs", "ran" for "run"), nor be
a compound of one ("doghouse" for "dog", "ball" for "football"): the real game refuses such clues too. The words
on screen are drawn so that no two of them collide in that way.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.text.semantris.wordnet import WordNet

CONCRETE = ("noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.object", "noun.plant", "noun.substance")
ARCADE_MIN_TAGS = 5  # times the noun was tagged (cntlist): enough to keep out the rare and technical ones
ARCADE_LETTERS = (3, 10)
PHRASE_MIN_TAGS = 2  # the collocation's own tags
PHRASE_TOKEN_MIN_TAGS = 15  # each of its words, in any part of speech
FUNCTION_WORDS = frozenset("a an and at for in of off on out the to up".split())
MAX_CLUE_CHARS = 64
_TOKEN = re.compile(r"[a-z0-9]+")
_ARCADE_WORD = re.compile(r"[a-z]+")
_PHRASE = re.compile(r"[a-z]+(?: [a-z]+){1,2}")
BLOCKLIST = "semantris_blocklist.txt"  # in deepflows/data


class InvalidClue(ValueError):
    """A clue the game refuses; the message says why, for the player."""


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in FUNCTION_WORDS]


def read_blocklist(path: Path | None = None) -> frozenset[str]:
    """Words and phrases never shown: one a line, '#' comments."""
    try:
        text = Path(path).read_text() if path else (resources.files("deepflows") / "data" / BLOCKLIST).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path or BLOCKLIST}: cannot read the Semantris blocklist ({err})") from None
    return frozenset(line.split("#")[0].strip().lower() for line in text.splitlines()) - {""}


class Lexicon:
    """The game's word pools over one WordNet, and its clue rules."""

    def __init__(self, wordnet: WordNet, blocklist: frozenset[str] = frozenset()):
        self.wordnet = wordnet
        self.arcade_pool = tuple(w for w in self._arcade_candidates() if w not in blocklist)
        self.phrase_pool = tuple(p for p in self._phrase_candidates() if p not in blocklist)

    @classmethod
    def load(cls, root: str | Path | None = None, blocklist: str | Path | None = None) -> Lexicon:
        return cls(WordNet.load(root), read_blocklist(blocklist))

    def _arcade_candidates(self) -> list[str]:
        wn = self.wordnet
        found = []
        for key, entry in wn.index["n"].items():
            if not (_ARCADE_WORD.fullmatch(key) and ARCADE_LETTERS[0] <= len(key) <= ARCADE_LETTERS[1]):
                continue
            if not entry.tagged_senses:
                continue
            first = wn.synset("n", entry.offsets[0])
            if first.lexname not in CONCRETE or key not in first.words:  # a thing, written in lower case
                continue
            tags = wn.tag_count(key, "n")
            if (tags >= ARCADE_MIN_TAGS and 2 * wn.sense_count(first, first.words.index(key)) >= tags
                    and tags >= wn.tag_count(key) - tags and wn.base_forms(key, "n") == {key}):  # fmt: skip
                found.append(key)
        return found

    def _phrase_candidates(self) -> list[str]:
        wn = self.wordnet
        found = []
        for key, entry in wn.index["n"].items():
            phrase = key.replace("_", " ")
            if not (_PHRASE.fullmatch(phrase) and entry.tagged_senses):
                continue
            first = wn.synset("n", entry.offsets[0])
            if phrase in first.words and wn.tag_count(phrase, "n") >= PHRASE_MIN_TAGS and all(
                    wn.tag_count(t) >= PHRASE_TOKEN_MIN_TAGS for t in _tokens(phrase)):  # fmt: skip
                found.append(phrase)
        return found

    def arcade_words(self, rng: np.random.Generator, n: int, avoid: list[str] | tuple[str, ...] = ()) -> list[str]:
        """`n` different Arcade words, none colliding with another or with those in `avoid` (already on screen)."""
        return self._draw(self.arcade_pool, rng, n, avoid)

    def blocks_phrases(self, rng: np.random.Generator, n: int, avoid: list[str] | tuple[str, ...] = ()) -> list[str]:
        """`n` different Blocks phrases, none colliding with another or with those in `avoid`."""
        return self._draw(self.phrase_pool, rng, n, avoid)

    def _draw(self, pool: tuple[str, ...], rng: np.random.Generator, n: int, avoid) -> list[str]:
        if n < 0:
            raise ValueError(f"cannot draw {n} words")
        chosen: list[str] = []
        taken = list(avoid)
        for i in rng.permutation(len(pool)):
            if len(chosen) == n:
                break
            if not any(self.collide(pool[i], other) for other in taken):
                chosen.append(pool[i])
                taken.append(pool[i])
        if len(chosen) < n:
            raise ValueError(f"cannot draw {n} words that do not collide from a pool of {len(pool)}")
        return chosen

    def _forms(self, token: str) -> set[str]:
        return {token} | self.wordnet.base_forms(token)

    def _compound_of(self, longer: str, shorter: str) -> bool:
        """`longer` is `shorter` joined to another WordNet word, either way round ("doghouse", "seashell")."""
        if len(shorter) < 3 or len(longer) <= len(shorter):
            return False
        rest = longer[len(shorter):] if longer.startswith(shorter) else (
            longer[: -len(shorter)] if longer.endswith(shorter) else None)  # fmt: skip
        return rest is not None and len(rest) >= 2 and bool(self.wordnet.base_forms(rest))

    def collide(self, a: str, b: str) -> bool:
        """Whether a token of `a` and one of `b` are the same word up to inflection, or one is a compound of the
        other."""
        for s in _tokens(a):
            for t in _tokens(b):
                if self._forms(s) & self._forms(t) or self._compound_of(s, t) or self._compound_of(t, s):
                    return True
        return False

    def check_clue(self, clue: str, words: list[str] | tuple[str, ...]) -> str:
        """The clue, trimmed and lower-cased, if the game takes it with `words` on screen; else InvalidClue."""
        clue = " ".join(clue.split()).lower()
        if not clue:
            raise InvalidClue("type a clue")
        if len(clue) > MAX_CLUE_CHARS:
            raise InvalidClue(f"a clue has at most {MAX_CLUE_CHARS} characters")
        if not re.search(r"[a-z]", clue):
            raise InvalidClue("a clue needs letters")
        for word in words:
            if self.collide(clue, word):
                raise InvalidClue(f"the clue may not be '{word}', a form of it, or a compound of it")
        return clue


def rank_words(encoder, clue: str, words: list[str]) -> list[tuple[str, float]]:
    """The words, best match first, by the cosine of their embedding with the clue's (ties keep screen order)."""
    if not words:
        return []
    vectors = encoder.encode([clue, *words])
    scores = vectors[1:] @ vectors[0]
    order = np.argsort(-scores, kind="stable")
    return [(words[i], float(scores[i])) for i in order]
