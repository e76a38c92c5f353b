"""`deepflows make-examples`: aligned reads -> candidate variants -> pileup images in one Zarr shard.

Shard i/n owns a contiguous, base-pair-balanced slice of the regions. The slice is processed in
windows (reads fetched once per window with a margin), so memory stays bounded whatever its size.
With --gvcf, the same windows' allele counts also give the reference-confidence blocks of every other
position (deepflows.genomics.calling.gvcf_blocks); the examples are the same either way.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from deepflows.arguments import positive_int, seed

WINDOW = 25_000
# Candidates of neighbouring windows this close to a window edge join its truth matching.
LABEL_CONTEXT = 500
# Reads are fetched this far beyond a window: enough for the image margin and for deletions
# anchored inside the window that reach past it.
FETCH_MARGIN = 1_000

log = logging.getLogger("deepflows.make_examples")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from deepflows.genomics.presets import DEFAULT, PRESETS

    p.add_argument("--reads", required=True, help="coordinate-sorted, indexed BAM or CRAM")
    p.add_argument("--ref", help="reference FASTA (plain or bgzipped, .fai built if missing); required")
    p.add_argument("--regions", nargs="+", metavar="BED|chr:start-end",
                   help="where to look (BED files or 1-based inclusive ranges); default: whole reference")  # fmt: skip
    p.add_argument("--preset", default=DEFAULT, metavar="{" + ",".join(PRESETS) + "}",
                   help=f"datatype, as DeepVariant's --model_type (default {DEFAULT}): wes calls only the capture "
                        f"targets of --targets, padded by 50 bp on each side (deepflows.genomics.presets)")  # fmt: skip
    p.add_argument("--targets", metavar="BED",
                   help="capture targets (BED): look only there, padded by the preset's padding (wes 50 bp, wgs 0) "
                        "and within --regions when both are given; required with --preset wes")  # fmt: skip
    p.add_argument("--shard", default="0/1", help="this shard as i/n (0-based), default 0/1")
    p.add_argument("--out", required=True, help="output Zarr group (directory), e.g. shard-0-of-4.zarr")
    p.add_argument("--truth", help="truth VCF (bgzipped, indexed): training mode, examples get labels")
    p.add_argument("--confident", help="BED of confident truth regions (required with --truth)")
    p.add_argument("--seed", type=seed, default=2018, help="seed for read downsampling (default 2018)")
    p.add_argument("--sample", help="sample name recorded in the shard (default: the reads' SM tag)")
    p.add_argument("--chunk-size", type=positive_int, default=64, help="examples per Zarr chunk (default 64)")
    p.add_argument("--realign", action=argparse.BooleanOptionalAction, default=True,
                   help="realign reads to haplotypes assembled in active windows before finding candidates, as "
                        "the shipped model's training examples were (default: on; a model only calls examples "
                        "made as its own training examples were)")  # fmt: skip
    p.add_argument("--gvcf", metavar="BLOCKS.tsv.gz",
                   help="also write the reference-confidence blocks of every non-candidate position (bgzipped "
                        "TSV, for `postprocess --gvcf-blocks`; see deepflows.genomics.calling.gvcf_blocks)")  # fmt: skip
    p.add_argument("--gvcf-gq-binsize", type=int, default=5,
                   help="with --gvcf: consecutive positions whose GQ falls in one bin of this width form one block "
                        "(default 5, as DeepVariant's --gvcf_gq_binsize)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from deepflows.errors import UserError
    from deepflows.genomics.presets import get_preset

    if args.ref is None:
        if str(args.reads).endswith(".cram"):
            raise UserError(f"{args.reads}: CRAM needs the reference it was compressed against (--ref)")
        raise UserError("--ref is required: the reference FASTA the reads were aligned to")
    if bool(args.truth) != bool(args.confident):
        raise UserError("--truth and --confident go together (labels are only trusted inside confident regions)")
    if args.gvcf and args.gvcf == args.out:
        raise UserError(f"--gvcf {args.gvcf}: must differ from --out")
    preset = get_preset(args.preset)
    if preset.needs_targets and not args.targets:
        raise UserError(f"--preset {preset.name} needs --targets BED: an exome is called over its capture targets "
                        f"only")  # fmt: skip
    summary = make_examples(args)
    log.info("%s", summary)


def make_examples(args) -> dict:
    from deepflows import __version__
    from deepflows.genomics.examples.candidates import Thresholds
    from deepflows.genomics.examples.featurizer import candidate_images
    from deepflows.genomics.examples.labels import label_for_alt_indices
    from deepflows.genomics.examples.pileup_image import CHANNELS, PileupShape
    from deepflows.genomics.examples.sample_noise import measure
    from deepflows.genomics.io.hts import check_contigs, open_reads, open_reference
    from deepflows.genomics.io.regions import parse_shard, shard_regions, within_targets
    from deepflows.genomics.presets import get_preset
    from deepflows.store.examples import ShardWriter, file_fingerprint, region_plan, run_identity

    started = time.perf_counter()
    shard_index, shard_count = parse_shard(args.shard)
    reference = open_reference(args.ref)
    contig_lengths = dict(zip(reference.references, reference.lengths))
    reads = open_reads(args.reads, args.ref)
    preset = get_preset(getattr(args, "preset", "wgs"))
    targets = getattr(args, "targets", None)
    # wes: only the capture targets +- the preset's padding, within --regions
    regions = within_targets(args.regions, targets, contig_lengths, args.ref, preset.target_padding, "call")
    owned = shard_regions(regions, shard_index, shard_count)
    check_contigs(args.reads, reads, args.ref, reference, sorted({r.contig for r in owned}))
    labeler = _labeler(args) if args.truth else None
    shape, thresholds = PileupShape(), Thresholds()
    sample = args.sample or _sample_name(reads)
    attrs = {
        "sample": sample,
        "channels": list(CHANNELS),
        "shape": [shape.height, shape.width, len(CHANNELS)],
        "shard_index": shard_index,
        "shard_count": shard_count,
        "regions": [str(r) for r in owned],
        "region_plan": region_plan(regions),  # the whole run's: shards of other runs are told apart
        "sources": {
            "reads": file_fingerprint(args.reads),
            "reference": file_fingerprint(args.ref),
            **({"truth": file_fingerprint(args.truth), "confident": file_fingerprint(args.confident)}
               if args.truth else {}),  # fmt: skip
            **({"targets": file_fingerprint(targets)} if targets else {}),
        },
        "sample_noise": measure(reads, args.reads, reference, regions),  # the whole run's: every shard agrees
        "parameters": {"seed": args.seed, **thresholds.__dict__, "read_overlap_buffer": 5,
                       "realign": bool(args.realign), "preset": preset.name},
        "deepflows_version": __version__,
        "command": args.command_line,
    }
    n_candidates = 0
    n_bases = sum(r.length for r in owned)
    blocks = _block_writer(args, [(c, contig_lengths[c]) for c in dict.fromkeys(r.contig for r in owned)],
                           {"deepflows_shard": f"{shard_index}/{shard_count}", "deepflows_run": run_identity(attrs)})
    with blocks, ShardWriter(args.out, tuple(attrs["shape"]), attrs, labelled=labeler is not None,
                             chunk_size=args.chunk_size) as writer:  # fmt: skip
        for region in owned:
            scanned = _scan(reads, args.reads, reference, region, contig_lengths[region.contig], thresholds,
                            args.realign)  # fmt: skip
            for previous, current, following in _with_neighbours(scanned):
                n_candidates += len(current.candidates)
                if args.gvcf:
                    _add_blocks(blocks, current)
                genotypes = _genotypes(labeler, previous, current, following)
                for candidate, genotype in zip(current.candidates, genotypes):
                    if labeler and genotype is None:
                        continue  # outside the confident regions: no trustworthy label
                    columns = _image_ref_codes(current.ref_codes, current.offset, candidate.start, shape.half_width)
                    for combination, image in candidate_images(current.batch, candidate, columns, shape, thresholds,
                                                               args.seed):  # fmt: skip
                        writer.add(
                            image,
                            label=label_for_alt_indices(genotype, combination) if labeler else None,
                            contig=candidate.contig,
                            start=candidate.start,
                            end=candidate.end,
                            ref=candidate.ref,
                            alts=",".join(candidate.alts),
                            alt_indices=",".join(map(str, combination)),
                            depth=candidate.depth,
                            allele_depth=",".join(map(str, candidate.allele_depth)),
                        )
        elapsed = time.perf_counter() - started
        stats = {"n_candidates": n_candidates, "n_bases": n_bases, "seconds": round(elapsed, 3)}
        if labeler is not None:
            stats["labeler"] = labeler.stats()
        if args.gvcf:
            blocks.finish()
        n_examples = writer.commit({"stats": stats})
        if args.gvcf:
            blocks.commit()
    return {"shard": args.shard, "out": str(args.out), "examples": n_examples, **stats,
            "sample_noise": attrs["sample_noise"]["homopolymer_length_error"]}


def _block_writer(args, contigs: list[tuple[str, int]], identity: dict[str, str]):
    """The gVCF blocks writer of --gvcf (its header naming the shard and the run), or a no-op context."""
    from contextlib import nullcontext

    from deepflows.genomics.calling.gvcf_blocks import BlockWriter

    return BlockWriter(args.gvcf, contigs, args.gvcf_gq_binsize, identity) if args.gvcf else nullcontext()


def _add_blocks(blocks, scanned: ScannedWindow) -> None:
    """The window's positions other than candidate starts (their records cover them) as reference blocks."""
    import numpy as np

    counts = scanned.counts
    excluded = np.zeros(len(counts.total), dtype=bool)
    excluded[[c.start - counts.start for c in scanned.candidates]] = True
    blocks.add(scanned.window.contig, counts.start, counts.total, counts.ref_count, excluded)


