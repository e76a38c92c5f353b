"""The web app's JSON API (deepflows.text.web): contract, limits, errors, and the encoder worker's queue."""

from __future__ import annotations

import builtins
import logging
import os
import threading

import pytest
from fastapi.testclient import TestClient
from text_web_fakes import FakeEncoder, FakeIndex, FakeLexicon, fake_app, fake_rank_words

from deepflows.errors import UserError
from deepflows.text.web.app import build_app, check_same_encoder
from deepflows.text.web.limits import Limits
from deepflows.text.web.worker import Busy, EncoderWorker


@pytest.fixture
def client():
    with TestClient(fake_app()) as c:
        yield c


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"] and "\n" not in body["error"]
    return body["error"]


def test_health(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["sentences"] == 8 and body["books"] == 2


def test_search_hits_best_first_with_their_paragraph(client):
    body = client.post("/api/search", json={"query": "who waters the roses", "k": 3}).json()
    hits = body["hits"]
    assert len(hits) == 3
    assert hits[0]["text"] == "The gardener waters the roses at dawn." and hits[0]["title"] == "The Garden Book"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for hit in hits:
        assert hit["paragraph_text"][hit["sentence_start"]:hit["sentence_end"]] == hit["text"]
        assert {"author", "chapter", "book_id", "score"} <= set(hit)


def test_search_within_one_book(client):
    hits = client.post("/api/search", json={"query": "roses", "k": 10, "book_id": "sea"}).json()["hits"]
    assert len(hits) == 4 and {h["book_id"] for h in hits} == {"sea"}


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


def test_a_long_query_under_a_larger_body_limit_is_refused_by_length():
    with TestClient(fake_app(Limits(max_body_bytes=1_000_000))) as c:
        assert "query:" in error_of(c.post("/api/search", json={"query": " ".join(["word"] * 10_000)}), 422)


def test_malformed_json(client):
    message = error_of(client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"}),
                       422)  # fmt: skip
    assert "JSON" in message


def test_semantris_round(client):
    one = client.post("/api/semantris/round", json={"mode": "arcade", "seed": 7, "n": 5}).json()
    assert one["mode"] == "arcade" and one["seed"] == 7 and len(one["items"]) == 5
    assert client.post("/api/semantris/round", json={"mode": "arcade", "seed": 7, "n": 5}).json() == one
    blocks = client.post("/api/semantris/round", json={"mode": "blocks"}).json()
    assert len(blocks["items"]) == 20 and isinstance(blocks["seed"], int)
    assert "mode:" in error_of(client.post("/api/semantris/round", json={"mode": "zen"}), 422)
    assert "seed:" in error_of(client.post("/api/semantris/round", json={"mode": "arcade", "seed": -1}), 422)
    assert "n:" in error_of(client.post("/api/semantris/round", json={"mode": "arcade", "n": 10_000}), 422)


def test_semantris_rank(client):
    words = ["tiger", "ocean waves", "bread"]
    body = client.post("/api/semantris/rank", json={"clue": " Oceanic ", "words": words}).json()
    ranking = body["ranking"]
    assert body["clue"] == "oceanic"
    assert ranking[0]["word"] == "ocean waves" and sorted(r["word"] for r in ranking) == sorted(words)
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)


@pytest.mark.parametrize("body, words", [
    ({"clue": "sea", "words": []}, "words:"),
    ({"clue": "sea", "words": ["w"] * 41}, "words:"),
    ({"clue": "sea", "words": ["x" * 81]}, "words.0:"),
    ({"clue": " ", "words": ["tiger"]}, "clue:"),
    ({"clue": "sea"}, "words:"),
    ({"clue": "ocean", "words": ["tiger", "ocean waves"]}, "may not be 'ocean waves'"),
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

    for item in (resources.files("deepflows.text.web") / "static").iterdir():
        text = item.read_text()
        assert "http://" not in text and "https://" not in text and 'src="//' not in text, item.name


class BrokenIndex(FakeIndex):
    def search(self, *args, **kwargs):
        return 1 / 0


def test_an_unexpected_error_is_a_500_without_traceback(caplog):
    encoder = FakeEncoder()
    app = build_app(BrokenIndex(encoder), encoder, FakeLexicon(), fake_rank_words)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        response = c.post("/api/search", json={"query": "roses"})
        assert c.get("/api/health").status_code == 200
    assert error_of(response, 500) == "internal server error (logged on the server)"
    assert "Traceback" not in response.text and "ZeroDivisionError" in caplog.text


def test_an_index_from_another_encoder_is_refused():
    index = FakeIndex(FakeEncoder("a" * 64))
    with pytest.raises(UserError, match=r"books.index: index built by encoder fake-bag-of-words \(aaaaaaaaaaaa\)"):
        check_same_encoder(index, FakeEncoder("b" * 64), "books.index")
    check_same_encoder(index, FakeEncoder("a" * 64), "books.index")


class GatedEncoder(FakeEncoder):
    """Blocks in encode() until released, and records each batch it is given."""

    def __init__(self):
        super().__init__()
        self.entered, self.release, self.batches = threading.Event(), threading.Event(), []

    def encode(self, texts, batch_size=64):
        self.batches.append(list(texts))
        self.entered.set()
        assert self.release.wait(10)
        return super().encode(texts)


def test_waiting_queries_are_encoded_together_and_a_full_queue_says_busy():
    encoder = GatedEncoder()
    worker = EncoderWorker(FakeIndex(FakeEncoder()), encoder, max_pending=3, max_batch=8)
    try:
        first = worker.search("roses", 2)
        assert encoder.entered.wait(10)  # the worker holds the first query; the next ones wait
        waiting = [worker.search(q, 2) for q in ("sea", "ship", "weeds")]
        with pytest.raises(Busy, match="busy"):
            worker.search("one too many", 2)
        encoder.release.set()
        assert [len(f.result(10)) for f in [first, *waiting]] == [2, 2, 2, 2]
        assert encoder.batches == [["roses"], ["sea", "ship", "weeds"]]
        assert waiting[1].result()[0]["text"] == "The ship sailed across the stormy ocean."
    finally:
        encoder.release.set()
        worker.close()


def test_serve_binds_to_localhost_by_default():
    from deepflows.cli import build_parser

    args = build_parser("serve").parse_args(["serve", "--index", "books.index"])
    assert args.host == "127.0.0.1" and args.port == 8000
    with pytest.raises(SystemExit):
        build_parser("serve").parse_args(["serve", "--index", "x", "--port", "70000"])
