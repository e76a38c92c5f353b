"""Compare a query VCF with a GIAB-style truth set, counting as hap.py (with rtg vcfeval) does.

Per contig:
1. read the truth (PASS records with a non-reference genotype) and the query calls (non-reference
   genotypes; filtered records kept for the ALL rows) within `--regions`;
2. split each record into biallelic alleles, normalise them against the reference (left-align and trim,
   as `bcftools norm -f`) and decompose MNPs into SNPs, as hap.py's preprocessing does; an allele keeps
   the haplotype slots its record's genotype gives it, so a het-alt 1/2 stays one genotype;
3. cluster records whose alleles lie near each other (an indel over its whole repeat);
4. per cluster, find the largest sets of truth and query records whose genotypes spell one same pair of
   haplotype sequences over the cluster's window (the vcfeval idea, phasing ignored): their alleles are
   TP, the other truth alleles FN and query alleles FP. Records with identical normalised alleles and
   genotypes are paired first without building sequences;
5. count per allele: truth alleles overlapping the confident regions count; query alleles outside them
   are UNK (hap.py overlaps a record's reference span with the BED, and so do we). ALL rows take every
   query call, PASS rows only calls whose FILTER is PASS or `.` (matched again without the filtered ones).

A record is counted once per allele after splitting: SNP when REF and ALT are single bases (an MNP is
split into SNPs first), INDEL otherwise (insertions, deletions and complex alleles).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.genomics.haplotypes import apply_edits, cluster_by_span
from deepflows.genomics.io.variants import (
    ReferenceLike,
    Regions,
    Variant,
    VcfReader,
    ambiguous_span,
    indexed_vcf,
    normalize,
)
from deepflows.inputs import require_file
from deepflows.outputs import make_output_dir, write_text

log = logging.getLogger(__name__)

SNP, INDEL = "SNP", "INDEL"
TYPES = (INDEL, SNP)  # hap.py's row order
FILTERS = ("ALL", "PASS")
TRUTH, QUERY = "truth", "query"

# hap.py's summary.csv columns, in its order.
COLUMNS = [
    "Type", "Filter", "TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL", "QUERY.FP", "QUERY.UNK",
    "FP.gt", "FP.al", "METRIC.Recall", "METRIC.Precision", "METRIC.Frac_NA", "METRIC.F1_Score",
    "TRUTH.TOTAL.TiTv_ratio", "QUERY.TOTAL.TiTv_ratio", "TRUTH.TOTAL.het_hom_ratio", "QUERY.TOTAL.het_hom_ratio",
]  # fmt: skip
ERROR_COLUMNS = [
    "contig", "pos", "ref", "alt", "genotype", "type", "side", "decision", "reason", "filter_rows",
    "vcf_filter", "record_pos", "record_ref", "record_alt",
]  # fmt: skip

# Reasons for an FN / FP (errors.tsv):
MISSING = "missing"  # truth allele with no query call left near it
NOT_IN_TRUTH = "not_in_truth"  # query allele with no truth variant left near it
GENOTYPE_MISMATCH = "genotype_mismatch"  # the alleles agree once zygosity is ignored (hap.py's FP.gt)
ALLELE_MISMATCH = "allele_mismatch"  # other-side variants nearby, but different sequence (hap.py's FP.al)
FILTERED = "filtered"  # PASS rows only: the truth allele is matched by a filtered call

# Reference bases loaded around a contig's records (indels can slide along a repeat beyond them).
_CONTIG_PADDING = 10_000
_TRANSITIONS = {frozenset("AG"), frozenset("CT")}


@dataclass(slots=True)
class Allele:
    """One normalised biallelic allele of a record; `copies` has 1 for each haplotype slot carrying it."""

    start: int
    ref: str
    alt: str
    copies: tuple[int, int]
    index: int = -1  # position in its side's flat allele list for the contig

    @property
    def end(self) -> int:
        return self.start + len(self.ref)

    @property
    def type(self) -> str:
        return SNP if len(self.ref) == 1 and len(self.alt) == 1 else INDEL


@dataclass(slots=True)
class Call:
    """A VCF record with a non-reference genotype: the unit of matching (all its alleles or none)."""

    contig: str
    pos: int  # 1-based, as written
    ref: str
    alts: tuple[str, ...]
    genotype: str  # as written (after dropping `*` alleles), e.g. 0/1, 1|2
    filters: str  # PASS, `.` or the names joined with `;`
    filtered: bool
    alleles: list[Allele]
    span: tuple[int, int] = (0, 0)  # [start, end) covering every placement of its alleles
    signature: tuple = ()


@dataclass
class Limits:
    """Cluster sizes beyond which haplotype comparison gives way to allele-exact matching."""

    max_gap: int = 30  # records whose spans lie within this many bases are compared together
    max_calls: int = 8  # records per side searched exhaustively (2^n subsets)
    max_phasings: int = 256  # phasings of the heterozygous records of one subset


@dataclass
class MatchStats:
    """How clusters were resolved: identical records (or one side empty), by comparing haplotype
    sequences, or unresolved (too large to search: allele-exact matches only)."""

    clusters: int = 0
    exact: int = 0
    haplotype: int = 0
    unresolved: int = 0

    def add(self, method: str) -> None:
        self.clusters += 1
        setattr(self, method, getattr(self, method) + 1)


@dataclass
class RecordStats:
    """Records read per side and why some were left out."""

    records: int = 0
    calls: int = 0
    alleles: int = 0
    filtered: int = 0  # truth: skipped; query: kept for ALL rows only
    hom_ref: int = 0
    no_call: int = 0
    symbolic: int = 0
    ploidy: int = 0  # more than two alleles in GT: skipped
    off_reference: int = 0  # on a contig or past an end the reference lacks: skipped


@dataclass
class BenchmarkResult:
    rows: list[dict]
    errors: list[dict]
    matching: MatchStats
    truth_stats: RecordStats
    query_stats: RecordStats
    subsets: list[str]

    def row(self, type_: str, filter_: str, subset: str = "*") -> dict:
        return next(r for r in self.rows if (r["Type"], r["Filter"], r.get("Subset", "*")) == (type_, filter_, subset))


# ---------------------------------------------------------------------------------------------------
# Reference access


class ContigCache:
    """A ReferenceLike serving one contig window from memory (upper case), the rest from the FASTA."""

    def __init__(self, fasta, contig: str, start: int, end: int):
        self._fasta = fasta
        self.contig = contig
        self.length = fasta.get_reference_length(contig)
        self.offset = max(0, start)
        self.sequence = fasta.fetch(contig, self.offset, min(end, self.length)).upper()

    def fetch(self, reference: str, start: int, end: int) -> str:
        if reference == self.contig and start >= self.offset and end <= self.offset + len(self.sequence):
            return self.sequence[start - self.offset : end - self.offset]
        return self._fasta.fetch(reference, start, end).upper()

    def get_reference_length(self, reference: str) -> int:
        return self.length if reference == self.contig else self._fasta.get_reference_length(reference)


# ---------------------------------------------------------------------------------------------------
# Reading and preprocessing


def open_vcf(path: str | Path, workdir: Path, *, pass_only: bool, sample: str | None = None) -> VcfReader:
    """A VcfReader for a plain, gzipped or bgzipped VCF (or BCF); unindexed input is read through an indexed
    copy in `workdir` (`indexed_vcf`), so the user's directory is never written to."""
    return VcfReader(indexed_vcf(path, workdir), pass_only=pass_only, sample=sample, name=path)


