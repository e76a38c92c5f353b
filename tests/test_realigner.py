"""Local realignment on hand-built reads: scattered alignments of a long insertion in a repeat and of a
deletion come back as one left-aligned indel; reads without evidence are untouched; homopolymer
slippage opens no window; the banded score-only kernel agrees with the aligner; order, determinism,
empty and malformed batches; the make-examples flag."""

from __future__ import annotations

import numpy as np
import pysam
import pytest
import zarr
from synthetic import Read, write_bam

from deepflows.cli import main
from deepflows.genomics.examples.readbatch import ReadBatch, encode_bases
from deepflows.genomics.realign.active_windows import WindowParams, active_windows
from deepflows.genomics.realign.align import Scoring, align_pair, score_pair
from deepflows.genomics.realign.realigner import RealignerParams, check_batch, realign_reads

M, I, D, S = 0, 1, 2, 4
READ_LEN = 100
REPEAT_AT, REPEAT = 500, "TTTC" * 10  # an STR starting at REPEAT_AT
INSERTION = "TTTC" * 7 + "TT"  # 30 bp of the repeat, inserted in its middle
DELETION_AT, DELETION_LEN = 1300, 25  # in unique sequence


def _reference() -> str:
    rng = np.random.default_rng(11)
    ref = list("".join(rng.choice(list("ACG"), size=2000)))  # no T: the STR cannot extend into its flanks
    ref[REPEAT_AT : REPEAT_AT + len(REPEAT)] = REPEAT
    return "".join(ref)


REF = _reference()


def _left_aligned_insertion(ref: str, anchor: int, inserted: str) -> tuple[int, str]:
    """Shift an insertion after ref[anchor] left while the sequence stays the same (VCF normalisation)."""
    while anchor >= 0 and ref[anchor] == inserted[-1]:
        inserted = inserted[-1] + inserted[:-1]
        anchor -= 1
    return anchor, inserted


def _batch(reads: list[tuple[int, str, list[tuple[int, int]], str]]) -> ReadBatch:
    """(start, sequence, CIGAR, name) tuples -> a ReadBatch sorted by start."""
    reads = sorted(reads, key=lambda r: r[0])
    ops = [op for _, _, cigar, _ in reads for op, _ in cigar]
    lens = [n for _, _, cigar, _ in reads for _, n in cigar]
    ref_len = [sum(n for op, n in cigar if op in (M, D)) for _, _, cigar, _ in reads]
    seq = "".join(r[1] for r in reads)
    return ReadBatch(
        start=np.array([r[0] for r in reads], dtype=np.int64),
        end=np.array([r[0] + n for r, n in zip(reads, ref_len)], dtype=np.int64),
        mapq=np.full(len(reads), 60, dtype=np.int32),
        reverse=np.arange(len(reads)) % 2 == 1,
        tlen=np.full(len(reads), 300, dtype=np.int64),
        cigar_op=np.array(ops, dtype=np.int8),
        cigar_len=np.array(lens, dtype=np.int32),
        cigar_offset=np.concatenate([[0], np.cumsum([len(r[2]) for r in reads])]).astype(np.int64),
        seq=encode_bases(seq) if seq else np.zeros(0, dtype=np.uint8),
        qual=np.full(len(seq), 30, dtype=np.uint8),
        seq_offset=np.concatenate([[0], np.cumsum([len(r[1]) for r in reads])]).astype(np.int64),
        name=[r[3] for r in reads],
        read_number=np.ones(len(reads), dtype=np.int8),
    )


def _cigars(batch: ReadBatch) -> list[tuple[int, list[tuple[int, int]]]]:
    out = []
    for r in range(len(batch)):
        c = slice(batch.cigar_offset[r], batch.cigar_offset[r + 1])
        out.append((int(batch.start[r]), list(zip(batch.cigar_op[c].tolist(), batch.cigar_len[c].tolist()))))
    return out


def _reference_reads(lo: int, hi: int, step: int) -> list:
    return [(s, REF[s : s + READ_LEN], [(M, READ_LEN)], f"ref{s}") for s in range(lo, hi - READ_LEN, step)]


def _insertion_reads() -> list:
    """Reads of the haplotype with INSERTION after the repeat's 5th unit, aligned the way an aligner
    scoring each read alone might: soft-clipped at the insertion, or with the insertion cut in two."""
    anchor = REPEAT_AT + 19
    hap = REF[: anchor + 1] + INSERTION + REF[anchor + 1 :]
    reads = []
    for i, into in enumerate(range(15, READ_LEN - len(INSERTION) - 15, 2)):  # read bases before the insertion
        s = anchor + 1 - into
        after = READ_LEN - into - len(INSERTION)
        if i % 3 == 0:
            cigar = [(M, into), (S, READ_LEN - into)]
        elif i % 3 == 1:
            cigar = [(M, into - 12), (I, 4), (M, 12), (I, len(INSERTION) - 4), (M, after)]
        else:
            cigar, s = [(S, into + len(INSERTION)), (M, after)], anchor + 1
        reads.append((s, hap[anchor + 1 - into : anchor + 1 - into + READ_LEN], cigar, f"ins{i}"))
    return reads