def _image_ref_codes(ref_codes, offset: int, start: int, half_width: int):
    """Reference codes of the image columns, padded with N (code 4) beyond the fetched sequence."""
    import numpy as np

    columns = np.full(2 * half_width + 1, 4, dtype=np.uint8)
    lo = start - half_width - offset
    src_lo, src_hi = max(lo, 0), min(lo + len(columns), len(ref_codes))
    columns[src_lo - lo : src_hi - lo] = ref_codes[src_lo:src_hi]
    return columns


@dataclass
class ScannedWindow:
    window: object  # regions.Interval
    batch: object  # readbatch.ReadBatch
    ref_codes: object  # reference base codes of [offset, offset + len)
    offset: int
    candidates: list
    counts: object  # candidates.WindowCounts of the window: the depths behind the gVCF blocks


def _scan(reads, reads_path, reference, region, contig_length, thresholds, realign) -> Iterator[ScannedWindow]:
    """Candidates window by window along one region, with the reads and reference they came from."""
    from deepflows.genomics.examples.candidates import count_window, find_candidates
    from deepflows.genomics.examples.readbatch import encode_bases, fetch_reads
    from deepflows.genomics.io.regions import windows
    from deepflows.genomics.realign.realigner import realign_reads

    def fetch_ref(start, end):
        return reference.fetch(region.contig, start, end).upper()

    for window in windows(region, WINDOW):
        lo = max(0, window.start - FETCH_MARGIN)
        hi = min(contig_length, window.end + FETCH_MARGIN)
        batch = fetch_reads(reads, reads_path, window.contig, lo, hi, thresholds.min_mapping_quality)
        ref_seq = fetch_ref(lo, hi)
        ref_codes = encode_bases(ref_seq)
        if realign:
            batch = realign_reads(batch, ref_codes, lo)
        w0, w1 = window.start - lo, window.end - lo
        counts = count_window(batch, window.start, window.end, ref_seq[w0:w1], ref_codes[w0:w1], fetch_ref,
                              thresholds)  # fmt: skip
        candidates = find_candidates(batch, window.contig, counts, ref_seq[w0:w1], ref_codes[w0:w1], thresholds)
        yield ScannedWindow(window, batch, ref_codes, lo, candidates, counts)


