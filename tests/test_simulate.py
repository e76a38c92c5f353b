"""`deepflows make-reference` and `deepflows simulate`: determinism, a valid normalised truth VCF, the
variant spectrum, depth and mapping of the reads, the --truth path, and one clear error for bad input."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections import Counter

import numpy as np
import pysam
import pytest

from deepflows import cli
from deepflows.genomics.io.regions import Interval
from deepflows.genomics.simulate import align as sim_align
from deepflows.genomics.simulate import reads as sim_reads
from deepflows.genomics.simulate import variants as sim_variants
from deepflows.genomics.simulate.reference import generate_reference, write_fasta

LENGTH = 50_000
CONTIG = "demo"


def deepflows(*argv) -> int:
    """The CLI entry point in-process: its exit status."""
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    assert deepflows("make-reference", "--out", path, "--length", LENGTH, "--contig", CONTIG, "--seed", 3) == 0
    return str(path)


@pytest.fixture(scope="module")
def sample(reference, tmp_path_factory) -> str:
    prefix = tmp_path_factory.mktemp("sample") / "sim"
    assert deepflows("simulate", "--ref", reference, "--random-variants", "--variant-rate", 0.003,
                     "--depth", 30, "--seed", 5, "--out-prefix", prefix) == 0
    return str(prefix)


def records(bam: str) -> list[str]:
    with pysam.AlignmentFile(bam) as reads:
        return [r.to_string() for r in reads]


def vcf_body(path: str) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return [line for line in handle if not line.startswith("#")]


def test_make_reference_is_deterministic_with_repeats(reference):
    seq = generate_reference(LENGTH, 3)
    assert np.array_equal(seq, generate_reference(LENGTH, 3))
    assert not np.array_equal(seq, generate_reference(LENGTH, 4))
    with pysam.FastaFile(reference) as fasta:
        assert list(fasta.references) == [CONTIG] and fasta.fetch(CONTIG) == seq.tobytes().decode()
    with open(reference) as handle:
        assert {len(line) for line in handle.read().splitlines()[1:-1]} == {60}
    text = seq.tobytes().decode()
    assert 0.37 < (text.count("G") + text.count("C")) / LENGTH < 0.45
    assert re.search(r"A{12,}|T{12,}", text), "no long homopolymer"
    assert re.search(r"(([ACGT])(?!\2)[ACGT])\1{7,}", text), "no dinucleotide repeat of 8+ copies"
    kmers = Counter(text[i:i + 24] for i in range(0, LENGTH - 24))
    assert sum(n > 1 for n in kmers.values()) > 500, "no interspersed repeats or segmental duplications"


def test_simulate_is_deterministic(reference, tmp_path, monkeypatch):
    outputs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)  # the same command line, output prefix included
        assert deepflows("simulate", "--ref", reference, "--random-variants", "--depth", 8, "--seed", 11,
                         "--out-prefix", "out") == 0
        with gzip.open("out.truth.vcf.gz", "rb") as vcf, open("out.confident.bed") as bed:
            outputs.append((records("out.bam"), vcf.read(), bed.read()))
    assert outputs[0] == outputs[1]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "out.bam", "out.bam.bai", "out.confident.bed", "out.truth.vcf.gz", "out.truth.vcf.gz.tbi"]


def test_truth_vcf_is_valid_sorted_and_normalised(sample, reference):
    with pysam.VariantFile(f"{sample}.truth.vcf.gz") as vcf:
        assert vcf.header.contigs[CONTIG].length == LENGTH
        assert list(vcf.header.samples) == ["simulated"]
        found = list(vcf.fetch(CONTIG, 0, LENGTH))  # needs the .tbi
        assert len(found) > 50
        assert [r.pos for r in found] == sorted(r.pos for r in found)
        assert all(r.samples[0].phased and r.samples[0]["GT"] != (0, 0) for r in found)
    if shutil.which("bcftools") is None:
        pytest.skip("bcftools not installed")
    normed = subprocess.run(["bcftools", "norm", "-f", reference, "-c", "x", f"{sample}.truth.vcf.gz"],
                            capture_output=True, text=True, check=True)
    assert [line for line in normed.stdout.splitlines(keepends=True) if not line.startswith("#")] == \
        vcf_body(f"{sample}.truth.vcf.gz")


def test_confident_regions_trim_edges_and_n_runs(tmp_path):
    seq = generate_reference(20_000, 1)
    seq[9_000:9_500] = ord("N")
    ref = tmp_path / "gap.fa"
    write_fasta(str(ref), {"gappy": seq})
    assert deepflows("simulate", "--ref", ref, "--random-variants", "--depth", 10, "--out-prefix", tmp_path / "g") == 0
    with open(tmp_path / "g.confident.bed") as bed:
        assert bed.read() == "gappy\t500\t8500\ngappy\t10000\t19500\n"
    with pysam.VariantFile(str(tmp_path / "g.truth.vcf.gz")) as vcf:
        assert not any(9_000 <= r.start < 9_500 for r in vcf)
    with pysam.AlignmentFile(str(tmp_path / "g.bam")) as reads:
        assert all("N" not in r.query_sequence for r in reads)


def test_random_variant_spectrum(reference):
    with pysam.FastaFile(reference) as fasta:
        spectrum = sim_variants.VariantSpectrum(rate=0.01)
        rng = np.random.default_rng(2)
        variants = sim_variants.random_variants([Interval(CONTIG, 0, LENGTH)], fasta, spectrum, rng)[0]
    assert 300 < len(variants) < 600
    biallelic = [v for v in variants if len(v.alts) == 1]
    snps = [v for v in biallelic if len(v.ref) == len(v.alts[0]) == 1]
    indels = [v for v in biallelic if len(v.ref) != len(v.alts[0])]
    assert 6 < len(snps) / len(indels) < 16
    het = sum(v.genotype[0] != v.genotype[1] for v in variants)
    assert 1.2 < het / (len(variants) - het) < 2.1
    lengths = [abs(len(v.ref) - len(v.alts[0])) for v in indels]
    assert max(lengths) <= 20 and np.mean(np.array(lengths) <= 5) > 0.8
    assert 0.25 < np.mean([len(v.ref) > 1 for v in indels]) < 0.75  # deletions vs insertions
    transitions = sum({v.ref, v.alts[0]} in ({"A", "G"}, {"C", "T"}) for v in snps)
    assert 1.4 < transitions / (len(snps) - transitions) < 2.8
    assert 0 < sum(len(v.alts) == 2 and set(v.genotype) == {1, 2} for v in variants) < 0.06 * len(variants)
    assert all(b.start - a.end >= spectrum.min_gap for a, b in zip(variants, variants[1:]))


def test_reads_cover_the_target_depth_at_their_origin(sample):
    with open(f"{sample}.confident.bed") as bed:
        contig, start, end = bed.read().split()
    with pysam.AlignmentFile(f"{sample}.bam") as bam:
        coverage = np.sum(bam.count_coverage(contig, int(start), int(end), quality_threshold=0,
                                             read_callback="nofilter"), axis=0)
        assert 30 * 0.85 < coverage.mean() < 30 * 1.15
        header = bam.header.to_dict()
        assert header["HD"]["SO"] == "coordinate" and header["RG"][0]["SM"] == "simulated"
        assert not any(".tmp" in pg.get("CL", "") for pg in header["PG"])
        reads = list(bam)
    assert all(r.is_paired and r.has_tag("RG") for r in reads)
    at_origin = 0
    for r in reads:
        origin_contig, _hap, frag_start, frag_end = sim_reads.read_origin(r.query_name)
        if r.is_unmapped or r.reference_name != origin_contig:
            continue
        cigar = r.cigartuples
        if r.is_reverse:  # a reverse read ends where its fragment ends
            at_origin += abs(r.reference_end + (cigar[-1][1] if cigar[-1][0] == 4 else 0) - frag_end) <= 10
        else:
            at_origin += abs(r.reference_start - (cigar[0][1] if cigar[0][0] == 4 else 0) - frag_start) <= 10
    assert at_origin > 0.95 * len(reads)
    assert sum(r.is_proper_pair for r in reads) > 0.95 * len(reads)


def edit_distance(read, text: str) -> int:
    """Mismatches plus inserted and deleted bases of an alignment, recomputed from SEQ, CIGAR and reference."""
    seq, q, t, distance = read.query_sequence, 0, read.reference_start, 0
    for op, n in read.cigartuples:
        if op == 0:
            distance += sum(a != b for a, b in zip(seq[q:q + n], text[t:t + n]))
        distance += n if op in (1, 2) else 0
        q += n if op in (0, 1, 4) else 0
        t += n if op in (0, 2) else 0
    return distance


def test_alignments_agree_with_their_nm(sample, reference):
    with pysam.FastaFile(reference) as fasta:
        text = fasta.fetch(CONTIG)
    with pysam.AlignmentFile(f"{sample}.bam") as bam:
        mapped = [r for r in bam if not r.is_unmapped]
    clipped = [r for r in mapped if r.cigartuples[0][0] == 4 or r.cigartuples[-1][0] == 4]
    assert len(clipped) > 20  # Q2 tails get clipped, so clip placement is exercised
    assert all(edit_distance(r, text) == r.get_tag("NM") for r in mapped)


def _write_vcf(path, lines: list[str], contig_line: str = f"##contig=<ID={CONTIG},length={LENGTH}>") -> None:
    header = ["##fileformat=VCFv4.2", contig_line,
              '##ALT=<ID=DEL,Description="Deletion">',
              '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA1"]
    path.write_text("\n".join(header + lines) + "\n")


def test_truth_input_is_normalised_phased_and_visible_in_reads(reference, tmp_path):
    with pysam.FastaFile(reference) as fasta:
        text = fasta.fetch(CONTIG)
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}
    run = re.compile(r"(?<=[CGT])A{6,}(?=[CGT])").search(text, 21_000)  # an A run for a right-shifted deletion
    assert run and run.end() < 29_000
    phased = {10_500: "0|1", 11_500: "1|0", 13_500: "1|1"}  # 0-based positions of SNPs
    unphased = {14_500: "0/1", 15_500: "1/0"}
    lines = [f"{CONTIG}\t{p + 1}\t.\t{text[p]}\t{other[text[p]]}\t.\tPASS\t.\tGT\t{gt}"
             for p, gt in sorted({**phased, **unphased}.items())]
    lines += [
        f"{CONTIG}\t{run.end() - 1}\t.\tAA\tA\t.\tPASS\t.\tGT\t0|1",  # deletion written at the run's right end
        f"{CONTIG}\t16501\t.\t{text[16_500]}\t{other[text[16_500]]},{other[other[text[16_500]]]}\t.\tPASS\t.\tGT\t0/2",
        f"{CONTIG}\t17501\t.\t{text[17_500]}\t{other[text[17_500]]}\t.\tPASS\t.\tGT\t0/0",
        f"{CONTIG}\t18501\t.\t{text[18_500]}\t{other[text[18_500]]}\t.\tPASS\t.\tGT\t./.",
        f"{CONTIG}\t19501\t.\t{text[19_500]}\t<DEL>\t.\tPASS\t.\tGT\t0/1",
        f"{CONTIG}\t20501\t.\t{text[20_500]}\t{other[text[20_500]]}\t.\tPASS\t.\tGT\t1|1",
        f"{CONTIG}\t20501\t.\t{text[20_500]}\t{other[other[text[20_500]]]}\t.\tPASS\t.\tGT\t1|1",  # conflicts
        f"{CONTIG}\t40001\t.\t{text[40_000]}\t{other[text[40_000]]}\t.\tPASS\t.\tGT\t1|1",  # outside --region
    ]
    lines.sort(key=lambda line: int(line.split("\t")[1]))
    truth = tmp_path / "truth.vcf"
    _write_vcf(truth, lines)
    prefix = tmp_path / "t"
    assert deepflows("simulate", "--ref", reference, "--truth", truth, "--region", f"{CONTIG}:10,001-30,000",
                     "--depth", 30, "--seed", 2, "--sample", "NA1", "--out-prefix", prefix) == 0

    with pysam.VariantFile(f"{prefix}.truth.vcf.gz") as vcf:
        calls = list(vcf)
    assert all(r.samples["NA1"].phased for r in calls)
    found = [(r.start, r.ref, r.alts, r.samples["NA1"]["GT"]) for r in calls]
    anchor = run.start() - 1
    assert (anchor, text[anchor] + "A", (text[anchor],), (0, 1)) in found  # left-aligned
    multi = [f for f in found if f[0] == 16_500]
    assert len(multi) == 1 and multi[0][2] == (other[other[text[16_500]]],)  # the unused ALT is gone
    assert len([f for f in found if f[0] == 20_500]) == 1  # the conflicting second record was dropped
    genotypes = {start: "|".join(map(str, gt)) for start, ref, _, gt in found if len(ref) == 1}
    assert set(genotypes) == {*phased, *unphased, 16_500, 20_500}  # no hom-ref, no-call, symbolic or outside
    assert {p: genotypes[p] for p in phased} == phased
    assert {genotypes[14_500], genotypes[15_500], genotypes[16_500]} <= {"0|1", "1|0"}

    with pysam.AlignmentFile(f"{prefix}.bam") as bam:
        for pos, gt in {**phased, 14_500: genotypes[14_500]}.items():
            alt_haps, total = Counter(), 0
            for column in bam.pileup(CONTIG, pos, pos + 1, truncate=True, min_base_quality=0, stepper="nofilter"):
                for read in column.pileups:
                    if read.query_position is None:
                        continue
                    total += 1
                    if read.alignment.query_sequence[read.query_position] == other[text[pos]]:
                        alt_haps[sim_reads.read_origin(read.alignment.query_name)[1]] += 1
            fraction = sum(alt_haps.values()) / total
            if gt == "1|1":
                assert fraction > 0.9
            else:  # het: about half the reads, and (nearly) all from the phased haplotype
                assert 0.25 < fraction < 0.75, (pos, fraction)
                assert alt_haps[gt.index("1") // 2] >= sum(alt_haps.values()) - 1


def test_pair_records_keep_an_unmapped_mate_next_to_its_mapped_mate():
    header = pysam.AlignmentHeader.from_dict(sim_align.bam_header({CONTIG: LENGTH}, "s", "test", {}))
    hit = sim_align._Hit(tid=0, pos=1000, end=1150, reverse=True, mapq=60, cigar=[(0, 150)], nm=0)
    reads = [(b"ACGT" * 2, np.full(8, 30, np.uint8)), (b"TTGCA" * 2, np.arange(10, dtype=np.uint8))]
    first, second = sim_align.pair_records(header, "sim:demo:0:1:1-400", reads, [hit, None], "s", 700)
    assert first.flag == 0x1 | 0x40 | 0x10 | 0x8 and second.flag == 0x1 | 0x80 | 0x4 | 0x20
    assert (first.reference_start, second.reference_start, second.next_reference_start) == (1000, 1000, 1000)
    assert first.query_sequence == "ACGTACGT"[::-1].translate(str.maketrans("ACGT", "TGCA"))
    assert second.query_sequence == "TTGCA" * 2 and list(second.query_qualities) == list(range(10))
    assert first.template_length == second.template_length == 0


@pytest.mark.skipif(shutil.which("bwa") is None, reason="bwa not installed")
def test_bwa_aligner(reference, tmp_path):
    ref = tmp_path / "ref.fa"
    shutil.copy(reference, ref)
    assert deepflows("simulate", "--ref", ref, "--random-variants", "--depth", 10, "--aligner", "bwa",
                     "--threads", 2, "--out-prefix", tmp_path / "b") == 0
    with pysam.AlignmentFile(str(tmp_path / "b.bam")) as bam:
        pgs = bam.header.to_dict()["PG"]
        reads = list(bam)
    assert [pg["ID"] for pg in pgs] == ["bwa", "deepflows-simulate"] and "CL" not in pgs[0]
    assert sum(not r.is_unmapped for r in reads) > 0.98 * len(reads)
    assert all(r.get_tag("RG") == "simulated" for r in reads)


@pytest.mark.parametrize("case", ["missing ref", "gzip ref", "truth contigs", "truth REF", "unknown contig",
                                  "empty region", "all excluded", "hotspot beta"])
def test_bad_input_is_one_line_and_leaves_no_output(case, reference, tmp_path, capsys):
    args = ["--ref", reference, "--random-variants"]
    if case == "missing ref":
        args[1], expected = str(tmp_path / "missing.fa"), "missing.fa: reference FASTA not found"
    elif case == "gzip ref":
        with open(reference, "rb") as plain, gzip.open(tmp_path / "ref.fa.gz", "wb") as packed:
            packed.write(plain.read())
        args[1], expected = str(tmp_path / "ref.fa.gz"), "bgzip"
    elif case == "truth contigs":
        _write_vcf(tmp_path / "chr.vcf", ["chr1\t100\t.\tA\tC\t.\tPASS\t.\tGT\t0|1"], "##contig=<ID=chr1,length=1000>")
        args[2:] = ["--truth", str(tmp_path / "chr.vcf")]
        expected = f"chr.vcf: contigs chr1 are not in reference {reference} ({CONTIG})"
    elif case == "truth REF":
        with pysam.FastaFile(reference) as fasta:
            base = fasta.fetch(CONTIG, 99, 100)
        _write_vcf(tmp_path / "bad.vcf", [f"{CONTIG}\t100\t.\t{'A' if base != 'A' else 'C'}\tG\t.\tPASS\t.\tGT\t0|1"])
        args[2:] = ["--truth", str(tmp_path / "bad.vcf")]
        expected = "does not match the reference"
    elif case == "unknown contig":
        args += ["--region", "chr9:1-1000"]
        expected = "contig 'chr9' is not in the reference"
    elif case == "empty region":
        args += ["--region", f"{CONTIG}:2,000-1,000"]
        expected = "empty or inverted"
    elif case == "hotspot beta":
        args += ["--hotspot-beta", "3", "0"]
        expected = "--hotspot-beta [3.0, 0.0]: A and B must be positive"
    else:
        args += ["--region", f"{CONTIG}:1-5000", "--exclude", f"{CONTIG}:1-6000"]
        expected = "nothing left to simulate"
    out = tmp_path / "out"
    out.mkdir()
    before = set(tmp_path.iterdir())
    assert deepflows("simulate", *args, "--depth", 2, "--out-prefix", out / "x") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("deepflows simulate: error: ") and expected in error
    assert list(out.iterdir()) == [] and set(tmp_path.iterdir()) == before