def _format_genotype(genotype: Sequence[int], phased: bool) -> str:
    return ("|" if phased else "/").join(map(str, genotype))


def _to_call(
    variant: Variant, filters: tuple[str, ...], fasta: ReferenceLike, stats: RecordStats, path: Path
) -> Call | None:
    """Split, normalise and decompose one record; None when it carries no called alt allele."""
    stats.records += 1
    if variant.genotype is None:
        stats.no_call += 1
        return None
    genotype = variant.genotype
    if len(genotype) == 1:  # haploid (male chrX/Y): counts as homozygous, as hap.py does
        genotype = (genotype[0], genotype[0])
    if len(genotype) != 2:
        stats.ploidy += 1
        return None
    if not any(genotype):
        stats.hom_ref += 1
        return None
    if variant.end > fasta.get_reference_length(variant.contig):
        stats.off_reference += 1
        return None
    alleles: list[Allele] = []
    for index, alt in enumerate(variant.alts, start=1):
        copies = (int(genotype[0] == index), int(genotype[1] == index))
        if not any(copies):
            continue
        if len(variant.ref) == 1 and len(alt) == 1:  # a SNP is already normalised
            expected = fasta.fetch(variant.contig, variant.start, variant.end)
            if expected != variant.ref:
                raise UserError(
                    f"{path}: REF {variant.ref} at {variant.contig}:{variant.start + 1} does not match the "
                    f"reference ({expected}); is it for this reference?"
                )
            if alt != variant.ref:
                alleles.append(Allele(variant.start, variant.ref, alt, copies))
            continue
        try:
            norm = normalize(Variant(variant.contig, variant.start, variant.ref, (alt,)), fasta)
        except ValueError as err:
            raise UserError(f"{path}: {err}; is it for this reference?") from None
        ref, new = norm.ref, norm.alts[0]
        if ref == new:
            continue
        if len(ref) == len(new):  # SNP, or an MNP decomposed into SNPs
            alleles += [
                Allele(norm.start + i, r, a, copies) for i, (r, a) in enumerate(zip(ref, new)) if r != a
            ]
        else:
            alleles.append(Allele(norm.start, ref, new, copies))
    if not alleles:
        stats.hom_ref += 1
        return None
    stats.calls += 1
    stats.alleles += len(alleles)
    filtered = any(name != "PASS" for name in filters)
    stats.filtered += filtered
    return Call(
        contig=variant.contig,
        pos=variant.start + 1,
        ref=variant.ref,
        alts=variant.alts,
        genotype=_format_genotype(variant.genotype, variant.phased),
        filters=";".join(filters) if filters else ".",
        filtered=filtered,
        alleles=alleles,
    )


