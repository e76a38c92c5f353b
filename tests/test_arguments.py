"""Numeric options out of range are refused by argparse before any work, on one line naming the option."""

from __future__ import annotations

import argparse

import pytest

from deepflows import cli
from deepflows.arguments import at_least, non_negative_float, positive_float, positive_int, seed


@pytest.mark.parametrize("kind, text, value", [
    (positive_int, "3", 3), (seed, "0", 0), (non_negative_float, "0", 0.0), (positive_float, "1e-4", 1e-4),
    (at_least(16), "16", 16),
])  # fmt: skip
def test_values_in_range_are_parsed(kind, text, value):
    assert kind(text) == value


@pytest.mark.parametrize("kind, text, words", [
    (positive_int, "0", "must be at least 1, not 0"), (positive_int, "2.5", "'2.5' is not an integer"),
    (seed, "-1", "must be at least 0, not -1"), (positive_float, "0", "must be greater than 0.0, not 0"),
    (non_negative_float, "nan", "must be a finite number, not nan"), (positive_float, "inf", "finite"),
])  # fmt: skip
def test_values_out_of_range_are_refused(kind, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        kind(text)


def test_the_cli_refuses_on_one_line_naming_the_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["ingest-image", "--image", "x.png", "--out", "x.ome.zarr", "--pixel-size", "-1"])
    assert stopped.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "deepflows ingest-image: error: argument --pixel-size: must be greater than 0.0, not -1"
