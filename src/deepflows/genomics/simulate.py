"""Simulate a diploid Illumina-like sample: variants, haplotypes, paired reads, alignment, outputs.

`simulate()` is the whole stage; the pieces (variant spectrum, haplotypes, read model, aligners,
writers) are separate so tests and other stages can use them. Coordinates are 0-based half-open.
Every random choice draws from a generator seeded by (seed, purpose, ...), so one part of the
simulation never shifts the random stream of another.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from deepflows import __version__
from deepflows.errors import UserError
from deepflows.genomics.io import open_reference, require_file
from deepflows.genomics.regions import Interval, merge, resolve_regions
from deepflows.genomics.variants import Variant, VcfReader, ambiguous_span, normalize

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".bam", ".bam.bai", ".truth.vcf.gz", ".truth.vcf.gz.tbi", ".confident.bed")
CONFIDENT_EDGE = 500  # coverage ramps up over about one fragment length from a region's edge
_UPPER_OR_N = bytes(b if b in b"ACGT" else b - 32 if b in b"acgt" else ord("N") for b in range(256))
_COMPLEMENT = bytes.maketrans(b"ACGTN", b"TGCAN")
_CODE = np.full(256, 4, dtype=np.uint8)
_CODE[np.frombuffer(b"ACGT", np.uint8)] = np.arange(4, dtype=np.uint8)
_BASE = np.frombuffer(b"ACGTN", dtype=np.uint8)
_TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}


@dataclass(frozen=True)
class VariantSpectrum:
    """Germline-like defaults: ~1 variant/kb, SNP:indel 10:1, het:hom-alt 1.6, Ti/Tv 2."""

    rate: float = 1e-3
    indel_fraction: float = 1 / 11
    hom_alt_fraction: float = 1 / 2.6
    multiallelic_fraction: float = 0.02
    transition_fraction: float = 2 / 3  # one transition vs two transversions per base: Ti/Tv = 2
    indel_length_p: float = 0.45  # geometric: ~45% 1 bp, ~95% up to 5 bp
    max_indel: int = 20
    min_gap: int = 10  # bp between variants, counted from where an indel could slide to


@dataclass(frozen=True)
class ReadModel:
    """Illumina-like pairs: depth over both haplotypes, normal insert sizes, error rates scaled together."""

    depth: float = 30.0
    read_length: int = 150
    insert_mean: float = 400.0
    insert_sd: float = 60.0
    error_rate_scale: float = 1.0
    indel_error_rate: float = 1e-4

    @property
    def max_proper_insert(self) -> int:
        return int(self.insert_mean + 5 * self.insert_sd)


@dataclass(frozen=True)
class SimulationOptions:
    ref: str
    out_prefix: str
    regions: list[str] | None = None
    exclude: list[str] | None = None
    truth: str | None = None
    spectrum: VariantSpectrum = VariantSpectrum()
    reads: ReadModel = ReadModel()
    seed: int = 1
    sample: str = "simulated"
    aligner: str = "mappy"
    threads: int = 1
    command_line: str = "deepflows simulate"


def simulate(opts: SimulationOptions) -> None:
    """Write PREFIX.bam(.bai), PREFIX.truth.vcf.gz(.tbi) and PREFIX.confident.bed, or nothing on error."""
    started = time.perf_counter()
    fasta = open_reference(opts.ref)
    lengths = dict(zip(fasta.references, fasta.lengths))
    regions = simulated_regions(opts.regions, opts.exclude, lengths)
    log.info("simulating %d region(s), %s bp", len(regions), f"{sum(r.length for r in regions):,}")
    with staged_outputs(opts.out_prefix) as stage:
        variant_rng = np.random.default_rng([opts.seed, 0])
        if opts.truth:
            per_region = truth_variants(opts.truth, regions, fasta, variant_rng, stage.workdir)
        else:
            per_region = random_variants(regions, fasta, opts.spectrum, variant_rng)
        variants = [v for group in per_region for v in group]
        log.info("%s", describe_variants(variants))
        write_truth_vcf(stage.path(".truth.vcf.gz"), variants, lengths, opts)
        write_bed(stage.path(".confident.bed"), confident_regions(regions, fasta))
        pairs = simulate_reads(regions, per_region, fasta, opts.reads, opts.seed)
        header = bam_header(lengths, opts.sample, opts.command_line)
        unsorted = os.path.join(stage.workdir, "unsorted.bam")
        if opts.aligner == "bwa":
            align_with_bwa(pairs, opts.ref, header, opts.threads, stage.workdir, unsorted)
        else:
            align_with_mappy(pairs, opts.ref, header, opts.reads, opts.threads, unsorted)
        sort_and_index(unsorted, stage.path(".bam"), opts.threads, stage.workdir)
    log.info("wrote %s.{bam,truth.vcf.gz,confident.bed} in %.1f s", opts.out_prefix, time.perf_counter() - started)


# ----------------------------------------------------------------------------- outputs, staged


class _Stage:
    def __init__(self, prefix: str, workdir: str):
        self.prefix, self.workdir = prefix, workdir

    def path(self, suffix: str) -> str:
        return os.path.join(self.workdir, os.path.basename(self.prefix) + suffix)


@contextlib.contextmanager
def staged_outputs(prefix: str) -> Iterator[_Stage]:
    """Outputs are written in a hidden scratch folder next to them and renamed only when all succeeded."""
    directory = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(directory):
        raise UserError(f"{prefix}: output directory {directory} does not exist")
    workdir = tempfile.mkdtemp(prefix=f".{os.path.basename(prefix)}.", suffix=".tmp", dir=directory)
    try:
        stage = _Stage(prefix, workdir)
        yield stage
        for suffix in OUTPUT_SUFFIXES:
            os.replace(stage.path(suffix), prefix + suffix)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------- regions


def simulated_regions(regions: list[str] | None, exclude: list[str] | None,
                      lengths: dict[str, int]) -> list[Interval]:
    """--region (default: every contig) minus --exclude, merged and in reference order."""
    chosen = resolve_regions(regions, lengths)
    if exclude:
        chosen = subtract(chosen, resolve_regions(exclude, lengths))
    if not chosen:
        raise UserError(f"--region {' '.join(regions or ['(all)'])}: nothing left to simulate after --exclude")
    return chosen


def subtract(intervals: list[Interval], removed: list[Interval]) -> list[Interval]:
    """Parts of merged `intervals` not covered by merged `removed`."""
    by_contig: dict[str, list[Interval]] = {}
    for r in removed:
        by_contig.setdefault(r.contig, []).append(r)
    ends = {c: [r.end for r in rs] for c, rs in by_contig.items()}
    kept = []
    for iv in intervals:
        cuts = by_contig.get(iv.contig, [])
        start = iv.start
        for cut in cuts[bisect.bisect_right(ends.get(iv.contig, []), iv.start):]:
            if cut.start >= iv.end:
                break
            if cut.start > start:
                kept.append(Interval(iv.contig, start, cut.start))
            start = max(start, cut.end)
        if start < iv.end:
            kept.append(Interval(iv.contig, start, iv.end))
    return kept


def fetch_sequence(fasta, region: Interval) -> str:
    """Upper-case reference bases; anything but ACGT (IUPAC codes, gaps) becomes N."""
    return fasta.fetch(region.contig, region.start, region.end).encode().translate(_UPPER_OR_N).decode()


def n_runs(sequence: str, offset: int) -> list[tuple[int, int]]:
    """[start, end) of each run of N, shifted by `offset`."""
    is_n = np.frombuffer(sequence.encode(), np.uint8) == ord("N")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_n.astype(np.int8), [0]])))
    return [(offset + int(a), offset + int(b)) for a, b in zip(edges[::2], edges[1::2])]


def confident_regions(regions: list[Interval], fasta) -> list[Interval]:
    """Simulated regions cut at N runs, each piece minus CONFIDENT_EDGE bp at both ends."""
    gaps = []
    for region in regions:
        gaps.extend(Interval(region.contig, a, b) for a, b in n_runs(fetch_sequence(fasta, region), region.start))
    pieces = subtract(regions, gaps)
    trimmed = [Interval(p.contig, p.start + CONFIDENT_EDGE, p.end - CONFIDENT_EDGE) for p in pieces]
    return merge([t for t in trimmed if t.end > t.start], order=list(fasta.references))


def write_bed(path: str, intervals: list[Interval]) -> None:
    with open(path, "w") as out:
        out.writelines(f"{iv.contig}\t{iv.start}\t{iv.end}\n" for iv in intervals)


# ----------------------------------------------------------------------------- variants


def random_variants(regions: list[Interval], fasta, spectrum: VariantSpectrum,
                    rng: np.random.Generator) -> list[list[Variant]]:
    """A germline-like diploid sample per region: normalised, phased, spaced apart, never on N."""
    per_region = []
    for region in regions:
        seq = fetch_sequence(fasta, region)
        positions = np.sort(rng.integers(region.start, region.end, rng.poisson(spectrum.rate * region.length)))
        drawn = (_draw_variant(region, int(p), seq, spectrum, rng) for p in positions)
        candidates = sorted((normalize(v, fasta) for v in drawn if v is not None), key=_position)
        kept, free_from = [], region.start
        for v in candidates:
            span_start, span_end = ambiguous_span(v, fasta)
            if span_start >= free_from and span_end <= region.end:
                kept.append(v)
                free_from = span_end + spectrum.min_gap
        per_region.append(kept)
    return per_region


def _position(v: Variant) -> tuple:
    return v.start, v.end, v.alts


def _draw_variant(region: Interval, pos: int, seq: str, spectrum: VariantSpectrum,
                  rng: np.random.Generator) -> Variant | None:
    i = pos - region.start
    if seq[i] == "N":
        return None
    if rng.random() < spectrum.multiallelic_fraction:
        alleles = _two_alt_alleles(seq, i, spectrum, rng)
        genotype = (1, 2) if rng.random() < 0.5 else (2, 1)
    else:
        if rng.random() < spectrum.indel_fraction:
            alleles = _indel(seq, i, spectrum, rng)
        else:
            alleles = seq[i], _snp(seq[i], spectrum, rng)
        if alleles is None:
            return None
        if rng.random() < spectrum.hom_alt_fraction:
            genotype = (1, 1)
        else:
            genotype = (0, 1) if rng.random() < 0.5 else (1, 0)
    ref, *alts = alleles
    return Variant(region.contig, pos, ref, tuple(alts), genotype=genotype, phased=True)


def _snp(base: str, spectrum: VariantSpectrum, rng: np.random.Generator) -> str:
    if rng.random() < spectrum.transition_fraction:
        return _TRANSITION[base]
    transversions = [b for b in "ACGT" if b not in (base, _TRANSITION[base])]
    return transversions[int(rng.integers(2))]


def _indel(seq: str, i: int, spectrum: VariantSpectrum, rng: np.random.Generator) -> tuple[str, str] | None:
    """(REF, ALT) anchored at seq[i]; insertions copy the following bases half the time, as STR expansions do."""
    size = min(spectrum.max_indel, int(rng.geometric(spectrum.indel_length_p)))
    following = seq[i + 1:i + 1 + size]
    if rng.random() < 0.5:
        deleted = seq[i:i + 1 + size]
        return (deleted, seq[i]) if len(deleted) == size + 1 and "N" not in deleted else None
    if rng.random() < 0.5 and len(following) == size and "N" not in following:
        inserted = following
    else:
        inserted = "".join("ACGT"[b] for b in rng.integers(0, 4, size))
    return seq[i], seq[i] + inserted


def _two_alt_alleles(seq: str, i: int, spectrum: VariantSpectrum,
                     rng: np.random.Generator) -> tuple[str, str, str]:
    """REF and two different ALTs at one site: two SNPs, or two indels padded to a common REF."""
    if rng.random() < 0.3:
        first, second = _indel(seq, i, spectrum, rng), _indel(seq, i, spectrum, rng)
        if first and second:
            ref = max(first[0], second[0], key=len)
            alt1, alt2 = first[1] + ref[len(first[0]):], second[1] + ref[len(second[0]):]
            if alt1 != alt2:
                return ref, alt1, alt2
    alt1, alt2 = rng.choice([b for b in "ACGT" if b != seq[i]], 2, replace=False)
    return seq[i], str(alt1), str(alt2)


def truth_variants(path: str, regions: list[Interval], fasta, rng: np.random.Generator,
                   workdir: str) -> list[list[Variant]]:
    """The sample's genotypes from a VCF, per region: normalised, phased (at random where unphased)."""
    indexed = _indexed_vcf(path, workdir)
    _check_truth_contigs(path, indexed, fasta)
    ref_name = fasta.filename.decode()
    skipped: Counter[str] = Counter()
    per_region = []
    with VcfReader(indexed) as reader:
        for region in regions:
            chosen = []
            for v in reader.fetch(region.contig, region.start, region.end):
                v = _diploid_phased(v, rng, skipped)
                if v is None:
                    continue
                try:
                    v = normalize(v, fasta)
                except ValueError as err:  # REF differs from the reference
                    raise UserError(f"{path}: {err}; made on another reference than {ref_name}?") from None
                if region.start <= v.start and v.end <= region.end:
                    chosen.append(v)
                else:
                    skipped["crossing a region edge"] += 1
            per_region.append(drop_conflicts(sorted(chosen, key=_position), skipped))
        skipped["symbolic"] += reader.skipped_symbolic
        skipped["filtered (not PASS)"] += reader.skipped_filtered
    if skipped:
        log.info("%s: skipped %s", path, ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
    return per_region


def _diploid_phased(v: Variant, rng: np.random.Generator, skipped: Counter) -> Variant | None:
    """Keep only the ALTs the genotype uses; phase unphased hets at random; None for no-calls and hom-ref."""
    if v.genotype is None:
        skipped["missing GT"] += 1
        return None
    if len(v.genotype) != 2:
        skipped["not diploid"] += 1
        return None
    if v.genotype == (0, 0):
        skipped["ref-only GT"] += 1
        return None
    if any(set(allele) - set("ACGTN") for allele in v.alleles):
        skipped["non-ACGTN allele"] += 1
        return None
    used = sorted({a for a in v.genotype if a > 0})
    renumber = {0: 0, **{old: new for new, old in enumerate(used, start=1)}}
    genotype = tuple(renumber[a] for a in v.genotype)
    if not v.phased and rng.random() < 0.5:
        genotype = genotype[::-1]
    return replace(v, alts=tuple(v.alts[a - 1] for a in used), genotype=genotype, phased=True)


def drop_conflicts(variants: list[Variant], skipped: Counter) -> list[Variant]:
    """Drop records that overlap an earlier record on a haplotype both change (sorted input)."""
    kept, free_from = [], [0, 0]
    for v in variants:
        carriers = [h for h in (0, 1) if v.genotype[h] > 0]
        if any(v.start < free_from[h] for h in carriers):
            skipped["overlapping another record on a haplotype"] += 1
            continue
        for h in carriers:
            free_from[h] = v.end
        kept.append(v)
    return kept


def _indexed_vcf(path: str, workdir: str) -> str:
    """`path` when it has a tabix/CSI index, else an indexed bgzipped copy in the scratch folder."""
    import pysam

    require_file(path, "truth VCF")
    if any(os.path.exists(path + ext) for ext in (".tbi", ".csi")):
        return path
    copy = os.path.join(workdir, "truth-input.vcf" + (".gz" if path.endswith(".gz") else ""))
    shutil.copyfile(path, copy)
    try:
        return pysam.tabix_index(copy, preset="vcf", force=True)
    except (OSError, ValueError):
        raise UserError(f"{path}: cannot index VCF; is it sorted by position, and bgzipped if compressed?") from None


def _check_truth_contigs(path: str, indexed: str, fasta) -> None:
    """The VCF must name contigs as the reference does; name both sides if not.

    A reference may be a leading piece of the VCF's contig (test references often cut a chromosome):
    that is logged, and REF checks of each record catch a real assembly mismatch. A VCF contig shorter
    than the reference's cannot be the same assembly.
    """
    import pysam

    ref_lengths = dict(zip(fasta.references, fasta.lengths))
    try:
        with pysam.VariantFile(indexed) as vcf:
            vcf_lengths = {name: contig.length for name, contig in vcf.header.contigs.items()}
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot open as VCF ({err})") from None
    ref_name = fasta.filename.decode()
    shared = [name for name in vcf_lengths if name in ref_lengths]
    if vcf_lengths and not shared:
        first = next(iter(vcf_lengths))
        alias = first[3:] if first.startswith("chr") else f"chr{first}"
        hint = f"; the reference names it '{alias}'" if alias in ref_lengths else ""
        raise UserError(
            f"{path}: contigs {_some(vcf_lengths)} are not in reference {ref_name} ({_some(ref_lengths)}){hint}"
        )
    for name in shared:
        if vcf_lengths[name] is not None and vcf_lengths[name] > ref_lengths[name]:
            log.info("%s: reference %s holds only the first %s bp of %s", path, ref_name, f"{ref_lengths[name]:,}", name)
        elif vcf_lengths[name] is not None and vcf_lengths[name] < ref_lengths[name]:
            raise UserError(
                f"{path}: contig '{name}' is {vcf_lengths[name]:,} bp here but {ref_lengths[name]:,} bp in "
                f"reference {ref_name}: made on another assembly?"
            )
    missing = [name for name in vcf_lengths if name not in ref_lengths]
    if missing:
        log.info("%s: ignoring contigs not in the reference: %s", path, _some(missing))


def _some(names) -> str:
    names = list(names)
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def variant_kind(v: Variant) -> str:
    if len(v.alts) > 1:
        return "multi-allelic"
    if len(v.ref) != len(v.alts[0]):
        return "indel"
    return "SNP" if len(v.ref) == 1 else "MNP"


def describe_variants(variants: list[Variant]) -> str:
    kinds = Counter(map(variant_kind, variants))
    zygosity = Counter("hom-alt" if v.genotype[0] == v.genotype[1] else "het" for v in variants)
    return (f"{len(variants)} variants: {kinds['SNP']} SNPs, {kinds['indel']} indels, {kinds['MNP']} MNPs, "
            f"{kinds['multi-allelic']} multi-allelic; {zygosity['het']} het, {zygosity['hom-alt']} hom-alt")


def write_truth_vcf(path: str, variants: list[Variant], lengths: dict[str, int], opts: SimulationOptions) -> None:
    """Bgzipped, tabix-indexed VCF 4.2 with phased genotypes; `path` must end in .vcf.gz."""
    import pysam

    plain = path[: -len(".gz")]
    with open(plain, "w") as out:
        out.write("##fileformat=VCFv4.2\n")
        out.write(f"##source=deepflows simulate {__version__}\n")
        out.write(f"##deepflowsCommand={opts.command_line}\n")
        out.write(f"##reference=file:{opts.ref}\n")
        out.writelines(f"##contig=<ID={name},length={length}>\n" for name, length in lengths.items())
        out.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype of the simulated sample">\n')
        out.write(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{opts.sample}\n")
        for v in variants:
            gt = "|".join(map(str, v.genotype))
            out.write(f"{v.contig}\t{v.start + 1}\t.\t{v.ref}\t{','.join(v.alts)}\t.\tPASS\t.\tGT\t{gt}\n")
    pysam.tabix_index(plain, preset="vcf", force=True)


# ----------------------------------------------------------------------------- haplotypes and reads


def build_haplotype(seq: str, region: Interval, variants: list[Variant], hap: int) -> tuple[bytes, np.ndarray]:
    """One haplotype of a region and, per base, the reference position it came from.

    Inserted bases map to their anchor base; deleted reference bases have no haplotype base.
    """
    pieces, origin, cursor = [], [], region.start
    for v in variants:
        allele = v.genotype[hap]
        if allele == 0:
            continue
        alt = v.alts[allele - 1]
        pieces += [seq[cursor - region.start:v.start - region.start], alt]
        origin += [np.arange(cursor, v.start), v.start + np.minimum(np.arange(len(alt)), len(v.ref) - 1)]
        cursor = v.end
    pieces.append(seq[cursor - region.start:])
    origin.append(np.arange(cursor, region.end))
    return "".join(pieces).encode(), np.concatenate(origin).astype(np.int64)


@dataclass
class ReadPairs:
    """A batch of pairs as sequenced: ASCII bases and Phred qualities, [n, read_length] each."""

    names: list[str]
    seq1: np.ndarray
    qual1: np.ndarray
    seq2: np.ndarray
    qual2: np.ndarray


def read_name(contig: str, index: int, hap: int, ref_start: int, ref_end: int) -> str:
    """`sim:{contig}:{index}:{haplotype 1|2}:{fragment start}-{end}` (1-based inclusive reference span)."""
    return f"sim:{contig}:{index}:{hap + 1}:{ref_start + 1}-{ref_end}"


def read_origin(name: str) -> tuple[str, int, int, int]:
    """(contig, haplotype 0|1, start, end) of the fragment a simulated read came from (0-based half-open)."""
    head, _index, hap, span = name.rsplit(":", 3)
    start, end = span.split("-")
    return head.removeprefix("sim:"), int(hap) - 1, int(start) - 1, int(end)


def simulate_reads(regions: list[Interval], per_region: list[list[Variant]], fasta, model: ReadModel,
                   seed: int, batch_size: int = 20_000) -> Iterator[ReadPairs]:
    """Pairs from both haplotypes of every region, half the depth each, in batches."""
    counts: Counter[str] = Counter()
    for r, (region, variants) in enumerate(zip(regions, per_region)):
        seq = fetch_sequence(fasta, region)
        for hap in (0, 1):
            haplotype, origin = build_haplotype(seq, region, variants, hap)
            rng = np.random.default_rng([seed, 1, r, hap])
            before = counts["pairs"]
            for starts, ends, template1, template2 in _fragments(haplotype, model, rng, batch_size, counts):
                seq1, qual1 = sequence_reads(template1, model, rng)
                seq2, qual2 = sequence_reads(template2, model, rng)
                spans = zip(origin[starts].tolist(), (origin[ends - 1] + 1).tolist())
                names = [read_name(region.contig, counts["pairs"] + i, hap, a, b) for i, (a, b) in enumerate(spans)]
                counts["pairs"] += len(names)
                yield ReadPairs(names, seq1, qual1, seq2, qual2)
            log.info("%s haplotype %d: %d pairs", region, hap + 1, counts["pairs"] - before)
    log.info("simulated %d pairs (skipped %d fragments with N, %d haplotypes shorter than a read)",
             counts["pairs"], counts["with N"], counts["too short"])


def _fragments(haplotype: bytes, model: ReadModel, rng: np.random.Generator, batch_size: int,
               counts: Counter) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Fragment [start, end) on the haplotype and the templates of read 1 and read 2 (ASCII, read direction)."""
    length, read_length = len(haplotype), model.read_length
    if length < read_length:
        counts["too short"] += 1
        return
    bases = np.frombuffer(haplotype, np.uint8)
    # uniform fragment starts leave the ends thinner; the interior gets the target depth
    usable = max(length - model.insert_mean, read_length)
    remaining = rng.poisson(model.depth / 2 * usable / (2 * read_length))
    steps = np.arange(read_length + 4)  # a few template bases past the read end, for deletion errors
    while remaining > 0:
        n = min(batch_size, remaining)
        remaining -= n
        inserts = np.clip(np.rint(rng.normal(model.insert_mean, model.insert_sd, n)), read_length, length)
        starts = rng.integers(0, length - inserts.astype(np.int64) + 1)
        ends = starts + inserts.astype(np.int64)
        forward = bases[np.minimum(starts[:, None] + steps, length - 1)]
        backward = _complement_codes(bases[np.maximum(ends[:, None] - 1 - steps, 0)])
        from_reverse_strand = (rng.random(n) < 0.5)[:, None]
        template1 = np.where(from_reverse_strand, backward, forward)
        template2 = np.where(from_reverse_strand, forward, backward)
        has_n = ((template1[:, :read_length] == ord("N")) | (template2[:, :read_length] == ord("N"))).any(axis=1)
        counts["with N"] += int(has_n.sum())
        yield starts[~has_n], ends[~has_n], template1[~has_n], template2[~has_n]


def _complement_codes(ascii_bases: np.ndarray) -> np.ndarray:
    return _BASE[np.where(_CODE[ascii_bases] < 4, 3 - _CODE[ascii_bases], 4)]


def quality_profile(n: int, read_length: int, rng: np.random.Generator) -> np.ndarray:
    """Phred qualities [n, read_length]: ~Q35 for the first cycles, ~Q37-38, decaying toward the 3' end;
    per-read offsets, per-base noise and, in 5% of reads, a Q2 tail (Illumina's 'B' tail)."""
    cycle = np.arange(read_length)
    mean = 37.5 - 2.5 * np.exp(-cycle / 2) - 9 * (cycle / max(read_length - 1, 1)) ** 2.5
    q = mean + rng.normal(0, 1.5, (n, 1)) + rng.normal(0, 2.5, (n, read_length))
    tail_from = np.where(rng.random(n) < 0.05, rng.integers(int(0.6 * read_length), read_length, n), read_length)
    q[cycle[None, :] >= tail_from[:, None]] = 2
    return np.clip(np.rint(q), 2, 41).astype(np.uint8)


def sequence_reads(templates: np.ndarray, model: ReadModel, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Reads of `model.read_length` from templates (ASCII, read direction, a few bases longer):
    rare 1-bp indel errors, then substitutions with the probability each base's quality claims."""
    n, read_length = len(templates), model.read_length
    reads = templates[:, :read_length].copy()
    indel_rate = min(model.indel_error_rate * model.error_rate_scale, 0.01)
    for row in np.flatnonzero(rng.binomial(read_length, indel_rate, n)):
        reads[row] = _with_indel_error(templates[row], read_length, rng)
    quals = quality_profile(n, read_length, rng)
    error = rng.random((n, read_length)) < np.minimum(10 ** (quals / -10.0) * model.error_rate_scale, 0.75)
    codes = _CODE[reads[error]]
    swapped = np.where(codes < 4, (codes + rng.integers(1, 4, len(codes))) % 4, 4)
    reads[error] = _BASE[swapped]
    return reads, quals


def _with_indel_error(template: np.ndarray, read_length: int, rng: np.random.Generator) -> np.ndarray:
    at = int(rng.integers(1, read_length - 1))
    if rng.random() < 0.5:  # a skipped template base
        return np.concatenate([template[:at], template[at + 1:]])[:read_length]
    return np.concatenate([template[:at], _BASE[rng.integers(0, 4, 1)], template[at:]])[:read_length]


# ----------------------------------------------------------------------------- alignment


def bam_header(lengths: dict[str, int], sample: str, command_line: str) -> dict:
    return {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [{"SN": name, "LN": length} for name, length in lengths.items()],
        "RG": [{"ID": sample, "SM": sample, "LB": sample, "PL": "ILLUMINA"}],
        "PG": [{"ID": "deepflows-simulate", "PN": "deepflows", "VN": __version__, "CL": command_line}],
    }


@dataclass(frozen=True)
class _Hit:
    tid: int
    pos: int
    end: int
    reverse: bool
    mapq: int
    cigar: list[tuple[int, int]]
    nm: int


def align_with_mappy(pairs: Iterator[ReadPairs], ref: str, header: dict, model: ReadModel, threads: int,
                     out_path: str) -> None:
    """Paired minimap2 (preset sr) through mappy; one primary record per read, unmapped reads kept."""
    import mappy
    import pysam

    aligner = mappy.Aligner(ref, preset="sr", n_threads=max(threads, 1))
    if not aligner:
        raise UserError(f"{ref}: minimap2 could not index the reference")
    described = {**header["PG"][0], "DS": f"aligned with minimap2 {mappy.__version__} (mappy, preset sr)"}
    header = {**header, "PG": [described]}
    buffer = mappy.ThreadBuffer()
    max_fragment = max(800, model.max_proper_insert)
    counts = Counter()
    with pysam.AlignmentFile(out_path, "wbu", header=header) as out:  # uncompressed: sorting reads it once
        tids = {name: i for i, name in enumerate(out.references)}
        sample = header["RG"][0]["ID"]
        for batch in pairs:
            for i, name in enumerate(batch.names):
                seq1, seq2 = batch.seq1[i].tobytes(), batch.seq2[i].tobytes()
                hits: list[_Hit | None] = [None, None]
                for h in aligner.map(seq1, seq2=seq2, buf=buffer, max_frag_len=max_fragment):
                    if h.is_primary and hits[h.read_num - 1] is None:
                        hits[h.read_num - 1] = _mappy_hit(h, tids, len(seq1) if h.read_num == 1 else len(seq2))
                reads = ((seq1, batch.qual1[i]), (seq2, batch.qual2[i]))
                for record in pair_records(out.header, name, reads, hits, sample, model.max_proper_insert):
                    out.write(record)
                counts["pairs"] += 1
                counts["mapped"] += sum(h is not None for h in hits)
    log.info("mappy: %d of %d reads mapped (%.2f%%)", counts["mapped"], 2 * counts["pairs"],
             100 * counts["mapped"] / max(2 * counts["pairs"], 1))


def _mappy_hit(h, tids: dict[str, int], length: int) -> _Hit:
    q_st, q_en = h.q_st, h.q_en
    if h.read_num == 2:  # mappy maps read 2 as its reverse complement and reports query positions on that
        q_st, q_en = length - h.q_en, length - h.q_st
    reverse = h.strand < 0
    lead, trail = (length - q_en, q_st) if reverse else (q_st, length - q_en)
    cigar = [(op, n) for n, op in h.cigar]
    if lead:
        cigar.insert(0, (4, lead))
    if trail:
        cigar.append((4, trail))
    return _Hit(tids[h.ctg], h.r_st, h.r_en, reverse, h.mapq, cigar, h.NM)


def pair_records(header, name: str, reads, hits: list[_Hit | None], sample: str, max_proper_insert: int) -> list:
    """Two BAM records with mate fields, TLEN and flags filled in; SEQ/QUAL in reference orientation.

    An unmapped read with a mapped mate takes the mate's position, so sorting keeps them together.
    """
    import pysam

    proper = _is_proper_pair(*hits, max_proper_insert)
    records = []
    for k in (0, 1):
        hit, mate = hits[k], hits[1 - k]
        seq, qual = reads[k]
        place = hit or mate
        a = pysam.AlignedSegment(header)
        a.query_name = name
        a.flag = 0x1 | (0x40 if k == 0 else 0x80) | (0x2 if proper else 0)
        reverse = hit is not None and hit.reverse
        a.query_sequence = (seq.translate(_COMPLEMENT)[::-1] if reverse else seq).decode()
        a.query_qualities = array.array("B", (qual[::-1] if reverse else qual).tobytes())
        if hit is None:
            a.flag |= 0x4
        else:
            a.flag |= 0x10 if reverse else 0
            a.mapping_quality = hit.mapq
            a.cigartuples = hit.cigar
        if mate is None:
            a.flag |= 0x8
        elif mate.reverse:
            a.flag |= 0x20
        if place is not None:
            a.reference_id, a.reference_start = place.tid, place.pos
            a.next_reference_id, a.next_reference_start = (mate or hit).tid, (mate or hit).pos
        if hit is not None and mate is not None and hit.tid == mate.tid:
            span = max(hit.end, mate.end) - min(hit.pos, mate.pos)
            a.template_length = span if (hit.pos, k) < (mate.pos, 1 - k) else -span
        tags = [("RG", sample, "Z")]
        if hit is not None:
            tags.insert(0, ("NM", hit.nm, "i"))
        a.set_tags(tags)
        records.append(a)
    return records


def _is_proper_pair(first: _Hit | None, second: _Hit | None, max_insert: int) -> bool:
    """Both mapped to one contig, facing each other (forward read left of reverse read), close enough."""
    if first is None or second is None or first.tid != second.tid or first.reverse == second.reverse:
        return False
    forward, backward = (second, first) if first.reverse else (first, second)
    return forward.pos <= backward.end and max(forward.end, backward.end) - min(forward.pos, backward.pos) <= max_insert


def align_with_bwa(pairs: Iterator[ReadPairs], ref: str, header: dict, threads: int, workdir: str,
                   out_path: str) -> None:
    """FASTQ files in the scratch folder, `bwa mem` (indexing the reference first if needed), unsorted BAM."""
    if shutil.which("bwa") is None:
        raise UserError("--aligner bwa: `bwa` is not on PATH")
    ref = os.path.abspath(ref)
    if not os.path.exists(ref + ".bwt"):
        log.info("bwa index %s", ref)
        done = subprocess.run(["bwa", "index", ref], capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"{ref}: bwa index failed ({_last_line(done.stderr)})")
    n_pairs = 0
    with open(os.path.join(workdir, "r1.fq"), "w") as fq1, open(os.path.join(workdir, "r2.fq"), "w") as fq2:
        for batch in pairs:
            for i, name in enumerate(batch.names):
                for fq, seq, qual in ((fq1, batch.seq1[i], batch.qual1[i]), (fq2, batch.seq2[i], batch.qual2[i])):
                    fq.write(f"@{name}\n{seq.tobytes().decode()}\n+\n{(qual + 33).tobytes().decode()}\n")
            n_pairs += len(batch.names)
    read_group = "@RG\\t" + "\\t".join(f"{key}:{value}" for key, value in header["RG"][0].items())
    # -K fixes the batch size, so the output does not depend on the thread count
    command = ["bwa", "mem", "-t", str(threads), "-K", "100000000", "-R", read_group, ref, "r1.fq", "r2.fq"]
    log_path = os.path.join(workdir, "bwa.log")
    with open(log_path, "w") as bwa_log:
        bwa = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=bwa_log)
        try:
            mapped = _copy_bwa_records(bwa.stdout, header, out_path)
        except (OSError, ValueError):  # bwa stopped early; its log says why
            mapped = None
    if bwa.wait() != 0 or mapped is None:
        with open(log_path) as text:
            raise UserError(f"{ref}: bwa mem failed ({_last_line(text.read())})")
    log.info("bwa mem: %d of %d reads mapped (%.2f%%)", mapped, 2 * n_pairs, 100 * mapped / max(2 * n_pairs, 1))


def _copy_bwa_records(stream, header: dict, out_path: str) -> int:
    """bwa's SAM into an unsorted BAM under our header (same contig order); returns the mapped reads."""
    import pysam

    mapped = 0
    with pysam.AlignmentFile(stream, "r") as sam:
        # bwa's own @PG keeps its version but not its command line, which names the scratch FASTQs
        bwa_pg = [{k: v for k, v in pg.items() if k != "CL"} for pg in sam.header.to_dict().get("PG", [])]
        ours = {**header["PG"][0], **({"PP": bwa_pg[-1]["ID"]} if bwa_pg else {})}
        with pysam.AlignmentFile(out_path, "wbu", header={**header, "PG": [*bwa_pg, ours]}) as out:
            for record in sam:
                mapped += not record.is_unmapped
                out.write(record)
    return mapped


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def sort_and_index(unsorted: str, out_path: str, threads: int, workdir: str) -> None:
    import pysam

    # --no-PG: the sort's command line would carry scratch paths that differ on every run
    pysam.sort("--no-PG", "-@", str(max(threads - 1, 0)), "-T", os.path.join(workdir, "sort"), "-o", out_path, unsorted)
    pysam.index(out_path)
