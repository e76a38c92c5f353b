"""Semantris: the game's lexicon and clue rules, the ranking by the encoder, the co-occurrence (PPMI) baseline, word
similarity against human ratings and the simulated game."""

from __future__ import annotations

import math

import numpy as np
import pytest
from text_wordnet_data import TINY, real_wordnet_root

from deepflows.errors import UserError
from deepflows.text.semantris import ppmi
from deepflows.text.semantris import InvalidClue, Lexicon, rank_words, read_blocklist
from deepflows.text.semantris.simulate import Round, clue_candidates, evaluate, simulate_rounds, tie_aware_rank
from deepflows.text.semantris.wordsim import read_pairs, spearman


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.load(real_wordnet_root())


# ----------------------------------------------------------------------------- lexicon


def test_tiny_lexicon_keeps_tagged_concrete_nouns():
    lex = Lexicon.load(TINY)
    # dog: noun.animal, 43 noun tags, 42 of them its first sense; goose has no tags; organism is not a thing.
    assert lex.arcade_pool == ("dog",)
    assert lex.phrase_pool == ()


def test_blocklist_removes_words(tmp_path):
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("# comment\nDog  # a comment after a word\n\n")
    assert read_blocklist(blocklist) == {"dog"}
    assert Lexicon.load(TINY, blocklist).arcade_pool == ()
    with pytest.raises(UserError, match="nowhere.txt: cannot read the Semantris blocklist"):
        read_blocklist(tmp_path / "nowhere.txt")


def test_arcade_words(lexicon):
    pool = lexicon.arcade_pool
    assert len(pool) > 300
    assert all(w.isalpha() and w.islower() for w in pool)
    assert not set(pool) & read_blocklist()
    assert {"dog", "piano", "ocean", "coffee"} <= set(pool)
    words = lexicon.arcade_words(np.random.default_rng(1), 10)
    assert len(set(words)) == 10 and set(words) <= set(pool)
    assert words == lexicon.arcade_words(np.random.default_rng(1), 10)  # seeded
    assert not any(lexicon.collide(a, b) for i, a in enumerate(words) for b in words[i + 1:])
    more = lexicon.arcade_words(np.random.default_rng(2), 5, avoid=words)
    assert not any(lexicon.collide(a, b) for a in more for b in words)
    with pytest.raises(ValueError, match="cannot draw"):
        lexicon.arcade_words(np.random.default_rng(0), len(pool) + 1)
    with pytest.raises(ValueError, match="cannot draw -1"):
        lexicon.arcade_words(np.random.default_rng(0), -1)
    assert lexicon.arcade_words(np.random.default_rng(0), 0) == []


def test_blocks_phrases(lexicon):
    phrases = lexicon.blocks_phrases(np.random.default_rng(0), 8)
    assert len(set(phrases)) == 8
    assert all(" " in p and p in lexicon.phrase_pool for p in phrases)
    assert {"living room", "post office"} <= set(lexicon.phrase_pool)
    assert "concentration camp" not in lexicon.phrase_pool  # blocklisted


# ----------------------------------------------------------------------------- clues


@pytest.mark.parametrize("clue, on_screen", [
    ("dog", ["dog", "piano"]),
    ("Dogs", ["dog", "piano"]),  # inflection, any case
    ("geese", ["goose"]),  # irregular plural (noun.exc)
    ("ran", ["run"]),  # irregular verb form (verb.exc)
    ("hot dog", ["dog"]),  # a word of the clue
    ("doghouse", ["dog"]),  # a compound of a word on screen
    ("ball", ["football"]),  # part of a compound on screen
    ("sea", ["living room", "sea bass"]),  # a word of a phrase on screen
])  # fmt: skip
def test_clue_refused(lexicon, clue, on_screen):
    with pytest.raises(InvalidClue, match="may not be"):
        lexicon.check_clue(clue, on_screen)


@pytest.mark.parametrize("clue", ["", "   ", "123 456", "x" * 65])
def test_clue_refused_when_empty_long_or_without_letters(lexicon, clue):
    with pytest.raises(InvalidClue):
        lexicon.check_clue(clue, ["dog"])


