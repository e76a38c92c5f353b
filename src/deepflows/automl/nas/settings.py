"""A live architecture search's settings file (e.g. config/automl/nas.yaml): the child task, the population and
the controller. Validated with its schema; every key has a default, so an empty file is a valid one."""

from __future__ import annotations

from pathlib import Path

from deepflows.automl.nas.child import CELL_CHILD_SCHEMA
from deepflows.automl.search.settings import SEARCH_SCHEMA

NAS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "child": CELL_CHILD_SCHEMA,
        "evolution": {
            "type": "object", "additionalProperties": False, "default": {},
            "properties": {
                "population": {"type": "integer", "minimum": 2, "default": 20,
                               "description": "P: models alive at once (Large-Scale Evolution: seed copies)"},
                "sample": {"type": "integer", "minimum": 1, "default": 5,
                           "description": "S: tournament size (aging and non-aging evolution)"},
            },
        },
        "controller": SEARCH_SCHEMA["properties"]["controller"],
        "inherit_weights": {"type": "boolean", "default": True,
                            "description": "Large-Scale Evolution (pairwise): a child starts from its parent's "
                                           "trained weights; the other algorithms always train from scratch"},
    },
}  # fmt: skip


def load_settings(path: str | Path | None) -> dict:
    """The settings of a file (None: all defaults), validated; one line naming the key for anything wrong."""
    from deepflows.automl.search import settings

    return settings.load_settings(path, NAS_SCHEMA)