def _deletion_reads() -> list:
    hap = REF[:DELETION_AT] + REF[DELETION_AT + DELETION_LEN :]
    reads = []
    for i, s in enumerate(range(DELETION_AT - 90, DELETION_AT - 10, 3)):
        seq = hap[s : s + READ_LEN]
        into = DELETION_AT - s
        cigar = [(M, into), (S, READ_LEN - into)] if i % 2 else [(M, READ_LEN)]  # soft clip, or mismatches
        reads.append((s, seq, cigar, f"del{i}"))
    return reads


def test_haplotype_alignment_left_aligns_an_insertion_in_a_repeat():
    ref = "GACGTCACACAGGTA"
    hap = "GACGTCACACACAGGTA"  # one more CA
    _, _, _, _, moves = align_pair(encode_bases(hap), encode_bases(ref), Scoring(), glocal=False)
    assert "".join("MID"[m] for m in moves) == "M" * 5 + "II" + "M" * 10


def test_two_insertions_in_a_repeat_are_not_spelled_as_one_plus_a_mismatch():
    """Two insertions in an imperfect TTTC repeat: the read scoring would spell the haplotype as one longer
    insertion and a mismatch; the placement scoring keeps the two insertions, each with its own reads."""
    ref = "GGGAGGAGAAGGAGG" + "TTTCTTTCTTTCTTTTCTTTCTTTCTTCCTTTCTTCCTTTCTTTCTTCC" + "AAGGGAAGAGGAAGA"
    hap = ref[:31] + "TTCCTTTCTTCCTTTC" + ref[31:44] + "TTCC" + ref[44:]

    def spelled(scoring: Scoring) -> tuple[int, int]:
        """(insertions, mismatches) of the haplotype's alignment to the reference."""
        _, _, _, _, moves = align_pair(encode_bases(hap), encode_bases(ref), scoring, glocal=False)
        i = j = mismatches = 0
        for move in moves:
            mismatches += int(move == 0 and hap[i] != ref[j])
            i, j = i + (move != 2), j + (move != 1)
        text = "".join("MID"[m] for m in moves)
        return text.count("MI"), mismatches

    assert spelled(Scoring()) == (1, 1)
    assert spelled(RealignerParams().placement) == (2, 0)


def test_score_is_the_alignment_score_and_a_band_bounds_it():
    rng = np.random.default_rng(3)
    for _ in range(300):
        query = rng.integers(0, 4, int(rng.integers(1, 30))).astype(np.uint8)
        cut = len(query) // 2
        flank, inserted = rng.integers(0, 4, int(rng.integers(0, 8))), rng.integers(0, 4, int(rng.integers(0, 4)))
        target = np.concatenate([flank, query[:cut], inserted, query[cut:]]).astype(np.uint8)
        for glocal in (True, False):
            best, q_start, _, t_start, moves = align_pair(query, target, Scoring(), glocal)
            assert score_pair(query, target, Scoring(), glocal) == best
            # Diagonals (target index - query index) the path visits: a band holding them gives the same score.
            steps = (moves == 2).astype(int) - (moves == 1)
            diagonals = t_start - q_start + np.concatenate([[0], np.cumsum(steps)])
            if glocal:
                band = (int(diagonals.min()), int(diagonals.max()))
                assert score_pair(query, target, Scoring(), glocal, band) == best
            narrow = (int(rng.integers(-5, 5)), int(rng.integers(5, 10)))
            assert score_pair(query, target, Scoring(), glocal, narrow) <= best


def test_homopolymer_slippage_opens_no_window():
    ref = REF[:1000] + "T" * 8 + REF[1000:1400]
    run_end = 1008

    def reads(deleted: int) -> ReadBatch:
        hap = ref[: run_end - deleted] + ref[run_end:]
        left = [run_end - deleted - s for s in range(940, 1000, 6)]
        cigars = [[(M, n), (D, deleted), (M, READ_LEN - n)] for n in left]
        return _batch([(run_end - deleted - n, hap[run_end - deleted - n :][:READ_LEN], cigar, f"r{n}")
                       for n, cigar in zip(left, cigars)])  # fmt: skip

    assert active_windows(reads(1), encode_bases(ref), 0, WindowParams()) == []
    assert active_windows(reads(1), encode_bases(ref), 0, WindowParams(min_homopolymer=9)) != []
    assert active_windows(reads(2), encode_bases(ref), 0, WindowParams()) != []  # longer than 1 bp: evidence


def test_long_insertion_in_a_repeat_becomes_one_left_aligned_insertion():
    batch = _batch(_reference_reads(200, 900, 10) + _insertion_reads())
    out = realign_reads(batch, encode_bases(REF), 0)
    anchor, _ = _left_aligned_insertion(REF, REPEAT_AT + 19, INSERTION)
    spanning = 0
    for r, (start, cigar) in enumerate(_cigars(out)):
        if not out.name[r].startswith("ins"):
            continue
        spanning += 1
        assert [op for op, _ in cigar] == [M, I, M], cigar
        assert start + cigar[0][1] - 1 == anchor and cigar[1][1] == len(INSERTION)
    assert spanning == len(_insertion_reads())


