"""Truth labelling: variants, normalisation (checked against bcftools), regions, haplotype matching."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pysam
import pytest

from deepflows.errors import UserError
from deepflows.genomics.examples.labels import TruthLabeler, label_for_alt_indices
from deepflows.genomics.haplotypes import apply_edits, cluster_by_span, haplotype_pairs
from deepflows.genomics.io.variants import (
    Regions,
    Variant,
    VcfReader,
    ambiguous_span,
    normalize,
    read_vcf,
    split_multiallelic,
)

CONTIG = "chrT"


def random_bases(length: int, seed: int) -> str:
    return "".join(random.Random(seed).choice("ACGT") for _ in range(length))


# A 600 bp contig: a homopolymer at 100 (A at 101..108) and a CA repeat at 200 (201..210).
HOMOPOLYMER = 100
DINUCLEOTIDE = 200
REFERENCE = (
    random_bases(HOMOPOLYMER, 1)
    + "GAAAAAAAAC"
    + random_bases(DINUCLEOTIDE - HOMOPOLYMER - 10, 2)
    + "TCACACACACAG"
    + random_bases(600 - DINUCLEOTIDE - 12, 3)
)


def write_fasta(path: Path, contigs: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in contigs.items()))
    pysam.faidx(str(path))
    return path


def write_vcf(path: Path, contigs: dict[str, str], records: list[tuple]) -> Path:
    """Records: (start 0-based, ref, alts, GT[, FILTER[, ID]]); returns the bgzipped, indexed file."""
    header = [
        "##fileformat=VCFv4.2",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=LowQual,Description="low quality">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        *(f"##contig=<ID={name},length={len(seq)}>" for name, seq in contigs.items()),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tSAMPLE",
    ]
    lines = []
    for record in sorted(records, key=lambda r: r[0]):
        start, ref, alts, gt, *rest = record
        filt, ident = rest[0] if rest else "PASS", rest[1] if len(rest) > 1 else "."
        lines.append(f"{CONTIG}\t{start + 1}\t{ident}\t{ref}\t{','.join(alts)}\t50\t{filt}\t.\tGT\t{gt}")
    path.write_text("\n".join(header + lines) + "\n")
    return Path(pysam.tabix_index(str(path), preset="vcf", force=True))


@pytest.fixture
def fasta(tmp_path: Path) -> Path:
    return write_fasta(tmp_path / "ref.fa", {CONTIG: REFERENCE})


@pytest.fixture
def make_labeler(tmp_path: Path, fasta: Path):
    """make_labeler(truth_records, bed_intervals=[(0, 600)]) -> TruthLabeler."""
    labelers = []

    def make(truth: list[tuple], bed: list[tuple[int, int]] = ((0, len(REFERENCE)),)) -> TruthLabeler:
        vcf = write_vcf(tmp_path / f"truth{len(labelers)}.vcf", {CONTIG: REFERENCE}, truth)
        bed_path = tmp_path / f"confident{len(labelers)}.bed"
        bed_path.write_text("".join(f"{CONTIG}\t{s}\t{e}\n" for s, e in bed))
        labelers.append(TruthLabeler(vcf, bed_path, fasta))
        return labelers[-1]

    yield make
    for labeler in labelers:
        labeler.close()


def ref_at(start: int, end: int) -> str:
    return REFERENCE[start:end]


def other_base(base: str) -> str:
    return "G" if base != "G" else "T"


def snp(position: int, alt: str | None = None) -> tuple[int, str, tuple[str, ...]]:
    base = REFERENCE[position]
    return position, base, (alt or other_base(base),)


def haplotype_of(records: list[tuple[int, str, tuple[str, ...]]]) -> str:
    """The reference with each record's first alt applied (to check that two spellings are equivalent)."""
    return apply_edits(REFERENCE, 0, [(s, r, alts[0]) for s, r, alts in sorted(records)])


