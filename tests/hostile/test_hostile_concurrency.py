"""Jobs that meet or die. 1b: six shards started together on one UNINDEXED BAM and FASTA all build (or wait for)
the same .bai and .fai: every job must succeed, give the same examples as the shards made with pre-built
indexes, and leave complete indexes and no temporaries beside the inputs (a race shows up only now and then,
so it is tried a few times). And a job killed with -9 mid-write: its rerun succeeds, gives the same store, and
nothing of the killed job is left."""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pysam
import pytest
from hostile_contract import (TEMPORARY_PATTERNS, temporaries, accepted_violations, assert_accepted, run_stage,
                              stage_command, stage_env)  # fmt: skip
from hostile_data import CONTIG, LENGTH, concatenated, examples_equal

TRIALS, JOBS = 3, 6  # six shards at once on one unindexed BAM, three times


@pytest.mark.parametrize("trial", range(TRIALS))
def test_1b_shards_together_on_unindexed_inputs(trial, valid, work):
    inputs = work / "in"
    bam, ref = shutil.copy2(valid.bam, inputs / "reads.bam"), shutil.copy2(valid.ref, inputs / "ref.fa")
    before = {p.name for p in inputs.iterdir()}
    assert before == {"reads.bam", "ref.fa"}, "fixture: the inputs must start without indexes"
    outs = [work / "out" / f"examples-{i:05d}-of-{JOBS:05d}.zarr" for i in range(JOBS)]

    def shard(i):
        # no `outputs`: the shards share out/, where each would see the others' temporaries; checked below
        return run_stage("make-examples", ["--reads", bam, "--ref", ref, "--shard", f"{i}/{JOBS}", "--chunk-size",
                                           "4", "--out", outs[i]], cwd=work)  # fmt: skip

    with ThreadPoolExecutor(JOBS) as pool:
        runs = list(pool.map(shard, range(JOBS)))

    problems = [f"shard {i}/{JOBS}: {p} (last line: {r.last_line})" for i, r in enumerate(runs)
                for p in accepted_violations(r)]  # fmt: skip
    assert not problems, "\n".join(problems)
    written = sorted(p.name for p in (work / "out").iterdir())
    assert written == [o.name for o in outs], f"beside the shards: {written}"
    # the same examples as the valid 3-shard set, made with pre-built indexes
    got, want = concatenated(outs), concatenated(valid.shards)
    for key in want:
        assert np.array_equal(got[key], want[key]), f"{key} differs from the shards made with pre-built indexes"
    # the indexes are complete (pysam reads through them), and nothing half-made is left beside the inputs
    with pysam.AlignmentFile(str(bam)) as reads:
        assert reads.check_index() and reads.count(CONTIG, 0, LENGTH) > 0
    with pysam.FastaFile(str(ref)) as fasta:
        assert fasta.fetch(CONTIG) == pysam.FastaFile(str(valid.ref)).fetch(CONTIG)
    left = {p.name for p in inputs.iterdir()} - before
    assert "ref.fa.fai" in left, f"no .fai built beside the FASTA: {sorted(left)}"
    assert not temporaries(left), f"temporaries ({TEMPORARY_PATTERNS}) left beside the inputs: {sorted(left)}"


def kill_while_writing(command: list[str], cwd, directory, timeout: float = 60) -> bool:
    """Start `command`, kill it with SIGKILL as soon as something appears in `directory`; False if it ended first."""
    proc = subprocess.Popen(command, cwd=cwd, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(directory.iterdir()):
                proc.kill()
                proc.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_own_kill_9_mid_write_then_rerun(valid, work):
    out = work / "out" / "ex.zarr"
    argv = ["--reads", valid.bam, "--ref", valid.ref, "--shard", "1/3", "--chunk-size", "4", "--out", out]
    for _ in range(3):  # the job may finish before it is seen writing; then try again
        shutil.rmtree(work / "out")
        (work / "out").mkdir()
        if kill_while_writing(stage_command("make-examples", [str(a) for a in argv]), work, work / "out"):
            break
    else:
        pytest.fail("make-examples always finished before it could be killed mid-write")
    killed_left = sorted(p.name for p in (work / "out").iterdir())
    assert not out.exists(), f"a job killed mid-write left a complete-looking output: {killed_left}"
    rerun = run_stage("make-examples", argv, cwd=work, outputs=[out])
    assert_accepted(rerun)
    examples_equal(out, valid.shards[1])
    left = sorted(p.name for p in (work / "out").iterdir())
    assert left == ["ex.zarr"], f"after the rerun, beside the output: {left} (the killed job left {killed_left})"
