"""Aligned reads of one window packed into flat numpy arrays, the form the compiled kernels walk.

Reads are filtered here once, with the same rules for allele counting and for the pileup images:
unmapped, secondary, supplementary, duplicate and QC-fail reads are dropped, and so are reads with
mapping quality below `min_mapq`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepflows.genomics.io.hts import reading_reads

# SAM flags: unmapped, secondary, QC-fail, duplicate, supplementary.
SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400 | 0x800

# A C G T -> 0 1 2 3; everything else (N, IUPAC codes) -> 4.
BASE_CODES = np.full(256, 4, dtype=np.uint8)
for _code, _base in enumerate(b"ACGT"):
    BASE_CODES[_base] = _code
    BASE_CODES[ord(chr(_base).lower())] = _code
BASES = "ACGTN"


def encode_bases(sequence: str) -> np.ndarray:
    return BASE_CODES[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


_LETTERS = np.frombuffer(BASES.encode("ascii"), dtype=np.uint8)


def decode_bases(codes: np.ndarray) -> str:
    """The inverse of encode_bases (every code past A C G T reads as N)."""
    return _LETTERS[codes].tobytes().decode("ascii")


@dataclass
class ReadBatch:
    start: np.ndarray  # int64 reference start (0-based)
    end: np.ndarray  # int64 reference end (exclusive)
    mapq: np.ndarray  # int32
    reverse: np.ndarray  # bool
    tlen: np.ndarray  # int64 |template length|
    cigar_op: np.ndarray  # int8 (pysam codes: M=0 I=1 D=2 N=3 S=4 H=5 P=6 '='=7 X=8)
    cigar_len: np.ndarray  # int32
    cigar_offset: np.ndarray  # int64 [n+1]
    seq: np.ndarray  # uint8 base codes
    qual: np.ndarray  # uint8 Phred
    seq_offset: np.ndarray  # int64 [n+1]
    name: list[str]
    read_number: np.ndarray  # int8: 1 or 2 (0 for unpaired)

    def __len__(self) -> int:
        return len(self.start)

    def query_span(self, lo: int, hi: int) -> np.ndarray:
        """Indices of reads overlapping [lo, hi)."""
        first = 0 if len(self.start) == 0 else np.searchsorted(self.start, lo - self.max_span, side="left")
        last = np.searchsorted(self.start, hi, side="left")
        idx = np.arange(first, last)
        return idx[self.end[idx] > lo]

    @property
    def max_span(self) -> int:
        return int((self.end - self.start).max()) if len(self.start) else 0


def fetch_reads(alignments, path, contig: str, start: int, end: int, min_mapq: int) -> ReadBatch:
    """All usable reads overlapping [start, end), in alignment order."""
    starts, ends, mapqs, reverse, tlens, names, numbers = [], [], [], [], [], [], []
    ops: list[int] = []
    lens: list[int] = []
    cigar_offsets = [0]
    seqs: list[bytes] = []
    quals: list[bytes] = []
    seq_offsets = [0]
    with reading_reads(alignments, path, f"{contig}:{start + 1}-{end}"):
        for read in alignments.fetch(contig, max(0, start), end):
            if read.flag & SKIP_FLAGS or read.mapping_quality < min_mapq:
                continue
            sequence = read.query_sequence
            cigar = read.cigartuples
            if not sequence or not cigar:
                continue
            qualities = read.query_qualities
            starts.append(read.reference_start)
            ends.append(read.reference_end)
            mapqs.append(read.mapping_quality)
            reverse.append(read.is_reverse)
            tlens.append(abs(read.template_length))
            names.append(read.query_name)
            numbers.append(1 if read.is_read1 else 2 if read.is_read2 else 0)
            for op, length in cigar:
                ops.append(op)
                lens.append(length)
            cigar_offsets.append(len(ops))
            seqs.append(sequence.encode("ascii"))
            quals.append(bytes(qualities) if qualities is not None else bytes(len(sequence)))
            seq_offsets.append(seq_offsets[-1] + len(sequence))
    seq = BASE_CODES[np.frombuffer(b"".join(seqs), dtype=np.uint8)]
    return ReadBatch(
        start=np.asarray(starts, dtype=np.int64),
        end=np.asarray(ends, dtype=np.int64),
        mapq=np.asarray(mapqs, dtype=np.int32),
        reverse=np.asarray(reverse, dtype=bool),
        tlen=np.asarray(tlens, dtype=np.int64),
        cigar_op=np.asarray(ops, dtype=np.int8),
        cigar_len=np.asarray(lens, dtype=np.int32),
        cigar_offset=np.asarray(cigar_offsets, dtype=np.int64),
        seq=seq,
        qual=np.frombuffer(b"".join(quals), dtype=np.uint8).copy(),
        seq_offset=np.asarray(seq_offsets, dtype=np.int64),
        name=names,
        read_number=np.asarray(numbers, dtype=np.int8),
    )