# Equivalent spellings of edits in the repeats, checked against each other below.
HP_DEL_LEFT = (HOMOPOLYMER, "GA", ("G",))
HP_DEL_RIGHT = (HOMOPOLYMER + 7, "AA", ("A",))
HP_INS_LEFT = (HOMOPOLYMER, "G", ("GA",))
HP_INS_MIDDLE = (HOMOPOLYMER + 5, "A", ("AA",))
DI_DEL_LEFT = (DINUCLEOTIDE, "TCA", ("T",))
DI_DEL_RIGHT = (DINUCLEOTIDE + 8, "ACA", ("A",))


def test_equivalent_spellings_are_really_equivalent():
    assert haplotype_of([HP_DEL_LEFT]) == haplotype_of([HP_DEL_RIGHT])
    assert haplotype_of([HP_INS_LEFT]) == haplotype_of([HP_INS_MIDDLE])
    assert haplotype_of([DI_DEL_LEFT]) == haplotype_of([DI_DEL_RIGHT])
    for start, ref, _ in (HP_DEL_LEFT, HP_DEL_RIGHT, HP_INS_LEFT, HP_INS_MIDDLE, DI_DEL_LEFT, DI_DEL_RIGHT):
        assert ref_at(start, start + len(ref)) == ref


# ---------------------------------------------------------------------------------------------- labels


def test_identical_representation(make_labeler):
    het, hom = snp(300), snp(350)
    labeler = make_labeler([(*het, "0/1"), (*hom, "1/1")])
    assert labeler.genotypes(CONTIG, [het, hom]) == [(0, 1), (1, 1)]
    assert label_for_alt_indices((0, 1), (0,)) == 1
    assert label_for_alt_indices((1, 1), (0,)) == 2
    assert labeler.counts.exact_matches == 2 and labeler.counts.clusters == 2


@pytest.mark.parametrize(
    ("truth", "candidate"),
    [
        (HP_DEL_LEFT, HP_DEL_RIGHT),
        (HP_DEL_RIGHT, HP_DEL_LEFT),
        (DI_DEL_LEFT, DI_DEL_RIGHT),
        (DI_DEL_RIGHT, DI_DEL_LEFT),
        (HP_INS_LEFT, HP_INS_MIDDLE),
        (HP_INS_MIDDLE, HP_INS_LEFT),
    ],
    ids=["hp-del-right", "hp-del-left", "di-del-right", "di-del-left", "ins-middle", "ins-left"],
)
@pytest.mark.parametrize("gt", ["0/1", "1/1"])
def test_shifted_indels_get_the_truth_genotype(make_labeler, truth, candidate, gt):
    labeler = make_labeler([(*truth, gt)])
    expected = (0, 1) if gt == "0/1" else (1, 1)
    assert labeler.genotypes(CONTIG, [candidate]) == [expected]


def test_mnp_truth_vs_two_snp_candidates(make_labeler):
    start = 400
    ref = ref_at(start, start + 2)
    alt = other_base(ref[0]) + other_base(ref[1])
    labeler = make_labeler([(start, ref, (alt,), "0/1")])
    candidates = [snp(start, alt[0]), snp(start + 1, alt[1]), snp(start + 20)]
    assert labeler.genotypes(CONTIG, candidates) == [(0, 1), (0, 1), (0, 0)]
    assert labeler.counts.haplotype_matches == 1


def test_two_snp_truth_vs_mnp_candidate(make_labeler):
    start = 400
    ref = ref_at(start, start + 2)
    alt = other_base(ref[0]) + other_base(ref[1])
    labeler = make_labeler([(*snp(start, alt[0]), "1/1"), (*snp(start + 1, alt[1]), "1/1")])
    assert labeler.genotypes(CONTIG, [(start, ref, (alt,))]) == [(1, 1)]


def test_multiallelic_truth_vs_two_candidates_at_one_position(make_labeler):
    position = 320
    base = REFERENCE[position]
    alt1, alt2 = [b for b in "ACGT" if b != base][:2]
    labeler = make_labeler([(position, base, (alt1, alt2), "1/2")])
    assert labeler.genotypes(CONTIG, [(position, base, (alt1,)), (position, base, (alt2,))]) == [(0, 1), (0, 1)]