def _signature(alleles: Iterable[Allele]) -> tuple:
    """Identical for two records with the same alleles and genotype (haplotype slots may be swapped)."""
    alleles = list(alleles)
    one = tuple(sorted((a.start, a.ref, a.alt, a.copies) for a in alleles))
    other = tuple(sorted((a.start, a.ref, a.alt, a.copies[::-1]) for a in alleles))
    return min(one, other)


def _prepare(calls: list[Call], fasta: ReferenceLike) -> list[Allele]:
    """Set each call's span and signature; number the alleles; returns them as one list."""
    flat: list[Allele] = []
    for call in calls:
        starts, ends = [], []
        for allele in call.alleles:
            allele.index = len(flat)
            flat.append(allele)
            if allele.type == SNP:
                starts.append(allele.start)
                ends.append(allele.end)
            else:
                start, end = ambiguous_span(Variant(call.contig, allele.start, allele.ref, (allele.alt,)), fasta)
                starts.append(start)
                ends.append(end)
        call.span = (min(starts), max(ends))
        call.signature = _signature(call.alleles)
    return flat


# ---------------------------------------------------------------------------------------------------
# Matching


Unit = Sequence[Allele]  # the alleles of one record, all included or none


def haplotype_pairs(units: Sequence[Unit], ref_seq: str, window_start: int, max_phasings: int) -> set | None:
    """Every sorted pair of window sequences the units' genotypes spell, phasing ignored.

    Heterozygous units are tried both ways round (the first fixed); phasings in which two alleles on
    one haplotype overlap are impossible and left out. None when there are more than `max_phasings`.
    """
    fixed: tuple[list, list] = ([], [])
    free: list[tuple[list, list]] = []
    for unit in units:
        slots = (
            [(a.start, a.ref, a.alt) for a in unit if a.copies[0]],
            [(a.start, a.ref, a.alt) for a in unit if a.copies[1]],
        )
        if slots[0] == slots[1]:
            fixed[0].extend(slots[0])
            fixed[1].extend(slots[1])
        else:
            free.append(slots)
    if len(free) > 1 and 2 ** (len(free) - 1) > max_phasings:
        return None
    pairs = set()
    for flips in itertools.product((False, True), repeat=max(len(free) - 1, 0)):
        first, second = list(fixed[0]), list(fixed[1])
        for i, (a, b) in enumerate(free):
            if i and flips[i - 1]:
                a, b = b, a
            first += a
            second += b
        one = apply_edits(ref_seq, window_start, sorted(first))
        if one is None:
            continue
        two = apply_edits(ref_seq, window_start, sorted(second))
        if two is None:
            continue
        pairs.add((one, two) if one <= two else (two, one))
    return pairs


def best_subsets(
    truth: Sequence[Unit], query: Sequence[Unit], ref_seq: str, window_start: int, limits: Limits
) -> tuple[list[bool], list[bool]] | None:
    """The truth and query units to include so that both spell the same haplotype pair and as many
    alleles as possible are included (vcfeval's objective); None when the search is too large."""
    if len(truth) > limits.max_calls or len(query) > limits.max_calls:
        return None

    def subsets(units: Sequence[Unit]) -> list[tuple[int, int]]:
        """(mask, alleles) for every subset, most alleles first, then lowest mask (deterministic)."""
        sizes = [len(u) for u in units]
        masks = [(mask, sum(s for i, s in enumerate(sizes) if mask >> i & 1)) for mask in range(1 << len(units))]
        return sorted(masks, key=lambda m: (-m[1], m[0]))

    def chosen(units: Sequence[Unit], mask: int) -> list[Unit]:
        return [u for i, u in enumerate(units) if mask >> i & 1]

    truth_best: dict[tuple[str, str], tuple[int, int]] = {}
    for mask, size in subsets(truth):
        pairs = haplotype_pairs(chosen(truth, mask), ref_seq, window_start, limits.max_phasings)
        if pairs is None:
            return None
        for pair in pairs:
            if pair not in truth_best:  # subsets come largest first: the first one is the best
                truth_best[pair] = (size, mask)
    largest_truth = max(size for size, _ in truth_best.values())
    best = (0, 0, 0)  # alleles included, truth mask, query mask; empty sets always agree
    for mask, size in subsets(query):
        if size + largest_truth <= best[0]:
            break
        pairs = haplotype_pairs(chosen(query, mask), ref_seq, window_start, limits.max_phasings)
        if pairs is None:
            return None
        for pair in sorted(pairs):
            found = truth_best.get(pair)
            if found is not None and size + found[0] > best[0]:
                best = (size + found[0], found[1], mask)
    _, truth_mask, query_mask = best
    return (
        [bool(truth_mask >> i & 1) for i in range(len(truth))],
        [bool(query_mask >> i & 1) for i in range(len(query))],
    )


