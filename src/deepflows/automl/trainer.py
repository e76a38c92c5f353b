"""Many small training runs at once: one compiled program trains N copies of a task's model side by side
(jax.vmap), each with its own seed and its own hyperparameters (a learning rate, a rule's tokens), so that a
learning-rate grid, a batch of seeds or a batch of candidate rules costs one compilation, not one per run.

This is the automl family's one loop, used by the optimizer search's child task and by the transfer and
schedule benchmarks alike. It keeps nothing on disk: its runs are minutes long and are re-run, not resumed
(the search is resumable one level up, in deepflows.automl.search.store). deepflows.nn.loop is the loop for
one model trained for hours, with checkpoints and a workdir.

A task (deepflows.automl.tasks) gives:
    name, metric, higher_is_better   what the run is judged by on an evaluation split
    model(rngs) -> nnx.Module       a fresh model
    batch(key) -> batch             one random training batch (jittable; a function of the key alone)
    loss(model, batch, key)         the mean training loss (key: dropout)
    evaluate(model, split)          the metric on a named evaluation split (jittable)
    chance_loss                     the loss of a model that has learnt nothing (ln of the class count): a run
                                    whose loss is not clearly below it after the first evaluation has failed
    bind(model, shared) (optional)  what loss and evaluate get as the model, given the `shared` arrays: for a model
                                    that takes part of its structure as traced data (a NAS cell's operations)

make_tx(h) builds the optax transformation of one run from its hyperparameters h (a dict of traced arrays:
one row of `hparams`), so a learning rate or a rule can differ between runs of one compiled program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

OK, NOT_FINITE, NO_PROGRESS = 0, 1, 2
FAILURES = {OK: "ok", NOT_FINITE: "not finite", NO_PROGRESS: "no progress"}


@dataclass
class Runs:
    """What train_many measured: per run (rows) and per evaluation (columns)."""

    step: np.ndarray  # (E,) steps at which the runs were evaluated
    loss: np.ndarray  # (N, E) mean training loss over the steps since the previous evaluation
    metric: np.ndarray  # (N, E) the task's metric on the evaluation split (NaN once a run failed)
    status: np.ndarray  # (N,) OK, NOT_FINITE or NO_PROGRESS
    state: tuple | None = None  # (params, rest): the runs' final nnx.State (leading axis: run), to save

    @property
    def final(self) -> np.ndarray:
        """Each run's metric at its last evaluation (NaN for a run that failed)."""
        return self.metric[:, -1]


def _split(model):
    from flax import nnx

    return nnx.split(model, nnx.Param, ...)


