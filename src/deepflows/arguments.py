"""Argument types for the stages' numeric options: a value out of range is refused by argparse, before any
work, with one line `deepflows STAGE: error: argument --chunk-size: must be at least 1, not 0`, instead of
failing deep inside a library.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def at_least(low: int | float, kind: type = int):
    """An argparse type: a number >= `low`."""

    def parse(text: str):
        value = _number(text, kind)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {text}")
        return value

    parse.__name__ = f"{kind.__name__} >= {low}"
    return parse


def above(low: float):
    """An argparse type: a number > `low`."""

    def parse(text: str):
        value = _number(text, float)
        if value <= low:
            raise argparse.ArgumentTypeError(f"must be greater than {low}, not {text}")
        return value

    parse.__name__ = f"number > {low}"
    return parse


def finite_float(text: str) -> float:
    """An argparse type: any finite number (range checks with the option's own rule)."""
    return _number(text, float)


positive_int = at_least(1)
non_negative_int = at_least(0)
# numpy's generators take seeds of 0 to 2**128 - 1; one negative seed would fail deep in a stage.
seed = non_negative_int
positive_float = above(0.0)
non_negative_float = at_least(0.0, float)
