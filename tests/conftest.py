"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (real public test data); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared data beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node Slurm (tests/slurm_cluster.py) for the session, with SLURM_CONF pointing at it.

    Skips with one line when it cannot be started here (packages missing, not root); under CI=true that is a
    failure instead, so CI really runs the slurm tests. Stopped, with no daemon left behind, at the end."""
    import os

    from slurm_cluster import SlurmCluster, unavailable_reason

    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the slurm tests must run, but {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = SlurmCluster.start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for in-process clients too (dask-jobqueue calls sbatch)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()
