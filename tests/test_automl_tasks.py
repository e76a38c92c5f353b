"""The transfer tasks (digits, Austen characters) under train_many: a few steps, a finite metric, a falling loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepflows.errors import UserError


def adam(h):
    import optax

    return optax.adam(h["lr"])


def check_trains(task, steps: int, eval_every: int):
    from deepflows.automl.trainer import OK, train_many

    runs = train_many(task, adam, {"lr": np.full(2, 1e-2, np.float32)}, [0, 1], steps, eval_every=eval_every,
                      progress=np.inf)  # fmt: skip
    assert np.all(runs.status == OK)
    assert np.all(np.isfinite(runs.metric))
    assert np.all(runs.loss[:, -1] < 0.9 * runs.loss[:, 0])
    return runs


def test_digits_task():
    from deepflows.automl.tasks.digits import DigitsTask

    task = DigitsTask(width=8, blocks=1)
    assert task.sizes == {"train": 1258, "tune": 270, "test": 269}
    runs = check_trains(task, 60, 20)
    assert np.all(runs.final > 0.2)  # chance: 0.1


@pytest.fixture
def novels(tmp_path):
    words = "the quick brown fox jumps over a lazy dog while emma reads . ".split()
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        paragraphs = [" ".join(rng.choice(words, 40)).capitalize() for _ in range(60)]
        (tmp_path / f"{name}.txt").write_text("\n\n".join(paragraphs) + "\n")
    return tmp_path


def test_chars_task(novels):
    from deepflows.automl.tasks.chars import CharsTask, novel_texts, split_texts

    texts = novel_texts(novels)
    splits = split_texts(texts)
    # by position: each novel's tail is test, the 5% before it tune
    assert splits["test"].split("\n\n")[-1] in texts[1][-len(texts[1]) // 20 :]
    assert sum(len(s) for s in splits.values()) == sum(len(t) for t in texts) + 3 * 2 * (len(texts) - 1)
    task = CharsTask(novels, batch_size=8, context=16, width=16, layers=1, heads=2)
    assert task.vocab[0] == "\0" and task.chance_loss == pytest.approx(math.log(len(task.vocab)))
    runs = check_trains(task, 60, 20)
    assert np.all(runs.final < math.log2(len(task.vocab)))  # bits per character below a uniform guess


def test_chars_task_needs_novels(tmp_path):
    from deepflows.automl.tasks.chars import CharsTask

    with pytest.raises(UserError, match="no \\*.txt novels"):
        CharsTask(tmp_path)
