"""The resumable search: propose a batch of rules, score the ones the cache does not hold (as parallel jobs),
tell the proposer their rewards, save the state, repeat until the budget of rules is spent.

State: WORKDIR/state.json (atomic rewrite after every batch: the history so far and the proposer's state). A
killed search restarts from its last complete batch; evaluations that finished before the kill are in the cache
and are not run again. The random draws of batch b come from (seed, b) alone (the controller's from its seed and
its step count, which its saved state restores with its weights), so an interrupted search ends as an
uninterrupted one would (tests/test_automl_search.py checks it for the three proposers).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from deepflows.automl import grammar
from deepflows.automl.search.cache import EvaluationCache
from deepflows.automl.search.child import evaluate_rule, fingerprint
from deepflows.automl.search.jobs import Pool
from deepflows.errors import UserError
from deepflows.outputs import write_text

log = logging.getLogger("deepflows.automl")
STATE = "state.json"
HISTORY_COLUMNS = ("algorithm", "seed", "index", "batch", "rule", "reward", "status", "learning_rate", "evaluated", "seconds", "elapsed")


# ----------------------------------------------------------------------------- rules as search candidates


def draw_rule(units: int):
    return lambda rng: [list(row) for row in grammar.sample(rng, units).tokens]


def mutate_rule(tokens: list, rng: np.random.Generator, tries: int = 50) -> list:
    """One token changed to another value allowed at its place, retried until the rule's text changes."""
    units = len(tokens)
    sizes = grammar.choices(units)
    text = str(grammar.Rule.from_array(tokens))
    for _ in range(tries):
        flat = np.asarray(tokens).ravel().copy()
        position = rng.integers(len(flat))
        flat[position] = (flat[position] + 1 + rng.integers(sizes[position] - 1)) % sizes[position]
        child = flat.reshape(units, 5).tolist()
        if str(grammar.Rule.from_array(child)) != text:
            return child
    return child


def make_proposer(algorithm: str, settings: dict, seed: int):
    from deepflows.automl.search.proposers import Evolution, RandomSearch

    units = settings["child"]["units"]
    if algorithm == "random":
        return RandomSearch(draw_rule(units))
    if algorithm == "evolution":
        evo = settings["evolution"]
        return Evolution(draw_rule(units), mutate_rule, evo["population"], evo["sample"], evo["aging"])
    if algorithm == "controller":
        from deepflows.automl.search.controller import RuleController

        return RuleController(grammar.choices(units), (units, 5), seed=seed, **settings["controller"])
    raise ValueError(f"algorithm {algorithm!r}")


# ----------------------------------------------------------------------------- the loop


def _identity(algorithm: str, seed: int, settings: dict) -> dict:
    """What a resumed search must share with the saved one."""
    own = {"controller": settings["controller"], "evolution": settings["evolution"]}.get(algorithm)
    return {"algorithm": algorithm, "seed": seed, "fingerprint": fingerprint(settings["child"]),
            "batch": settings["batch"], "proposer": own}  # fmt: skip


def run_search(workdir: str | Path, algorithm: str, seed: int, rules: int, settings: dict, pool: Pool,
               cache: EvaluationCache) -> list[dict]:  # fmt: skip
    """Search until `rules` rules have been proposed (resuming WORKDIR); returns the history."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    identity = _identity(algorithm, seed, settings)
    proposer = make_proposer(algorithm, settings, seed)
    history, elapsed = [], 0.0
    state_path = workdir / STATE
    if state_path.exists():
        try:
            saved = json.loads(state_path.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"{state_path}: unreadable search state: {error}") from None
        if saved["identity"] != identity:
            changed = sorted(k for k in identity if saved["identity"].get(k) != identity[k])
            raise UserError(f"{state_path}: this workdir holds another search (different {', '.join(changed)}); "
                            "use a new --workdir")  # fmt: skip
        history, elapsed = saved["history"], saved["elapsed"]
        proposer.restore(saved["proposer"])
        log.info("resuming %s seed %d at rule %d", algorithm, seed, len(history))
    child, batch = settings["child"], settings["batch"]
    while len(history) < rules:
        start = time.perf_counter()
        step = len(history) // batch
        rng = np.random.default_rng([seed, step])
        candidates = proposer.propose(min(batch, rules - len(history)), rng)
        texts = [str(grammar.Rule.from_array(c)) for c in candidates]
        results = cache.get(texts)
        missing = sorted(set(texts) - set(results))
        for i, result in pool.run(evaluate_rule, [(text, child) for text in missing]):
            cache.put(missing[i], result)
            results[missing[i]] = result
        rewards = [results[text]["reward"] for text in texts]
        proposer.observe(candidates, rewards)
        elapsed += time.perf_counter() - start
        fresh = set(missing)
        for text in texts:
            r = results[text]
            history.append({"algorithm": algorithm, "seed": seed, "index": len(history), "batch": step, "rule": text, "reward": r["reward"],
                            "status": r["status"], "learning_rate": r["learning_rate"], "evaluated": text in fresh,
                            "seconds": r["seconds"] if text in fresh else 0.0, "elapsed": round(elapsed, 2)})  # fmt: skip
            fresh.discard(text)
        write_text(state_path, json.dumps({"identity": identity, "history": history, "elapsed": elapsed,
                                           "proposer": proposer.state()}))  # fmt: skip
        best = max(history, key=lambda h: h["reward"])
        log.info("%s seed %d: %d/%d rules, best %.4f %s (%d evaluated in this batch, %.1f s)", algorithm, seed,
                 len(history), rules, best["reward"], best["rule"], len(missing), time.perf_counter() - start)
    return history[:rules]


def write_history(history: list[dict], out: str | Path) -> None:
    import pandas as pd

    write_text(out, pd.DataFrame(history, columns=list(HISTORY_COLUMNS)).to_csv(sep="\t", index=False))
