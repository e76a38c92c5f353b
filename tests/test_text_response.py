"""Chit-chat pairs and their split, retrieval metrics, and fine-tuning the encoder on a tiny corpus."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from deepflows.errors import UserError
from deepflows.text.response.chitchat import pairs, read_conversations, split_of
from deepflows.text.response.retrieval import bm25_ranks, expected_ranks, retrieval_task, summarise, tfidf_ranks


def _corpus(path, conversations: dict[str, list[list[str]]]):
    data = {cid: {"prompt": "", "ratings": {}, "messages": [[{"text": t, "sender": "a", "timestamp": ""} for t in turn]
                                                           for turn in turns]}
            for cid, turns in conversations.items()}  # fmt: skip
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def test_turns_join_messages_and_single_turn_chats_are_dropped(tmp_path):
    path = _corpus(tmp_path / "c.json.gz", {"a": [["hi", "there"], ["hello!"], ["how are you"]], "b": [["alone"]]})
    (conv,) = read_conversations(path)
    assert conv.turns == ("hi there", "hello!", "how are you")
    assert pairs([conv]) == [("hi there", "hello!"), ("hello!", "how are you")]


def test_split_by_conversation_is_stable_and_near_80_10_10():
    ids = [f"conversation-{i}" for i in range(5000)]
    names = [split_of(i) for i in ids]
    assert names == [split_of(i) for i in ids]
    shares = {n: names.count(n) / len(ids) for n in ("train", "tune", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["tune"] - 0.1) < 0.02


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe", b"[1, 2]", b'{"x": {"messages": 3}}'])
def test_bad_corpus_one_line(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=str(path)):
        read_conversations(path)


def test_expected_rank_shares_ties_and_skips_the_query():
    scores = np.array([[9.0, 1.0, 1.0, 1.0],   # query 0 (own score 9 ignored); answer 1 tied with 2 and 3
                       [0.0, 5.0, 7.0, 6.0]])  # query 1; answer 3: only 2 is above
    ranks = expected_ranks(scores, answers=np.array([1, 3]), own=np.array([0, 1]))
    assert ranks.tolist() == [2.0, 2.0]
    assert summarise(np.array([1.0, 2.0, 20.0]))["mrr"] == pytest.approx((1 + 0.5 + 0.05) / 3)


def test_retrieval_task_answers_are_next_turns(tmp_path):
    path = _corpus(tmp_path / "c.json.gz", {"a": [["one"], ["two"], ["three"]], "b": [["four"], ["five"]]})
    texts, queries, answers = retrieval_task(read_conversations(path))
    assert [(texts[q], texts[a]) for q, a in zip(queries, answers)] == [("one", "two"), ("two", "three"),
                                                                         ("four", "five")]


def test_lexical_baselines_find_word_overlap():
    texts = ["do you like pizza", "i love pizza with cheese", "cold weather today", "i need a coat for the snow"]
    queries, answers = np.array([0, 2]), np.array([1, 3])
    for ranks in (bm25_ranks(texts, queries, answers), tfidf_ranks(texts, queries, answers, texts)):
        assert ranks[0] == 1  # shares "pizza"
        assert ranks[1] > 1  # "cold weather today" shares no word with "coat for the snow"


def test_finetune_runs_resumes_and_exports_a_loadable_encoder(tmp_path):
    """Two steps on a tiny corpus, stopped after one and resumed; the export holds only the trained layer."""
    from deepflows.cli import main
    from deepflows.text.encoder import load_encoder

    chats = {f"c{i}": [[f"what is your favourite {w}?"], [f"my favourite {w} is the {i}th one"], ["nice"]]
             for i, w in enumerate(["colour", "food", "song", "city", "book", "film", "sport", "game"] * 4)}
    path = _corpus(tmp_path / "chats.json.gz", chats)
    config = tmp_path / "config.yaml"
    config.write_text("model: {architecture: sentence_bert, options: {trainable_layers: 1}}\n"
                      "data: {max_tokens: 16, tune_conversations: 2}\n"
                      "training: {batch_size: 4, steps: 2, checkpoint_every: 1, log_every: 1}\n"
                      "evaluation: {every: 2}\n")  # fmt: skip
    argv = ["text-train", "--config", str(config), "--chats", str(path), "--workdir", str(tmp_path / "w"),
            "--out", str(tmp_path / "model")]  # fmt: skip
    assert main([*argv, "--stop-at", "1"]) == 0 and not (tmp_path / "model").exists()
    assert main(argv) == 0
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["trained_layers"] == [5] and meta["dtype"] == "float16"
    tuned = load_encoder(tmp_path / "model")
    assert tuned.encode(["hello"]).shape == (1, 384)
    assert tuned.fingerprint != load_encoder(None).fingerprint


def test_finetune_refuses_options_that_are_not_minilm(tmp_path):
    from deepflows.cli import main

    config = tmp_path / "config.yaml"
    config.write_text("model: {architecture: sentence_bert, options: {trainable_layers: 1, hidden: 128}}\n")
    path = _corpus(tmp_path / "chats.json.gz", {"a": [["x"], ["y"]], "b": [["p"], ["q"]]})
    assert main(["text-train", "--config", str(config), "--chats", str(path), "--workdir", str(tmp_path / "w"),
                 "--out", str(tmp_path / "m")]) == 2  # fmt: skip


def test_shipped_configs_validate(repo_root):
    from deepflows.nn.loop import load_config
    from deepflows.text.response.finetune import schema

    for path in sorted((repo_root / "config" / "model").glob("text_*.yaml")):
        cfg = load_config(path, schema())
        assert cfg["model"]["options"]["trainable_layers"] >= 1 and cfg["optimizer"]["weight_decay"] == 0


def test_shipped_response_model_loads_over_the_installed_base(repo_root):
    from deepflows.text.encoder import load_encoder

    model_dir = repo_root / "resources" / "models" / "text-response"
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["trained_layers"] == [3, 4, 5] and meta["dtype"] == "float16"
    assert (model_dir / "weights.msgpack").stat().st_size < 20e6
    tuned = load_encoder(model_dir)
    v = tuned.encode(["do you have any pets?", "yes, a dog named Max", "the train leaves at noon"])
    assert v[0] @ v[1] > v[0] @ v[2]


@pytest.mark.realdata
def test_shipped_response_model_keeps_stsb_within_two_points(shared_data, repo_root):
    from deepflows.text.encoder import load_encoder
    from deepflows.text.encoder.sts import read_sts, sts_spearman

    first, second, gold = read_sts(shared_data / "text" / "stsbenchmark" / "sts-test.csv")
    tuned = sts_spearman(load_encoder(repo_root / "resources" / "models" / "text-response").encode, first, second, gold)
    assert tuned > 82.0 - 2
