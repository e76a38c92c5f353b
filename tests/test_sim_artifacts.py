"""Systematic read artifacts: error hotspots and homopolymer slippage, the simulated source of false candidates."""

from __future__ import annotations

import numpy as np
import pytest

from deepflows.genomics.simulate import artifacts as sim_artifacts
from deepflows.genomics.simulate.reads import ReadModel, sequence_reads


def test_hotspots_rate_strands_and_bases():
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 200_000))
    spots = sim_artifacts.draw_hotspots(seq, 2e-3, np.random.default_rng(1))
    at = (spots.forward > 0) | (spots.reverse > 0)
    assert 300 < at.sum() < 500  # ~400 expected
    both = (spots.forward > 0) & (spots.reverse > 0)
    assert 0.3 < both.sum() / at.sum() < 0.5  # 40% on both strands, the rest on one
    # every hotspot shows strand bias or lowered qualities; half the one-strand ones show both
    assert np.all(spots.quality_drop[both] >= 5)
    one = at & ~both
    assert 0.4 < (spots.quality_drop[one] > 0).mean() < 0.6
    bases = np.frombuffer(seq.encode(), np.uint8)
    assert np.all(spots.base[at] != bases[at]) and np.all(spots.base[~at] == bases[~at])
    assert 0.07 < spots.forward[spots.forward > 0].mean() < 0.11  # Beta(3, 30): mean 0.09
    # GGC-like context: positions right after GG are enriched
    after_gg = np.zeros(len(bases), bool)
    after_gg[2:] = (bases[:-2] == ord("G")) & (bases[1:-1] == ord("G"))
    assert at[after_gg].mean() > 2 * at[~after_gg].mean()
    again = sim_artifacts.draw_hotspots(seq, 2e-3, np.random.default_rng(1))
    assert np.array_equal(again.forward, spots.forward)


def test_stronger_hotspots_at_the_same_positions():
    """A smaller Beta B raises the fractions (Beta(3, 12): mean 0.2) at the same positions for the same seed."""
    seq = "".join(np.random.default_rng(0).choice(list("ACGT"), 200_000))
    default = sim_artifacts.draw_hotspots(seq, 2e-3, np.random.default_rng(1))
    strong = sim_artifacts.draw_hotspots(seq, 2e-3, np.random.default_rng(1), beta=(3.0, 12.0))
    assert np.array_equal(strong.base != np.frombuffer(seq.encode(), np.uint8),
                          (default.forward > 0) | (default.reverse > 0))  # fmt: skip
    fractions = strong.forward[strong.forward > 0]
    assert 0.17 < fractions.mean() < 0.23
    assert (fractions > 0.3).mean() > 0.08 > (default.forward[default.forward > 0] > 0.3).mean()


def test_homopolymer_slip_rates_grow_with_run_length():
    hap = b"ACGT" + b"A" * 4 + b"C" + b"G" * 5 + b"T" + b"A" * 10 + b"C" + b"N" * 8 + b"G"
    rates = sim_artifacts.homopolymer_slip_rates(hap, 1e-3)
    g_end, a_end = 4 + 4 + 1 + 5 - 1, 4 + 4 + 1 + 5 + 1 + 10 - 1
    assert np.flatnonzero(rates).tolist() == [g_end, a_end]  # a run of 4 does not slip, nor does a run of N
    assert rates[[g_end, a_end]] == pytest.approx([1e-3, 36e-3])
    assert sim_artifacts.homopolymer_slip_rates(b"", 1e-3).size == 0


def test_reads_show_hotspot_errors_on_one_strand_and_slips():
    """Through sequence_reads: a hotspot on forward reads only appears in about its fraction of forward
    reads and almost never in reverse ones; a 12 bp run slips in about rate * 8^2 of the reads."""
    n, length = 4000, 60
    model = ReadModel(read_length=length)
    template = np.frombuffer(b"ACGTTGCA" * 3 + b"A" * 12 + b"CGTGCATGCAGT" * 3, np.uint8)[: length + 4]
    templates = np.tile(template, (n, 1))
    slip = np.zeros(templates.shape, np.float32)
    slip[:, 24 + 11] = sim_artifacts.homopolymer_slip_rates(template.tobytes(), 2e-3)[24 + 11]
    error = np.zeros(templates.shape, np.float32)
    error[:, 5] = 0.3
    reverse = np.arange(n) >= n // 2
    base = np.full(templates.shape, ord("T"), np.uint8)
    drop = np.zeros(templates.shape, np.uint8)
    drop[:, 5] = 20
    artifacts = sim_artifacts.TemplateArtifacts(np.where(reverse[:, None], 0, error), base, drop, slip)
    reads, quals = sequence_reads(templates, model, np.random.default_rng(3), artifacts)
    wrong = reads[:, 5] == ord("T")
    assert 0.25 < wrong[~reverse].mean() < 0.35 and wrong[reverse].mean() < 0.01
    assert quals[~reverse & wrong, 5].mean() < quals[~wrong, 5].mean() - 10
    run_length = np.array([len(r.tobytes()[24:].split(b"C")[0]) for r in reads])
    slipped = run_length != 12
    assert 0.09 < slipped.mean() < 0.17  # 2e-3 * 64 = 0.128
    assert np.isin(run_length[slipped], [11, 13]).mean() > 0.9  # the rest: random substitutions in the run
