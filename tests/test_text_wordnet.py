"""deepflows.text.semantris.wordnet: the reader of the WordNet database files, on a hand-written tiny database and on
Debian's wordnet-base."""

from __future__ import annotations

import shutil

import pytest
from text_wordnet_data import TINY, real_wordnet_root

from deepflows.errors import UserError
from deepflows.text.semantris.wordnet import POS_FILES, WordNet, parse_synset


@pytest.fixture(scope="module")
def tiny() -> WordNet:
    return WordNet.load(TINY)


@pytest.fixture(scope="module")
def real() -> WordNet:
    return WordNet.load(real_wordnet_root())


def test_fixture_offsets_are_byte_offsets():
    """The fixture itself: each synset line starts with its own byte offset in its file, as wndb(5WN) requires."""
    for name in POS_FILES.values():
        data = (TINY / f"data.{name}").read_bytes()
        at = 0
        for line in data.split(b"\n")[:-1]:
            if not line.startswith(b"  "):
                assert int(line[:8]) == at
            at += len(line) + 1


def test_synsets_in_sense_order(tiny):
    first, second = tiny.synsets("dog", "n")
    assert first.words == ("dog", "domestic dog", "Canis familiaris")
    assert first.lemmas == ("dog", "domestic dog", "canis familiaris")
    assert (first.lexname, second.lexname) == ("noun.animal", "noun.person")
    assert first.definition == "a member of the genus Canis"
    assert first.gloss == 'a member of the genus Canis; "the dog barked all night"'
    assert [s.pos for s in tiny.synsets("DOG")] == ["n", "n", "v"]  # case-insensitive, all parts of speech
    assert tiny.synsets("Domestic Dog") == [first]
    assert tiny.synsets("cat") == []


def test_pointers_and_hypernyms(tiny):
    dog = tiny.synsets("dog", "n")[0]
    derived = [p for p in dog.pointers if p.symbol == "+"][0]
    assert (derived.pos, derived.source, derived.target) == ("v", 1, 2)
    assert tiny.synset(derived.pos, derived.offset).words == ("chase", "dog")
    assert [h.lemmas for h in tiny.hypernyms(dog)] == [("animal", "beast")]
    assert [h.lemmas for h in tiny.hypernyms(tiny.hypernyms(dog)[0])] == [("organism",)]


def test_synonyms(tiny):
    assert tiny.synonyms("dog", "n") == ["domestic dog", "canis familiaris", "frump"]
    assert tiny.synonyms("dog") == ["domestic dog", "canis familiaris", "frump", "chase"]
    assert tiny.synonyms("goose") == []


def test_verb_frames_hex_lex_id_and_adjective_markers(tiny):
    chase = tiny.synsets("chase", "v")[0]
    assert chase.lex_ids == (0, 10)  # "a", one hex digit
    assert chase.gloss.startswith("go after")  # the frames before the bar are skipped
    assert tiny.synsets("galore")[0].words == ("galore",)  # "galore(ip)": the syntactic marker dropped


def test_sense_keys_and_tag_counts(tiny):
    dog = tiny.synsets("dog", "n")[0]
    assert tiny.sense_key(dog, 0) == "dog%1:05:00::"
    assert tiny.sense_key(tiny.synsets("dog", "v")[0], 1) == "dog%2:38:10::"
    huge = tiny.synsets("immense")[0]
    assert tiny.sense_key(huge, 1) == "immense%5:00:00:big:00"  # a satellite names its cluster's head
    assert tiny.sense_count(huge, 0) == 7
    # cntlist.rev's dog%1:05:07:: (100) names no sense of this database and is left out.
    assert tiny.tag_count("dog", "n") == 42 + 1
    assert tiny.tag_count("dog") == 42 + 1 + 2
    assert tiny.tag_count("immense") == 0
    assert tiny.tag_count("unknown") == 0


def test_base_forms(tiny):
    assert tiny.base_forms("geese") == {"goose"}  # exception list
    assert tiny.base_forms("dogs") == {"dog"}  # detachment rule
    assert tiny.base_forms("dogged", "v") == {"dog"}
    assert tiny.base_forms("bigger") == {"big"}
    assert tiny.base_forms("dog") == {"dog"}
    assert tiny.base_forms("cats") == set()


def test_lemmas(tiny):
    assert tiny.lemmas("v") == ["chase", "dog"]
    assert "canis familiaris" in tiny.lemmas("n")


@pytest.mark.parametrize("name", ["data.adj", "index.verb", "cntlist.rev", "noun.exc"])
def test_missing_file_names_the_path(tmp_path, name):
    root = tmp_path / "wn"
    shutil.copytree(TINY, root)
    (root / name).unlink()
    with pytest.raises(UserError, match=f"{root / name}: WordNet file not found"):
        WordNet.load(root)


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere'}: WordNet folder not found"):
        WordNet.load(tmp_path / "nowhere")


def test_index_pointing_nowhere_is_one_line(tmp_path):
    root = tmp_path / "wn"
    shutil.copytree(TINY, root)
    index = root / "index.noun"
    index.write_text(index.read_text().replace("goose n 1 1 @ 1 0 00000644", "goose n 1 1 @ 1 0 00000650"))
    wn = WordNet.load(root)
    with pytest.raises(UserError, match="data.noun: no synset starts at byte offset 650"):
        wn.synsets("goose")


def test_bad_index_line(tmp_path):
    root = tmp_path / "wn"
    shutil.copytree(TINY, root)
    (root / "index.adv").write_text("well r 2 0 1 0 00000096\n")  # two synsets promised, one listed
    with pytest.raises(UserError, match="index.adv: line 1 lists 1 synsets, not its synset_cnt 2"):
        WordNet.load(root)


def test_parse_synset_line():
    s = parse_synset("00000010 05 s 01 tiny_word 1 001 & 00000020 a 0000 | small; \"tiny\"", "a")
    assert (s.offset, s.lex_filenum, s.ss_type, s.words, s.lex_ids) == (10, 5, "s", ("tiny word",), (1,))
    assert s.pointers[0].symbol == "&" and s.pointers[0].offset == 20 and s.definition == "small"


def test_real_wordnet(real):
    dog = real.synsets("dog", "n")[0]
    assert dog.lexname == "noun.animal" and "domestic dog" in dog.lemmas
    assert {"canine", "domestic animal"} <= {w for h in real.hypernyms(dog) for w in h.lemmas}
    assert "automobile" in real.synonyms("car", "n")
    assert real.tag_count("dog", "n") == 42  # cntlist.rev: dog%1:05:00:: 1 42, no other noun sense tagged
    assert real.base_forms("mice") == {"mouse"} and "run" in real.base_forms("ran")
    assert len(real.index["n"]) == 117798  # wnstats(7WN): WordNet 3.0 has 117,798 noun lemmas
    # A satellite's sense key names the head of its cluster (senseidx(5WN)).
    adj = real.synsets("abandoned", "a")[0]
    assert real.sense_key(adj, 0) == "abandoned%5:00:00:uninhabited:00"
    assert real.sense_count(adj, 0) == 1  # cntlist.rev has that key