def test_multiallelic_truth_vs_one_multiallelic_candidate(make_labeler):
    position = 320
    base = REFERENCE[position]
    alt1, alt2 = [b for b in "ACGT" if b != base][:2]
    labeler = make_labeler([(position, base, (alt1, alt2), "1/2")])
    [genotype] = labeler.genotypes(CONTIG, [(position, base, (alt2, alt1))])
    assert genotype == (1, 2)
    assert [label_for_alt_indices(genotype, ids) for ids in [(0,), (1,), (0, 1)]] == [1, 1, 2]


def test_multiallelic_indel_truth_vs_other_spellings(make_labeler):
    # 1/2 = one A deleted on one haplotype, one A inserted on the other; candidates spelled elsewhere.
    labeler = make_labeler([(HOMOPOLYMER, "GA", ("G", "GAA"), "1/2")])
    assert labeler.genotypes(CONTIG, [HP_INS_MIDDLE, HP_DEL_RIGHT]) == [(0, 1), (0, 1)]
    assert labeler.counts.exact_matches == 1  # normalising each allele alone is enough here


def test_candidate_with_an_extra_false_allele(make_labeler):
    position = 330
    base = REFERENCE[position]
    true_alt, false_alt = [b for b in "ACGT" if b != base][:2]
    labeler = make_labeler([(position, base, (true_alt,), "0/1")])
    [genotype] = labeler.genotypes(CONTIG, [(position, base, (false_alt, true_alt))])
    assert genotype == (0, 2)
    assert [label_for_alt_indices(genotype, ids) for ids in [(0,), (1,), (0, 1)]] == [0, 1, 1]


def test_hom_alt_truth(make_labeler):
    labeler = make_labeler([(*DI_DEL_LEFT, "1/1"), (*snp(450), "1|1")])
    [deletion, substitution] = labeler.genotypes(CONTIG, [DI_DEL_RIGHT, snp(450)])
    assert (deletion, substitution) == ((1, 1), (1, 1))
    assert label_for_alt_indices(deletion, (0,)) == 2


def test_candidates_partly_outside_the_confident_regions_get_none(make_labeler):
    deletion = (DINUCLEOTIDE, "TCACA", ("T",))  # spans 200..205; the BED stops at 203
    labeler = make_labeler([(*snp(150), "0/1"), (*deletion, "0/1")], bed=[(140, 203), (500, 600)])
    candidates = [snp(150), deletion, snp(300), snp(550)]
    assert labeler.genotypes(CONTIG, candidates) == [(0, 1), None, None, (0, 0)]


def test_unexplained_truth_variant_does_not_spoil_its_neighbour(make_labeler):
    labeler = make_labeler([(*snp(300), "0/1"), (*snp(305), "1/1"), (*snp(308), "0/1")])
    assert labeler.genotypes(CONTIG, [snp(300), snp(303)]) == [(0, 1), (0, 0)]
    assert labeler.counts.unresolved == 1


def test_overlapping_candidates_on_different_haplotypes(make_labeler):
    # A het deletion over a het SNP: they must sit on different haplotypes.
    deletion = (DINUCLEOTIDE, "TCA", ("T",))
    substitution = snp(DINUCLEOTIDE + 1)
    labeler = make_labeler([(*DI_DEL_RIGHT, "0/1"), (*substitution, "0/1")])
    assert labeler.genotypes(CONTIG, [deletion, substitution]) == [(0, 1), (0, 1)]


def test_filtered_truth_and_no_truth(make_labeler):
    labeler = make_labeler([(*snp(300), "0/1", "LowQual")])
    assert labeler.genotypes(CONTIG, [snp(300)]) == [(0, 0)]
    assert labeler.genotypes(CONTIG, []) == []
    assert labeler.genotypes("chrOther", [snp(300)]) == [None]


def test_candidate_ref_must_match_the_reference(make_labeler):
    labeler = make_labeler([])
    position, base, _ = snp(300)
    with pytest.raises(ValueError, match="does not match the reference"):
        labeler.genotypes(CONTIG, [(position, other_base(base), (base,))])