@dataclass
class ClusterOutcome:
    """Per call of one side: matched or not; per allele (by `Allele.index`): the reason when not."""

    truth_matched: list[bool]
    query_matched: list[bool]
    method: str
    truth_reasons: dict[int, str] = field(default_factory=dict)
    query_reasons: dict[int, str] = field(default_factory=dict)


def match_calls(
    truth: Sequence[Call], query: Sequence[Call], fasta: ReferenceLike, contig: str, limits: Limits
) -> ClusterOutcome:
    """Which truth and query calls of one cluster match, and why the others do not."""
    truth_matched = [False] * len(truth)
    query_matched = [False] * len(query)
    method = "exact"
    if truth and query:
        # Records with identical alleles and genotype pair up first, without building sequences.
        waiting: dict[tuple, list[int]] = {}
        for i, call in enumerate(truth):
            waiting.setdefault(call.signature, []).append(i)
        for j, call in enumerate(query):
            partners = waiting.get(call.signature)
            if partners:
                truth_matched[partners.pop(0)] = True
                query_matched[j] = True
        rest_truth = [i for i, m in enumerate(truth_matched) if not m]
        rest_query = [j for j, m in enumerate(query_matched) if not m]
        if rest_truth and rest_query:
            alleles = [a for c in (*truth, *query) for a in c.alleles]
            window_start = min(a.start for a in alleles)
            ref_seq = fasta.fetch(contig, window_start, max(a.end for a in alleles))
            found = best_subsets(
                [truth[i].alleles for i in rest_truth], [query[j].alleles for j in rest_query],
                ref_seq, window_start, limits,
            )  # fmt: skip
            if found is None:
                method = "unresolved"
                first = min(a.start for a in alleles)
                log.debug(
                    "cluster at %s:%d (%d truth and %d query records) is too large to compare as haplotypes: "
                    "allele-exact matches only", contig, first + 1, len(truth), len(query),
                )  # fmt: skip
            else:
                method = "haplotype"
                for i, keep in zip(rest_truth, found[0]):
                    truth_matched[i] = keep
                for j, keep in zip(rest_query, found[1]):
                    query_matched[j] = keep
    outcome = ClusterOutcome(truth_matched, query_matched, method)
    _explain(truth, query, outcome, fasta, contig, limits)
    return outcome


def _explain(
    truth: Sequence[Call], query: Sequence[Call], outcome: ClusterOutcome, fasta: ReferenceLike, contig: str,
    limits: Limits,
) -> None:  # fmt: skip
    """Reasons for the unmatched alleles, as vcfeval's second pass: alleles that match once zygosity is
    ignored (each allele alone, homozygous) are genotype mismatches; the rest are allele mismatches when
    unmatched variants of the other side remain in the cluster, else missing / not in truth."""
    lost_truth = [a for c, m in zip(truth, outcome.truth_matched) if not m for a in c.alleles]
    lost_query = [a for c, m in zip(query, outcome.query_matched) if not m for a in c.alleles]
    squashed_truth: set[int] = set()
    squashed_query: set[int] = set()
    if lost_truth and lost_query:
        alleles = lost_truth + lost_query
        window_start = min(a.start for a in alleles)
        ref_seq = fasta.fetch(contig, window_start, max(a.end for a in alleles))

        def hom(allele_list: list[Allele]) -> list[list[Allele]]:
            return [[Allele(a.start, a.ref, a.alt, (1, 1), a.index)] for a in allele_list]

        found = best_subsets(hom(lost_truth), hom(lost_query), ref_seq, window_start, limits)
        if found is None:  # too many: identical alleles only
            query_keys = {(a.start, a.ref, a.alt) for a in lost_query}
            truth_keys = {(a.start, a.ref, a.alt) for a in lost_truth}
            squashed_truth = {a.index for a in lost_truth if (a.start, a.ref, a.alt) in query_keys}
            squashed_query = {a.index for a in lost_query if (a.start, a.ref, a.alt) in truth_keys}
        else:
            squashed_truth = {a.index for a, keep in zip(lost_truth, found[0]) if keep}
            squashed_query = {a.index for a, keep in zip(lost_query, found[1]) if keep}
    truth_left = any(a.index not in squashed_truth for a in lost_truth)
    query_left = any(a.index not in squashed_query for a in lost_query)
    for a in lost_truth:
        outcome.truth_reasons[a.index] = (
            GENOTYPE_MISMATCH if a.index in squashed_truth else ALLELE_MISMATCH if query_left else MISSING
        )
    for a in lost_query:
        outcome.query_reasons[a.index] = (
            GENOTYPE_MISMATCH if a.index in squashed_query else ALLELE_MISMATCH if truth_left else NOT_IN_TRUTH
        )


