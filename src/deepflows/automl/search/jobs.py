"""Where evaluations run: in this process (`inline`), in a pool of local worker processes (`local`), or on Dask
workers that are Slurm jobs (`slurm`, deepflows.cluster.slurm_client). Each evaluation is an independent job of
plain data in and out; results come back as they finish."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from deepflows.arguments import positive_int

EXECUTORS = ("inline", "local", "slurm")
# one thread per worker: two single-threaded processes on two cores beat one process with two threads on small
# programs, and the workers do not fight over the cores
_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _worker_init() -> None:
    _die_with_parent()
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SINGLE_THREAD}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM when the search that started it dies, even by SIGKILL (else it would
    linger, holding a core and its memory)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Pool:
    """`with Pool("local", workers=2) as pool: for i, result in pool.run(fn, [args...]): ...`"""

    def __init__(self, executor: str = "local", workers: int = 2, slurm: dict | None = None):
        if executor not in EXECUTORS:
            raise ValueError(f"executor {executor!r}: one of {EXECUTORS}")
        self.executor, self.workers, self.slurm = executor, workers, slurm or {}
        self._pool = self._client = None

    def __enter__(self) -> "Pool":
        if self.executor == "local":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init)  # fmt: skip
        elif self.executor == "slurm":
            from deepflows.cluster import slurm_client

            self._client = slurm_client(workers=self.workers, **self.slurm)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.shutdown()

    def submit(self, fn: Callable, *args):
        """One job, started now (inline: run now); a future with .done() and .result()."""
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        if self._client is not None:
            return self._client.submit(fn, *args, pure=False)
        from concurrent.futures import Future

        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:  # noqa: BLE001 (handed to the caller through the future, as a pool would)
            future.set_exception(error)
        return future

    def wait_any(self, futures: list) -> list:
        """The futures of `futures` that are done, waiting until at least one is."""
        if self._client is not None:
            from dask.distributed import wait
        else:
            from concurrent.futures import wait
        done, _ = wait(futures, return_when="FIRST_COMPLETED")
        return [future for future in futures if future in done]

    def run(self, fn: Callable, jobs: list[tuple]) -> Iterator[tuple[int, object]]:
        """(index, result) of fn(*jobs[index]) for every job, in the order they finish."""
        if self.executor == "inline":
            for i, args in enumerate(jobs):
                yield i, fn(*args)
            return
        if self._pool is not None:
            from concurrent.futures import as_completed

            futures = {self._pool.submit(fn, *args): i for i, args in enumerate(jobs)}
            for future in as_completed(futures):
                yield futures[future], future.result()
            return
        from dask.distributed import as_completed

        futures = [self._client.submit(fn, *args, pure=False) for args in jobs]
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures):
            yield index[future.key], future.result()


def add_pool_arguments(p) -> None:
    """The command-line options of a Pool (the search commands share them)."""
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where evaluations run: local processes (default), Slurm jobs via Dask, or inline")
    p.add_argument("--workers", type=positive_int, default=2, help="parallel evaluation jobs (default 2)")
    p.add_argument("--slurm-queue", help="slurm executor: partition")
    p.add_argument("--slurm-account", help="slurm executor: account")
    p.add_argument("--slurm-memory", default="4GB", help="slurm executor: memory per worker job (default 4GB)")
    p.add_argument("--slurm-walltime", default="04:00:00", help="slurm executor: time per worker job")
    p.add_argument("--slurm-logs", help="slurm executor: folder for the worker jobs' logs")


def pool_from_args(args) -> Pool:
    slurm = {"queue": args.slurm_queue, "account": args.slurm_account, "memory": args.slurm_memory,
             "walltime": args.slurm_walltime, "log_directory": args.slurm_logs}  # fmt: skip
    return Pool(args.executor, args.workers, slurm)
