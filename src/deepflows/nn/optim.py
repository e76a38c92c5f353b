"""Optimizers and learning-rate schedules (optax) from a training config's `optimizer` and `schedule`.

optimizer.name:
- `adamw`: Adam with decoupled weight decay (`weight_decay`, kernels only);
- `adam`, `sgd` (`momentum`, `nesterov`), `rmsprop` (`rmsprop_decay`, `momentum`, `eps`; DeepVariant's
  original optimizer, with eps 1.0): `weight_decay` is added to the gradient of the kernels (L2, as
  DeepVariant's kernel regularisers);
- `clip_norm` (optional) clips the global gradient norm first.

schedule.name (all with a linear warmup from 0 over `warmup_steps`):
- `constant`: `learning_rate`;
- `warmup_cosine`: cosine decay from `learning_rate` to `end_learning_rate` at `decay_steps` (default: the
  run's steps; warmup included, as optax);
- `exponential`: `learning_rate * decay_rate ** ((step - warmup_steps) / transition_steps)` (in whole
  transitions with `staircase`), not below `end_learning_rate`.
"""

from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "warmup_cosine", "exponential")

OPTIMIZER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {
        "name": {"enum": list(OPTIMIZERS), "default": "adamw"},
        "weight_decay": {"type": "number", "minimum": 0, "default": 0.0001,
                         "description": "decoupled (adamw) or L2 (others) decay of kernels"},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9, "description": "sgd, rmsprop"},
        "nesterov": {"type": "boolean", "default": False, "description": "sgd"},
        "b1": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9, "description": "adam, adamw"},
        "b2": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.999, "description": "adam, adamw"},
        "eps": {"type": "number", "exclusiveMinimum": 0, "default": 1e-8,
                "description": "adam, adamw, rmsprop (DeepVariant used 1.0 with rmsprop)"},
        "rmsprop_decay": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9, "description": "rmsprop"},
        "clip_norm": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                      "description": "clip the global gradient norm to this (null: no clipping)"},
    },
}  # fmt: skip

SCHEDULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {
        "name": {"enum": list(SCHEDULES), "default": "warmup_cosine"},
        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.001,
                          "description": "peak learning rate (after warmup)"},
        "warmup_steps": {"type": "integer", "minimum": 0, "default": 0},
        "decay_steps": {"type": ["integer", "null"], "minimum": 1, "default": None,
                        "description": "warmup_cosine: steps to reach end_learning_rate (null: the run's steps)"},
        "end_learning_rate": {"type": "number", "minimum": 0, "default": 0.0},
        "decay_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.94,
                       "description": "exponential: factor per transition"},
        "transition_steps": {"type": "integer", "minimum": 1, "default": 1000, "description": "exponential"},
        "staircase": {"type": "boolean", "default": False, "description": "exponential: decay in whole steps"},
    },
}  # fmt: skip


def make_schedule(cfg: dict, steps: int) -> optax.Schedule:
    """The learning rate as a function of the update count (0-based)."""
    lr, warmup = float(cfg["learning_rate"]), int(cfg["warmup_steps"])
    name = cfg["name"]
    if name == "warmup_cosine":
        decay_steps = int(cfg["decay_steps"] or steps)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(decay_steps, warmup + 1),
                                                  end_value=float(cfg["end_learning_rate"]))  # fmt: skip
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "exponential":
        main = optax.exponential_decay(lr, int(cfg["transition_steps"]), float(cfg["decay_rate"]),
                                       staircase=bool(cfg["staircase"]),
                                       end_value=float(cfg["end_learning_rate"]) or None)  # fmt: skip
    else:  # the schema allows only the names above
        raise ValueError(f"unknown schedule {name}")
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _kernels(params):
    """Weight decay applies to kernels (conv and dense weights), not to biases or batch-norm offsets."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: dict, schedule: optax.Schedule) -> optax.GradientTransformation:
    name, wd = cfg["name"], float(cfg["weight_decay"])
    parts = []
    if cfg.get("clip_norm"):
        parts.append(optax.clip_by_global_norm(float(cfg["clip_norm"])))
    if name == "adamw":
        parts.append(optax.adamw(schedule, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"], weight_decay=wd, mask=_kernels))
    else:
        if wd:
            parts.append(optax.add_decayed_weights(wd, mask=_kernels))
        if name == "adam":
            parts.append(optax.adam(schedule, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"]))
        elif name == "sgd":
            parts.append(optax.sgd(schedule, momentum=cfg["momentum"] or None, nesterov=bool(cfg["nesterov"])))
        elif name == "rmsprop":
            parts.append(optax.rmsprop(schedule, decay=cfg["rmsprop_decay"], eps=cfg["eps"],
                                       momentum=cfg["momentum"] or None))  # fmt: skip
        else:  # the schema allows only the names above
            raise ValueError(f"unknown optimizer {name}")
    return parts[0] if len(parts) == 1 else optax.chain(*parts)