# ---------------------------------------------------------------------------------------------------
# Counting


@dataclass
class _Decisions:
    """Per allele of one side: the decision and reason in the ALL and PASS comparisons (None: not a
    call in that row, i.e. a filtered query call in PASS)."""

    all: list[str | None]
    pass_: list[str | None]
    reason_all: list[str]
    reason_pass: list[str]


def _compare_contig(
    contig: str, truth: list[Call], query: list[Call], fasta: ReferenceLike, limits: Limits, stats: MatchStats
) -> tuple[list[Allele], list[Allele], _Decisions, _Decisions]:
    truth_alleles = _prepare(truth, fasta)
    query_alleles = _prepare(query, fasta)
    t = _Decisions(["FN"] * len(truth_alleles), ["FN"] * len(truth_alleles), [""] * len(truth_alleles),
                   [""] * len(truth_alleles))  # fmt: skip
    q = _Decisions(["FP"] * len(query_alleles), ["FP"] * len(query_alleles), [""] * len(query_alleles),
                   [""] * len(query_alleles))  # fmt: skip
    calls = [*truth, *query]
    for cluster in cluster_by_span([c.span for c in calls], limits.max_gap):
        cluster_truth = [calls[i] for i in cluster if i < len(truth)]
        cluster_query = [calls[i] for i in cluster if i >= len(truth)]
        outcome = match_calls(cluster_truth, cluster_query, fasta, contig, limits)
        stats.add(outcome.method)
        _record(cluster_truth, outcome.truth_matched, outcome.truth_reasons, "TP", t.all, t.reason_all)
        _record(cluster_query, outcome.query_matched, outcome.query_reasons, "TP", q.all, q.reason_all)
        if any(c.filtered for c in cluster_query):
            passing = [c for c in cluster_query if not c.filtered]
            outcome_pass = match_calls(cluster_truth, passing, fasta, contig, limits)
            for call in cluster_query:
                if call.filtered:
                    for a in call.alleles:
                        q.pass_[a.index] = None
        else:
            passing, outcome_pass = cluster_query, outcome
        _record(cluster_truth, outcome_pass.truth_matched, outcome_pass.truth_reasons, "TP", t.pass_, t.reason_pass)
        _record(passing, outcome_pass.query_matched, outcome_pass.query_reasons, "TP", q.pass_, q.reason_pass)
        for call in cluster_truth:  # matched by a filtered call only
            for a in call.alleles:
                if t.all[a.index] == "TP" and t.pass_[a.index] == "FN":
                    t.reason_pass[a.index] = FILTERED
    return truth_alleles, query_alleles, t, q


def _record(
    calls: Sequence[Call], matched: Sequence[bool], reasons: dict[int, str], tp: str, decisions: list, why: list
) -> None:
    for call, ok in zip(calls, matched):
        for a in call.alleles:
            if ok:
                decisions[a.index] = tp
            else:
                why[a.index] = reasons.get(a.index, "")


_COUNT_FIELDS = (
    "TRUTH.TOTAL", "TRUTH.TP", "TRUTH.FN", "QUERY.TOTAL", "QUERY.TP", "QUERY.FP", "QUERY.UNK", "FP.gt", "FP.al",
    "truth.ti", "truth.tv", "query.ti", "query.tv", "truth.het", "truth.hom", "query.het", "query.hom",
)  # fmt: skip


def _titv_key(allele: Allele) -> str | None:
    if allele.type != SNP:
        return None
    return "ti" if frozenset((allele.ref, allele.alt)) in _TRANSITIONS else "tv"


