"""Dask on Slurm: a dask.distributed Client whose workers are Slurm jobs (dask-jobqueue's SLURMCluster).

Needs the slurm extra (`pip install -e '.[slurm]'`: dask-jobqueue, distributed) where the scheduler runs, and the
same Python environment on the nodes (a shared filesystem, as for snakemake's Slurm executor). The scheduler runs
in the calling process (e.g. on the login node, or inside a Slurm job of its own); each worker is one `sbatch` job.

    from deepflows.cluster import slurm_client
    from deepflows.store.examples import open_examples   # or any other Dask code

    client = slurm_client(workers=4, queue="cpu", account="my-lab", cores=2, memory="8GB", walltime="02:00:00")
    try:
        inputs, meta, labels = open_examples(shards)   # lazy Dask arrays over the shards' Zarr chunks
        total = inputs.sum().compute()                 # runs on the Slurm workers
    finally:
        client.shutdown()                              # cancels the worker jobs

While a Client exists, `.compute()` anywhere in the process uses it (dask's default scheduler becomes the cluster).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def slurm_client(
    workers: int = 2,
    *,
    queue: str | None = None,
    account: str | None = None,
    cores: int = 1,
    memory: str = "4GB",
    walltime: str = "01:00:00",
    processes: int = 1,
    host: str | None = None,
    job_extra_directives: Sequence[str] = (),
    log_directory: str | None = None,
    python: str | None = None,
    wait_timeout: float = 300,
):
    """Start `workers` Dask workers as Slurm jobs and return a Client connected to them, once they are all up.

    queue, account: sbatch --partition / --account (None: the site's defaults). cores, memory, walltime: per job
    (sbatch --cpus-per-task, --mem, --time); each job runs `processes` worker processes sharing them.
    host: the address the scheduler listens on, which the nodes must reach (None: dask's choice; "127.0.0.1" when
    scheduler and workers share one machine). job_extra_directives: more `#SBATCH` lines, e.g. ["--qos=short"].
    log_directory: where the workers' Slurm logs go (None: none are written). python: the interpreter on the nodes
    (default: this one, which needs a shared filesystem). wait_timeout: seconds to wait for all workers; on
    timeout the jobs are cancelled and TimeoutError is raised (e.g. a queue that is full or does not exist).
    `client.shutdown()` stops the scheduler and cancels the worker jobs.
    """
    from dask.distributed import Client
    from dask.distributed import TimeoutError as DaskTimeoutError
    from dask_jobqueue import SLURMCluster

    if workers < 1:
        raise ValueError(f"workers: {workers}: must be at least 1")
    cluster = SLURMCluster(
        queue=queue,
        account=account,
        cores=cores,
        processes=processes,
        memory=memory,
        walltime=walltime,
        # without a log directory, sbatch would write slurm-<jobid>.out into the current directory
        job_extra_directives=[*job_extra_directives, *([] if log_directory else ["--output=/dev/null"])],
        log_directory=log_directory,
        python=python or sys.executable,
        scheduler_options={"dashboard_address": ":0", **({"host": host} if host else {})},  # any free port
    )
    try:
        cluster.scale(jobs=workers)
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        client.wait_for_workers(workers * processes, timeout=wait_timeout)
    except BaseException as error:
        client.shutdown()
        if isinstance(error, (TimeoutError, DaskTimeoutError)):
            raise TimeoutError(
                f"{workers} Slurm worker job(s) not up after {wait_timeout:g} s (queue {queue or 'default'}): "
                "check `squeue --me` for their reason"
            ) from None
        raise
    return client
