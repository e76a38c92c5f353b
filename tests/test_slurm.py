"""The Slurm path, for real: a single-node Slurm (tests/slurm_cluster.py, fixture `slurm_cluster` in conftest.py)
runs the default variant workflow through `snakemake --executor slurm --profile profiles/slurm`, and Dask workers
as Slurm jobs through deepflows.cluster.

The workflow is the one of test_workflow.test_tiny_end_to_end (40 kb, 10x, 2 shards, a tiny random model); it runs
once locally and once through Slurm, and the calls, the benchmark summary and the example counts must be equal.
The test node has no GPU and perhaps less memory than the profile asks for, so a second profile layered on top
(`ci_profile`) repeats profiles/slurm's set-resources with call_variants' `gpu: 0` and every mem_mb capped at the
node's memory: a later --profile (or a --set-resources flag) replaces set-resources whole, it never merges.
No accounting database here, so: --slurm-status-command squeue --slurm-no-account (README "Running on a Slurm
cluster"). Every command is bounded with `timeout -k`.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from test_workflow import BIN, ROOT, model_dir, write_config  # noqa: F401 (model_dir is a fixture)

pytestmark = pytest.mark.slurm

SLURM_PROFILE = ROOT / "profiles" / "slurm"
TINY = {"sample": "tiny", "reference": {"demo": {"length": 40_000}}, "reads": {"simulate": {"depth": 10}},
        "make_examples": {"shards": 2}}  # fmt: skip
# What a cluster without slurmdbd needs (the plugin's sacct checks would never end), plus fast polling for a test.
NO_ACCOUNTING = ["--slurm-status-command", "squeue", "--slurm-no-account"]
FAST = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1", "--latency-wait", "5"]


def snakemake(workdir: Path, *args, configfile: Path, timeout: int = 150) -> subprocess.CompletedProcess:
    """snakemake on this repo's Snakefile in workdir, under `timeout -k` (SIGTERM first: snakemake then cancels
    its Slurm jobs). The venv's bin goes first on PATH, for `deepflows` here and in the Slurm jobs."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
           "--configfile", str(configfile), *args]  # fmt: skip
    return subprocess.run(cmd, check=False, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout + 30)


def ci_profile(directory: Path, memory_mb: int) -> Path:
    """A profile to layer on profiles/slurm for a GPU-less test node with memory_mb of memory."""
    resources = yaml.safe_load((SLURM_PROFILE / "config.v9+.yaml").read_text())["set-resources"]
    for settings in resources.values():
        if "mem_mb" in settings:
            settings["mem_mb"] = f"min({settings['mem_mb']}, {memory_mb})"
    resources["call_variants"]["gpu"] = 0
    directory.mkdir()
    (directory / "config.v9+.yaml").write_text(yaml.safe_dump({"set-resources": resources, "retries": 0}))
    return directory


