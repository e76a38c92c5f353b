"""The live architecture search: the durable population store, the asynchronous controller, resuming after a
kill, Large-Scale Evolution's weight inheritance, the command line, Slurm workers, and the report."""

from __future__ import annotations

import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepflows.automl.nas import cells
from deepflows.automl.nas.live import run_live_search
from deepflows.automl.nas.store import PopulationStore
from deepflows.automl.search.jobs import Pool
from deepflows.errors import UserError

DEEPFLOWS = str(Path(sys.executable).parent / "deepflows")
SETTINGS = {"child": {}, "evolution": {"population": 6, "sample": 3}, "inherit_weights": True,
            "controller": {"hidden": 8, "learning_rate": 0.01, "entropy_weight": 0.01, "baseline_decay": 0.9}}  # fmt: skip


def conv3x3_count(cell, child, seed, weights_in, weights_out):
    """A stand-in child: the reward counts 3x3 convolutions (plus a little seed noise); it records where its
    weights came from, as a trained child would read them."""
    inherited = Path(weights_in).read_text() if weights_in else None
    Path(weights_out).write_text(cells.to_text(cell))
    return {"status": "ok", "reward": sum(op == 3 for op in cell) + (seed % 97) / 1e4, "inherited": inherited}


def search(workdir, algorithm, models, init="random", seed=0, evaluate=conv3x3_count):
    with Pool("inline", 1) as pool:
        return run_live_search(workdir, algorithm, seed, models, SETTINGS, pool, init=init, evaluate=evaluate)


# ----------------------------------------------------------------------------- the store


def test_store_keeps_models_and_the_proposer_state_together(tmp_path):
    store = PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging"})
    first, seed = store.start([3, 0, 3, 1, 0, 1], None, lambda i: 100 + i, {"members": []})
    assert (first, seed) == (0, 100)
    second, _ = store.start([0] * 6, first, lambda i: i, {"members": []})
    store.finish(first, {"status": "ok", "reward": 0.9, "seconds": 1.0}, {"members": ["one"]})
    assert store.proposer_state() == {"members": ["one"]}
    with pytest.raises(RuntimeError, match="evaluated twice"):
        store.finish(first, {"status": "ok", "reward": 0.8}, {"members": []})
    assert store.proposer_state() == {"members": ["one"]}  # the refused finish changed nothing
    store.close()
    again = PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging"})  # a restart: `second` was in flight
    assert again.lost == 1 and again.incarnation == 2
    models = again.models()
    assert [m["status"] for m in models] == ["done", "lost"]
    assert models[0]["seconds"] == 1.0 and models[1]["parent"] == 0
    again.close()


def test_store_refuses_another_search_and_a_broken_file(tmp_path):
    PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging", "seed": 0}).close()
    with pytest.raises(UserError, match="different seed"):
        PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging", "seed": 1})
    (tmp_path / "bad.sqlite").write_text("not a database" * 100)
    with pytest.raises(UserError, match="bad.sqlite: not a usable search store"):
        PopulationStore(tmp_path / "bad.sqlite", {})


# ----------------------------------------------------------------------------- the controller


@pytest.mark.parametrize("algorithm", ["aging", "non-aging", "random", "reinforce", "pairwise"])
def test_every_algorithm_runs_its_budget_and_gives_the_same_answer_twice(tmp_path, algorithm):
    first = search(tmp_path / "a", algorithm, 20)
    second = search(tmp_path / "b", algorithm, 20)
    assert len(first) == 20 and all(m["status"] == "done" for m in first)
    assert [m["cell"] for m in first] == [m["cell"] for m in second]


def test_evolution_climbs_where_random_search_wanders(tmp_path):
    """On the stand-in reward (number of 3x3 convolutions, at most 6), aging evolution's best after 60 models beats
    random search's on most seeds: the tournament keeps mutating good cells."""
    wins = 0
    for seed in range(5):
        evo = max(m["reward"] for m in search(tmp_path / f"e{seed}", "aging", 60, seed=seed))
        rnd = max(m["reward"] for m in search(tmp_path / f"r{seed}", "random", 60, seed=seed))
        wins += int(evo // 1) > int(rnd // 1)
    assert wins >= 4


def test_hand_seeded_population_starts_from_the_hand_design(tmp_path):
    models = search(tmp_path / "h", "aging", 12, init="hand")
    assert models[0]["cell"] == list(cells.HAND_DESIGNED) and models[0]["parent"] is None
    hand = np.asarray(cells.HAND_DESIGNED)
    for m in models[1 : SETTINGS["evolution"]["population"]]:  # the rest of the first population: one-edge mutants
        assert np.sum(np.asarray(m["cell"]) != hand) == 1 and m["parent"] is None
    with pytest.raises(ValueError, match="seeds a population"):
        search(tmp_path / "r", "random", 2, init="hand")


def test_pairwise_evolution_starts_trivial_and_children_inherit_their_parents_weights(tmp_path):
    models = search(tmp_path / "p", "pairwise", 30)
    population = SETTINGS["evolution"]["population"]
    assert all(m["cell"] == list(cells.TRIVIAL) for m in models[:population])
    children = models[population:]
    assert children and all(m["parent"] is not None for m in children)
    by_id = {m["id"]: m for m in models}
    for child in children:  # each child read its parent's weights file
        assert child["inherited"] == cells.to_text(by_id[child["parent"]]["cell"])
        assert np.sum(np.asarray(child["cell"]) != np.asarray(by_id[child["parent"]]["cell"])) == 1
    aging = search(tmp_path / "a", "aging", 12)
    assert all(m["inherited"] is None for m in aging)  # the other algorithms train from scratch


def failing_sometimes(cell, child, seed, weights_in, weights_out):
    if cell[0] == 4:
        raise FloatingPointError("loss is NaN")
    return conv3x3_count(cell, child, seed, weights_in, weights_out)


def test_a_child_that_raises_is_a_failed_model_not_a_dead_search(tmp_path):
    models = search(tmp_path / "f", "random", 25, evaluate=failing_sometimes)
    failed = [m for m in models if m["status"] == "failed"]
    assert failed and all(m["cell"][0] == 4 and "loss is NaN" in m["error"] for m in failed)
    assert len(models) == 25 and all(m["status"] == "done" for m in models if m["cell"][0] != 4)
