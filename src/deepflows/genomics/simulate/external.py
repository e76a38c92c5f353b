"""Read pairs from independent simulators with error models of their own: ART, dwgsim, Mason.

A model trained on one simulator's errors learns that simulator; these tools give other error models
(ART: empirical quality and error profiles of real Illumina runs; dwgsim: error rates rising along the
read; Mason: its own Illumina quality model) over the same haplotypes, so the truth is the same. Each
haplotype of each region is written as a FASTA, the tool draws half the depth from it with its own seed,
and its FASTQ pairs come back as ReadPairs for the same aligners as deepflows' own reads.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deepflows.errors import UserError
from deepflows.genomics.io.hts import fetch_sequence, last_line
from deepflows.genomics.io.regions import Interval
from deepflows.genomics.io.variants import Variant
from deepflows.genomics.simulate.reads import ReadModel, ReadPairs, build_haplotype

log = logging.getLogger(__name__)

SIMULATORS = ("deepflows", "art", "dwgsim", "mason")
# ART's built-in Illumina profiles and the longest read each was measured for
ART_PROFILES = {"HS10": 100, "HS20": 100, "HS25": 150, "HSXn": 150, "HSXt": 150, "MinS": 50, "MSv1": 250,
                "MSv3": 250, "NS50": 75}  # fmt: skip
MASON = "/usr/lib/seqan/bin/mason_simulator"  # Debian's seqan-apps keeps its tools off PATH
# simulator -> (its executable, the Debian package that installs it)
TOOLS = {"art": ("art_illumina", "art-nextgen-simulation-tools"), "dwgsim": ("dwgsim", "dwgsim"),
         "mason": (MASON, "seqan-apps")}  # fmt: skip


@dataclass(frozen=True)
class ExternalSimulator:
    name: str  # art | dwgsim | mason
    art_profile: str = "HS25"

    @property
    def description(self) -> str:
        return f"art-{self.art_profile}" if self.name == "art" else self.name

    def check(self, model: ReadModel) -> None:
        executable, package = TOOLS[self.name]
        if shutil.which(executable) is None:
            raise UserError(f"--simulator {self.name}: {executable} is not installed (Debian package {package})")
        if self.name == "art" and model.read_length > ART_PROFILES[self.art_profile]:
            raise UserError(f"--read-length {model.read_length}: ART's {self.art_profile} profile has reads of "
                            f"at most {ART_PROFILES[self.art_profile]} bp")  # fmt: skip

    def command(self, fasta: str, pairs: int, model: ReadModel, seed: int, prefix: str) -> list[str]:
        length, mean, sd = model.read_length, model.insert_mean, model.insert_sd
        if self.name == "art":
            return ["art_illumina", "-ss", self.art_profile, "-i", fasta, "-p", "-l", str(length), "-c", str(pairs),
                    "-m", str(round(mean)), "-s", str(round(sd)), "-rs", str(seed), "-na", "-q", "-o", prefix]
        if self.name == "dwgsim":  # -r 0 -y 0: no mutations or random reads of its own; bwa-style FASTQ only
            return ["dwgsim", "-e", "0.0005-0.008", "-E", "0.001-0.012", "-d", str(round(mean)), "-s", str(sd),
                    "-N", str(pairs), "-1", str(length), "-2", str(length), "-r", "0", "-y", "0", "-c", "0",
                    "-o", "1", "-z", str(seed), fasta, prefix]  # fmt: skip
        return [MASON, "-ir", fasta, "-n", str(pairs), "--seed", str(seed), "-o", prefix + "1.fq",
                "-or", prefix + "2.fq", "--seq-technology", "illumina", "--illumina-read-length", str(length),
                "--fragment-mean-size", str(round(mean)), "--fragment-size-std-dev", str(round(sd)),
                "--num-threads", "1", "-q"]  # fmt: skip

    def fastq_paths(self, prefix: str) -> tuple[str, str]:
        if self.name == "dwgsim":
            return prefix + ".bwa.read1.fastq.gz", prefix + ".bwa.read2.fastq.gz"
        return prefix + "1.fq", prefix + "2.fq"


def external_reads(simulator: ExternalSimulator, regions: list[Interval], per_region: list[list[Variant]], fasta,
                   model: ReadModel, seed: int, workdir: str, batch_size: int = 20_000) -> Iterator[ReadPairs]:
    """Pairs from both haplotypes of every region, half the depth each, drawn by `simulator` in `workdir`."""
    simulator.check(model)
    total = 0
    for r, (region, variants) in enumerate(zip(regions, per_region)):
        seq = fetch_sequence(fasta, region)
        for hap in (0, 1):
            haplotype, _origin = build_haplotype(seq, region, variants, hap)
            if len(haplotype) < model.insert_mean + 3 * model.insert_sd:
                log.info("%s haplotype %d: shorter than a fragment, no reads", region, hap + 1)
                continue
            pairs = round(model.depth / 2 * len(haplotype) / (2 * model.read_length))
            tool_seed = int(np.random.default_rng([seed, 4, r, hap]).integers(1, 2**31 - 1))
            # the tool's FASTA, FASTQ and side files, in a folder of their own: removed whole once read
            scratch = tempfile.mkdtemp(prefix=f"{simulator.name}-{r}-{hap}.", dir=workdir)
            prefix = os.path.join(scratch, "haplotype")
            with open(prefix + ".fa", "w") as out:
                out.write(f">{region.contig}_{region.start}_{hap + 1}\n{haplotype.decode()}\n")
            _run(simulator, simulator.command(prefix + ".fa", pairs, model, tool_seed, prefix), scratch)
            name = f"{simulator.name}:{region.contig}:{r}:{hap + 1}"
            for batch in _fastq_pairs(*simulator.fastq_paths(prefix), name, batch_size):
                total += len(batch.names)
                yield batch
            shutil.rmtree(scratch)
            log.info("%s haplotype %d: %d pairs from %s", region, hap + 1, pairs, simulator.description)
    log.info("%s: %d pairs", simulator.description, total)


def _run(simulator: ExternalSimulator, command: list[str], scratch: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
    if done.returncode != 0:
        raise UserError(f"--simulator {simulator.name}: {os.path.basename(command[0])} failed "
                        f"({last_line(done.stderr or done.stdout, 'no message')})")  # fmt: skip


def _fastq_pairs(path1: str, path2: str, name: str, batch_size: int) -> Iterator[ReadPairs]:
    """The pairs of two FASTQ files as ReadPairs batches, renamed `{name}:{index}`."""
    import pysam

    with pysam.FastxFile(path1) as fq1, pysam.FastxFile(path2) as fq2:
        batch: list[tuple] = []
        index = 0
        for first, second in zip(fq1, fq2, strict=True):
            batch.append((first.sequence, first.quality, second.sequence, second.quality))
            if len(batch) == batch_size:
                yield _as_pairs(batch, name, index, path1)
                index, batch = index + len(batch), []
        if batch:
            yield _as_pairs(batch, name, index, path1)


def _as_pairs(batch: list[tuple], name: str, index: int, path: str) -> ReadPairs:
    if len({len(field) for row in batch for field in row}) != 1:
        raise UserError(f"{path}: reads of several lengths; deepflows expects one read length per run")
    columns = [np.frombuffer("".join(column).encode(), np.uint8).reshape(len(batch), -1) for column in zip(*batch)]
    seq1, qual1, seq2, qual2 = columns
    names = [f"{name}:{index + i}" for i in range(len(batch))]
    return ReadPairs(names, seq1.copy(), qual1 - 33, seq2.copy(), qual2 - 33)
