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
    """A model directory's model.json; one clear line when it is missing or not JSON."""
    meta_path = Path(directory) / MODEL_JSON
    if not meta_path.is_file():
        raise UserError(f"{directory}: not a model directory (no {MODEL_JSON})")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{meta_path}: unreadable model description ({err})") from None


def load_model(directory: str | Path):
    """(model, meta) from a model directory; one clear line for anything missing or corrupt."""
    from flax import nnx, serialization

    from deepflows.nn.models import build_model

    directory = Path(directory)
    meta = read_model_json(directory)
    try:
        weights = directory / meta["weights"]
        architecture, options, shape = meta["architecture"], meta["options"], meta["input_shape"]
    except KeyError as err:
        raise UserError(f"{directory / MODEL_JSON}: unreadable model description ({err})") from None
    if not weights.is_file():
        raise UserError(f"{weights}: model weights not found")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise UserError(f"{weights}: sha256 does not match {MODEL_JSON}; corrupt or replaced weights")
    model = build_model(architecture, options, channels=shape[-1], seed=0)
    state = nnx.state(model, _weight_state())
    try:
        nnx.replace_by_pure_dict(state, serialization.msgpack_restore(blob))
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(f"{weights}: weights do not fit architecture '{architecture}' ({err})") from None
    nnx.update(model, state)
    model.eval()
    return model, meta


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