def train_many(task, make_tx: Callable, hparams: dict, seeds: Sequence[int], steps: int, *, eval_every: int,
               check_every: int | None = None, shared: dict | None = None, split: str = "tune",
               progress: float = 0.9, init: tuple | None = None) -> Runs:  # fmt: skip
    """Train len(seeds) runs of `task` for `steps` steps, evaluating on `split` every `eval_every` steps.

    Runs are checked for failure every `check_every` steps (default: eval_every; a divisor of it), which can be
    more often than the evaluations: a degenerate rule stops early without paying for an evaluation.
    hparams: name -> array whose first axis has one row per run; shared: name -> array that all runs share
    (make_tx sees both in one dict; a rule's tokens shared by a learning-rate grid stay unbatched, so lax.switch
    on them runs one branch, not all). A run fails when its loss or parameters stop
    being finite, or when its mean loss over the first check interval is not below `progress` times the
    task's chance loss; the whole batch stops early once every run has failed (a degenerate rule costs one
    interval, not the full budget).
    init: (params, rest) as nnx.State, one model's (unbatched): every run starts from it instead of a fresh init
    (weight inheritance); the optimizer state starts fresh."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    check_every = check_every or eval_every
    if steps % eval_every or eval_every % check_every:
        raise ValueError(f"steps {steps}, eval_every {eval_every}, check_every {check_every}: each must divide "
                         "the one before")
    seeds = np.asarray(seeds, dtype=np.uint32)
    n = len(seeds)
    hp = {k: jnp.asarray(v) for k, v in hparams.items()}
    common = {k: jnp.asarray(v) for k, v in (shared or {}).items()}
    for k, v in hp.items():
        if v.shape[:1] != (n,):
            raise ValueError(f"hparams[{k!r}] has {v.shape[:1]} rows for {n} runs")
    init_all, start_all, interval_all = _programs(task, make_tx, check_every, split)
    carry = init_all(seeds, hp, common) if init is None else start_all(init, hp, common)
    status = np.zeros(n, dtype=np.int8)
    rows_loss, rows_metric, evaluated = [], [], []
    losses = []
    for start in range(0, steps, check_every):
        end = start + check_every
        evaluate = end % eval_every == 0
        carry, loss, metric, finite = interval_all(carry, jnp.asarray(start), jnp.asarray(evaluate), hp, common,
                                                   seeds)  # fmt: skip
        loss, finite = np.asarray(loss), np.asarray(finite)
        losses.append(loss)
        status[(status == OK) & ~finite] = NOT_FINITE
        if start == 0:
            status[(status == OK) & ~(loss < progress * task.chance_loss)] = NO_PROGRESS
        if evaluate:
            metric = np.asarray(metric, dtype=np.float64)
            metric[status != OK] = np.nan
            rows_loss.append(np.mean(losses, 0))
            rows_metric.append(metric)
            evaluated.append(end)
            losses = []
        if np.all(status != OK):
            break
    if not evaluated:  # every run failed before the first evaluation
        return Runs(np.asarray([end]), np.mean(losses, 0)[:, None], np.full((n, 1), np.nan), status, carry[:2])
    return Runs(np.asarray(evaluated), np.stack(rows_loss, 1), np.stack(rows_metric, 1), status, carry[:2])


@functools.lru_cache(maxsize=16)
def _programs(task, make_tx: Callable, interval_steps: int, split: str):
    """The compiled init, start (from given weights) and interval programs of (task, make_tx, interval_steps, split):
    a search evaluating thousands of rules with one module-level make_tx compiles them once per worker process."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    graphdef, _, _ = _split(nnx.eval_shape(lambda: task.model(nnx.Rngs(0))))
    bind = getattr(task, "bind", lambda model, shared: model)

    def init(seed, h, common):
        _, params, rest = _split(task.model(nnx.Rngs(jax.random.key(seed))))
        return start((params, rest), h, common)

    def start(state, h, common):
        params, rest = state
        return params, rest, make_tx({**h, **common}).init(params)

    def interval(carry, start, evaluate, h, common, seed):
        tx = make_tx({**h, **common})

        def one(carry, step):
            params, rest, opt_state = carry
            key_batch, key_loss = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
            batch = task.batch(key_batch)

            def loss_fn(p):
                model = nnx.merge(graphdef, p, rest, copy=True)  # fresh Variables: BatchNorm may update them here
                value = task.loss(bind(model, common), batch, key_loss)
                return value, _split(model)[2]

            (value, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, new_rest, opt_state), value

        carry, losses = jax.lax.scan(one, carry, start + jnp.arange(interval_steps))
        params, rest, _ = carry
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))

        def measure():  # the model made inside the cond, whose trace an NNX transform in the model may update
            model = nnx.merge(graphdef, params, rest, copy=True)
            return task.evaluate(bind(model, common), split).astype(jnp.float32)

        metric = jax.lax.cond(evaluate, measure, lambda: jnp.float32(jnp.nan))
        return carry, jnp.mean(losses), metric, finite & jnp.all(jnp.isfinite(losses))

    return (jax.jit(jax.vmap(init, in_axes=(0, 0, None))), jax.jit(jax.vmap(start, in_axes=(None, 0, None))),
            jax.jit(jax.vmap(interval, in_axes=(0, None, None, 0, None, 0)), donate_argnums=0))
