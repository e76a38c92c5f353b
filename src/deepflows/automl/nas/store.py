"""The live search's durable store: one SQLite file per search holding every model it started and the proposer's
state (the population), changed in single transactions, so the file is always a state the search passed through.

    models   id (birth order), cell, parent, status, reward, seed, result (JSON), incarnation, times
             status: running -> done (a reward) | failed (the worker raised); `lost` for a model that was running
             when its controller died
    meta     identity (what a resumed search must share with the saved one), proposer (its JSON state, written
             in the same transaction as the model it changed), incarnation (how many times the search started)

A killed controller loses exactly the models it had in flight: on restart they are marked `lost` and never run
again, everything finished stays, and the proposer resumes from the state saved with the last finished model.
SQLite's locking needs a local disk or a filesystem with working POSIX locks (not every NFS has them).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from deepflows.errors import UserError

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, cell TEXT NOT NULL, parent INTEGER, "
    "status TEXT NOT NULL, reward REAL, seed INTEGER NOT NULL, result TEXT, incarnation INTEGER NOT NULL, "
    "started REAL NOT NULL, finished REAL, finish_order INTEGER UNIQUE)",
)


class PopulationStore:
    def __init__(self, path: str | Path, identity: dict):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            for statement in SCHEMA:
                self.db.execute(statement)
        except sqlite3.DatabaseError as error:
            raise UserError(f"{self.path}: not a usable search store (SQLite): {error}") from None
        saved = self._meta("identity")
        if saved is None:
            self._set_meta("identity", identity)
        elif saved != identity:
            changed = sorted(k for k in identity.keys() | saved.keys() if saved.get(k) != identity.get(k))
            raise UserError(f"{self.path}: this workdir holds another search (different {', '.join(changed)}); "
                            "use a new --workdir")  # fmt: skip
        with self._transaction():
            self.incarnation = (self._meta("incarnation") or 0) + 1
            self._set_meta("incarnation", self.incarnation)
            self.lost = self.db.execute("UPDATE models SET status = 'lost' WHERE status = 'running'").rowcount

    # ------------------------------------------------------------------------------------------------ writes
    def start(self, cell: list[int], parent: int | None, seed_of, proposer_state: dict) -> tuple[int, int]:
        """Record a new running model and the proposer's state after proposing it; returns (id, seed) where the
        model's training seed is seed_of(id)."""
        with self._transaction():
            model_id = self.db.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM models").fetchone()[0]
            seed = int(seed_of(model_id))
            self.db.execute("INSERT INTO models (id, cell, parent, status, seed, incarnation, started) "
                            "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                            (model_id, json.dumps(list(cell)), parent, seed, self.incarnation, time.time()))  # fmt: skip
            self._set_meta("proposer", proposer_state)
        return model_id, seed

    def finish(self, model_id: int, result: dict, proposer_state: dict) -> None:
        """The model's result and the proposer's state after observing it, together. A result with a reward is
        done (a child that did not learn scores what it scored); one without (the worker raised) failed."""
        status = "done" if result.get("reward") is not None else "failed"
        with self._transaction():
            order = self.db.execute("SELECT COALESCE(MAX(finish_order), -1) + 1 FROM models").fetchone()[0]
            changed = self.db.execute(
                "UPDATE models SET status = ?, reward = ?, result = ?, finished = ?, finish_order = ? "
                "WHERE id = ? AND status = 'running'",
                (status, result.get("reward"), json.dumps(result), time.time(), order, model_id),
            ).rowcount
            if changed != 1:
                raise RuntimeError(f"model {model_id} finished but was not running (evaluated twice?)")
            self._set_meta("proposer", proposer_state)

    # ------------------------------------------------------------------------------------------------- reads
    def proposer_state(self) -> dict | None:
        return self._meta("proposer")

    def count(self, *statuses: str) -> int:
        marks = ",".join("?" * len(statuses))
        return self.db.execute(f"SELECT COUNT(*) FROM models WHERE status IN ({marks})", statuses).fetchone()[0]

    def models(self) -> list[dict]:
        """Every model, in birth order, with its result's fields (seconds, ...) as columns."""
        rows = self.db.execute("SELECT id, cell, parent, status, reward, seed, result, incarnation, started, "
                               "finished, finish_order FROM models ORDER BY id").fetchall()  # fmt: skip
        out = []
        for model_id, cell, parent, status, reward, seed, result, incarnation, started, finished, order in rows:
            extra = json.loads(result) if result else {}
            extra["outcome"] = extra.pop("status", None)  # the training's own status: ok, no progress, ...
            out.append({**{k: v for k, v in extra.items() if k != "reward"}, "id": model_id,
                        "cell": json.loads(cell), "parent": parent, "status": status, "reward": reward,
                        "seed": seed, "incarnation": incarnation, "started": started, "finished": finished,
                        "finish_order": order})  # fmt: skip
        return out

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------------------------------------ helpers
    def _meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): the statements inside land together or not at all."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
