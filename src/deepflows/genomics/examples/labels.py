"""Training labels: genotype candidate variants against a GIAB-style truth VCF and confident regions.

Candidates and truth are compared as haplotypes (see `haplotypes`), so a candidate gets the truth's
genotype even where the two sets write the same sequence differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from deepflows.errors import UserError, abbreviated
from deepflows.genomics.haplotypes import (
    HOM_REF,
    Genotype,
    Method,
    cluster_by_span,
    match_cluster,
)
from deepflows.genomics.io.hts import open_reference
from deepflows.genomics.io.variants import Regions, Variant, VcfReader, ambiguous_span, normalize

# (start 0-based, ref, alts) as make_examples finds them.
Candidate = tuple[int, str, tuple[str, ...]]

# Truth records are fetched this far beyond the candidates: an indel written at one end of a long
# repeat can belong to a cluster at the other end.
_TRUTH_PADDING = 1000


@dataclass
class LabelCounts:
    """How the clusters holding candidates were resolved (see `haplotypes.ClusterMatch`)."""

    clusters: int = 0
    exact_matches: int = 0
    haplotype_matches: int = 0
    unresolved: int = 0

    def add(self, method: Method) -> None:
        self.clusters += 1
        if method == "exact":
            self.exact_matches += 1
        elif method == "haplotype":
            self.haplotype_matches += 1
        else:
            self.unresolved += 1


class TruthLabeler:
    """Genotypes candidates so that together they reproduce the truth haplotypes.

    Only PASS truth records overlapping the confident regions count, phasing ignored. Candidates
    within `max_gap` bases of each other or of a truth variant (indels over their whole repeat) are
    judged together; clusters with more than `max_variants` candidates or truth variants fall back to
    allele-exact matching. Clusters are formed from the candidates of one call, so pass all candidates
    of a region at once rather than one by one.
    """

    def __init__(
        self,
        truth_vcf: str | Path,
        confident_bed: str | Path,
        fasta_path: str | Path,
        *,
        max_gap: int = 10,
        max_variants: int = 12,
    ):
        self.truth_vcf = Path(truth_vcf)
        self.max_gap = max_gap
        self.max_variants = max_variants
        self.confident = Regions.from_bed(confident_bed, needed_for="no candidate could get a label")
        self.counts = LabelCounts()
        self._truth = VcfReader(truth_vcf)
        self._fasta = open_reference(fasta_path)
        _share_contigs(confident_bed, self.confident.contigs, fasta_path, self._fasta.references)
        _share_contigs(truth_vcf, self._truth.contigs, fasta_path, self._fasta.references)

    def genotypes(self, contig: str, candidates: Sequence[Candidate]) -> list[Genotype | None]:
        """Per candidate, its genotype over (ref, *alts), or None when not wholly in a confident region.

        Candidates that explain no truth variant get (0, 0). Raises ValueError when a candidate's REF
        does not match the reference.
        """
        if not candidates or contig not in self.confident.contigs:
            return [None] * len(candidates)
        if contig not in self._truth.contigs:
            raise UserError(f"{self.truth_vcf}: no contig {contig!r} in the header, but the confident BED has it")
        variants = [normalize(Variant(contig, start, ref, tuple(alts)), self._fasta) for start, ref, alts in candidates]
        truth = self._truth_variants(
            contig,
            max(0, min(v.start for v in variants) - _TRUTH_PADDING),
            max(v.end for v in variants) + _TRUTH_PADDING,
        )
        spans = [ambiguous_span(v, self._fasta) for v in (*truth, *variants)]
        genotypes = [HOM_REF] * len(candidates)
        for cluster in cluster_by_span(spans, self.max_gap):
            members = [i - len(truth) for i in cluster if i >= len(truth)]
            if not members:
                continue
            match = match_cluster(
                [truth[i] for i in cluster if i < len(truth)],
                [variants[i] for i in members],
                self._fasta,
                max_variants=self.max_variants,
            )
            self.counts.add(match.method)
            for i, genotype in zip(members, match.genotypes):
                genotypes[i] = genotype
        return [
            genotype if self.confident.contains(contig, start, start + len(ref)) else None
            for genotype, (start, ref, _) in zip(genotypes, candidates)
        ]

    def _truth_variants(self, contig: str, start: int, end: int) -> list[Variant]:
        """Normalised truth variants with a non-reference genotype that touch the confident regions."""
        truth = []
        for variant in self._truth.fetch(contig, start, end):
            if not variant.genotype or not any(variant.genotype):
                continue
            if not self.confident.overlaps(contig, variant.start, variant.end):
                continue
            try:
                truth.append(normalize(variant, self._fasta))
            except ValueError as err:
                raise UserError(f"{self.truth_vcf}: {err}; is it for this reference?") from err
        return truth

    def stats(self) -> dict[str, int]:
        """The counters so far, for a shard's metadata."""
        return asdict(self.counts)

    def close(self) -> None:
        self._truth.close()
        self._fasta.close()

    def __enter__(self) -> TruthLabeler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _share_contigs(path, names: list[str], ref_path, ref_names: Sequence[str]) -> None:
    """`20` against `chr20` would leave every candidate unlabelled (no examples) or hom-ref, without a word."""
    if names and not set(names) & set(ref_names):
        raise UserError(f"{path}: no contig in common with reference {ref_path} (it has {abbreviated(names)}; the "
                        f"reference has {abbreviated(ref_names)})")  # fmt: skip


def label_for_alt_indices(genotype: Genotype, alt_indices: Sequence[int]) -> int:
    """The label of the example for alts `alt_indices` (0-based): how many genotype alleles are among them.

    A 1/2 site gives 1 for (0,), 1 for (1,) and 2 for (0, 1); 0/1 gives 1 for (0,); 1/1 gives 2.
    """
    return sum(1 for allele in genotype if allele and allele - 1 in alt_indices)
