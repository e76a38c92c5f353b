"""Reference-confidence blocks for the gVCF: make_examples' allele counts -> GQ, PL and MIN_DP of non-variant runs.

Model (DeepVariant's: where the read counts agree, the blocks match its golden gVCF digit for digit; see
tests/test_make_examples_realdata.py). At a position the candidate finder counted n reads (its depth: reads with
a usable allele there, after the same read and base-quality filters), r of them showing the reference base.
Each read is independently wrong with probability p = P_ERROR = 0.001 (DeepVariant's default `--p_error`; its
golden gVCF's PLs, e.g. 0,135,1349 at 45 reference reads, need exactly this value). Log10 likelihoods, the
binomial coefficient being common to all three:
    hom-ref  r log10(1 - p) + (n - r) log10(p)
    het      n log10(1/2)
    hom-alt  r log10(p) + (n - r) log10(1 - p)
With a flat prior P(g) = L(g) / sum L, and
    GQ = floor(phred(1 - P(hom-ref))), capped at MAX_GQ = 50 (DeepVariant's gVCF cap)
    PL = floor(-10 log10(L(g) / max L)) for hom-ref, het, hom-alt (truncated, as DeepVariant writes PLs)
    GT = 0/0 when hom-ref is strictly the most likely genotype (PL het and PL hom-alt both above 0), else ./.
A position without reads has no evidence either way: GT ./., GQ 0, PL 0,0,0, MIN_DP 0.

Blocks: consecutive positions of one contig merge while their GQ stays in one bin (GQ // gq_binsize; with the
default 5 and the cap, 45-49 is one bin and 50 another) and their GT is the same. A block keeps the smallest
depth (MIN_DP), the smallest GQ and the PL of the position with that GQ (the first one on a tie). Candidate
positions are left out (postprocess writes their records); blocks also merge across make_examples' windows.

File (one per make_examples shard): bgzipped, tab-separated, BED-like coordinates (0-based, end exclusive):
    ##deepflows_gvcf_blocks=1
    ##p_error=0.001
    ##max_gq=50
    ##gq_binsize=5
    ##deepflows_shard=0/4                     the shard, and the run its examples came from
    ##deepflows_run=5f0c...                   (store.examples.run_identity), checked by postprocess
    ##contig=<ID=chr20,length=64444167>       one per contig of the shard's regions
    #contig  start  end  gq  min_dp  pl
    chr20    0      9999 0   0       0,0,0
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Self

import numpy as np

from deepflows.errors import UserError
from deepflows.inputs import require_file
from deepflows.outputs import check_new_output

VERSION = 1
P_ERROR = 0.001
MAX_GQ = 50
COLUMNS = ("contig", "start", "end", "gq", "min_dp", "pl")
PHRED_SLACK = 1e-6  # phred units: a likelihood ratio of exactly 10^-4.5 is still GQ 45 in float64
_CONTIG = re.compile(r"##contig=<ID=([^,>]+),length=(\d+)>")


def reference_confidence(depth: np.ndarray, ref_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(GQ [n] int32, PL [n, 3] int32) of hom-ref at positions with `depth` reads, `ref_depth` of them
    showing the reference (see the module docstring)."""
    n = np.asarray(depth, dtype=np.float64)
    r = np.asarray(ref_depth, dtype=np.float64)
    right, wrong = math.log10(1 - P_ERROR), math.log10(P_ERROR)
    log10_l = np.stack([r * right + (n - r) * wrong, n * math.log10(0.5), r * wrong + (n - r) * right], axis=1)
    pl = np.floor(-10 * (log10_l - log10_l.max(axis=1, keepdims=True)) + PHRED_SLACK).astype(np.int32)
    ln = log10_l * math.log(10)
    # log(1 - P(hom-ref)) = log(L(het) + L(hom-alt)) - log(sum L), in logs: no cancellation near P = 1
    log_error = np.logaddexp(ln[:, 1], ln[:, 2]) - np.logaddexp(ln[:, 0], np.logaddexp(ln[:, 1], ln[:, 2]))
    gq = np.floor(-10 * log_error / math.log(10) + PHRED_SLACK)
    gq = np.where(n > 0, np.clip(gq, 0, MAX_GQ), 0).astype(np.int32)
    return gq, pl


def hom_ref_called(pl_het, pl_hom_alt):
    """Whether a block is written 0/0 (hom-ref strictly the most likely) rather than ./. (numbers or arrays)."""
    return (pl_het > 0) & (pl_hom_alt > 0)


