"""Library preparation in the read simulator: hybrid capture (exomes), GC bias, PCR duplicates and stutter."""

from __future__ import annotations

import subprocess

import numpy as np
import pysam
import pytest

from deepflows.genomics.io.regions import Interval
from deepflows.genomics.simulate import library as lib
from deepflows.genomics.simulate.reads import ReadModel, read_origin, simulate_reads


class Fasta:
    """Just enough of pysam.FastaFile for simulate_reads: one contig held in memory."""

    def __init__(self, sequence: str):
        self.sequence = sequence

    def fetch(self, contig, start, end):
        return self.sequence[start:end]


def random_sequence(n: int, seed: int = 0, gc: float = 0.45) -> str:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n, p=p))


def pairs(sequence: str, model: ReadModel, targets=None, seed: int = 3):
    region = Interval("chr1", 0, len(sequence))
    return list(simulate_reads([region], [[]], Fasta(sequence), model, seed, targets=targets))


def fragment_spans(batches) -> np.ndarray:
    return np.array([read_origin(name)[2:] for batch in batches for name in batch.names])


def coverage(spans: np.ndarray, length: int, read_length: int) -> np.ndarray:
    depth = np.zeros(length + 1)
    for start, end in spans:
        for a, b in ((start, min(start + read_length, end)), (max(end - read_length, start), end)):
            depth[a] += 1
            depth[b] -= 1
    return np.cumsum(depth)[:length]


def test_repeats_are_found_at_their_shortest_unit_and_stutter_grows_with_copies():
    hap = b"GCAAAAAAAAAGTCACACACACACTTGATCGATCGATCGATCGGTAAAAAT"
    repeats = lib.find_repeats(hap, 0.01)
    assert repeats.start.tolist() == [2, 13, 26]
    assert repeats.end.tolist() == [11, 24, 43]  # the last run ends with a partial unit (ATCGx4 then G)
    assert repeats.unit.tolist() == [1, 2, 4]
    # 9 A: (9 - 5) * rate; 5 copies of AC: (5 - 3) * rate; 4 copies of ATCG: 1 * rate; AAAAA is too short
    assert repeats.probability.tolist() == pytest.approx([0.04, 0.02, 0.01])
    assert lib.find_repeats(b"NNNNNNNNNN", 0.01).start.size == 0


def test_stuttered_fragment_drops_or_repeats_one_unit_at_the_repeat_end():
    bases = np.frombuffer(b"TTCACACACACGG", np.uint8)
    repeats = lib.find_repeats(bases.tobytes(), 0.01)
    assert repeats.unit.tolist() == [2]
    assert lib.stuttered_fragment(bases, 0, 13, repeats, 0, -1).tobytes() == b"TTCACACACGG"
    assert lib.stuttered_fragment(bases, 0, 13, repeats, 0, +1).tobytes() == b"TTCACACACACACGG"


def test_pcr_stutter_is_shared_by_the_copies_of_a_fragment():
    """A 15-bp poly-A stutters in about rate * 10 of the fragments, and a fragment's duplicates carry the
    same allele; without stutter (and without sequencing slips) every read shows 15 A."""
    flank = random_sequence(3000, seed=1)
    sequence = flank[:1500] + "C" + "A" * 15 + "C" + flank[1500:]
    model = ReadModel(depth=400, read_length=100, insert_mean=250, insert_sd=30, homopolymer_slip_rate=0,
                      hotspot_rate=0, error_rate_scale=0,
                      library=lib.LibraryModel(stutter_rate=0.02, duplicate_rate=0.3))  # fmt: skip
    runs: dict[tuple, set] = {}
    for batch in pairs(sequence, model):
        for name, read in zip(batch.names, batch.seq1):
            text = read.tobytes().decode()
            if "CAAAAAAAAAAAAA" in text and text.index("CAAAAAAAAAAAAA") < 70:
                at = text.index("CAAAAAAAAAAAAA") + 1
                length = len(text[at:]) - len(text[at:].lstrip("A"))
                runs.setdefault(read_origin(name)[2:], set()).add(length)
    lengths = [next(iter(seen)) for seen in runs.values() if len(seen) == 1]
    assert all(len(seen) == 1 for seen in runs.values())  # copies agree
    stuttered = np.mean([n != 15 for n in lengths])
    assert 0.1 < stuttered < 0.3  # 0.02 * (15 - 5) = 0.2
    assert np.mean([n == 14 for n in lengths]) > np.mean([n == 16 for n in lengths])  # mostly contractions
    assert sum(len(seen) for seen in runs.values()) > 0
    plain = ReadModel(depth=100, read_length=100, insert_mean=250, insert_sd=30, homopolymer_slip_rate=0,
                      hotspot_rate=0, error_rate_scale=0)  # fmt: skip
    for batch in pairs(sequence, plain):
        for read in batch.seq1:
            text = read.tobytes().decode()
            if "C" + "A" * 15 + "C" in text or "CAAAAAAAAAAAAAAAA" not in text:
                continue
            raise AssertionError(f"a read without stutter shows another poly-A length: {text}")