def test_clue_accepted(lexicon):
    assert lexicon.check_clue("  Puppy   love ", ["dog", "piano"]) == "puppy love"
    assert lexicon.check_clue("elephant", ["ant"]) == "elephant"  # "eleph" is no word: not a compound
    assert lexicon.check_clue("canine", ["dog"]) == "canine"
    assert lexicon.check_clue("a dog", ["a"]) == "a dog"  # function words never collide


# ----------------------------------------------------------------------------- ranking with the real encoder


def test_rank_words_with_the_encoder():
    from deepflows.text.encoder import load_encoder

    encoder = load_encoder(None)
    ranking = rank_words(encoder, "ocean", ["pencil", "sea", "truck"])
    assert [w for w, _ in ranking][0] == "sea"
    scores = dict(ranking)
    assert scores["sea"] > scores["pencil"] and scores["sea"] > scores["truck"]
    assert [s for _, s in ranking] == sorted(scores.values(), reverse=True)
    assert rank_words(encoder, "kitten", ["truck", "cat"])[0][0] == "cat"
    assert rank_words(encoder, "anything", []) == []


# ----------------------------------------------------------------------------- PPMI


def test_cooccurrence_stays_inside_units():
    counts = ppmi.cooccurrence([[0, 1], [0, 2]], 3, window=1).toarray()
    # "a b", "a c": b and the next unit's a are neighbours only across the unit boundary.
    assert counts.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]
    # window 2 over "a b c": a-b and b-c at distance 1, a-c at distance 2.
    assert ppmi.cooccurrence([[0, 1, 2]], 3, window=2).toarray().tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    # A word left out of the vocabulary (-1) holds its place: "a x a" counts a-a at distance 2, both ways.
    assert ppmi.cooccurrence([[0, -1, 0]], 1, window=2).toarray().tolist() == [[2]]


def test_ppmi_by_hand():
    counts = ppmi.cooccurrence([[0, 1], [0, 2]], 3, window=1)
    # alpha = 1: N = 4, n(a) = 2, n(b) = n(c) = 1; PMI(a, b) = log(1 * 4 / (2 * 1)) = log 2 = PMI(b, a).
    plain = ppmi.ppmi_matrix(counts, alpha=1.0).toarray()
    assert plain[0, 1] == pytest.approx(0.693147, abs=1e-6) and plain[1, 0] == pytest.approx(0.693147, abs=1e-6)
    assert plain[1, 2] == 0 and plain[0, 0] == 0
    # alpha = 0.75: context shares 2^.75 : 1 : 1 = 1.681793 : 1 : 1 of 3.681793, i.e. 0.456786, 0.271607, 0.271607;
    # PMI(a, b) = log(1 / (2 * 0.271607)) = log 1.840896; PMI(b, a) = log(1 / (1 * 0.456786)) = log 2.189207.
    smoothed = ppmi.ppmi_matrix(counts, alpha=0.75).toarray()
    assert smoothed[0, 1] == pytest.approx(0.610253, abs=1e-5)
    assert smoothed[1, 0] == pytest.approx(0.783540, abs=1e-5)


def test_word_vectors():
    vectors = ppmi.WordVectors.from_texts(["A b.", "a, C!", "d"], window=1, min_count=1, alpha=1.0)
    assert vectors.vocabulary == ["a", "b", "c", "d"]
    assert vectors.similarity("b", "c") == pytest.approx(1.0)  # both have only a as context
    assert vectors.similarity("a", "b") == pytest.approx(0.0)
    assert vectors.similarity("b", "zebra") is None
    assert vectors.similarity("d", "b") == 0.0  # d has no context: a zero vector
    assert np.linalg.norm(vectors.vector("b c zebra")) == pytest.approx(1.0)
    assert ppmi.WordVectors.from_texts(["a b c"], window=1, min_count=2).vocabulary == []
    reduced = ppmi.WordVectors.from_texts(["a b", "a c", "a b"], window=1, min_count=1, alpha=1.0, dim=1)
    assert reduced.similarity("b", "c") == pytest.approx(1.0)


