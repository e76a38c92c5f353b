"""The web app's JSON API (deepflows.text.web) over a real tiny index (two made-up books, built by the real stages),
the pretrained encoder and WordNet's lexicon: contract, limits, errors, start-up refusals, the encoder worker's
queue. Faults are injected by wrapping the real parts."""

from __future__ import annotations

import builtins
import logging
import os
import subprocess
import sys
import threading

import pytest
from fastapi.testclient import TestClient
from text_books import build_tiny_index, other_encoder, tiny_index_once

from deepflows.text.web.app import build_app, create_app
from deepflows.text.web.limits import Limits
from deepflows.text.web.worker import Busy, EncoderWorker


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """(index, encoder, lexicon, rank_words), loaded once."""
    from deepflows.text.encoder import load_encoder
    from deepflows.text.index import SentenceIndex
    from deepflows.text.semantris import Lexicon, rank_words

    return SentenceIndex.open(tiny_index_once(tmp_path_factory)), load_encoder(None), Lexicon.load(), rank_words


def app_of(parts, limits=Limits(), index=None):
    index_, encoder, lexicon, rank_words = parts
    return build_app(index or index_, encoder, lexicon, rank_words, limits)


@pytest.fixture(scope="module")
def client(parts):
    with TestClient(app_of(parts)) as c:
        yield c


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"] and "\n" not in body["error"]
    return body["error"]


def test_health(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["sentences"] == 13 and body["books"] == 2
    assert body["encoder"] == "all-MiniLM-L6-v2"


def test_search_hits_best_first_with_their_paragraph(client):
    body = client.post("/api/search", json={"query": "Should I marry a sailor?", "k": 3}).json()
    hits = body["hits"]
    assert len(hits) == 3
    assert hits[0]["text"] == "Is it wise to marry a sailor?" and hits[0]["chapter"] == "Chapter II"
    assert hits[0]["title"] == "Tales of the Sea" and hits[0]["author"] == "Benjamin Hale"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for hit in hits:
        assert hit["paragraph_text"][hit["sentence_start"]:hit["sentence_end"]] == hit["text"]
        assert {"author", "chapter", "book_id", "score"} <= set(hit)


def test_search_within_one_book(client):
    hits = client.post("/api/search", json={"query": "roses", "k": 10, "book_id": "sea"}).json()["hits"]
    assert len(hits) == 7 and {h["book_id"] for h in hits} == {"sea"}  # all of its sentences


def test_books(client):
    assert [b["book_id"] for b in client.get("/api/books").json()["books"]] == ["garden", "sea"]


@pytest.mark.parametrize("body, status, words", [
    ({"query": "roses", "book_id": "../../etc/passwd"}, 404, "no book"),
    ({"query": "roses", "k": 1000}, 422, "k:"),
    ({"query": "roses", "k": 0}, 422, "k:"),
    ({"query": "   "}, 422, "query:"),
    ({"query": ""}, 422, "query:"),
    ({"query": 5}, 422, "query:"),
    ({}, 422, "query:"),
    ({"query": "roses", "kk": 3}, 422, "kk:"),
    ({"query": "x" * 1001}, 422, "at most 1000"),
])  # fmt: skip
def test_search_refuses_bad_fields(client, body, status, words):
    assert words in error_of(client.post("/api/search", json=body), status)


def test_a_query_of_10000_words_is_refused_cleanly(client):
    message = error_of(client.post("/api/search", json={"query": " ".join(["word"] * 10_000)}), 413)
    assert "too large" in message and "16384" in message
    assert client.get("/api/health").status_code == 200  # and the server carries on


def test_a_streamed_body_is_cut_at_the_limit(client):
    chunks = (b'{"query": "' + b"a" * 8000 for _ in range(4))  # no Content-Length: chunked
    assert "too large" in error_of(client.post("/api/search", content=chunks), 413)


def test_a_long_query_under_a_larger_body_limit_is_refused_by_length(parts):
    with TestClient(app_of(parts, Limits(max_body_bytes=1_000_000))) as c:
        assert "query:" in error_of(c.post("/api/search", json={"query": " ".join(["word"] * 10_000)}), 422)


def test_malformed_json(client):
    message = error_of(client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"}),
                       422)  # fmt: skip
    assert "JSON" in message
    deep = client.post("/api/search", content=b"[" * 10_000, headers={"content-type": "application/json"})
    assert 400 <= deep.status_code < 500 and list(deep.json()) == ["error"]


def test_semantris_round(client):
    one = client.post("/api/semantris/round", json={"mode": "arcade", "seed": 7, "n": 5}).json()
    assert one["mode"] == "arcade" and one["seed"] == 7 and len(one["items"]) == 5
    assert client.post("/api/semantris/round", json={"mode": "arcade", "seed": 7, "n": 5}).json() == one
    blocks = client.post("/api/semantris/round", json={"mode": "blocks"}).json()
    assert len(blocks["items"]) == 20 and isinstance(blocks["seed"], int)
    assert "mode:" in error_of(client.post("/api/semantris/round", json={"mode": "zen"}), 422)
    assert "seed:" in error_of(client.post("/api/semantris/round", json={"mode": "arcade", "seed": -1}), 422)
    assert "n:" in error_of(client.post("/api/semantris/round", json={"mode": "arcade", "n": 10_000}), 422)
    avoid = client.post("/api/semantris/round", json={"mode": "arcade", "seed": 8, "n": 5, "avoid": one["items"]})
    assert not set(avoid.json()["items"]) & set(one["items"])


def test_semantris_rank(client):
    words = ["tiger", "violin", "bread", "hammer"]
    body = client.post("/api/semantris/rank", json={"clue": " Music ", "words": words}).json()
    ranking = body["ranking"]
    assert body["clue"] == "music"
    assert ranking[0]["word"] == "violin" and sorted(r["word"] for r in ranking) == sorted(words)
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)