def test_a_read_belongs_to_the_window_its_soft_clip_reaches():
    """A read soft-clipped at a window's insertion is realigned there, even when more of its aligned bases lie in
    the next window (ownership by the span with the clips laid out, as the realigner places reads)."""
    from deepflows.genomics.realign.realigner import _owning_window, _read_spans

    seq = REF[475:575]
    batch = _batch([(520, seq, [(S, 45), (M, 55)], "clipped"), (540, REF[540:640], [(M, 100)], "plain")])
    owner = _owning_window(batch, [(490, 535), (545, 600)], _read_spans(batch))
    # clipped: 45 bases of its span in the first window (its aligned bases: 15), 30 in the second
    assert owner.tolist() == [0, 1]


def test_deletion_soft_clips_become_one_deletion():
    batch = _batch(_reference_reads(1000, 1600, 12) + _deletion_reads())
    out = realign_reads(batch, encode_bases(REF), 0)
    deleted = [(start, cigar) for start, cigar in _cigars(out) if any(op == D for op, _ in cigar)]
    assert len(deleted) >= 10
    for start, cigar in deleted:
        assert [op for op, _ in cigar] == [M, D, M] and cigar[1][1] == DELETION_LEN
        assert start + cigar[0][1] == DELETION_AT


def test_reads_without_evidence_are_untouched():
    reads = _reference_reads(1000, 1800, 7)
    batch = _batch(reads + _deletion_reads())
    out = realign_reads(batch, encode_bases(REF), 0)
    before, after = dict(zip(batch.name, _cigars(batch))), dict(zip(out.name, _cigars(out)))
    untouched = [n for n, (s, _) in before.items() if s > DELETION_AT + 150 or s + READ_LEN < DELETION_AT - 150]
    assert untouched and all(before[n] == after[n] for n in untouched)
    clean = _batch(reads)
    again = realign_reads(clean, encode_bases(REF), 0)
    for key in ("start", "end", "cigar_op", "cigar_len", "cigar_offset", "seq", "qual", "seq_offset"):
        assert np.array_equal(getattr(clean, key), getattr(again, key)), key


def test_output_is_sorted_consistent_and_deterministic():
    batch = _batch(_reference_reads(200, 1800, 9) + _insertion_reads() + _deletion_reads())
    first = realign_reads(batch, encode_bases(REF), 0)
    second = realign_reads(batch, encode_bases(REF), 0)
    assert np.all(np.diff(first.start) >= 0)
    check_batch(first)
    for start, end, (_, cigar) in zip(first.start, first.end, _cigars(first)):
        assert end == start + sum(n for op, n in cigar if op in (M, D))
    assert sorted(first.name) == sorted(batch.name)
    for key in ("start", "end", "cigar_op", "cigar_len", "seq", "qual", "read_number"):
        assert np.array_equal(getattr(first, key), getattr(second, key)), key
    assert first.name == second.name


def test_empty_batch():
    out = realign_reads(_batch([]), encode_bases(REF), 0)
    assert len(out) == 0 and len(out.cigar_offset) == 1 and len(out.seq_offset) == 1


def test_malformed_batch_is_refused():
    batch = _batch(_reference_reads(200, 600, 50))
    batch.cigar_len[0] += 1  # CIGAR no longer matches the sequence
    with pytest.raises(ValueError, match="CIGAR length"):
        realign_reads(batch, encode_bases(REF), 0)
    batch = _batch(_reference_reads(200, 600, 50))
    batch.start = batch.start[::-1].copy()
    with pytest.raises(ValueError, match="sorted"):
        realign_reads(batch, encode_bases(REF), 0)


def test_make_examples_realigns_by_default(tmp_path):
    (tmp_path / "ref.fa").write_text(">chrT\n" + REF + "\n")
    pysam.faidx(str(tmp_path / "ref.fa"))
    reads = [Read(*read[3:], *read[:3]) for read in _reference_reads(1000, 1600, 8) + _deletion_reads()]
    bam = write_bam(tmp_path / "reads.bam", {"chrT": len(REF)}, reads)
    outs = {}
    for flag, realigned in ((["--no-realign"], False), ([], True)):  # realignment is the default
        out = tmp_path / f"examples-{realigned}.zarr"
        assert main(["make-examples", "--reads", str(bam), "--ref", str(tmp_path / "ref.fa"), "--regions", "chrT",
                     "--out", str(out), *flag]) == 0  # fmt: skip
        outs[realigned] = zarr.open_group(str(out), mode="r")
    assert outs[True].attrs["parameters"]["realign"] and not outs[False].attrs["parameters"]["realign"]
    # Unrealigned, the soft clips hide the deletion; realigned, it is a candidate.
    assert DELETION_AT - 1 not in set(outs[False]["start"][:].tolist())
    assert DELETION_AT - 1 in set(outs[True]["start"][:].tolist())
