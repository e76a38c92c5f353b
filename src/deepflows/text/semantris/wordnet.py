"""A reader of the WordNet 3.0 database files (Debian `wordnet-base`, /usr/share/wordnet), as wndb(5WN) describes them.

    wn = WordNet.load()                       # or WordNet.load("/path/to/dict")
    wn.synsets("dog", "n")                    # the senses of a lemma, most frequent first
    wn.synonyms("car")                        # the other lemmas of its synsets
    [s.lemmas for s in wn.hypernyms(wn.synsets("dog", "n")[0])]
    wn.tag_count("dog", "n")                  # how often its senses were tagged in the semantic concordances
    wn.base_forms("geese")                    # {"goose"}: the exception lists and the detachment rules

Lemmas are given and returned with spaces ("ice cream"); the files write them with underscores. Index lookups are
case-insensitive, as the index files are lower case.

Data files are read whole into memory (about 22 MB) and a synset is parsed when it is first asked for: its line
starts at its byte offset, which is how the index files and the pointers name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from deepflows.errors import UserError

DEFAULT_ROOT = Path("/usr/share/wordnet")
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# ss_type (the data files' letter) -> the number a sense key writes; "s" (adjective satellite) lives in data.adj.
SS_TYPE_NUMBER = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}
HYPERNYM_SYMBOLS = ("@", "@i")  # hypernym, instance hypernym
SIMILAR_TO = "&"  # from an adjective satellite to the head of its cluster

# lexnames(5WN): the lexicographer file of each lex_filenum.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()

# Morphy's detachment rules (morphy(7WN)): an inflected ending and what replaces it, per part of speech.
DETACHMENT = {
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
          ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}  # fmt: skip


@dataclass(frozen=True)
class Pointer:
    symbol: str  # wninput(5WN)'s pointer symbol, e.g. "@" hypernym, "~" hyponym, "&" similar to
    offset: int
    pos: str  # the data file of the target: n, v, a or r
    source: int  # word number in this synset (1-based), 0 for a relation between whole synsets
    target: int  # word number in the target synset, 0 likewise


@dataclass(frozen=True)
class Synset:
    pos: str  # the data file it is in: n, v, a or r
    offset: int
    ss_type: str  # n, v, a, s (adjective satellite) or r
    lex_filenum: int
    words: tuple[str, ...]  # as the lexicographer wrote them (case kept, spaces for underscores, markers dropped)
    lex_ids: tuple[int, ...]
    pointers: tuple[Pointer, ...]
    gloss: str  # the definition, then any quoted examples

    @property
    def lexname(self) -> str:
        return LEXNAMES[self.lex_filenum] if self.lex_filenum < len(LEXNAMES) else f"lexfile.{self.lex_filenum}"

    @property
    def lemmas(self) -> tuple[str, ...]:
        """Its words in lower case, as the index and the sense keys write them (with spaces)."""
        return tuple(w.lower() for w in self.words)

    @property
    def definition(self) -> str:
        """The gloss without its quoted examples."""
        return self.gloss.split('; "')[0].strip()


@dataclass(frozen=True)
class IndexEntry:
    offsets: tuple[int, ...]  # its synsets, in sense-number order (most frequently tagged first)
    tagged_senses: int  # how many of those senses were tagged in the semantic concordances


def _key(lemma: str) -> str:
    return lemma.strip().lower().replace(" ", "_")


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise UserError(f"{path}: WordNet file not found (install Debian wordnet-base, or pass the folder "
                        "holding data.noun, index.noun, ..., cntlist.rev)")  # fmt: skip
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read the WordNet file ({err.strerror})") from None


def _lines(path: Path):
    """The lines of a WordNet text file after its licence header (the header's lines start with two spaces)."""
    for number, line in enumerate(_read(path).decode("latin-1").split("\n"), 1):
        if line and not line.startswith("  "):
            yield number, line


def parse_index(path: Path) -> dict[str, IndexEntry]:
    """index.POS: lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset..."""
    entries = {}
    for number, line in _lines(path):
        fields = line.split()
        try:
            synset_cnt, p_cnt = int(fields[2]), int(fields[3])
            tagged = int(fields[5 + p_cnt])
            offsets = tuple(int(f) for f in fields[6 + p_cnt:])
        except (IndexError, ValueError):
            raise UserError(f"{path}: line {number} is not a WordNet index line") from None
        if len(offsets) != synset_cnt:
            raise UserError(f"{path}: line {number} lists {len(offsets)} synsets, not its synset_cnt {synset_cnt}")
        entries[fields[0]] = IndexEntry(offsets, tagged)
    return entries


def parse_counts(path: Path) -> dict[str, int]:
    """cntlist.rev: sense_key sense_number tag_cnt."""
    counts = {}
    for number, line in _lines(path):
        fields = line.split()
        if len(fields) != 3 or not fields[2].isdigit() or "%" not in fields[0]:
            raise UserError(f"{path}: line {number} is not a 'sense_key sense_number tag_cnt' line")
        counts[fields[0]] = int(fields[2])
    return counts


def parse_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
    """POS.exc: an inflected form, then its base forms."""
    return {fields[0]: tuple(fields[1:]) for _, line in _lines(path) if len(fields := line.split()) > 1}


def parse_synset(line: str, pos: str) -> Synset:
    """One data-file line: offset lex_filenum ss_type w_cnt (word lex_id)... p_cnt ptr... [frames] | gloss."""
    head, _, gloss = line.partition("|")
    fields = head.split()
    w_cnt = int(fields[3], 16)
    words, lex_ids = [], []
    for i in range(w_cnt):
        word = fields[4 + 2 * i]
        if pos == "a" and word.endswith(")"):  # an adjective's syntactic marker, e.g. "galore(ip)"
            word = word[: word.rindex("(")]
        words.append(word.replace("_", " "))
        lex_ids.append(int(fields[5 + 2 * i], 16))
    at = 4 + 2 * w_cnt
    p_cnt = int(fields[at])
    pointers = []
    for i in range(p_cnt):
        symbol, offset, target_pos, source_target = fields[at + 1 + 4 * i: at + 5 + 4 * i]
        pointers.append(Pointer(symbol, int(offset), "a" if target_pos == "s" else target_pos,
                                int(source_target[:2], 16), int(source_target[2:], 16)))  # fmt: skip
    return Synset(pos, int(fields[0]), fields[2], int(fields[1]), tuple(words), tuple(lex_ids), tuple(pointers),
                  gloss.strip())  # fmt: skip


class WordNet:
    """The four parts of speech of one WordNet database folder."""

    def __init__(self, root: Path, data: dict[str, bytes], index: dict[str, dict[str, IndexEntry]],
                 counts: dict[str, int], exceptions: dict[str, dict[str, tuple[str, ...]]]):  # fmt: skip
        self.root = root
        self._data = data
        self.index = index
        self._counts = counts
        self._exceptions = exceptions
        self.synset = lru_cache(maxsize=None)(self._synset)

    @classmethod
    def load(cls, root: str | Path | None = None) -> WordNet:
        root = Path(root) if root is not None else DEFAULT_ROOT
        if not root.is_dir():
            raise UserError(f"{root}: WordNet folder not found (install Debian wordnet-base, or pass the folder "
                            "holding data.noun, index.noun, ..., cntlist.rev)")  # fmt: skip
        data = {pos: _read(root / f"data.{name}") for pos, name in POS_FILES.items()}
        index = {pos: parse_index(root / f"index.{name}") for pos, name in POS_FILES.items()}
        exceptions = {pos: parse_exceptions(root / f"{name}.exc") for pos, name in POS_FILES.items()}
        return cls(root, data, index, parse_counts(root / "cntlist.rev"), exceptions)

    def _synset(self, pos: str, offset: int) -> Synset:
        """The synset whose line starts at byte `offset` of data.POS."""
        data = self._data[pos]
        end = data.find(b"\n", offset)
        line = data[offset: end if end >= 0 else len(data)].decode("latin-1")
        path = self.root / f"data.{POS_FILES[pos]}"
        if not (offset == 0 or data[offset - 1: offset] == b"\n") or not line.startswith(f"{offset:08d} "):
            raise UserError(f"{path}: no synset starts at byte offset {offset} (the index and data files disagree)")
        try:
            return parse_synset(line, pos)
        except (IndexError, ValueError):
            raise UserError(f"{path}: the synset at byte offset {offset} is not a WordNet data line") from None

    def lemmas(self, pos: str) -> list[str]:
        """Every lemma of a part of speech (n, v, a, r), in the index's (alphabetical) order."""
        return [lemma.replace("_", " ") for lemma in self.index[pos]]

    def synsets(self, lemma: str, pos: str | None = None) -> list[Synset]:
        """The senses of `lemma`, most frequent first, in one part of speech or in all (n, v, a, r in turn)."""
        key = _key(lemma)
        return [self.synset(p, offset) for p in ([pos] if pos else POS_FILES)
                if (entry := self.index[p].get(key)) for offset in entry.offsets]  # fmt: skip

    def synonyms(self, lemma: str, pos: str | None = None) -> list[str]:
        """The other lemmas that share a synset with `lemma`, in sense order, without repeats."""
        own = _key(lemma).replace("_", " ")
        found = dict.fromkeys(w for s in self.synsets(lemma, pos) for w in s.lemmas if w != own)
        return list(found)

    def hypernyms(self, synset: Synset) -> list[Synset]:
        """Its hypernyms and instance hypernyms (nouns and verbs have them)."""
        return [self.synset(p.pos, p.offset) for p in synset.pointers if p.symbol in HYPERNYM_SYMBOLS]

    def sense_key(self, synset: Synset, word: int) -> str:
        """senseidx(5WN)'s key of the `word`-th word (0-based) of `synset`: lemma%ss_type:lex_filenum:lex_id:head:
        head_id, where an adjective satellite's head is the first word of the head synset of its cluster."""
        head = ""
        if synset.ss_type == "s":
            similar = next((p for p in synset.pointers if p.symbol == SIMILAR_TO), None)
            if similar is not None:
                target = self.synset(similar.pos, similar.offset)
                head = f"{target.lemmas[0].replace(' ', '_')}:{target.lex_ids[0]:02d}"
        lemma = synset.lemmas[word].replace(" ", "_")
        return (f"{lemma}%{SS_TYPE_NUMBER[synset.ss_type]}:{synset.lex_filenum:02d}:{synset.lex_ids[word]:02d}:"
                f"{head or ':'}")  # fmt: skip

    def sense_count(self, synset: Synset, word: int = 0) -> int:
        """How often that word sense was tagged in the semantic concordances (cntlist.rev; 0 when untagged)."""
        return self._counts.get(self.sense_key(synset, word), 0)

    def tag_count(self, lemma: str, pos: str | None = None) -> int:
        """The frequency signal: how often the senses of `lemma` (in `pos`, or in all) were tagged. cntlist.rev also
        counts senses of earlier WordNet versions that 3.0 no longer has; those name no synset and are left out."""
        key = _key(lemma)
        return sum(self.sense_count(s, self._word_number(s, key)) for p in ([pos] if pos else POS_FILES)
                   if (entry := self.index[p].get(key)) and entry.tagged_senses
                   for s in (self.synset(p, offset) for offset in entry.offsets))  # fmt: skip

    def _word_number(self, synset: Synset, key: str) -> int:
        """Where the index's lemma `key` is among the words of `synset`, which the index says holds it."""
        own = key.replace("_", " ")
        if own not in synset.lemmas:
            raise UserError(f"{self.root / f'index.{POS_FILES[synset.pos]}'}: lists '{key}' in the synset at byte "
                            f"offset {synset.offset}, which does not hold it (the index and data files disagree)")
        return synset.lemmas.index(own)

    def base_forms(self, word: str, pos: str | None = None) -> set[str]:
        """The WordNet lemmas `word` can be an inflection of (itself included when it is one), as Morphy finds
        them: the exception lists first, then the detachment rules."""
        key = _key(word)
        found = set()
        for p in [pos] if pos else POS_FILES:
            candidates = [key, *self._exceptions[p].get(key, ())]
            candidates += [key[: -len(end)] + new for end, new in DETACHMENT[p] if key.endswith(end)
                           and len(key) > len(end)]  # fmt: skip
            found.update(c.replace("_", " ") for c in candidates if c in self.index[p])
        return found