@pytest.mark.parametrize("body, words", [
    ({"clue": "sea", "words": []}, "words:"),
    ({"clue": "sea", "words": ["w"] * 41}, "words:"),
    ({"clue": "sea", "words": ["x" * 81]}, "words.0:"),
    ({"clue": " ", "words": ["tiger"]}, "clue:"),
    ({"clue": "sea"}, "words:"),
    ({"clue": "violins", "words": ["tiger", "violin"]}, "may not be 'violin'"),
])  # fmt: skip
def test_semantris_rank_refuses_bad_fields(client, body, words):
    assert words in error_of(client.post("/api/semantris/rank", json=body), 422)


def test_pages_and_unknown_paths(client):
    for path in ("/", "/books", "/arcade", "/blocks", "/static/app.css", "/static/books.js"):
        response = client.get(path)
        assert response.status_code == 200 and "default-src 'self'" in response.headers["content-security-policy"]
    assert "no such page" in error_of(client.get("/nowhere"), 404)
    assert error_of(client.post("/api/health"), 405)


def test_no_request_reaches_the_file_system(client, monkeypatch):
    """Pages come from memory; a path-like parameter is a name looked up, never opened."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"file system touched: {args[:1]}")

    for module, name in ((builtins, "open"), (os, "open"), (os, "stat"), (os, "listdir"), (os, "scandir")):
        monkeypatch.setattr(module, name, forbidden)
    assert client.get("/books").status_code == 200
    for name in ("../app.py", "..%2Fapp.py", "%2e%2e/%2e%2e/pyproject.toml", "/etc/passwd", "app.css/..", "."):
        assert client.get(f"/static/{name}").status_code == 404
    assert client.post("/api/search", json={"query": "roses", "book_id": "/etc/passwd"}).status_code == 404


def test_no_page_loads_anything_from_elsewhere():
    from importlib import resources

    for folder in ("static", "pages"):
        for item in (resources.files("deepflows.text.web") / folder).iterdir():
            text = item.read_text()
            assert "http://" not in text and "https://" not in text and 'src="//' not in text, item.name


class BrokenIndex:
    """The real index, except that its search fails."""

    def __init__(self, index):
        self.index = index

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self):
        return len(self.index)

    def search(self, *args, **kwargs):
        return 1 / 0


def test_an_unexpected_error_is_a_500_without_traceback(parts, caplog):
    with TestClient(app_of(parts, index=BrokenIndex(parts[0])), raise_server_exceptions=False) as c, \
            caplog.at_level(logging.ERROR):  # fmt: skip
        response = c.post("/api/search", json={"query": "roses"})
        assert c.get("/api/health").status_code == 200
    assert error_of(response, 500) == "internal server error (logged on the server)"
    assert "Traceback" not in response.text and "ZeroDivisionError" in caplog.text


def test_an_index_from_another_encoder_is_refused(tmp_path):
    from deepflows.errors import UserError

    model = other_encoder(tmp_path / "model")
    index = build_tiny_index(tmp_path / "other", model=str(model))
    with pytest.raises(UserError, match=r"other/tiny.index: index built by encoder tiny-change \(\w{12}\), not by "
                                        r"the one served, all-MiniLM-L6-v2"):  # fmt: skip
        create_app(index)
    with TestClient(create_app(index, model)) as c:
        assert c.get("/api/health").json()["encoder"] == "tiny-change"


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "absent.index", "absent.index: not found"),
    (lambda d: d, "not a sentence index"),
])  # fmt: skip
def test_serve_refuses_what_is_not_an_index(tmp_path, make, words):
    result = subprocess.run([sys.executable, "-m", "deepflows.cli", "serve", "--index", str(make(tmp_path)), "--check"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("deepflows serve: error: ") and words in lines[-1]
    assert "Traceback" not in result.stderr


class GatedEncoder:
    """The real encoder, holding each call until released and recording the batches it is given."""

    def __init__(self, encoder):
        self.encoder, self.entered, self.release, self.batches = encoder, threading.Event(), threading.Event(), []

    def encode(self, texts, batch_size=64):
        self.batches.append(list(texts))
        self.entered.set()
        assert self.release.wait(60)
        return self.encoder.encode(texts)


def test_waiting_queries_are_encoded_together_and_a_full_queue_says_busy(parts):
    encoder = GatedEncoder(parts[1])
    worker = EncoderWorker(parts[0], encoder, max_pending=3, max_batch=8)
    try:
        first = worker.search("roses", 2)
        assert encoder.entered.wait(60)  # the worker holds the first query; the next ones wait
        waiting = [worker.search(q, 2) for q in ("the sea", "a ship in a storm", "weeds")]
        with pytest.raises(Busy, match="busy"):
            worker.search("one too many", 2)
        encoder.release.set()
        assert [len(f.result(60)) for f in [first, *waiting]] == [2, 2, 2, 2]
        assert encoder.batches == [["roses"], ["the sea", "a ship in a storm", "weeds"]]
        assert waiting[1].result()[0]["text"].startswith("The ship sailed across the stormy ocean.")
    finally:
        encoder.release.set()
        worker.close()


def test_serve_binds_to_localhost_by_default():
    from deepflows.cli import build_parser

    args = build_parser("serve").parse_args(["serve", "--index", "books.index"])
    assert args.host == "127.0.0.1" and args.port == 8000
    with pytest.raises(SystemExit):
        build_parser("serve").parse_args(["serve", "--index", "x", "--port", "70000"])
