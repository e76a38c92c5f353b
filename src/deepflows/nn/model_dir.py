"""Model directories: `model.json` (architecture, options, input shape, channels, provenance, metrics,
sha256 of the weights) beside `weights.msgpack` (the model's NNX state as a pure dict, msgpack).

A single small file per model keeps shipped models reviewable and their checksum meaningful; training
runs keep full Orbax checkpoints in their workdir instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from deepflows.errors import UserError

WEIGHTS = "weights.msgpack"


def _weight_state():
    """What a model is: parameters and batch statistics (not its random-number state)."""
    from flax import nnx

    return nnx.Any(nnx.Param, nnx.BatchStat)
MODEL_JSON = "model.json"


def save_model(directory: str | Path, model, meta: dict) -> dict:
    """Write weights and model.json (meta must hold architecture, options, input_shape, channels)."""
    from flax import nnx, serialization

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(model, _weight_state())))
    tmp = directory / f".{WEIGHTS}.tmp-{os.getpid()}"
    tmp.write_bytes(blob)
    tmp.rename(directory / WEIGHTS)
    meta = {**meta, "weights": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest()}
    write_json(directory / MODEL_JSON, meta)
    return meta


def write_json(path: Path, data: dict) -> None:
    """model.json (or a training run's JSON), written under a temporary name and renamed: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_model_json(directory: str | Path) -> dict:
    """A model directory's model.json as a dict; one clear line when the directory or the file is missing, or
    the file is not a JSON object. `model_description` also checks the keys a model is loaded with."""
    directory = Path(directory)
    meta_path = directory / MODEL_JSON
    if not directory.is_dir():
        what = "a file" if directory.exists() else "no such directory"
        raise UserError(f"{directory}: not a model directory ({what}; expected {MODEL_JSON} + {WEIGHTS})")
    if not meta_path.is_file():
        raise UserError(f"{directory}: not a model directory (no {MODEL_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError) as err:  # not JSON, not text, unreadable
        raise UserError(f"{meta_path}: unreadable model description ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: unreadable model description (a JSON {type(meta).__name__}, not an object)")
    return meta


def _name_in_directory(value) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value


# What load_model reads: key -> (test, what it must be). save_model writes every one of them.
_REQUIRED = {
    "architecture": (lambda v: isinstance(v, str) and v != "", "an architecture name"),
    "options": (lambda v: isinstance(v, dict), "an object of architecture options"),
    "input_shape": (
        lambda v: isinstance(v, list) and len(v) > 0 and all(type(n) is int and n > 0 for n in v),
        "a list of positive integers",
    ),
    "channels": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of channel names"),
    "weights": (_name_in_directory, "a file name in the model directory"),
    "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
               "a sha256 (64 lower-case hex digits)"),  # fmt: skip
}
_OPTIONAL = {"realign": (lambda v: isinstance(v, bool), "true or false"),
             "calibration": (lambda v: v is None or isinstance(v, dict), "an object")}  # fmt: skip


def model_description(directory: str | Path) -> dict:
    """model.json with every key a model is loaded with present and of the right type; one line naming
    model.json and the key otherwise."""
    meta = read_model_json(directory)
    meta_path = Path(directory) / MODEL_JSON
    for key, (test, expected) in _REQUIRED.items():
        if key not in meta:
            raise UserError(f"{meta_path}: no {key!r} (a model description has {', '.join(_REQUIRED)})")
    for key, (test, expected) in (_REQUIRED | _OPTIONAL).items():
        if key in meta and not test(meta[key]):
            raise UserError(f"{meta_path}: {key!r} must be {expected}, not {json.dumps(meta[key])[:60]}")
    return meta


def load_model(directory: str | Path):
    """(model, meta) from a model directory; one clear line for anything missing or corrupt."""
    from flax import nnx, serialization

    from deepflows.nn.models import build_model

    directory = Path(directory)
    meta = model_description(directory)
    weights = directory / meta["weights"]
    architecture, options, shape = meta["architecture"], meta["options"], meta["input_shape"]
    if not weights.is_file():
        raise UserError(f"{weights}: model weights not found")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise UserError(f"{weights}: sha256 does not match {MODEL_JSON}; corrupt or replaced weights")
    try:
        model = build_model(architecture, options, channels=shape[-1], seed=0)
    except UserError as err:  # unknown architecture or options: name the file that asks for them
        raise UserError(f"{directory / MODEL_JSON}: {err}") from None
    state = nnx.state(model, _weight_state())
    try:
        restored = serialization.msgpack_restore(blob)
    except Exception as err:  # noqa: BLE001 - msgpack raises several types for a damaged blob
        raise UserError(f"{weights}: unreadable weights ({type(err).__name__}: {err})") from None
    _check_fits(state, restored, weights, architecture)
    nnx.update(model, state)
    model.eval()
    return model, meta


def _check_fits(state, restored, weights: Path, architecture: str) -> None:
    """Put the restored arrays into `state`, refusing any that is missing, extra or of another shape (NNX would
    take an array of any shape, and the model would fail or mislead later)."""
    from flax import nnx

    want, got = _shapes(nnx.to_pure_dict(state)), _shapes(restored)
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    wrong = [f"{key} is {list(got[key])}, expected {list(shape)}" for key, shape in want.items()
             if key in got and got[key] != shape]  # fmt: skip
    problem = (f"no {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else wrong[0] if wrong else None)
    if problem:
        raise UserError(f"{weights}: weights do not fit architecture '{architecture}' ({problem})")
    nnx.replace_by_pure_dict(state, restored)


def _shapes(tree) -> dict[str, tuple]:
    """Leaf path ("['convs'][0]['kernel']") -> array shape."""
    import jax
    import numpy as np

    return {jax.tree_util.keystr(path): np.shape(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_compatible(meta: dict, shape: list[int], channels: list[str], realign: bool, source: str) -> None:
    """A model only reads examples of the shape, channel order and read realignment it was trained on
    (models exported before realignment existed do not record it and are not checked for it)."""
    if list(meta["input_shape"]) != list(shape):
        raise UserError(f"{source}: examples are {shape} but the model expects {meta['input_shape']}")
    if list(meta["channels"]) != list(channels):
        raise UserError(f"{source}: example channels {channels} differ from the model's {meta['channels']}")
    if "realign" in meta and bool(meta["realign"]) != realign:
        made, trained = ("with", "without") if realign else ("without", "with")
        raise UserError(f"{source}: examples were made {made} --realign but the model was trained on examples "
                        f"made {trained} it (make-examples must featurize as the training data did)")


def publish_model(summary: dict, out: str | Path) -> Path:
    """Copy a finished run's exported model (deepflows.nn.loop.fit's summary["model"]) to `out`, beside whatever
    `out` holds already (a model card, evaluations); each file lands whole (written aside, then renamed)."""
    import shutil

    out, exported = Path(out), Path(summary["model"])
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != exported.resolve():
        for name in ("weights.msgpack", "model.json"):
            shutil.copyfile(exported / name, out / f".{name}.tmp")
            (out / f".{name}.tmp").replace(out / name)
    return out
