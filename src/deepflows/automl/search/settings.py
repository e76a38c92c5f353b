"""A search's settings file (e.g. config/automl/nos.yaml): the child task, the batch, and each proposer's
hyperparameters. Validated with its schema; every key has a default, so an empty file is a valid one."""

from __future__ import annotations

from pathlib import Path

from deepflows.automl.search.child import CHILD_SCHEMA

ALGORITHMS = ("controller", "random", "evolution")

SEARCH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "child": CHILD_SCHEMA,
        "batch": {"type": "integer", "minimum": 1, "default": 8,
                  "description": "rules proposed (and evaluated in parallel) per step of the search"},
        "controller": {
            "type": "object", "additionalProperties": False, "default": {},
            "properties": {
                "hidden": {"type": "integer", "minimum": 1, "default": 32, "description": "LSTM width"},
                "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.005, "description": "Adam"},
                "entropy_weight": {"type": "number", "minimum": 0, "default": 0.01,
                                   "description": "bonus for the entropy of the token distributions"},
                "baseline_decay": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9,
                                   "description": "the REINFORCE baseline: moving average of rewards"},
            },
        },
        "evolution": {
            "type": "object", "additionalProperties": False, "default": {},
            "properties": {
                "population": {"type": "integer", "minimum": 2, "default": 20},
                "sample": {"type": "integer", "minimum": 1, "default": 5, "description": "tournament size"},
                "aging": {"type": "boolean", "default": True,
                          "description": "the oldest dies (regularized evolution); false: the worst dies"},
            },
        },
    },
}  # fmt: skip


def load_settings(path: str | Path | None, schema: dict = SEARCH_SCHEMA) -> dict:
    """The settings of a file (None: all defaults) under `schema` (this one, or the architecture search's),
    validated; one line naming the key for anything wrong."""
    from deepflows.config import ConfigError, read_yaml, validate_config

    raw = read_yaml(path) if path else {}
    settings = validate_config(raw or {}, path or "search settings", schema, combinations=False)
    if settings["evolution"]["sample"] > settings["evolution"]["population"]:
        raise ConfigError(f"{path}: evolution.sample must not exceed evolution.population")
    return settings