def test_label_for_alt_indices():
    assert label_for_alt_indices((0, 0), (0,)) == 0
    assert label_for_alt_indices((1, 2), (0,)) == 1
    assert label_for_alt_indices((1, 2), (1,)) == 1
    assert label_for_alt_indices((1, 2), (0, 1)) == 2
    assert label_for_alt_indices((2, 2), (0,)) == 0


def test_cluster_by_span():
    spans = [(50, 51), (0, 1), (10, 12), (22, 30), (41, 42)]
    assert cluster_by_span(spans, max_gap=10) == [[1, 2, 3], [4, 0]]
    assert cluster_by_span(spans, max_gap=0) == [[1], [2], [3], [4], [0]]


# ------------------------------------------------------------------------------------- normalisation


def variant(start: int, ref: str, *alts: str, genotype=None) -> Variant:
    return Variant(CONTIG, start, ref, alts, genotype)


def test_normalize_examples(fasta):
    with pysam.FastaFile(str(fasta)) as ref:
        assert normalize(variant(*HP_DEL_RIGHT[:2], *HP_DEL_RIGHT[2]), ref) == variant(*HP_DEL_LEFT[:2], "G")
        assert normalize(variant(*DI_DEL_RIGHT[:2], "A"), ref) == variant(*DI_DEL_LEFT[:2], "T")
        padded = variant(DINUCLEOTIDE + 2, "ACACACACAG", "ACACACAG", "ACACACACACAG", genotype=(1, 2))
        assert normalize(padded, ref) == variant(DINUCLEOTIDE, "TCA", "T", "TCACA", genotype=(1, 2))
        mnp = ref_at(300, 303)
        assert normalize(variant(300, mnp, mnp[0] + other_base(mnp[1]) + mnp[2]), ref) == variant(
            301, mnp[1], other_base(mnp[1])
        )
        with pytest.raises(ValueError, match="does not match"):
            normalize(variant(300, other_base(REFERENCE[300]), "A"), ref)
        assert ambiguous_span(variant(*HP_DEL_LEFT[:2], "G"), ref) == (HOMOPOLYMER, HOMOPOLYMER + 10)


def test_normalize_at_the_contig_start(tmp_path):
    fasta = write_fasta(tmp_path / "start.fa", {CONTIG: "AAAACGT"})
    with pysam.FastaFile(str(fasta)) as ref:
        assert normalize(variant(2, "AA", "A"), ref) == variant(0, "AA", "A")


def test_split_multiallelic():
    record = variant(10, "A", "G", "T", genotype=(1, 2))
    assert split_multiallelic(record) == [
        variant(10, "A", "G", genotype=(1, 0)),
        variant(10, "A", "T", genotype=(0, 1)),
    ]
    assert split_multiallelic(variant(10, "A", "G")) == [variant(10, "A", "G")]