def _count_side(
    counts: Counter, side: str, calls: list[Call], decisions: _Decisions, confident: np.ndarray,
    strata: dict[str, np.ndarray],
) -> None:  # fmt: skip
    """Add one side's alleles of a contig to `counts[(subset, type, filter, field)]`."""
    names = list(strata)
    profiles = Counter(
        (
            a.type, _titv_key(a), "hom" if sum(a.copies) == 2 else "het", bool(confident[a.index]),
            decisions.all[a.index], decisions.reason_all[a.index],
            decisions.pass_[a.index], decisions.reason_pass[a.index],
            tuple(name for name in names if strata[name][a.index]),
        )
        for call in calls
        for a in call.alleles
    )  # fmt: skip
    for (type_, titv, zygosity, inside, all_, why_all, pass_, why_pass, in_strata), n in profiles.items():
        fields: list[tuple[str, list[str]]] = []
        for filter_, decision, reason in (("ALL", all_, why_all), ("PASS", pass_, why_pass)):
            if decision is None or (side == TRUTH and not inside):
                continue
            if side == TRUTH:
                names_ = ["TRUTH.TOTAL", "TRUTH.TP" if decision == "TP" else "TRUTH.FN"]
            elif not inside:
                names_ = ["QUERY.TOTAL", "QUERY.UNK"]
            elif decision == "TP":
                names_ = ["QUERY.TOTAL", "QUERY.TP"]
            else:
                extra = {GENOTYPE_MISMATCH: ["FP.gt"], ALLELE_MISMATCH: ["FP.al"]}.get(reason, [])
                names_ = ["QUERY.TOTAL", "QUERY.FP", *extra]
            names_ += [f"{side}.{zygosity}"] + ([f"{side}.{titv}"] if titv else [])
            fields.append((filter_, names_))
        for subset in ("*", *in_strata):
            for filter_, names_ in fields:
                for name in names_:
                    counts[(subset, type_, filter_, name)] += n


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def summary_rows(counts: Counter, subsets: Sequence[str]) -> list[dict]:
    """hap.py's summary rows (plus `Subset` when stratified) from the counters."""
    rows = []
    for subset in subsets:
        for type_ in TYPES:
            for filter_ in FILTERS:
                c = {name: counts[(subset, type_, filter_, name)] for name in _COUNT_FIELDS}
                recall = _ratio(c["TRUTH.TP"], c["TRUTH.TP"] + c["TRUTH.FN"])
                precision = _ratio(c["QUERY.TP"], c["QUERY.TP"] + c["QUERY.FP"])
                f1 = (
                    math.nan if math.isnan(recall) or math.isnan(precision)
                    else _ratio(2 * recall * precision, recall + precision)
                )  # fmt: skip
                row = {"Subset": subset} if len(subsets) > 1 else {}
                row.update({
                    "Type": type_, "Filter": filter_,
                    "TRUTH.TOTAL": c["TRUTH.TOTAL"], "TRUTH.TP": c["TRUTH.TP"], "TRUTH.FN": c["TRUTH.FN"],
                    "QUERY.TOTAL": c["QUERY.TOTAL"], "QUERY.FP": c["QUERY.FP"], "QUERY.UNK": c["QUERY.UNK"],
                    "FP.gt": c["FP.gt"], "FP.al": c["FP.al"],
                    "METRIC.Recall": recall, "METRIC.Precision": precision,
                    "METRIC.Frac_NA": _ratio(c["QUERY.UNK"], c["QUERY.TOTAL"]), "METRIC.F1_Score": f1,
                    "TRUTH.TOTAL.TiTv_ratio": _ratio(c["truth.ti"], c["truth.tv"]) if type_ == SNP else math.nan,
                    "QUERY.TOTAL.TiTv_ratio": _ratio(c["query.ti"], c["query.tv"]) if type_ == SNP else math.nan,
                    "TRUTH.TOTAL.het_hom_ratio": _ratio(c["truth.het"], c["truth.hom"]),
                    "QUERY.TOTAL.het_hom_ratio": _ratio(c["query.het"], c["query.hom"]),
                    "QUERY.TP": c["QUERY.TP"],
                })  # fmt: skip
                rows.append(row)
    return rows


def _errors(
    contig: str, side: str, calls: list[Call], decisions: _Decisions, confident: np.ndarray
) -> list[dict]:
    rows = []
    for call in calls:
        for a in call.alleles:
            i = a.index
            if not confident[i]:
                continue
            found: dict[tuple[str, str], list[str]] = {}
            for filter_, decision, reason in (
                ("ALL", decisions.all[i], decisions.reason_all[i]),
                ("PASS", decisions.pass_[i], decisions.reason_pass[i]),
            ):
                if decision in ("FN", "FP"):
                    found.setdefault((decision, reason), []).append(filter_)
            for (decision, reason), filter_rows in found.items():
                rows.append({
                    "contig": contig, "pos": a.start + 1, "ref": a.ref, "alt": a.alt, "genotype": call.genotype,
                    "type": a.type, "side": side, "decision": decision, "reason": reason,
                    "filter_rows": ",".join(filter_rows), "vcf_filter": call.filters if side == QUERY else ".",
                    "record_pos": call.pos, "record_ref": call.ref, "record_alt": ",".join(call.alts),
                })  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------
# Driver


@dataclass
class BenchmarkOptions:
    truth: str | Path
    confident: str | Path
    query: str | Path
    ref: str | Path
    regions: list[str] | None = None
    targets: str | Path | None = None  # capture targets (BED): only records overlapping them, within `regions`
    stratify: list[tuple[str, str | Path]] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    # The sample compared in a VCF with several (one sample is required otherwise: taking the first unasked
    # can score an empty column, 0 TP, without a word).
    truth_sample: str | None = None
    query_sample: str | None = None


