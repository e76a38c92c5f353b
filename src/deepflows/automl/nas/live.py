"""The live architecture search: asynchronous workers train children while the controller keeps every worker busy.

Each time a worker reports, the controller records the result and the proposer's new state in the store (one
transaction), then proposes the next child from the population as it is now (Real et al. 2019 ran aging evolution
this way on hundreds of workers) and hands it to the free worker. The population lives in the store
(deepflows.automl.nas.store), so a killed controller loses only the children in flight and a restart goes on
from there; workers are plain functions of plain data (local processes, or Dask workers that are Slurm jobs).

Children born by mutation can start from their parent's trained weights (Large-Scale Evolution's weight
inheritance): each model's weights are kept in WORKDIR/weights/ID.msgpack for its children.

Because workers finish in whatever order they finish, two runs of a search differ unless it runs with one worker
in-process (`inline`); each child's training seed is a function of (search seed, model id) alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepflows.automl.nas import cells
from deepflows.automl.nas.algorithms import SEEDED, make_proposer

log = logging.getLogger("deepflows.automl")
STORE = "population.sqlite"
INITS = ("random", "hand")


def make_cell_proposer(algorithm: str, settings: dict, seed: int, init: str = "random"):
    """A proposer over NAS-Bench-201 cells. init="hand": the first child is the hand-designed cell and the rest of
    the first population its one-edge mutants ("combining evolution and hand design"; Large-Scale Evolution's
    copies are then copies of the hand design); random: random cells, and Large-Scale Evolution's trivial cell."""
    if init == "hand" and algorithm not in SEEDED:
        raise ValueError(f"init 'hand' seeds a population: for {', '.join(SEEDED)}, not {algorithm}")
    hand = init == "hand"
    evo = settings["evolution"]

    def controller():
        from deepflows.automl.search.controller import RuleController

        return RuleController(cells.CHOICES, (len(cells.EDGES),), seed=seed, **settings["controller"])

    return make_proposer(algorithm, _HandSeeded(list(cells.HAND_DESIGNED)) if hand else cells.sample,
                         cells.mutate, cells.HAND_DESIGNED if hand else cells.TRIVIAL, evo["population"],
                         evo["sample"], controller)  # fmt: skip


class _HandSeeded:
    """Draws for a population seeded by hand design: the hand-designed cell first, then its one-edge mutants."""

    def __init__(self, hand: list[int]):
        self.hand, self.first = hand, True

    def __call__(self, rng: np.random.Generator) -> list[int]:
        if self.first:
            self.first = False
            return list(self.hand)
        return cells.mutate(self.hand, rng)


def training_seed(search_seed: int, model_id: int) -> int:
    return int(np.random.default_rng([search_seed, model_id]).integers(2**31))


def run_live_search(workdir: str | Path, algorithm: str, seed: int, models: int, settings: dict, pool,
                    init: str = "random", evaluate: Callable | None = None, fingerprint: str = "") -> list[dict]:  # fmt: skip
    """Run (or resume) the search in workdir until `models` children have finished; returns every model started
    (deepflows.automl.nas.store.PopulationStore.models). evaluate(cell, child, seed, weights_in, weights_out) -> dict
    with reward and status (default: deepflows.automl.nas.child.evaluate_cell)."""
    from deepflows.automl.nas.store import PopulationStore

    if evaluate is None:
        from deepflows.automl.nas.child import evaluate_cell as evaluate
    workdir = Path(workdir)
    (workdir / "weights").mkdir(parents=True, exist_ok=True)
    own = {"aging": "evolution", "non-aging": "evolution", "pairwise": "evolution", "reinforce": "controller"}
    identity = {"algorithm": algorithm, "seed": seed, "init": init, "fingerprint": fingerprint,
                "proposer": settings.get(own.get(algorithm, ""), None),
                "inherit": bool(settings["inherit_weights"] and algorithm == "pairwise")}  # fmt: skip
    store = PopulationStore(workdir / STORE, identity)
    proposer = make_cell_proposer(algorithm, settings, seed, init)
    saved = store.proposer_state()
    if saved is not None:
        proposer.restore(saved)
    if isinstance(getattr(proposer, "draw", None), _HandSeeded):  # the hand design is drawn before any other model
        proposer.draw.first = store.count("done", "failed", "running", "lost") == 0
    if store.lost:
        log.info("resuming: %d models were in flight when the search stopped; they are lost", store.lost)

    def weights(model_id):
        return str(workdir / "weights" / f"{model_id}.msgpack")

    in_flight: dict = {}  # future -> (id, cell)
    try:
        while store.count("done", "failed") < models or in_flight:
            while len(in_flight) < pool.workers and store.count("done", "failed") + len(in_flight) < models:
                next_id = store.count("done", "failed", "running", "lost")
                cell, parent = proposer.propose_with_parents(1, np.random.default_rng([seed, next_id]))[0]
                parent_id = None if parent is None else parent["id"]
                model_id, child_seed = store.start(cell, parent_id, lambda i: training_seed(seed, i), proposer.state())
                inherit = identity["inherit"] and parent_id is not None
                future = pool.submit(evaluate, list(cell), settings["child"], child_seed,
                                     weights(parent_id) if inherit else None, weights(model_id))  # fmt: skip
                in_flight[future] = (model_id, cell)
            for future in pool.wait_any(list(in_flight)):
                model_id, cell = in_flight.pop(future)
                result = _result(future)
                if result.get("reward") is not None:
                    proposer.observe([cell], [result["reward"]], [{"id": model_id}])
                store.finish(model_id, result, proposer.state())
                _log_progress(store, model_id, cell, result, models)
        return store.models()
    finally:
        store.close()


def _result(future) -> dict:
    """The worker's result, or a failed one saying why (an exception in the child is the child's failure)."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001
        if type(error).__name__ in ("BrokenProcessPool", "KilledWorker"):
            raise  # the pool itself is gone: stop, the store lets a rerun go on
        return {"status": "error", "reward": None, "error": f"{type(error).__name__}: {error}"}


def _log_progress(store, model_id: int, cell, result: dict, models: int) -> None:
    done = store.count("done", "failed")
    reward = result.get("reward")
    shown = "failed" if reward is None else f"{reward:.4f}"
    log.info("model %d (%d/%d) %s: %s", model_id, done, models, cells.to_text(cell), shown)
