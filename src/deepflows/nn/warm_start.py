"""Warm start: a fresh training run that begins from an exported model directory's weights (`init: {model:
DIR}` / --init), as DeepVariant fine-tunes its exome model from its WGS checkpoint. The directory must hold
the config's architecture and options and read inputs of the task's shape and channel order. Only step 0
loads it: a resumed run restores its own checkpoint.

One difference is allowed: an option an architecture lists in ADDED_INPUTS (read_set's `sample_noise` and
`unknown_noise`) may be on in the config and off in the directory. Its new weights are named zero_init_* and
start at zero, so the run starts from the directory's model exactly.
"""

from __future__ import annotations

import json

from deepflows.errors import UserError


def init_mismatch(meta: dict, cfg: dict, inputs) -> str | None:
    """What keeps a model directory (its model.json) from starting this run: the first of architecture,
    options (with the architecture's defaults filled in on both sides), input shape and channel order that
    differs, with both values; None if it fits. `inputs`: what the run reads (.shape, .channels: a task, a
    store split; .inputs_name, what to call it, "training store" without)."""
    from deepflows.nn.models import added_inputs, architecture_options

    name = getattr(inputs, "inputs_name", "training store")
    ours = cfg["model"]["architecture"]
    if meta["architecture"] != ours:
        return f"its architecture {meta['architecture']!r} differs from the config's model.architecture {ours!r}"
    defaults = architecture_options(ours)
    theirs, mine = ({**defaults, **options} for options in (meta["options"], cfg["model"]["options"]))
    theirs, mine = json.loads(json.dumps(theirs, default=str)), json.loads(json.dumps(mine, default=str))
    for key in added_inputs(ours):
        if mine.get(key) and not theirs.get(key):
            theirs[key] = mine[key]  # an input the run adds, with weights that start at zero
    for key in sorted(set(theirs) | set(mine)):
        if theirs.get(key, "(absent)") != mine.get(key, "(absent)"):
            return (f"its options.{key} {json.dumps(theirs.get(key, '(absent)'))} differs from the config's "
                    f"model.options.{key} {json.dumps(mine.get(key, '(absent)'))}")  # fmt: skip
    if list(meta["input_shape"]) != list(inputs.shape):
        return f"its input_shape {list(meta['input_shape'])} differs from the {name}'s {list(inputs.shape)}"
    if list(meta["channels"]) != list(inputs.channels):
        return f"its channels {list(meta['channels'])} differ from the {name}'s {list(inputs.channels)}"
    return None


def start_from(path: str, model, task) -> dict:
    """Put the weights of the model directory `path` (init.model) into the freshly built `model`, in place;
    {"model": path, "sha256": of its weights, as its model.json records it}. One line when the directory is
    not a model or does not fit the task (task.check_init)."""
    import jax.numpy as jnp
    from flax import nnx

    from deepflows.config import resolve_shipped
    from deepflows.nn.model_dir import _weight_state, load_model, model_description

    where = resolve_shipped(path)
    try:
        problem = task.check_init(model_description(where))
        if problem:
            raise UserError(f"{where}: {problem}; fine-tuning needs a model of the config's architecture and "
                            f"options that reads the {task.inputs_name}'s input shape and channel order")  # fmt: skip
        source, meta = load_model(where)  # checks the weights' sha256 and that they fit the architecture
    except UserError as err:
        raise UserError(f"init.model: {err}") from None
    # Cast to the fresh model's dtypes (float32): a model exported as float16 (the focus model) would otherwise
    # train in float16, where Adam's updates overflow.
    target = nnx.state(model, _weight_state())
    weights = nnx.to_pure_dict(nnx.state(source, _weight_state()))
    nnx.replace_by_pure_dict(target, _cast_into(nnx.to_pure_dict(target), weights, jnp))
    nnx.update(model, target)
    return {"model": path, "sha256": meta["sha256"]}


def _cast_into(want: dict, got: dict, jnp) -> dict:
    """`got`'s weights in `want`'s dtypes; weights only `want` has (zero_init_*: an added input) keep their value."""
    from deepflows.nn.models import ZERO_INIT

    out = {}
    for key, value in want.items():
        if key not in got:
            if not str(key).startswith(ZERO_INIT):
                raise RuntimeError(f"weight {key} missing from the init model")  # init_mismatch lets no other through
            out[key] = value
        elif isinstance(value, dict):
            out[key] = _cast_into(value, got[key], jnp)
        else:
            out[key] = jnp.asarray(got[key], dtype=value.dtype)
    return out


def recorded_init(cfg: dict, previous: dict | None) -> dict:
    """What a resumed run started from: its run.json's record, or (a run.json that lacks it, edited) the
    directory's model.json."""
    if previous and previous.get("init"):
        return previous["init"]
    from deepflows.config import resolve_shipped
    from deepflows.nn.model_dir import model_description

    sha = model_description(resolve_shipped(cfg["init"]["model"]))["sha256"]
    return {"model": cfg["init"]["model"], "sha256": sha}