# ----------------------------------------------------------------------------- word similarity


@pytest.mark.realdata
def test_read_pairs_real(shared_data):
    norms = shared_data / "text" / "word_norms"
    simlex, wordsim = read_pairs(norms / "simlex999.txt"), read_pairs(norms / "wordsim353.tsv")
    assert (len(simlex), len(wordsim)) == (999, 353)
    assert simlex[0] == ("old", "new", 1.58)


def test_read_pairs_bad(tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("# header\ncat\tdog\tten\n")
    with pytest.raises(UserError, match="pairs.tsv:2: not a 'word<TAB>word<TAB>score' line"):
        read_pairs(bad)
    bad.write_text("# only a comment\n")
    with pytest.raises(UserError, match="no word pairs"):
        read_pairs(bad)


def test_spearman_and_coverage():
    pairs = [("a", "b", 1.0), ("c", "d", 2.0), ("e", "f", 3.0), ("g", "h", 4.0), ("x", "y", 5.0)]
    monotone = {("a", "b"): 0.1, ("c", "d"): 0.2, ("e", "f"): 0.25, ("g", "h"): 0.9}
    result = spearman(lambda a, b: monotone.get((a, b)), pairs)
    assert result == {"rho": pytest.approx(1.0), "covered": 4, "pairs": 5}
    reversed_ = spearman(lambda a, b: -monotone.get((a, b), 1.0), pairs)
    assert reversed_["rho"] == pytest.approx(-1.0) and reversed_["covered"] == 5
    assert spearman(lambda a, b: monotone.get((a, b)) if a in "ac" else None, pairs)["rho"] is None  # 2 pairs


# ----------------------------------------------------------------------------- the simulated game


def test_tie_aware_rank():
    assert tie_aware_rank([0.9, 0.5, 0.1], 0) == (1.0, 1.0)
    assert tie_aware_rank([0.9, 0.5, 0.1], 2) == (0.0, pytest.approx(1 / 3))
    assert tie_aware_rank([1.0, 1.0, 0.0], 1) == (0.5, pytest.approx((1 + 1 / 2) / 2))
    assert tie_aware_rank([2.0, 1.0, 1.0], 1) == (0.0, pytest.approx((1 / 2 + 1 / 3) / 2))
    top1, rr = tie_aware_rank(np.zeros(10), 3)
    assert top1 == pytest.approx(0.1) and rr == pytest.approx(sum(1 / k for k in range(1, 11)) / 10)


def test_evaluate_by_kind():
    rounds = [Round(("cat", "dog"), 1, "dog", "synonym"), Round(("cat", "dog"), 0, "dog", "hypernym")]
    summary = evaluate(rounds, {"exact": lambda clue, words: np.array([w == clue for w in words], float)})
    assert summary["exact"]["synonym"] == {"rounds": 1, "top1": 1.0, "mrr": 1.0}
    assert summary["exact"]["hypernym"] == {"rounds": 1, "top1": 0.0, "mrr": 0.5}
    assert summary["exact"]["all"]["top1"] == 0.5 and math.isclose(summary["exact"]["all"]["mrr"], 0.75)
    only_synonyms = evaluate(rounds[:1], {"exact": lambda clue, words: np.zeros(len(words))})
    assert only_synonyms["exact"]["hypernym"] == {"rounds": 0, "top1": None, "mrr": None}


def test_clue_candidates(lexicon):
    found = clue_candidates(lexicon, "dog")
    assert "domestic dog" in found["synonym"] and "canis familiaris" not in found["synonym"]
    assert {"canine", "domestic animal"} <= set(found["hypernym"])


def test_simulated_rounds(lexicon):
    rounds = simulate_rounds(lexicon, np.random.default_rng(5), 12)
    assert rounds == simulate_rounds(lexicon, np.random.default_rng(5), 12)  # seeded
    for r in rounds:
        assert len(set(r.words)) == 10
        target = r.words[r.target]
        assert r.clue in clue_candidates(lexicon, target)[r.kind]
        assert lexicon.check_clue(r.clue, r.words) == r.clue  # the game takes it
