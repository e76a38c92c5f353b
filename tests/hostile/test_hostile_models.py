"""Hostile model directories: model.json that is not an object, lacks its sha256, is not JSON or is missing;
weights missing, truncated or altered; a model for other inputs. Each in a copy of the shipped model."""

from __future__ import annotations

import json
import shutil

import pytest
from hostile_cases import CORRUPT, MISSING, Case, check_case, params
from hostile_data import SHIPPED_MODEL

CALL = "call-variants --examples {shards} --model {model} --out {out}/probs.zarr"
CALL_OUT = ("{out}/probs.zarr",)


def damaged_model(damage):
    def make(d, valid, work):
        model = shutil.copytree(SHIPPED_MODEL, d / "wgs-illumina")
        damage(model)
        return {"model": model}

    return make


def rewrite_json(change):
    def damage(model):
        meta = json.loads((model / "model.json").read_text())
        (model / "model.json").write_text(json.dumps(change(meta), indent=1))

    return damage


def without(key):
    return rewrite_json(lambda meta: {k: v for k, v in meta.items() if k != key})


def write(name, data: bytes):
    def damage(model):
        (model / name).write_bytes(data)

    return damage


def remove(name):
    def damage(model):
        (model / name).unlink()

    return damage


def truncate(name):
    def damage(model):
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[: len(data) // 2])

    return damage


def flip(name):
    def damage(model):
        data = bytearray((model / name).read_bytes())
        i = len(data) // 2
        data[i : i + 16] = bytes(b ^ 0x5A for b in data[i : i + 16])
        (model / name).write_bytes(bytes(data))

    return damage


CASES = [
    Case("9i-model-json-is-a-list", "call-variants", CALL, damaged_model(write("model.json", b"[]\n")), CALL_OUT,
         ("model.json",)),
    Case("9j-model-json-without-sha256", "call-variants", CALL, damaged_model(without("sha256")), CALL_OUT,
         ("model.json",), ("sha256",)),
    Case("own-model-json-not-json", "call-variants", CALL, damaged_model(write("model.json", b'{"architecture": ')),
         CALL_OUT, ("model.json",), ("JSON|unreadable|parse|syntax",)),
    Case("own-model-json-missing", "call-variants", CALL, damaged_model(remove("model.json")), CALL_OUT,
         ("model.json",), (MISSING + "|no model.json",)),
    Case("own-model-json-without-input-shape", "call-variants", CALL, damaged_model(without("input_shape")), CALL_OUT,
         ("model.json",), ("input_shape",)),
    Case("own-weights-missing", "call-variants", CALL, damaged_model(remove("weights.msgpack")), CALL_OUT,
         ("weights.msgpack",), (MISSING,)),
    Case("own-weights-truncated", "call-variants", CALL, damaged_model(truncate("weights.msgpack")), CALL_OUT,
         ("weights.msgpack",), (CORRUPT,)),
    Case("own-weights-bytes-altered", "call-variants", CALL, damaged_model(flip("weights.msgpack")), CALL_OUT,
         ("weights.msgpack",), (CORRUPT,)),
    Case("own-model-json-shape-not-its-weights", "call-variants", CALL,
         damaged_model(rewrite_json(lambda m: {**m, "input_shape": [100, 221, 7], "channels": m["channels"][:7]})),
         CALL_OUT, ("model.json|weights.msgpack",), ("fit|shape|channel|expects|match",),
         note="model.json says 7 channels, its weights are for 8 (and the examples have 8)"),
    Case("9i-fit-call-temperature-model-json-is-a-list", "fit-call-temperature",
         "fit-call-temperature --model {model} --ref {ref} --set {probs} {truth} {bed}",
         damaged_model(write("model.json", b"[]\n")), ("{model}/model.json",), ("model.json",),
         note="the model.json it would update must be left as it was"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_model(case, valid, work):
    check_case(case, valid, work)
