"""Shared pieces of the bench scripts: where things are, and how a command is measured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "genomics"
OUT = ROOT / "bench" / "out"
# Single-threaded numeric libraries, so "one core" means one core.
ONE_CORE_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "BLOSC_NTHREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "XLA_FLAGS": ONE_CORE_XLA}  # fmt: skip


def deepflows() -> str:
    exe = Path(sys.executable).with_name("deepflows")
    return str(exe) if exe.exists() else "deepflows"


def measure(command: str, cpu: int | None = None) -> dict:
    """Run a shell command pinned to one CPU (default: $BENCH_CPU, else 0); wall seconds, CPU seconds and
    peak RSS of its process tree (wait4 on the shell, which waits for every process of a pipeline)."""
    cpu = int(os.environ.get("BENCH_CPU", 0)) if cpu is None else cpu
    env = {**os.environ, **ONE_THREAD}
    start = time.perf_counter()
    proc = subprocess.Popen(["taskset", "-c", str(cpu), "bash", "-o", "pipefail", "-c", command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {command}\n{stderr.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}
