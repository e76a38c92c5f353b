"""Tabular NAS benchmarks and the controlled comparison of search algorithms on them."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from deepflows.automl.nas import cells, comparison, tabular
from deepflows.automl.search.proposers import Evolution
from deepflows.errors import UserError


@pytest.fixture(scope="module")
def cifar10():
    return tabular.load("nasbench201", "cifar10")


@pytest.fixture(scope="module")
def conv_count():
    """A known answer: a cell's score is its number of nor_conv_3x3 edges, three noisy seeds each; the best cell
    is all nor_conv_3x3 (6)."""
    rng = np.random.default_rng(0)
    values = {"".join(map(str, c)): sum(op == 3 for op in c) + rng.normal(0, 0.3, 3)
              for c in itertools.product(range(5), repeat=6)}  # fmt: skip
    return tabular.Table("synthetic", "conv3x3", [5] * 6, [f"Op{i}" for i in range(6)], "score", 1.0, values)


def test_nasbench201_lookups(cifar10):
    assert cifar10.mean(cells.HAND_DESIGNED) == pytest.approx(90.86, abs=0.01)  # NAS-Bench-201's ResNet row
    disconnected = (3, 0, 0, 0, 0, 0)  # node 1 computes, nothing carries it to the output
    assert not any(cells.live_edges(disconnected))
    assert cifar10.mean(disconnected) == pytest.approx(10, abs=0.5)  # chance on 10 classes
    cell, best = cifar10.best
    assert best == max(v.mean() for v in cifar10.values.values()) and cifar10.mean(cell) == best


def test_queries_are_one_seeds_value(cifar10):
    rng = np.random.default_rng(1)
    seeds = cifar10.values[cells.key(cells.HAND_DESIGNED)]
    draws = {cifar10.query(cells.HAND_DESIGNED, rng) for _ in range(60)}
    assert draws == set(seeds.tolist())


def test_other_spaces_and_bad_names():
    hpolib = tabular.load("hpolib", "naval_propulsion")
    assert hpolib.choices == [2, 2, 4, 3, 3, 6, 2, 6, 6] and hpolib.sign == -1.0
    assert all(v < 0 for v in hpolib.values[hpolib.key(hpolib.best[0])])  # negated MSE: higher is better
    rng = np.random.default_rng(2)
    cell = hpolib.sample(rng)
    child = hpolib.mutate(cell, rng)
    assert sum(a != b for a, b in zip(cell, child)) == 1 and all(0 <= c < n for c, n in zip(child, hpolib.choices))
    with pytest.raises(UserError, match=r"unknown nasbench201 dataset 'mnist' \(one of cifar10, cifar100, imagenet\)"):
        tabular.load("nasbench201", "mnist")
    with pytest.raises(UserError, match="unknown tabular benchmark"):
        tabular.load("nasbench101", "cifar10")


def test_table_mutation_is_the_cell_spaces(cifar10):
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(20):
        assert cifar10.mutate(cells.HAND_DESIGNED, a) == cells.mutate(cells.HAND_DESIGNED, b)


@pytest.mark.parametrize("algorithm", comparison.ALGORITHMS)
def test_each_algorithm_is_a_function_of_its_seed(conv_count, algorithm):
    settings = comparison.Settings(population=5, sample=2)
    first = comparison.run(algorithm, conv_count, 7, 30, settings)
    assert len(first["keys"]) == 30
    assert first == comparison.run(algorithm, conv_count, 7, 30, settings)
    assert first != comparison.run(algorithm, conv_count, 8, 30, settings)


def test_evolution_beats_random_where_the_answer_is_known(conv_count):
    settings = comparison.Settings(population=10, sample=5)
    rows = comparison.run_rows(["aging", "random"], conv_count, range(20), 100, settings)
    final = pd.DataFrame(rows).groupby("algorithm")["final"].mean()
    assert final["aging"] > final["random"] + 0.5


def test_final_pick_and_regret_by_hand():
    trace = {"keys": ["a", "b", "c", "d"], "rewards": [1.0, 3.0, 2.0, 3.0], "means": [1.5, 2.0, 2.5, 4.0]}
    # the highest OBSERVED reward picks b (first of the tie with d), scored by its seed-mean, not c's or d's
    assert comparison.summary(trace, "d", 4.0) == {"pick": "b", "final": 2.0, "regret": 2.0, "found_best": True,
                                                   "picked_best": False}  # fmt: skip
    assert comparison.best_so_far(trace).tolist() == [1.5, 2.0, 2.0, 2.0]


def test_aging_removes_the_oldest_and_non_aging_the_worst():
    survivors = {}
    for aging in (True, False):
        evolution = Evolution(lambda rng: None, lambda c, rng: c, population=3, sample=2, aging=aging)
        evolution.observe(["old-good", "bad", "middle"], [5.0, 1.0, 3.0])
        evolution.observe(["child"], [2.0])
        survivors[aging] = [m["candidate"] for m in evolution.members]
    assert survivors == {True: ["bad", "middle", "child"], False: ["old-good", "middle", "child"]}


def test_summaries_table_and_plot(conv_count, tmp_path):
    settings = comparison.Settings(population=5, sample=2)
    runs = pd.DataFrame(comparison.run_rows(["aging", "random", "reinforce"], conv_count, range(4), 20, settings))
    text = comparison.table_markdown(runs)
    assert "no test split" in text and "| synthetic | conv3x3 | aging | 4 | 20 | score |" in text and "Mann-Whitney" in text
    claims = comparison.claims(runs)
    assert set(claims["claim"]) == {"aging vs reinforce", "reinforce vs random", "aging vs random"}
    assert ((claims["p"] >= 0) & (claims["p"] <= 1)).all()
    comparison.plot_curves(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
