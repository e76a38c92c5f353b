"""A plain NumPy forward of all-MiniLM-L6-v2, written from BertModel's definition and reading the safetensors by
their own names: the independent reference the Flax port (deepflows.text.encoder.bert) is checked against, and what the
STS-B reference figure is measured with. Slow (float64, one sentence at a time, no padding); not for production.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from deepflows.text.encoder import BASE_OPTIONS, MAX_TOKENS, Tokenizer, package_dir

EPS = 1e-12


def _norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def _dense(x, t, name):
    return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]


class NumpyMiniLM:
    def __init__(self):
        from safetensors.numpy import load_file

        directory = package_dir()
        self.t = {k: v.astype(np.float64) for k, v in load_file(directory / "model.safetensors").items()}
        self.tokenizer = Tokenizer(directory / "tokenizer.json")

    def encode_one(self, ids: list[int]) -> np.ndarray:
        t, heads = self.t, BASE_OPTIONS["heads"]
        ids = ids[:MAX_TOKENS]
        x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][: len(ids)]
             + t["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
        x = _norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
        n, d = x.shape
        for i in range(BASE_OPTIONS["layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (_dense(x, t, p + f"attention.self.{w}").reshape(n, heads, -1).transpose(1, 0, 2)
                       for w in ("query", "key", "value"))  # fmt: skip
            a = q @ k.transpose(0, 2, 1) / np.sqrt(d // heads)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            ctx = (a @ v).transpose(1, 0, 2).reshape(n, d)
            x = _norm(x + _dense(ctx, t, p + "attention.output.dense"),
                      t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"])
            h = _dense(x, t, p + "intermediate.dense")
            h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
            x = _norm(x + _dense(h, t, p + "output.dense"),
                      t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)

    def encode(self, texts) -> np.ndarray:
        return np.stack([self.encode_one(ids) for ids in self.tokenizer.ids(texts)]).astype(np.float32)
