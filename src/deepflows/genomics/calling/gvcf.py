"""The gVCF of `deepflows postprocess --gvcf-out`: the VCF's records plus make_examples' reference blocks.

DeepVariant's gVCF convention (its golden gVCF is the model):
- Records: exactly the VCF's records (PASS, LowQual and RefCall alike), with the symbolic allele `<*>` (any
  allele not shown) appended as the last ALT: AD and VAF get 0 for it, PL gets 990 for every genotype that
  includes it (appended after the others, in VCF's PL order).
- Reference blocks (`deepflows.genomics.calling.gvcf_blocks`): REF the reference base at POS, ALT `<*>`, QUAL 0,
  FILTER `.`, INFO END=<last base>, FORMAT GT:GQ:MIN_DP:PL with GT 0/0, or ./. where hom-ref is not the most
  likely genotype or no read was counted.
- A block is cut where a record's REF span overlaps it, so no base is in both a block and a record, and the
  bases make_examples scanned leave no gap (its blocks skip only candidate positions, and every candidate has a
  record). Blocks of all shards are merged in reference order; overlapping blocks (a shard given twice) are
  refused. Adjacent blocks of two shards join as make_examples joins them inside a shard (same GQ bin and GT:
  the least GQ, its PL, the least MIN_DP), so the gVCF does not depend on how the regions were sharded.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from deepflows.errors import UserError
from deepflows.genomics.calling.gvcf_blocks import Block, BlocksFile, hom_ref_called, join_key
from deepflows.genomics.io.vcf_writer import VcfRecord

NON_REF = "<*>"
NON_REF_PL = 990  # DeepVariant's PL for genotypes with <*>
BLOCK_FORMAT = "GT:GQ:MIN_DP:PL"


def with_non_ref(record: VcfRecord) -> VcfRecord:
    """The record with `<*>` as its last ALT (AD 0, PL 990 for the genotypes that include it)."""
    n_alleles = len(record.alts) + 2
    return replace(record, alts=(*record.alts, NON_REF), allele_depth=(*record.allele_depth, 0),
                   pl=(*record.pl, *[NON_REF_PL] * n_alleles))  # fmt: skip


def block_line(block: Block, start: int, end: int, ref_base: str) -> str:
    """The `<*>` record of the part [start, end) of a block."""
    genotype = "0/0" if hom_ref_called(block.pl[1], block.pl[2]) else "./."
    sample = f"{genotype}:{block.gq}:{block.min_dp}:{','.join(map(str, block.pl))}"
    return "\t".join([block.contig, str(start + 1), ".", ref_base, NON_REF, "0", ".", f"END={end}", BLOCK_FORMAT,
                      sample])  # fmt: skip


def gvcf_lines(records: list[tuple[int, int, VcfRecord]], files: list[BlocksFile], reference) -> Iterator[str]:
    """The gVCF's body: `records` ((contig rank, 0-based start, record), sorted) with `<*>`, merged with the
    blocks of `files`, cut around the records' REF spans."""
    spans = _covered([(rank, start, start + len(record.ref)) for rank, start, record in records])
    calls = ((rank, start, with_non_ref(record).line()) for rank, start, record in records)
    blocks = _in_order(files)
    binsize = files[0].settings.get("gq_binsize", "") if files else ""
    if binsize.isdigit() and int(binsize) > 0:  # block_settings made sure that every file has the same
        blocks = _joined(blocks, int(binsize))
    parts = ((rank, start, block_line(block, start, end, reference.fetch(block.contig, start, start + 1).upper()))
             for rank, block, start, end in _cut(blocks, spans))  # fmt: skip
    for _, _, line in heapq.merge(calls, parts, key=lambda entry: entry[:2]):
        yield line


def block_settings(files: list[BlocksFile]) -> dict[str, str]:
    """The blocks' model settings as gVCF header lines (deepflows_gvcf_KEY); all files must share them."""
    settings: dict[str, str] = {}
    for key in ("p_error", "max_gq", "gq_binsize"):
        for f in files:
            value = f.settings.get(key, "unknown")
            first = settings.setdefault(f"deepflows_gvcf_{key}", value)
            if value != first:
                raise UserError(f"{f.path}: {key} {value}, but {first} in {files[0].path}: blocks made with other "
                                f"settings")  # fmt: skip
    return settings