@dataclass
class Blocks:
    """Blocks of one contig, in order: [start, end) 0-based, GQ, MIN_DP, PL [n, 3]."""

    start: np.ndarray
    end: np.ndarray
    gq: np.ndarray
    min_dp: np.ndarray
    pl: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, index: slice) -> Blocks:
        return Blocks(self.start[index], self.end[index], self.gq[index], self.min_dp[index], self.pl[index])

    @staticmethod
    def concatenate(parts: list[Blocks]) -> Blocks:
        return Blocks(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("start", "end", "gq", "min_dp", "pl")))


def position_blocks(start: int, depth: np.ndarray, ref_depth: np.ndarray, excluded: np.ndarray) -> Blocks:
    """One single-base block per position of [start, start + len(depth)) not `excluded`."""
    keep = np.flatnonzero(~excluded)
    gq, pl = reference_confidence(depth[keep], ref_depth[keep])
    return Blocks(start + keep, start + keep + 1, gq, depth[keep].astype(np.int32), pl)


def join_key(gq, pl, gq_binsize: int):
    """Adjacent blocks join when this agrees: GQ bin and GT (numbers or arrays; `pl` [..., 3])."""
    pl = np.asarray(pl)
    return (gq // gq_binsize) * 2 + hom_ref_called(pl[..., 1], pl[..., 2])


def merge_blocks(blocks: Blocks, gq_binsize: int) -> Blocks:
    """Merge runs of adjacent blocks (one contig, in order) with the same GQ bin and GT."""
    if not len(blocks):
        return blocks
    key = join_key(blocks.gq, blocks.pl, gq_binsize)
    new = np.ones(len(blocks), dtype=bool)
    new[1:] = (blocks.start[1:] != blocks.end[:-1]) | (key[1:] != key[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(blocks)) - 1
    # Sorted by run, then GQ (stable): each run's first entry is its first position of least GQ.
    lowest = np.lexsort((blocks.gq, np.cumsum(new)))[first]
    return Blocks(blocks.start[first], blocks.end[last], blocks.gq[lowest],
                  np.minimum.reduceat(blocks.min_dp, first), blocks.pl[lowest])  # fmt: skip


class BlockWriter:
    """Streams one shard's blocks to `<out>`'s temporary name; `commit()` renames it into place, leaving a
    `with` block by an exception removes it. Blocks merge across `add` calls (windows) of one contig."""

    def __init__(self, out: str | Path, contigs: list[tuple[str, int]], gq_binsize: int,
                 identity: dict[str, str] | None = None):  # fmt: skip
        import pysam

        self.out = Path(out)
        if not self.out.name.endswith(".gz"):
            raise UserError(f"{self.out}: the gVCF blocks file is bgzipped; name it *.tsv.gz")
        check_new_output(self.out, "--gvcf")
        if gq_binsize < 1:
            raise UserError(f"--gvcf-gq-binsize {gq_binsize}: needs a positive integer")
        self.tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        self.gq_binsize = gq_binsize
        self.handle = pysam.BGZFile(str(self.tmp), "wb")
        header = [f"##deepflows_gvcf_blocks={VERSION}", f"##p_error={P_ERROR}", f"##max_gq={MAX_GQ}",
                  f"##gq_binsize={gq_binsize}", *(f"##{key}={value}" for key, value in (identity or {}).items()),
                  *(f"##contig=<ID={name},length={length}>" for name, length in contigs),
                  "#" + "\t".join(COLUMNS)]  # fmt: skip
        self.handle.write(("\n".join(header) + "\n").encode())
        self.contig: str | None = None
        self.pending: Blocks | None = None  # the last block so far: the next window may extend it
        self.finished = False

    def add(self, contig: str, start: int, depth: np.ndarray, ref_depth: np.ndarray, excluded: np.ndarray) -> None:
        """The positions of [start, start + len(depth)) that are not `excluded`."""
        blocks = position_blocks(start, depth, ref_depth, excluded)
        if self.pending is not None and contig == self.contig:
            blocks = Blocks.concatenate([self.pending, blocks])
        else:
            self._flush()
        merged = merge_blocks(blocks, self.gq_binsize)
        self._write(contig, merged[:-1])
        self.contig, self.pending = contig, merged[-1:] if len(merged) else None

    def _flush(self) -> None:
        if self.pending is not None:
            self._write(self.contig, self.pending)
            self.pending = None

    def _write(self, contig: str, blocks: Blocks) -> None:
        pl = [",".join(map(str, row)) for row in blocks.pl.tolist()]
        rows = zip(blocks.start.tolist(), blocks.end.tolist(), blocks.gq.tolist(), blocks.min_dp.tolist(), pl)
        self.handle.write("".join(f"{contig}\t{s}\t{e}\t{g}\t{d}\t{p}\n" for s, e, g, d, p in rows).encode())

    def finish(self) -> None:
        """Write the last block and close the file (where a full disk shows): before the shard is committed, so
        that a failure here leaves neither output."""
        from deepflows.genomics.io.hts import htslib_writing

        with htslib_writing(self.out):
            self._flush()
            self.handle.close()
        self.finished = True

    def commit(self) -> None:
        """Finish (if not yet) and rename the file into place."""
        if not self.finished:
            self.finish()
        self.tmp.rename(self.out)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.handle.close()
            self.tmp.unlink(missing_ok=True)
        return False


# ------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Block:
    contig: str
    start: int  # 0-based
    end: int  # exclusive
    gq: int
    min_dp: int
    pl: tuple[int, int, int]


class BlocksFile:
    """A blocks file's header, checked against the reference's contig lengths (`settings`: its other `##KEY=VALUE`
    lines); iterating reads its blocks, checking each line and their order. Every problem is a UserError naming
    the file."""

    def __init__(self, path: str | Path, contig_lengths: dict[str, int], ref_path: str | Path):
        self.path = require_file(path, "gVCF blocks file")
        self.settings: dict[str, str] = {}
        contigs: dict[str, int] = {}
        with self._open() as handle:
            lines = self._lines(handle)
            if (first := next(lines, "")) != f"##deepflows_gvcf_blocks={VERSION}":
                self._fail(f"not a deepflows gVCF blocks file, version {VERSION} (`make-examples --gvcf`): "
                           f"first line {first[:40]!r}")  # fmt: skip
            for line in lines:
                if not line.startswith("##"):
                    if line != "#" + "\t".join(COLUMNS):
                        self._fail(f"column line {line[:60]!r}, expected #{' '.join(COLUMNS)}")
                    break
                if match := _CONTIG.fullmatch(line):
                    contigs[match[1]] = int(match[2])
                elif "=" in line:
                    key, value = line[2:].split("=", 1)
                    self.settings[key] = value
            else:
                self._fail("no column line after the header: truncated?")
        for name, length in contigs.items():
            if name not in contig_lengths:
                self._fail(f"contig {name} is not in reference {ref_path}: made against another reference?")
            if contig_lengths[name] != length:
                self._fail(f"contig {name} has length {length} but {contig_lengths[name]} in reference {ref_path}: "
                           f"made against another reference?")  # fmt: skip
        self.contigs = contigs
        self.rank = {name: i for i, name in enumerate(contig_lengths)}  # reference order

    def __iter__(self) -> Iterator[Block]:
        previous: tuple[int, int] = (-1, 0)  # (contig rank, end) of the last block
        with self._open() as handle:
            for number, line in enumerate(self._lines(handle), 1):
                if line.startswith("#"):
                    continue
                block = self._parse(line, number)
                if (self.rank[block.contig], block.start) < previous:
                    self._fail(f"line {number}: block {block.contig}:{block.start + 1}-{block.end} overlaps or "
                               f"precedes the one before: blocks must be disjoint, in reference order")  # fmt: skip
                previous = (self.rank[block.contig], block.end)
                yield block

    def _parse(self, line: str, number: int) -> Block:
        fields = line.split("\t")
        try:
            contig, start, end, gq, min_dp = fields[0], *map(int, fields[1:5])
            pl = tuple(int(x) for x in fields[5].split(","))
        except (ValueError, IndexError):
            self._fail(f"line {number}: {line[:60]!r} is not contig, start, end, gq, min_dp, pl")
        if len(fields) != len(COLUMNS) or len(pl) != 3 or min(gq, min_dp, *pl) < 0:
            self._fail(f"line {number}: {line[:60]!r} is not contig, start, end, gq, min_dp, pl")
        if contig not in self.contigs:
            self._fail(f"line {number}: contig {contig} is not among the file's ##contig lines")
        if not 0 <= start < end <= self.contigs[contig]:
            self._fail(f"line {number}: block {start}-{end} is not within {contig} (length {self.contigs[contig]})")
        return Block(contig, start, end, gq, min_dp, pl)

    def _open(self):
        return gzip.open(self.path, "rt")

    def _lines(self, handle) -> Iterator[str]:
        try:
            for line in handle:
                yield line.rstrip("\n")
        except (OSError, EOFError, UnicodeDecodeError) as err:
            self._fail(f"cannot read ({type(err).__name__}: {err}); not bgzipped text, or truncated?")

    def _fail(self, problem: str) -> NoReturn:
        raise UserError(f"{self.path}: {problem}")