def test_duplicates_share_both_ends_and_reach_their_rate():
    sequence = random_sequence(20_000, seed=2)
    model = ReadModel(depth=30, read_length=100, library=lib.LibraryModel(duplicate_rate=0.2))
    spans = fragment_spans(pairs(sequence, model))
    _, copies = np.unique(spans, axis=0, return_counts=True)
    duplicates = 1 - len(copies) / len(spans)
    assert 0.16 < duplicates < 0.24


def test_gc_bias_thins_gc_rich_sequence():
    balanced, rich = random_sequence(20_000, seed=3, gc=0.45), random_sequence(20_000, seed=4, gc=0.75)
    sequence = balanced + rich
    model = ReadModel(depth=30, read_length=100, insert_mean=300, insert_sd=30,
                      library=lib.LibraryModel(gc_bias=1.0))  # fmt: skip
    depth = coverage(fragment_spans(pairs(sequence, model)), len(sequence), 100)
    ratio = depth[22_000:38_000].mean() / depth[2_000:18_000].mean()
    assert ratio == pytest.approx(np.exp(-((0.75 - 0.45) / 0.2) ** 2), abs=0.05)  # exp(-2.25) = 0.105
    # the mean depth stays what was asked for
    assert depth[500:-500].mean() == pytest.approx(30, rel=0.1)


def test_capture_reads_come_from_targets_with_exome_like_depth():
    sequence = random_sequence(200_000, seed=5)
    targets = [Interval("chr1", a, a + 200) for a in range(5_000, 195_000, 2_500)]  # 76 targets, 7.6%
    model = ReadModel(depth=100, read_length=100, insert_mean=220, insert_sd=40,
                      library=lib.LibraryModel(capture_depth_sigma=0.6, off_target_fraction=0.04))  # fmt: skip
    spans = fragment_spans(pairs(sequence, model, targets=targets))
    depth = coverage(spans, len(sequence), 100)
    per_target = np.array([depth[t.start:t.end].mean() for t in targets])
    assert per_target.mean() == pytest.approx(100, rel=0.1)
    # a wide spread between targets (log-normal, SD 0.6 of the log): the 90th percentile 3-6 times the 10th
    assert 2.5 < np.percentile(per_target, 90) / np.percentile(per_target, 10) < 8
    on = np.zeros(len(sequence) + 1, bool)
    for t in targets:
        on[t.start:t.end] = True
    hits = np.array([on[a:b].any() for a, b in spans])
    assert 0.93 < hits.mean() < 0.99  # a few % off-target
    # depth falls off over the edges: 100 bp outside a target far below its middle
    middle = np.mean([depth[t.start + 90:t.start + 110].mean() for t in targets])
    outside = np.mean([depth[t.end + 100:t.end + 120].mean() for t in targets])
    assert outside < 0.3 * middle


def test_capture_targets_cli_draws_exon_like_clusters(tmp_path):
    fasta, sequence = tmp_path / "ref.fa", random_sequence(2_000_000, seed=6)
    fasta.write_text(">chr1\n" + "\n".join(sequence[i:i + 60] for i in range(0, len(sequence), 60)) + "\n")
    pysam.faidx(str(fasta))

    def draw(name, seed):
        out = tmp_path / name
        subprocess.run(["deepflows", "capture-targets", "--ref", str(fasta), "--fraction",
                        "0.015", "--seed", str(seed), "--out", str(out)], check=True, capture_output=True)  # fmt: skip
        return np.loadtxt(out, usecols=(1, 2), dtype=np.int64, ndmin=2)

    targets = draw("a.bed", 1)
    lengths = targets[:, 1] - targets[:, 0]
    assert 0.01 < lengths.sum() / 2_000_000 < 0.02
    assert np.median(lengths) > 100 and lengths.min() >= 100 and np.percentile(lengths, 95) <= 300
    gaps = targets[1:, 0] - targets[:-1, 1]
    assert np.median(gaps) < 10_000 < gaps.max()  # exons cluster into genes
    assert np.array_equal(draw("b.bed", 1), targets)
    assert not np.array_equal(draw("c.bed", 2), targets)