def check_blocks_of_run(files: list[BlocksFile], probs_attrs: dict, probs_path) -> None:
    """The blocks files must be those of the run whose examples were called (the same reads, reference,
    regions and parameters: `deepflows_run`), one per shard, every shard: blocks of another run, or a shard
    missing, would give a gVCF that is silently wrong or has holes."""
    run, count = probs_attrs.get("run"), probs_attrs.get("shard_count")
    if run is None or count is None:
        raise UserError(f"{probs_path}: records no run (written by an older deepflows call-variants); call the "
                        f"examples again to pair them with gVCF blocks")  # fmt: skip
    shards: dict[str, Path] = {}
    for f in files:
        shard, made_by = f.settings.get("deepflows_shard"), f.settings.get("deepflows_run")
        if shard is None or made_by is None:
            raise UserError(f"{f.path}: records no shard and run (written by an older deepflows make-examples "
                            f"--gvcf); make the examples and blocks again")  # fmt: skip
        if made_by != run:
            raise UserError(f"{f.path}: blocks of another run than the examples called in {probs_path} (other "
                            f"reads, reference, regions or make-examples parameters)")  # fmt: skip
        if shard in shards:
            raise UserError(f"{f.path}: blocks of shard {shard} given twice (also {shards[shard]})")
        shards[shard] = f.path
    missing = [f"{i}/{count}" for i in range(count) if f"{i}/{count}" not in shards]
    if missing:
        raise UserError(f"--gvcf-blocks: the blocks of shard(s) {', '.join(missing)} of {count} are missing")


def _in_order(files: list[BlocksFile]) -> Iterator[tuple[int, Block]]:
    """(contig rank, block) of all files in reference order; blocks of two files may not overlap."""
    streams = [((f.rank[b.contig], b.start, b, f.path) for b in f) for f in files]
    previous = None
    for rank, start, block, path in heapq.merge(*streams, key=lambda entry: entry[:2]):
        if previous and previous[0] == rank and start < previous[1].end:
            raise UserError(f"{path}: block {block.contig}:{start + 1}-{block.end} overlaps one of {previous[2]}: "
                            f"the same shard given twice?")  # fmt: skip
        previous = (rank, block, path)
        yield rank, block


def _joined(blocks: Iterator[tuple[int, Block]], gq_binsize: int) -> Iterator[tuple[int, Block]]:
    """Adjacent blocks (of two shards) with the same GQ bin and GT as one (gvcf_blocks.merge_blocks' rule)."""

    def key(block: Block) -> tuple:
        return block.contig, int(join_key(block.gq, block.pl, gq_binsize))

    held = None
    for rank, block in blocks:
        if held and held[1].end == block.start and key(held[1]) == key(block):
            first = held[1]
            least = first if first.gq <= block.gq else block
            merged = replace(first, end=block.end, gq=least.gq, pl=least.pl, min_dp=min(first.min_dp, block.min_dp))
            held = (rank, merged)
            continue
        if held:
            yield held
        held = (rank, block)
    if held:
        yield held


def _covered(spans: Iterable[tuple[int, int, int]]) -> dict[int, tuple[list[int], list[int]]]:
    """Per contig rank, the disjoint sorted (starts, ends) of the union of [start, end) spans."""
    covered: dict[int, tuple[list[int], list[int]]] = {}
    for rank, start, end in sorted(spans):
        starts, ends = covered.setdefault(rank, ([], []))
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return covered


def _cut(blocks: Iterable[tuple[int, Block]], covered) -> Iterator[tuple[int, Block, int, int]]:
    """(rank, block, start, end) of the parts of each block outside the covered spans."""
    for rank, block in blocks:
        starts, ends = covered.get(rank, ([], []))
        start = block.start
        i = bisect.bisect_right(ends, start)  # the first span ending after the block starts
        while i < len(starts) and starts[i] < block.end:
            if starts[i] > start:
                yield rank, block, start, starts[i]
            start = max(start, ends[i])
            i += 1
        if start < block.end:
            yield rank, block, start, block.end
