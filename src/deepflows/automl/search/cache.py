"""A durable cache of evaluated candidates, keyed by (settings fingerprint, candidate text): SQLite, one row per
evaluation, committed as each result arrives, so a killed search loses only the evaluations in flight, and
searches running side by side (several seeds and algorithms) share what any of them evaluated. SQLite's locking
needs a local disk or a filesystem with working POSIX locks (not every NFS has them)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from deepflows.errors import UserError


class EvaluationCache:
    def __init__(self, path: str | Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        if not self.path.parent.is_dir():
            raise UserError(f"{self.path}: the cache's folder does not exist")
        try:
            self.db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS evaluations (fingerprint TEXT, candidate TEXT, result TEXT,"
                            " PRIMARY KEY (fingerprint, candidate))")  # fmt: skip
        except sqlite3.DatabaseError as error:
            raise UserError(f"{self.path}: not a usable evaluation cache (SQLite): {error}") from None

    def get(self, candidates: list[str]) -> dict[str, dict]:
        found = {}
        for candidate in set(candidates):
            row = self.db.execute("SELECT result FROM evaluations WHERE fingerprint = ? AND candidate = ?",
                                  (self.fingerprint, candidate)).fetchone()  # fmt: skip
            if row:
                found[candidate] = json.loads(row[0])
        return found

    def put(self, candidate: str, result: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?)",
                        (self.fingerprint, candidate, json.dumps(result)))  # fmt: skip

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations WHERE fingerprint = ?", (self.fingerprint,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