def vcf_body(path: Path) -> list[str]:
    """The VCF's lines, less header lines that carry commands or dates (which may differ between runs)."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    return [line for line in lines if not (line.startswith("##") and ("command" in line or "Date" in line))]


def example_counts(workdir: Path) -> dict:
    manifest = json.loads((workdir / "results/tiny/examples/calling/manifest.json").read_text())
    shards = [{k: shard[k] for k in ("shard", "examples", "n_candidates", "n_bases")} for shard in manifest["shards"]]
    return {"examples": manifest["examples"], "candidates": manifest["candidates"], "shards": shards}


def outputs(workdir: Path) -> dict:
    return {
        "calls": vcf_body(workdir / "results/tiny/calls/calls.vcf.gz"),
        "summary.csv": (workdir / "results/tiny/benchmark/summary.csv").read_text(),
        "examples": example_counts(workdir),
    }


def test_profile_memory_grows_per_attempt():
    """Every mem_mb of profiles/slurm is an expression of `attempt`, as snakemake evaluates it on each retry."""
    from snakemake.resources import Resources

    profile = yaml.safe_load((SLURM_PROFILE / "config.v9+.yaml").read_text())
    assert profile["retries"] >= 1
    rules = {"default-resources": profile["default-resources"], **profile["set-resources"]}
    for rule, settings in rules.items():
        resource = Resources.parse([f"mem_mb={settings['mem_mb']}"], allow_expressions=True)["mem_mb"]
        mem = [resource.evaluate(wildcards={}, input=[], attempt=a, threads=1, rulename=rule, async_run=None).value
               for a in (1, 2, 3)]  # fmt: skip
        assert mem[0] < mem[1] < mem[2], (rule, mem)


def test_a_cluster_whose_owner_died_is_replaced_and_a_live_one_is_not(monkeypatch):
    """A killed test run leaves /etc/slurm/slurm.conf linked to its cluster's directory: the next run must take
    over (CI once failed on such a leftover), but never from a cluster whose owner process still runs."""
    import shutil
    import tempfile

    import slurm_cluster

    root = Path(tempfile.mkdtemp(prefix=slurm_cluster.ROOT_PREFIX, dir="/tmp"))
    link = Path(tempfile.mkdtemp()) / "slurm.conf"
    try:
        (root / "slurm.conf").write_text("")
        link.symlink_to(root / "slurm.conf")
        monkeypatch.setattr(slurm_cluster, "DEFAULT_CONF", link)
        assert slurm_cluster._default_conf_taken() is None  # no owner recorded: an earlier version's leftover
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (root / slurm_cluster.OWNER_FILE).write_text(f"{dead.pid} {slurm_cluster._start_time(os.getpid())}\n")
        assert slurm_cluster._default_conf_taken() is None
        me = f"{os.getpid()} {slurm_cluster._start_time(os.getpid())}\n"
        (root / slurm_cluster.OWNER_FILE).write_text(me)
        assert "another test Slurm is running" in slurm_cluster._default_conf_taken()
        slurm_cluster._remove_orphan(root)  # what start() does with a leftover: link and directory go
        assert not root.exists() and not link.is_symlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(link.parent, ignore_errors=True)


def test_variant_workflow_through_slurm_equals_local(tmp_path, model_dir, slurm_cluster):  # noqa: F811
    config = {**TINY, "model": str(model_dir)}
    local, remote = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, remote):
        workdir.mkdir()
    layer = ci_profile(tmp_path / "ci-profile", slurm_cluster.real_memory_mb)
    args = ["--executor", "slurm", "--profile", str(SLURM_PROFILE), "--profile", str(layer), *NO_ACCOUNTING, *FAST,
            "--slurm-keep-successful-logs"]  # fmt: skip
    # The local run goes alongside: the Slurm run mostly waits for its status checks.
    with ThreadPoolExecutor(1) as pool:
        local_run = pool.submit(snakemake, local, "--cores", "1", configfile=write_config(local, config))
        run = snakemake(remote, *args, configfile=write_config(remote, config), timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:] + slurm_cluster.log_tails()
    run = local_run.result()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    expected = outputs(local)
    assert expected["calls"] and expected["examples"]["examples"] > 0
    assert outputs(remote) == expected

    # The jobs really ran as Slurm jobs: one per workflow job (the plugin puts the rule in the job's comment), all
    # completed, each with its Slurm log (kept by --slurm-keep-successful-logs).
    jobs = {job["id"]: job for job in slurm_cluster.jobs() if job["comment"].startswith("rule_")}
    rules = ["make_reference", "simulate", "make_examples", "make_examples", "check_shards", "call_variants",
             "postprocess", "benchmark", "gq_calibration", "run_times", "provenance"]  # fmt: skip
    assert sorted(job["comment"].split("_wildcards")[0] for job in jobs.values()) == sorted(f"rule_{r}" for r in rules)
    assert {job["state"] for job in jobs.values()} == {"COMPLETED"}, jobs
    slurm_logs = remote / ".snakemake" / "slurm_logs"
    logs = {log.stem: log.relative_to(slurm_logs).parts[0] for log in slurm_logs.glob("rule_*/**/*.log")}
    assert logs == {i: job["comment"].split("_wildcards")[0] for i, job in jobs.items()}, (logs, jobs)
    # The profile's resources reached sbatch: make_examples asked for 4000 MB, call_variants for 2 CPUs, no GPU.
    shown = {i: slurm_cluster.run(["scontrol", "show", "job", i]).stdout for i in jobs}
    by_rule = {rule: [i for i in jobs if logs[i] == f"rule_{rule}"] for rule in set(rules)}
    assert all("MinMemoryNode=4000M" in shown[i] for i in by_rule["make_examples"]), shown
    cv = shown[by_rule["call_variants"][0]]
    assert "NumCPUs=2" in cv and "gres/gpu" not in cv, cv


def test_dask_workers_run_as_slurm_jobs(tmp_path, monkeypatch, slurm_cluster):
    import dask.array as da
    import numpy as np
    import zarr
    from dask.distributed import get_task_stream

    from deepflows.cluster import slurm_client

    values = np.arange(60_000, dtype=np.int64).reshape(600, 100)
    store = zarr.create_array(tmp_path / "x.zarr", shape=values.shape, chunks=(50, 100), dtype=values.dtype)
    store[:] = values
    monkeypatch.chdir(tmp_path)  # where sbatch would put slurm-<jobid>.out files, had slurm_client not said no
    client = slurm_client(2, cores=1, memory="1GB", walltime="00:10:00", host="127.0.0.1", wait_timeout=90)
    try:
        running = {
            job["id"] for job in slurm_cluster.jobs() if job["state"] == "RUNNING" and job["name"] == "dask-worker"
        }
        on_workers = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert len(on_workers) == 2 and set(on_workers.values()) == running, (on_workers, running)
        array = da.from_zarr(str(tmp_path / "x.zarr"))
        assert array.numblocks == (12, 1)
        with get_task_stream(client) as stream:
            total = (array * 2).sum().compute()
        assert total == 2 * int(values.sum())
        assert {task["worker"] for task in stream.data} <= set(on_workers) and len(stream.data) >= 12
    finally:
        client.shutdown()
    ids = {job["id"]: job["state"] for job in slurm_cluster.jobs() if job["id"] in running}
    assert set(ids.values()) <= {"CANCELLED", "COMPLETED", "COMPLETING"}, ids
    assert not list(tmp_path.glob("slurm-*.out"))