def compare(options: BenchmarkOptions) -> BenchmarkResult:
    """Compare the query with the truth; nothing is written."""
    from deepflows.genomics.io.hts import open_reference
    from deepflows.genomics.io.regions import within_targets

    started = time.monotonic()
    confident = Regions.from_bed(require_file(options.confident, "confident BED", empty_ok=True),
                                 needed_for="nothing is compared")
    strata = {name: Regions.from_bed(require_file(path, f"stratification BED '{name}'", empty_ok=True))
              for name, path in options.stratify}
    fasta = open_reference(options.ref)
    truth_stats, query_stats, matching = RecordStats(), RecordStats(), MatchStats()
    counts: Counter = Counter()
    errors: list[dict] = []
    try:
        lengths = dict(zip(fasta.references, fasta.lengths))
        if not set(confident.contigs) & set(lengths):
            raise UserError(
                f"{options.confident}: no contig in common with reference {options.ref} "
                f"(BED has {_some(confident.contigs)}; reference has {_some(list(lengths))})"
            )
        windows: dict[str, list[tuple[int, int]]] = {}
        if options.regions or options.targets:
            # none: the whole reference; targets are counted unpadded, as hap.py -T does
            for iv in within_targets(options.regions, options.targets, lengths, options.ref, purpose="score"):
                windows.setdefault(iv.contig, []).append((iv.start, iv.end))
            if not windows:
                raise UserError(f"--regions {' '.join(options.regions)}: no interval")
        else:
            windows = {contig: [(0, length)] for contig, length in lengths.items()}
        with tempfile.TemporaryDirectory(prefix="deepflows-benchmark-") as tmp:
            truth_reader = open_vcf(options.truth, Path(tmp), pass_only=True, sample=options.truth_sample)
            query_reader = open_vcf(options.query, Path(tmp), pass_only=False, sample=options.query_sample)
            try:
                whole = [] if options.regions or options.targets else list(windows)
                _check_contigs(options.truth, truth_reader, lengths, options.ref, whole)
                _check_contigs(options.query, query_reader, lengths, options.ref, whole)
                for contig, contig_windows in windows.items():
                    truth_records = _fetch(truth_reader, contig, contig_windows)
                    query_records = _fetch(query_reader, contig, contig_windows)
                    if not truth_records and not query_records:
                        continue
                    spans = [(v.start, v.end) for v, _ in (*truth_records, *query_records)]
                    cache = ContigCache(
                        fasta, contig, min(s for s, _ in spans) - _CONTIG_PADDING,
                        max(e for _, e in spans) + _CONTIG_PADDING,
                    )  # fmt: skip
                    truth = _calls(truth_records, cache, truth_stats, Path(options.truth))
                    query = _calls(query_records, cache, query_stats, Path(options.query))
                    t_alleles, q_alleles, t_dec, q_dec = _compare_contig(
                        contig, truth, query, cache, options.limits, matching
                    )
                    t_conf, t_strata = _membership(contig, t_alleles, confident, strata)
                    q_conf, q_strata = _membership(contig, q_alleles, confident, strata)
                    _count_side(counts, TRUTH, truth, t_dec, t_conf, t_strata)
                    _count_side(counts, QUERY, query, q_dec, q_conf, q_strata)
                    errors += _errors(contig, TRUTH, truth, t_dec, t_conf)
                    errors += _errors(contig, QUERY, query, q_dec, q_conf)
                    log.info(
                        "%s: %d truth and %d query records compared (%.1f s so far)",
                        contig, len(truth), len(query), time.monotonic() - started,
                    )  # fmt: skip
                truth_stats.filtered = truth_reader.skipped_filtered
                truth_stats.symbolic = truth_reader.skipped_symbolic
                query_stats.symbolic = query_reader.skipped_symbolic
            finally:
                truth_reader.close()
                query_reader.close()
    finally:
        fasta.close()
    subsets = ["*", *strata]
    order = {c: i for i, c in enumerate(lengths)}
    errors.sort(key=lambda e: (order.get(e["contig"], len(order)), e["pos"], e["side"] != TRUTH, e["ref"], e["alt"]))
    return BenchmarkResult(summary_rows(counts, subsets), errors, matching, truth_stats, query_stats, subsets)


def _some(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "") if names else "none"


def _check_contigs(path, reader: VcfReader, lengths: dict[str, int], ref, whole: list[str]) -> None:
    """Refuse a VCF whose contigs are all unknown to the reference (`20` against `chr20`); say when a
    contig compared whole (`whole`) is longer in the VCF: the reference is a cut, records beyond it are
    left out."""
    names = reader.contigs
    if names and not set(names) & set(lengths):
        raise UserError(
            f"{path}: no contig in common with reference {ref} (VCF has {_some(names)}; "
            f"reference has {_some(list(lengths))})"
        )
    declared = reader.contig_lengths()
    cut = [name for name in whole if (declared.get(name) or 0) > lengths[name]]
    if cut:
        log.warning(
            "%s: longer contigs than in reference %s (%s); records past the reference's end are left out",
            path, ref, ", ".join(f"{name} {declared[name]:,} vs {lengths[name]:,} bp" for name in cut),
        )  # fmt: skip


