"""allele_span: the stretch a read must cover to show an indel in a repeat, and the image channel it sets."""

from __future__ import annotations

import numpy as np
import pysam
import pytest
import zarr
from synthetic import Read, write_bam

from deepflows.cli import main
from deepflows.genomics.examples.allele_span import allele_span
from deepflows.genomics.examples.readbatch import encode_bases

#          0123456789012345678
REPEATS = "GGACAAAAAAAAAACCTTCCTTCCTTCCTGGG"


@pytest.mark.parametrize(
    ("pos", "ref", "alt", "span"),
    [
        (3, "C", "CA", (3, 14)),  # one more A in the 10-A run: flanks C (3) and C (14)
        (3, "CA", "C", (3, 14)),  # one A fewer: the same flanks
        (3, "CAA", "C", (3, 14)),
        (5, "A", "AA", (3, 14)),  # written mid-run, it still moves over the whole run
        (15, "C", "CTTCC", (13, 29)),  # one more TTCC unit: the repeat 16-28 plus its flanks
        (15, "CTTCC", "C", (13, 29)),
        (15, "C", "CTCTC", (14, 17)),  # not the repeat unit: it moves one base each way only
        (5, "A", "T", (5, 5)),  # a substitution needs only its own base
        (15, "CCT", "GCA", (15, 17)),
        (15, "CCT", "CGT", (16, 16)),  # shared first and last bases are trimmed
    ],
)
def test_allele_span(pos, ref, alt, span):
    assert allele_span(encode_bases(REPEATS), 0, pos, ref, alt) == span


def test_allele_span_stops_where_the_reference_codes_end():
    codes = encode_bases(REPEATS[2:14])  # positions 2..13: the run reaches the end of what is known
    assert allele_span(codes, 2, 3, "C", "CA") == (3, 14)
    assert allele_span(encode_bases("AAAAC"), 100, 104, "C", "CA") == (104, 105)  # nothing known past 104


def test_reads_ending_inside_the_run_do_not_span(tmp_path):
    """A hom-alt A insertion in a 12-A run: 20 reads show it; 6 end inside the run and, aligned as reference,
    must be marked as not spanning it (read_spans_variant 152) while the 20 span it (254)."""
    rng = np.random.default_rng(1)
    left, right = "".join(rng.choice(list("CGT"), 300)), "".join(rng.choice(list("CGT"), 300))
    ref = left + "A" * 12 + right  # the run is 300-311; 299 and 312 are its flanks
    (tmp_path / "ref.fa").write_text(f">chrR\n{ref}\n")
    pysam.faidx(str(tmp_path / "ref.fa"))
    alt = left + "A" * 13 + right
    reads = []
    for i in range(20):
        s = 220 + 3 * i
        seq = alt[s : s + 100]
        cigar = [(0, 300 - s), (1, 1), (0, 99 - (300 - s))]
        reads.append(Read(f"alt{i}", s, seq, cigar, reverse=bool(i % 2)))
    for i in range(6):
        s = 206 + i  # ends at 305-310, inside the run
        reads.append(Read(f"short{i}", s, ref[s : s + 100], [(0, 100)], reverse=bool(i % 2)))
    bam = write_bam(tmp_path / "reads.bam", {"chrR": len(ref)}, reads)
    out = tmp_path / "ex.zarr"
    assert main(["make-examples", "--reads", str(bam), "--ref", str(tmp_path / "ref.fa"), "--out", str(out),
                 "--no-realign"]) == 0  # fmt: skip
    group = zarr.open_group(str(out), mode="r")
    assert group["start"][:].tolist() == [299] and group["alts"][:].tolist() == ["CA"]
    image = group["inputs"][0]
    assert group.attrs["channels"][7] == "read_spans_variant"
    rows = image[5:, :, 3].any(axis=1)
    assert rows.sum() == 26
    spans = image[5:][rows].max(axis=1)[:, 7]
    supports = image[5:][rows].max(axis=1)[:, 4]
    assert sorted(spans.tolist()) == [152] * 6 + [254] * 20
    assert ((spans == 254) == (supports == 254)).all()  # here exactly the 20 insertion reads span the run
    assert (image[:5, :, 7] == 254).all()