def _with_neighbours(items: Iterator) -> Iterator[tuple]:
    """(previous, current, following) for each item; None beyond the ends. Holds two items at a time."""
    previous, current = None, next(items, None)
    while current is not None:
        following = next(items, None)
        yield previous, current, following
        previous, current = current, following


def _genotypes(labeler, previous, current, following) -> list:
    """Truth genotypes of the current window's candidates, matched together with neighbouring candidates
    within LABEL_CONTEXT bp so that a cluster of variants cut by a window edge is still compared whole."""
    if labeler is None:
        return [None] * len(current.candidates)
    before = [c for c in previous.candidates if c.start >= current.window.start - LABEL_CONTEXT] if previous else []
    after = [c for c in following.candidates if c.start < current.window.end + LABEL_CONTEXT] if following else []
    context = before + current.candidates + after
    genotypes = labeler.genotypes(current.window.contig, [(c.start, c.ref, c.alts) for c in context])
    return genotypes[len(before) : len(before) + len(current.candidates)]


def _labeler(args):
    from deepflows.genomics.examples.labels import TruthLabeler

    return TruthLabeler(args.truth, args.confident, args.ref)


def _sample_name(reads) -> str:
    groups = reads.header.to_dict().get("RG", [])
    names = {g.get("SM") for g in groups if g.get("SM")}
    return names.pop() if len(names) == 1 else "sample"
