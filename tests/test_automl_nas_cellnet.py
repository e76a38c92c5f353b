"""The architecture search's child: the CellNet (one program for every cell), its training on digits, weight
inheritance through weights files, and retraining with several seeds."""

from __future__ import annotations

import numpy as np
import pytest
from automl_digits import write_separable_digits

from deepflows.automl.nas import cells
from deepflows.automl.nas.child import CELL_CHILD_SCHEMA

NONE = (0, 0, 0, 0, 0, 0)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """Tiny child settings on a small MNIST-format CSV whose classes are separable: class k lights up row block
    k."""
    path = write_separable_digits(tmp_path_factory.mktemp("digits") / "digits.csv.gz")
    defaults = {k: v["default"] for k, v in CELL_CHILD_SCHEMA["properties"].items()}
    return {**defaults, "data": str(path), "steps": 40, "check_every": 10, "channels": 4, "batch_size": 16}


@pytest.fixture(scope="module")
def parent(child, tmp_path_factory):
    """The hand-designed cell trained with its weights written out (shared by the tests below: one compilation)."""
    from deepflows.automl.nas.child import evaluate_cell

    path = tmp_path_factory.mktemp("weights") / "parent.msgpack"
    return evaluate_cell(list(cells.HAND_DESIGNED), child, weights_out=str(path)), path


def test_hand_designed_cell_learns_the_digits(parent):
    result, path = parent
    assert result["status"] == "ok" and result["steps"] == 40 and result["weights"] == str(path)
    assert result["reward"] > 0.5  # chance: 0.1
    assert result["cell"] == cells.to_text(cells.HAND_DESIGNED) and path.is_file()


def test_one_compiled_program_trains_every_cell(child, parent):
    from deepflows.automl import trainer
    from deepflows.automl.nas.child import cell_tx, evaluate_cell, task_of

    _, _, interval_all = trainer._programs(task_of(child), cell_tx, child["check_every"], "tune")
    misses, traced = trainer._programs.cache_info().misses, interval_all._cache_size()
    other = evaluate_cell(list(cells.TRIVIAL), child)
    assert other["status"] == "ok" and other["params"] < parent[0]["params"]  # another network, same program
    assert trainer._programs.cache_info().misses == misses and interval_all._cache_size() == traced == 1


def test_every_cell_has_the_same_parameters(child, parent, tmp_path):
    import jax

    from deepflows.automl.nas.child import evaluate_cell, live_params, load_weights, task_of

    out = tmp_path / "none.msgpack"
    dead = evaluate_cell(list(NONE), child, weights_out=str(out))
    assert dead["status"] == "no progress" and dead["reward"] == 0.0 and dead["weights"] == str(out)
    task = task_of(child)
    a, b = load_weights(task, parent[1]), load_weights(task, out)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]
    # the live count: the fixed stack, plus two 3x3 ReLU-Conv-BN per cell for the hand-designed one
    c = child["channels"]
    convs = sum(2 * (w * w * 9 + 2 * w) for w in (c, 2 * c, 4 * c))
    assert live_params(cells.HAND_DESIGNED, child) - live_params(NONE, child) == convs
    assert live_params(cells.TRIVIAL, child) == live_params(NONE, child) == parent[0]["params"] - convs


def test_a_cell_without_live_edges_outputs_constant_logits(child):
    import jax.numpy as jnp
    from flax import nnx

    from deepflows.automl.nas.cellnet import cellnet

    logits = nnx.jit(lambda net, x, cell: net(x, cell, train=False))
    net = cellnet(nnx.Rngs(0), channels=2, stem_stride=2)
    images = jnp.asarray(np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32))
    none = np.asarray(logits(net, images, jnp.asarray(NONE)))
    assert (none == none[0]).all()
    hand = np.asarray(logits(net, images, jnp.asarray(cells.HAND_DESIGNED)))
    assert not np.allclose(hand, hand[0])


def test_a_child_starts_from_its_parents_weights(child, parent, tmp_path):
    import jax
    from flax import nnx

    from deepflows.automl.nas.child import _train, evaluate_cell, load_weights, task_of

    task = task_of(child)
    params, rest = load_weights(task, parent[1])
    net = nnx.merge(nnx.split(task.model(nnx.Rngs(0)))[0], params, rest)
    cell = {"cell": np.asarray(cells.HAND_DESIGNED, np.int32)}
    assert round(float(task.evaluate(task.bind(net, cell), "tune")), 4) == parent[0]["reward"]
    # at learning rate 0 the run's parameters stay the saved ones, exactly
    runs = _train(cells.HAND_DESIGNED, {**child, "learning_rate": 0.0}, [0], 10, init=(params, rest))
    for saved, after in zip(jax.tree.leaves(params), jax.tree.leaves(runs.state[0])):
        np.testing.assert_array_equal(saved, np.asarray(after)[0])
    # a mutated child trains on from them: its first loss is far below a fresh network's
    mutant = cells.mutate(cells.HAND_DESIGNED, np.random.default_rng(0))
    inherited = _train(mutant, child, [0], 10, init=(params, rest))
    fresh = _train(cells.HAND_DESIGNED, child, [0], 10)
    assert inherited.loss[0, 0] < fresh.loss[0, 0]
    assert evaluate_cell(list(cells.HAND_DESIGNED), child, weights_in=str(parent[1]))["status"] == "ok"


def test_weights_of_another_network_are_refused(child, parent):
    from deepflows.automl.nas.child import load_weights, task_of
    from deepflows.errors import UserError

    with pytest.raises(UserError, match="another network"):
        load_weights(task_of({**child, "channels": 2}), parent[1])
    with pytest.raises(UserError, match="not a weights file"):
        load_weights(task_of(child), child["data"])


def test_retrain_gives_one_accuracy_per_seed(child):
    from deepflows.automl.nas.child import retrain

    accuracies = retrain(cells.HAND_DESIGNED, child, [0, 1], 20)
    assert len(accuracies) == 2 and all(0.1 < a <= 1 for a in accuracies) and accuracies[0] != accuracies[1]


def test_fingerprint_follows_the_settings(child):
    from deepflows.automl.nas.child import fingerprint

    assert fingerprint(child) == fingerprint(dict(child))
    assert fingerprint({**child, "channels": 8}) != fingerprint(child)
