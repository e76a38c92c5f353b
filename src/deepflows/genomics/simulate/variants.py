"""The simulated sample's variants: drawn at random from a germline-like spectrum, or taken from a truth VCF.

Either way the result is, per region, a sorted list of normalised, phased diploid variants that
do not overlap on a haplotype. Coordinates are 0-based half-open.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from deepflows.errors import UserError, abbreviated
from deepflows.genomics.io.hts import fetch_sequence
from deepflows.genomics.io.regions import Interval
from deepflows.genomics.io.variants import Variant, VcfReader, ambiguous_span, indexed_vcf, normalize

log = logging.getLogger(__name__)

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
    ref_name = fasta.filename.decode()
    skipped: Counter[str] = Counter()
    per_region = []
    with VcfReader(indexed_vcf(path, workdir), name=path) as reader:
        _check_truth_contigs(path, reader, fasta)
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
    skipped = +skipped  # without the zero counts
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    if skipped and not any(per_region):  # a sample without variants would look like a result
        raise UserError(f"{path}: no usable variant in the simulated regions (skipped {reasons})")
    if not any(per_region):
        log.warning("%s: no variant in the simulated regions: the sample matches the reference there", path)
    if skipped:
        log.info("%s: skipped %s", path, reasons)
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


def _check_truth_contigs(path: str, reader: VcfReader, fasta) -> None:
    """The VCF must name contigs as the reference does; name both sides if not.

    A reference may be a leading piece of the VCF's contig (test references often cut a chromosome):
    that is logged, and REF checks of each record catch a real assembly mismatch. A VCF contig shorter
    than the reference's cannot be the same assembly.
    """
    ref_lengths = dict(zip(fasta.references, fasta.lengths))
    vcf_lengths = reader.contig_lengths()
    ref_name = fasta.filename.decode()
    shared = [name for name in vcf_lengths if name in ref_lengths]
    if vcf_lengths and not shared:
        first = next(iter(vcf_lengths))
        alias = first[3:] if first.startswith("chr") else f"chr{first}"
        hint = f"; the reference names it '{alias}'" if alias in ref_lengths else ""
        raise UserError(
            f"{path}: contigs {abbreviated(vcf_lengths)} are not in reference {ref_name} "
            f"({abbreviated(ref_lengths)}){hint}"
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
        log.info("%s: ignoring contigs not in the reference: %s", path, abbreviated(missing))


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