def _fetch(reader: VcfReader, contig: str, windows: list[tuple[int, int]]) -> list[tuple[Variant, tuple]]:
    """Records overlapping any window, each once."""
    records = []
    seen: set = set()
    for start, end in windows:
        for variant, filters in reader.fetch_with_filters(contig, start, end):
            if len(windows) > 1:
                key = (variant.start, variant.ref, variant.alts, variant.genotype, filters)
                if key in seen:
                    continue
                seen.add(key)
            records.append((variant, filters))
    return records


def _calls(records, fasta: ReferenceLike, stats: RecordStats, path: Path) -> list[Call]:
    calls = []
    for variant, filters in records:
        call = _to_call(variant, filters, fasta, stats, path)
        if call is not None:
            calls.append(call)
    return calls


def _membership(
    contig: str, alleles: list[Allele], confident: Regions, strata: dict[str, Regions]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per allele: whether its reference span overlaps the confident regions, and each stratum."""
    starts = np.fromiter((a.start for a in alleles), dtype=np.int64, count=len(alleles))
    ends = np.fromiter((a.end for a in alleles), dtype=np.int64, count=len(alleles))
    return (
        confident.overlaps_many(contig, starts, ends),
        {name: regions.overlaps_many(contig, starts, ends) for name, regions in strata.items()},
    )


# ---------------------------------------------------------------------------------------------------
# Output


def _csv_value(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def summary_csv(result: BenchmarkResult) -> str:
    columns = (["Subset"] if len(result.subsets) > 1 else []) + COLUMNS
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in result.rows:
        writer.writerow([_csv_value(row[c]) for c in columns])
    return buffer.getvalue()


def errors_tsv(result: BenchmarkResult) -> str:
    lines = ["\t".join(ERROR_COLUMNS)]
    lines += ["\t".join(str(e[c]) for c in ERROR_COLUMNS) for e in result.errors]
    return "\n".join(lines) + "\n"


def summary_json(result: BenchmarkResult, options: BenchmarkOptions, command_line: str) -> str:
    from dataclasses import asdict

    from deepflows import __version__

    def clean(value):
        return None if isinstance(value, float) and math.isnan(value) else value

    reasons = Counter((e["side"], e["decision"], e["reason"]) for e in result.errors)
    document = {
        "schema": "deepflows.benchmark",
        "schema_version": 1,
        "deepflows_version": __version__,
        "command": command_line,
        "inputs": {
            "truth": str(options.truth), "confident": str(options.confident), "query": str(options.query),
            "ref": str(options.ref), "regions": options.regions or [],
            **({"targets": str(options.targets)} if options.targets else {}),
            "stratify": {name: str(path) for name, path in options.stratify},
        },
        "parameters": asdict(options.limits),
        "summary": [{k: clean(v) for k, v in row.items()} for row in result.rows],
        "matching": asdict(result.matching),
        "records": {"truth": asdict(result.truth_stats), "query": asdict(result.query_stats)},
        "errors": [
            {"side": side, "decision": decision, "reason": reason, "count": n}
            for (side, decision, reason), n in sorted(reasons.items())
        ],
    }  # fmt: skip
    return json.dumps(document, indent=2) + "\n"


def write_outputs(result: BenchmarkResult, out_dir: str | Path, options: BenchmarkOptions, command_line: str) -> None:
    """summary.csv, summary.json and errors.tsv in `out_dir`, each written to a temporary name first."""
    out = make_output_dir(out_dir)
    contents = {
        "summary.csv": summary_csv(result),
        "summary.json": summary_json(result, options, command_line),
        "errors.tsv": errors_tsv(result),
    }
    for name, text in contents.items():
        write_text(out / name, text)


def run_benchmark(options: BenchmarkOptions, out_dir: str | Path, command_line: str = "") -> BenchmarkResult:
    """Compare and write the outputs; returns the result."""
    started = time.monotonic()
    result = compare(options)
    write_outputs(result, out_dir, options, command_line)
    if result.matching.unresolved:
        log.warning(
            "%d clusters had more than %d records on a side and were matched allele by allele only "
            "(raise --max-calls to search them as haplotypes)", result.matching.unresolved, options.limits.max_calls,
        )  # fmt: skip
    log.info(
        "benchmark: %d clusters (%d exact, %d haplotype, %d unresolved), %d errors, %.1f s",
        result.matching.clusters, result.matching.exact, result.matching.haplotype, result.matching.unresolved,
        len(result.errors), time.monotonic() - started,
    )  # fmt: skip
    return result
