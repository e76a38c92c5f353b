"""One thread owns the encoder and the index: requests queue for it instead of each holding its own batch in
memory, and queries that wait together are encoded together (one forward pass for up to `max_batch` of them).

The queue is bounded: past `max_pending` waiting jobs a request is refused at once (`Busy`, HTTP 503), so a burst of
clients costs a bounded amount of memory and time, never an ever-growing backlog.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


class Busy(Exception):
    """The queue is full: the client should try again later."""


@dataclass
class _Search:
    query: str
    k: int
    book_id: str | None
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: object
    args: tuple
    future: Future = field(default_factory=Future)


class EncoderWorker:
    """Runs searches (batched) and other encoder or index calls (one at a time) on a single thread."""

    def __init__(self, index, encoder, max_pending: int = 64, max_batch: int = 32):
        self.index, self.encoder, self.max_batch = index, encoder, max_batch
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name="deepflows-encoder", daemon=True)
        self._thread.start()

    def search(self, query: str, k: int, book_id: str | None = None) -> Future:
        """A future of the best `k` hits for `query` (within one book if `book_id`): dicts of `index.hit` + score."""
        return self._put(_Search(query, k, book_id))

    def call(self, fn, *args) -> Future:
        """A future of `fn(*args)`, run on the worker thread (for the encoder's and the index's other users)."""
        return self._put(_Call(fn, args))

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _put(self, job):
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise Busy(f"server busy: {self._jobs.maxsize} requests are already waiting; try again shortly") from None
        return job.future

    def _loop(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while len(batch) < self.max_batch and batch[-1] is not None:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in batch if job is not None]
            self._run_searches([job for job in jobs if isinstance(job, _Search)])
            for job in jobs:
                if isinstance(job, _Call):
                    _settle(job.future, job.fn, *job.args)
            if batch[-1] is None:
                return

    def _run_searches(self, jobs: list[_Search]) -> None:
        if not jobs:
            return
        try:
            vectors = self.encoder.encode([job.query for job in jobs])
        except Exception as err:  # noqa: BLE001 - handed to each waiting request, which answers 500
            for job in jobs:
                job.future.set_exception(err)
            return
        groups: dict[tuple, list[int]] = {}  # one index search per (k, book) for the whole batch
        for i, job in enumerate(jobs):
            groups.setdefault((job.k, job.book_id), []).append(i)
        hits: dict[int, dict] = {}  # a sentence found by several queries of the batch is read once
        for (k, book_id), members in groups.items():
            try:
                scores, rows = self._search(vectors[members], k, book_id)
                for row in {int(r) for r in rows.ravel() if r >= 0} - hits.keys():
                    hits[row] = self.index.hit(row)
            except Exception as err:  # noqa: BLE001 - as above
                for i in members:
                    jobs[i].future.set_exception(err)
                continue
            # An index with fewer than k sentences (in that book) returns fewer rows, or pads with rows < 0.
            for i, job_scores, job_rows in zip(members, scores, rows):
                jobs[i].future.set_result([{**hits[int(row)], "score": float(score)}
                                           for score, row in zip(job_scores, job_rows) if row >= 0])  # fmt: skip

    def _search(self, vectors: np.ndarray, k: int, book_id: str | None) -> tuple[np.ndarray, np.ndarray]:
        """index.search with the queries padded to a power of two: exact search compiles once per number of
        queries, and a few sizes stay compiled where every batch size would compile anew."""
        n = len(vectors)
        padded = np.zeros((1 << (n - 1).bit_length(), vectors.shape[1]), vectors.dtype)
        padded[:n] = vectors
        scores, rows = self.index.search(padded, k, book_id=book_id)
        return scores[:n], rows[:n]


def _settle(future: Future, fn, *args) -> None:
    try:
        future.set_result(fn(*args))
    except Exception as err:  # noqa: BLE001 - the request that asked answers 500 and logs it
        future.set_exception(err)
