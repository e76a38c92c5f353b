"""Hand-built references and BAMs with known reads, for tests that must know every base."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam


def random_reference(path: Path, contigs: dict[str, int], seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    sequences = {name: "".join(rng.choice(list("ACGT"), size=n)) for name, n in contigs.items()}
    with open(path, "w") as handle:
        for name, seq in sequences.items():
            handle.write(f">{name}\n")
            for i in range(0, len(seq), 60):
                handle.write(seq[i : i + 60] + "\n")
    pysam.faidx(str(path))
    return sequences


@dataclass
class Read:
    name: str
    start: int
    seq: str
    cigar: list[tuple[int, int]]
    reverse: bool = False
    mapq: int = 60
    qual: list[int] | None = None
    flag_extra: int = 0
    read1: bool = True
    tlen: int = 300
    tags: list = field(default_factory=list)


def write_bam(path: Path, contigs: dict[str, int], reads: list[Read], contig: str | None = None) -> Path:
    """Sorted, indexed BAM of `reads` (all on `contig`, default the first)."""
    contig = contig or next(iter(contigs))
    header = {"HD": {"VN": "1.6", "SO": "coordinate"},
              "SQ": [{"SN": n, "LN": ln} for n, ln in contigs.items()],
              "RG": [{"ID": "rg1", "SM": "synthetic"}]}  # fmt: skip
    unsorted = path.with_suffix(".unsorted.bam")
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for r in reads:
            a = pysam.AlignedSegment(out.header)
            a.query_name = r.name
            a.query_sequence = r.seq
            a.flag = 0x1 | (0x40 if r.read1 else 0x80) | (0x10 if r.reverse else 0) | r.flag_extra
            a.reference_name = contig
            a.reference_start = r.start
            a.mapping_quality = r.mapq
            a.cigartuples = r.cigar
            a.next_reference_name = contig
            a.next_reference_start = r.start
            a.template_length = r.tlen
            a.query_qualities = pysam.qualitystring_to_array("".join(chr(q + 33) for q in (r.qual or [35] * len(r.seq))))
            a.set_tag("RG", "rg1")
            out.write(a)
    pysam.sort("-o", str(path), str(unsorted))
    unsorted.unlink()
    pysam.index(str(path))
    return path


def tile_reads(ref: str, start: int, end: int, depth: int, length: int, prefix: str, edit=None,
               rng: np.random.Generator | None = None) -> list[Read]:  # fmt: skip
    """Reads of `length` bp tiling [start, end) at about `depth`x; `edit(read_start, seq) -> (seq, cigar)`
    lets a test inject variants into some reads."""
    rng = rng or np.random.default_rng(1)
    n = max(1, depth * (end - start) // length)
    reads = []
    for i, s in enumerate(sorted(rng.integers(start, end - length, size=n))):
        seq = ref[s : s + length]
        cigar = [(0, length)]
        if edit is not None:
            seq, cigar = edit(i, int(s), seq, cigar)
        reads.append(Read(f"{prefix}{i}", int(s), seq, cigar, reverse=bool(i % 2), read1=bool(i % 3)))
    return reads
