"""The sentence index: vector stores (text-embed), the index (text-index), exact and approximate search, hits,
and the refusals (shards of two encoders, a damaged index). Most tests embed with a stand-in encoder whose
vectors are made up, so that the index is checked against known vectors; one runs the real encoder through
every stage, and one runs the workflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.text.index.build import build_index
from deepflows.text.index.embed import embed_sentences
from deepflows.text.index import APPROX_FILE, STORE, SentenceIndex
from deepflows.text.books.sentence_table import SENTENCES, SentenceTable, write_store

ROOT = Path(__file__).resolve().parents[1]
DIM = 16


class MadeUpEncoder:
    """Stands in for the sentence encoder: sentence i of a synthetic book ("b s{i}.") gets vectors[i]."""

    name, max_tokens = "made-up", 256

    def __init__(self, vectors: np.ndarray, fingerprint: str = "f00d"):
        self.vectors, self.fingerprint, self.dim = vectors, fingerprint, vectors.shape[1]

    def encode(self, texts, batch_size=64):
        return self.vectors[[int(t.split(" s")[1].rstrip(".")) for t in texts]]


def synthetic_table(book_id: str, n: int, per_paragraph: int = 3, per_chapter: int = 10) -> SentenceTable:
    """n sentences "{book_id} s{i}." in paragraphs of `per_paragraph`, chapters of `per_chapter` paragraphs."""
    paragraphs, arrays, offset = [], {k: [] for k in ("sentence_paragraph", "sentence_start", "sentence_end",
                                                      "paragraph_index", "paragraph_chapter", "paragraph_start")}, 0
    for p, first in enumerate(range(0, n, per_paragraph)):
        words = [f"{book_id} s{i}." for i in range(first, min(n, first + per_paragraph))]
        text = " ".join(words)
        arrays["paragraph_index"].append(p)
        arrays["paragraph_chapter"].append(p // per_chapter)
        arrays["paragraph_start"].append(offset)
        at = 0
        for word in words:
            arrays["sentence_paragraph"].append(p)
            arrays["sentence_start"].append(offset + at)
            arrays["sentence_end"].append(offset + at + len(word))
            at += len(word) + 1
        paragraphs.append(text)
        offset += len(text) + 2
    chapters = [f"Chapter {c + 1}" for c in range(arrays["paragraph_chapter"][-1] + 1)]
    book = {"book_id": book_id, "title": f"The Book of {book_id}", "author": "A. Nonymous", "source": f"{book_id}.txt",
            "sha256": "0" * 64, "format": "plain", "rows": [0, n], "paragraphs": [0, len(paragraphs)],
            "chapters": [0, len(chapters)]}  # fmt: skip
    return SentenceTable({k: np.asarray(v) for k, v in arrays.items()}, paragraphs, chapters, [book], {"name": "made"})


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vector_store(tmp: Path, book_id: str, vectors: np.ndarray, chunk_rows: int, fingerprint: str = "f00d") -> Path:
    sentences = write_store(tmp / f"{book_id}.sent.zarr", synthetic_table(book_id, len(vectors)), SENTENCES,
                            chunk_rows=chunk_rows)  # fmt: skip
    return embed_sentences(sentences, tmp / f"{book_id}.vec.zarr", encoder=MadeUpEncoder(vectors, fingerprint))


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, low: int = 0, high: int | None = None):
    scores = queries @ vectors[low:high].astype(np.float32).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows + low


@pytest.fixture(scope="module")
def two_books(tmp_path_factory):
    """An index of two books (100 and 70 sentences) in chunks of 16, without an approximate index."""
    tmp = tmp_path_factory.mktemp("two")
    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=(100, DIM))), unit(rng.normal(size=(70, DIM)))
    shards = [vector_store(tmp, "alpha", a, 16), vector_store(tmp, "beta", b, 16)]
    build_index(shards, tmp / "index", approx="none", chunk_rows=16)
    return tmp / "index", np.concatenate([a, b]).astype(np.float16)


@pytest.mark.parametrize("memory_budget", [1 << 30, 0])  # vectors in memory; streamed from the chunks
def test_exact_search_equals_brute_force(two_books, memory_budget):
    path, vectors = two_books
    index = SentenceIndex.open(path, memory_budget=memory_budget)
    assert len(index) == 170 and index.approximate is None
    assert index._group["vectors"].nchunks == 11  # 170 rows in chunks of 16
    queries = unit(np.random.default_rng(1).normal(size=(5, DIM)))
    scores, rows = index.search(queries, 10)
    want_scores, want_rows = brute_force(vectors, queries, 10)
    assert scores.dtype == np.float32 and rows.dtype == np.int64 and rows.shape == (5, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    scores, rows = index.search(queries, 10, book_id="beta")  # rows 100..169, not chunk-aligned
    want_scores, want_rows = brute_force(vectors, queries, 10, 100, 170)
    np.testing.assert_array_equal(rows, want_rows)
    assert index.search(queries[0], 500)[1].shape == (1, 170)  # k cut to the rows there are


def test_hits_books_and_vectors(two_books):
    path, vectors = two_books
    index = SentenceIndex.open(path)
    assert index.books() == [{"book_id": "alpha", "title": "The Book of alpha", "author": "A. Nonymous",
                              "sentences": 100},
                             {"book_id": "beta", "title": "The Book of beta", "author": "A. Nonymous",
                              "sentences": 70}]  # fmt: skip
    assert (index.encoder_name, index.encoder_fingerprint) == ("made-up", "f00d")
    hit = index.hit(104)
    assert (hit["text"], hit["book_id"], hit["chapter"], hit["paragraph"]) == ("beta s4.", "beta", "Chapter 1", 1)
    assert hit["paragraph_text"] == "beta s3. beta s4. beta s5."
    assert hit["paragraph_text"][hit["sentence_start"] : hit["sentence_end"]] == "beta s4."
    assert hit["start"] - hit["sentence_start"] == synthetic_table("beta", 70).arrays["paragraph_start"][1]
    assert index.hit(99)["chapter"] == "Chapter 4" and index.hit(99)["text"] == "alpha s99."
    np.testing.assert_array_equal(index._group["vectors"][:], vectors)
    with pytest.raises(UserError, match="no sentence 170"):
        index.hit(170)
    with pytest.raises(UserError, match="no book 'gamma'"):
        index.search(vectors[:1], 3, book_id="gamma")
    with pytest.raises(UserError, match="16-dimensional"):
        index.search(np.zeros((1, 384)), 3)


def clustered(n: int, centres: int, seed: int) -> np.ndarray:
    """Unit vectors around `centres` random directions (like sentences on a few topics)."""
    rng = np.random.default_rng(seed)
    middle = unit(rng.normal(size=(centres, 32)))
    return unit(middle[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, 32)) / np.sqrt(32))


def test_approximate_index_recall_and_reproducible_bytes(tmp_path):
    vectors = clustered(6000, 30, seed=2)
    shards = [vector_store(tmp_path, "one", vectors[:3500], 1024), vector_store(tmp_path, "two", vectors[3500:], 1024)]
    options = {"approx": "ivfpq", "min_approx": 1000, "chunk_rows": 1024, "nlist": 32, "m": 16, "nprobe": 8}
    build_index(shards, tmp_path / "a", **options)
    build_index(shards, tmp_path / "b", **options)
    index = SentenceIndex.open(tmp_path / "a")
    assert index.approximate["nlist"] == 32 and index.approximate["m"] == 16
    queries = unit(vectors[:200] + 0.1 * np.random.default_rng(3).normal(size=(200, 32)) / np.sqrt(32))
    _, approx_rows = index.search(queries, 10)  # exact=None: the approximate index
    _, exact_rows = index.search(queries, 10, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_rows, exact_rows)])
    assert recall >= 0.7, recall  # 0.78 measured: 2 dimensions per PQ code
    in_book = index.search(queries[:5], 10, exact=False, book_id="two")[1]
    assert np.all((in_book >= 3500) & (in_book < 6000))
    for name in (APPROX_FILE, f"{STORE}/zarr.json"):  # the same inputs give the same bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    rc = main([str(a) for a in argv])
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_shards_of_two_encoders_refused(tmp_path, capsys):
    vectors = unit(np.random.default_rng(4).normal(size=(20, DIM)))
    first = vector_store(tmp_path, "one", vectors, 8, fingerprint="aaaa")
    second = vector_store(tmp_path, "two", vectors, 8, fingerprint="bbbb")
    rc, err = run_cli(["text-index", "--shards", first, second, "--out", tmp_path / "index"], capsys)
    assert rc == 2 and len([line for line in err if "error:" in line]) == 1
    assert err[-1] == (f"deepflows text-index: error: {second}: embedded by made-up (fingerprint bbbb), but {first} "
                       "by made-up (fingerprint aaaa); embed every book with one encoder")  # fmt: skip
    assert not (tmp_path / "index").exists() and not list(tmp_path.glob("index.tmp-*"))
    rc, err = run_cli(["text-index", "--shards", first, first, "--out", tmp_path / "index"], capsys)
    assert rc == 2 and "book 'one' is also in" in err[-1]


def test_damaged_index_refused(two_books, tmp_path):
    import shutil

    with pytest.raises(UserError, match="not a sentence index"):
        SentenceIndex.open(tmp_path)
    with pytest.raises(UserError, match="not found"):
        SentenceIndex.open(tmp_path / "nothing")
    copy = tmp_path / "copy"
    shutil.copytree(two_books[0], copy)
    chunk = copy / STORE / "vectors" / "c" / "3" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-5])
    with pytest.raises(UserError, match=rf"{copy / STORE}: chunk vectors/c/3/0 is truncated"):
        SentenceIndex.open(copy)
    chunk.unlink()
    with pytest.raises(UserError, match=rf"{copy / STORE}: vectors/c/3/0 is missing; run text-index again"):
        SentenceIndex.open(copy, verify=False)


def test_every_stage_with_the_real_encoder(tmp_path, capsys):
    """text-sentences -> text-embed (all-MiniLM-L6-v2) -> text-index -> text-search, on a tiny made-up book."""
    book = tmp_path / "keeper.txt"
    book.write_text("THE KEEPER\n\nBy A. Writer\n\nCHAPTER I\n\nMr. Grey kept the lighthouse on the rock for thirty "
                    "years.\nHe never missed a single night.\n\nHis daughter baked bread every morning. The bread\n"
                    "was sold in the village market.\n\nCHAPTER II\n\nA storm broke the lamp in the spring.\n")
    for argv in (["text-sentences", "--book", book, "--out", tmp_path / "s.zarr", "--chunk-rows", "2"],
                 ["text-embed", "--sentences", tmp_path / "s.zarr", "--out", tmp_path / "v.zarr", "--batch-size", "4"],
                 ["text-index", "--shards", tmp_path / "v.zarr", "--out", tmp_path / "index"]):  # fmt: skip
        assert run_cli(argv, capsys)[0] == 0
    index = SentenceIndex.open(tmp_path / "index")
    assert index.encoder_name == "all-MiniLM-L6-v2" and len(index) == 5 and index.approximate is None
    vectors = index._group["vectors"][:].astype(np.float32)
    assert vectors.shape == (5, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=2e-3)
    def search(query):
        assert main(["text-search", "--index", str(tmp_path / "index"), "--query", query, "-k", "2", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    hits = search("Who made the bread?")
    assert {h["text"] for h in hits} == {"His daughter baked bread every morning.",
                                         "The bread was sold in the village market."}  # fmt: skip
    assert hits[0]["score"] >= hits[1]["score"] and hits[0]["chapter"] == "Chapter I"
    hits = search("What happened to the lamp in spring?")
    assert (hits[0]["text"], hits[0]["chapter"]) == ("A storm broke the lamp in the spring.", "Chapter II")


@pytest.mark.workflow
def test_workflow_builds_an_index(tmp_path):
    """Target text_index on a tiny config: a Gutenberg-style book and a verse TSV, one job per book."""
    books = tmp_path / "books"
    books.mkdir()
    (books / "tale.txt").write_text("A TALE\n\nBy Some One\n\nCHAPTER 1\n\nIt was a dark night. The wind rose.\n")
    (books / "verses.tsv").write_text("book\tchapter\tverse\ttext\nJob\t1\t1\tThere was a man. He was upright.\n")
    config = tmp_path / "text.yaml"
    config.write_text(yaml.safe_dump({"text": {"corpus": "tiny", "books": [str(books), {
        "path": str(books / "verses.tsv"), "book_id": "job", "title": "Job"}]}}))  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(config),
               "--cores", "2", "text_index"]  # fmt: skip
    dry = subprocess.run([*command, "-n"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    counts = dict(line.split() for line in dry.stdout.splitlines() if line.startswith(("text_sentences ",
                                                                                         "text_embed ")))
    assert counts == {"text_sentences": "3", "text_embed": "3"}  # tale, verses (the folder) and job
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    index = SentenceIndex.open(tmp_path / "results" / "text" / "tiny" / "index")
    assert [b["book_id"] for b in index.books()] == ["tale", "verses", "job"] and len(index) == 6
    assert not (tmp_path / "results" / "text" / "tiny" / "sentences").exists() or not any(
        (tmp_path / "results" / "text" / "tiny" / "sentences").iterdir())  # temp(): removed
    assert (tmp_path / "benchmarks" / "text" / "tiny" / "embed" / "tale.tsv").is_file()