def repeat_rich_sequence(length: int, rng: random.Random) -> tuple[str, list[tuple[int, int, int]]]:
    """Random bases with many homopolymers and 2-4 bp tandem repeats; and the repeats' (start, end, unit)."""
    pieces, repeats, size = [], [], 0
    while size < length:
        kind = rng.random()
        if kind < 0.7:
            unit = "".join(rng.choice("ACGT") for _ in range(rng.choice([1, 1, 2, 3, 4])))
            pieces.append(unit * rng.randint(3, 12 // len(unit) + 2))
            repeats.append((size, size + len(pieces[-1]), len(unit)))
        else:
            pieces.append("".join(rng.choice("ACGT") for _ in range(rng.randint(1, 10))))
        size += len(pieces[-1])
    return "".join(pieces)[:length], [r for r in repeats if 5 < r[0] < length - 60]


def random_records(
    sequence: str, repeats: list[tuple[int, int, int]], count: int, rng: random.Random
) -> list[tuple[int, str, tuple[str, ...], str]]:
    """Random indels (mostly whole repeat units inside repeats, which slide), MNPs and multi-allelic
    sites, padded with 0-3 extra reference bases each side."""
    records = []
    while len(records) < count:
        repeat_start, repeat_end, unit = rng.choice(repeats)
        position = rng.randint(repeat_start, repeat_end)
        left, right = rng.randint(0, 3), rng.randint(0, 3)
        alts = []
        for _ in range(rng.choice([1, 1, 1, 2])):
            size = unit * rng.randint(1, 3) if rng.random() < 0.7 else rng.randint(1, 6)
            kind = rng.choice(["deletion", "repeat insertion", "repeat insertion", "insertion", "substitution"])
            if kind == "deletion":
                alts.append((size, ""))
            elif kind == "repeat insertion":  # a copy of the next bases: slides along a repeat
                alts.append((0, sequence[position : position + size]))
            elif kind == "insertion":
                alts.append((0, "".join(rng.choice("ACGT") for _ in range(size))))
            else:
                alts.append((size, "".join(rng.choice("ACGT") for _ in range(size))))
        start = position - 1 - left
        end = position + max(deleted for deleted, _ in alts) + right
        ref = sequence[start:end]
        spelled = tuple(
            sequence[start:position] + inserted + sequence[position + deleted : end] for deleted, inserted in alts
        )
        if ref in spelled or len(set(spelled)) < len(spelled):
            continue
        genotype = "0/1" if len(spelled) == 1 else rng.choice(["1/2", "2/1", "0/2", "2/2"])
        records.append((start, ref, spelled, genotype))
    return records


def bcftools_norm(vcf: Path, fasta: Path, *options: str) -> dict[str, list[tuple[int, str, tuple[str, ...], str]]]:
    """bcftools norm's records by ID: (start 0-based, ref, alts, GT)."""
    output = subprocess.run(
        ["bcftools", "norm", "-f", str(fasta), *options, str(vcf)], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, list] = {}
    for line in output.splitlines():
        if not line.startswith("#"):
            fields = line.split("\t")
            record = (int(fields[1]) - 1, fields[3], tuple(fields[4].split(",")), fields[9])
            result.setdefault(fields[2], []).append(record)
    return result


def gt_string(genotype: tuple[int, ...]) -> str:
    return "/".join(map(str, genotype))


@pytest.mark.skipif(shutil.which("bcftools") is None, reason="bcftools is not installed")
def test_normalize_and_split_agree_with_bcftools(tmp_path):
    rng = random.Random(20180101)
    sequence, repeats = repeat_rich_sequence(20_000, rng)
    fasta = write_fasta(tmp_path / "repeats.fa", {CONTIG: sequence})
    records = [(*r, "PASS", f"v{i}") for i, r in enumerate(random_records(sequence, repeats, 600, rng))]
    vcf = write_vcf(tmp_path / "random.vcf", {CONTIG: sequence}, records)
    expected_joint = bcftools_norm(vcf, fasta)
    expected_split = bcftools_norm(vcf, fasta, "-m-")
    with pysam.FastaFile(str(fasta)) as ref, VcfReader(vcf) as reader:
        variants = list(reader.fetch(CONTIG))
        assert len(variants) == len(records)
        for (*_, ident), record in zip(sorted(records, key=lambda r: r[0]), variants):
            joint = normalize(record, ref)
            assert [(joint.start, joint.ref, joint.alts, gt_string(joint.genotype))] == expected_joint[ident], ident
            split = [normalize(part, ref) for part in split_multiallelic(record)]
            got = sorted((v.start, v.ref, v.alts, gt_string(v.genotype)) for v in split)
            assert got == sorted(expected_split[ident]), ident


def test_respelled_random_truth_is_reproduced(tmp_path):
    """Random truth (padded, MNPs split into SNPs, false SNPs beside) gets genotypes that rebuild it."""
    rng = random.Random(7)
    sequence, repeats = repeat_rich_sequence(40_000, rng)
    fasta = write_fasta(tmp_path / "repeats.fa", {CONTIG: sequence})
    truth, candidates, windows, last_end = [], [], [], 0
    with pysam.FastaFile(str(fasta)) as ref:
        for start, ref_allele, alts, _ in sorted(random_records(sequence, repeats, 400, rng)):
            lo, hi = ambiguous_span(normalize(variant(start, ref_allele, *alts[:1]), ref), ref)
            if lo < last_end + 60:  # one truth variant per cluster, so each can be checked alone
                continue
            alt = alts[0]
            truth.append((start, ref_allele, (alt,), rng.choice(["0/1", "1/1"])))
            if len(ref_allele) == len(alt):
                candidates += [(start + i, r, (a,)) for i, (r, a) in enumerate(zip(ref_allele, alt)) if r != a]
            else:
                candidates.append((start, ref_allele, (alt,)))
            false_snp = (lo + last_end) // 2
            candidates.append((false_snp, sequence[false_snp], (other_base(sequence[false_snp]),)))
            windows.append((min(lo, start), max(hi, start + len(ref_allele))))
            last_end = hi
    vcf = write_vcf(tmp_path / "truth.vcf", {CONTIG: sequence}, truth)
    bed = tmp_path / "all.bed"
    bed.write_text(f"{CONTIG}\t0\t{len(sequence)}\n")
    candidates.sort()
    with TruthLabeler(vcf, bed, fasta) as labeler:
        genotypes = labeler.genotypes(CONTIG, candidates)
        assert labeler.counts.unresolved == 0 and labeler.counts.haplotype_matches > 10
    for (start, ref_allele, alts, gt), (lo, hi) in zip(sorted(truth), windows):
        in_window = [(c, g) for c, g in zip(candidates, genotypes) if lo <= c[0] < hi]
        as_truth = [variant(start, ref_allele, *alts, genotype=tuple(map(int, gt.split("/"))))]
        as_called = [variant(c[0], c[1], *c[2], genotype=g) for c, g in in_window]
        window = sequence[lo:hi]
        # Calls are unphased: some phasing of them must spell the truth's haplotypes.
        assert haplotype_pairs(window, lo, as_truth) & haplotype_pairs(window, lo, as_called), start
    false_snps = [g for c, g in zip(candidates, genotypes) if not any(lo <= c[0] < hi for lo, hi in windows)]
    assert set(false_snps) == {(0, 0)}


# ---------------------------------------------------------------------------------- VCF reading


def test_vcf_reader_skips_and_maps_alleles(tmp_path):
    contigs = {CONTIG: REFERENCE}
    records = [
        (300, REFERENCE[300], ("<DEL>",), "0/1"),
        (310, REFERENCE[310], ("*", other_base(REFERENCE[310])), "1/2"),
        (320, REFERENCE[320], ("*",), "0/1"),
        (330, REFERENCE[330], (other_base(REFERENCE[330]),), "1", "PASS"),
        (340, REFERENCE[340], (other_base(REFERENCE[340]),), "./.", "PASS"),
        (350, REFERENCE[350], (other_base(REFERENCE[350]),), "0|1", "LowQual"),
        (360, REFERENCE[360], (other_base(REFERENCE[360]),), "1|0"),
    ]
    vcf = write_vcf(tmp_path / "mixed.vcf", contigs, records)
    with VcfReader(vcf) as reader:
        got = list(reader.fetch(CONTIG, 305, 400))
        assert [(v.start, v.alts, v.genotype, v.phased) for v in got] == [
            (310, (other_base(REFERENCE[310]),), (0, 1), False),
            (330, (other_base(REFERENCE[330]),), (1,), False),
            (340, (other_base(REFERENCE[340]),), None, False),
            (360, (other_base(REFERENCE[360]),), (1, 0), True),
        ]
        assert (reader.skipped_symbolic, reader.skipped_filtered) == (1, 1)
        assert list(reader.fetch("absent")) == []
    assert [v.start for v in read_vcf(vcf, CONTIG, 305, 400)] == [310, 330, 340, 360]
    with pytest.raises(UserError, match="missing.vcf.gz"):
        VcfReader(tmp_path / "missing.vcf.gz")


# ------------------------------------------------------------------------------------------ regions


def test_regions_queries(tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text("track name=x\nchr1\t10\t20\nchr1\t20\t30\nchr1\t25\t40\nchr1\t100\t110\nchr2\t0\t5\n")
    regions = Regions.from_bed(bed)
    assert regions.contigs == ["chr1", "chr2"]
    assert regions.contains("chr1", 10, 40)  # merged across touching and overlapping lines
    assert not regions.contains("chr1", 9, 12)
    assert not regions.contains("chr1", 35, 101)
    assert regions.contains("chr1", 109, 110)
    assert not regions.contains("chr1", 110, 111)
    assert regions.overlaps("chr1", 35, 101)
    assert regions.overlaps("chr1", 0, 11)
    assert not regions.overlaps("chr1", 40, 100)
    assert not regions.overlaps("chr1", 0, 10)
    assert not regions.contains("chr3", 0, 1) and not regions.overlaps("chr3", 0, 1)


def test_regions_agree_with_a_boolean_mask(tmp_path):
    rng = np.random.default_rng(5)
    mask = np.zeros(1000, dtype=bool)
    lines = []
    for start in rng.integers(0, 950, 40):
        end = start + rng.integers(1, 40)
        mask[start:end] = True
        lines.append(f"c\t{start}\t{end}\n")
    bed = tmp_path / "random.bed"
    bed.write_text("".join(lines))
    regions = Regions.from_bed(bed)
    for start in range(0, 995, 3):
        for length in (1, 2, 7, 30):
            end = start + length
            assert regions.contains("c", start, end) == bool(mask[start:end].all())
            assert regions.overlaps("c", start, end) == bool(mask[start:end].any())


def test_bad_bed_line_names_the_file(tmp_path):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t10\tx\n")
    with pytest.raises(UserError, match=r"bad\.bed: line 1"):
        Regions.from_bed(bed)


# --------------------------------------------------------------------------------------- real data

@pytest.mark.realdata
def test_reproduces_deepvariant_golden_training_labels(shared_data: Path):
    """DeepVariant's 49 labelled examples (NA12878 chr20:10,000,000-10,010,000, GIAB truth)."""
    data = shared_data / "genomics"
    golden = data / "deepvariant_golden" / "golden.training_examples.npz"
    examples = np.load(golden)
    rows = list(zip(*(examples[k].tolist() for k in ("contig", "start", "ref", "alts", "alt_indices", "label"))))
    assert len(rows) == 49
    # Candidates: the examples' alleles grouped by site, REFs padded to the site's longest.
    sites: dict[tuple[str, int], tuple[str, list[str]]] = {}
    for contig, start, ref, alts, _, _ in rows:
        site_ref, site_alts = sites.get((contig, start), (ref, []))
        longest = max(site_ref, ref, key=len)
        site_alts = [alt + longest[len(site_ref) :] for alt in site_alts]
        site_alts += [a for a in (alt + longest[len(ref) :] for alt in alts.split(",")) if a not in site_alts]
        sites[(contig, start)] = (longest, site_alts)
    genotypes = {}
    with TruthLabeler(
        data / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
        data / "test_nist.b37_chr20_100kbp_at_10mb.bed",
        data / "ucsc.hg19.chr20.unittest.fasta.gz",
    ) as labeler:
        for contig in sorted({c for c, _ in sites}):
            keys = sorted(k for k in sites if k[0] == contig)
            candidates = [(start, sites[c, start][0], tuple(sites[c, start][1])) for c, start in keys]
            genotypes.update(zip(keys, labeler.genotypes(contig, candidates)))
    for contig, start, ref, alts, alt_indices, label in rows:
        site_ref, site_alts = sites[contig, start]
        own_alts = alts.split(",")
        indices = [site_alts.index(own_alts[int(i)] + site_ref[len(ref) :]) for i in alt_indices.split(",")]
        assert label_for_alt_indices(genotypes[contig, start], indices) == label, (contig, start)
