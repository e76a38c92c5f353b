"""The featurizer: candidate -> pileup images, one per alt-allele combination.

The same function makes training and calling examples, so the model never sees two encodings.
"""

from __future__ import annotations

import zlib

import numpy as np

from deepflows.genomics.examples.allele_span import allele_span
from deepflows.genomics.examples.candidates import Candidate, Thresholds
from deepflows.genomics.examples.pileup_image import (
    CHANNELS,
    DOES_NOT_SPAN,
    DOES_NOT_SUPPORT,
    SPANS,
    SUPPORTS,
    PileupShape,
    draw_reads,
    reference_band,
    site_min_quality,
)
from deepflows.genomics.examples.readbatch import ReadBatch

SUPPORT_CHANNEL, SPAN_CHANNEL = CHANNELS.index("read_supports_variant"), CHANNELS.index("read_spans_variant")
READ_OVERLAP_BUFFER = 5  # reads ending up to this many bp before the candidate still inform it


def image_reads(batch: ReadBatch, candidate: Candidate, shape: PileupShape, thresholds: Thresholds,
                seed: int) -> np.ndarray:  # fmt: skip
    """Read ids for the image rows: reads near the candidate without a low-quality base at it,
    downsampled to the row budget by a generator seeded from (seed, contig, position) so a candidate
    gets the same rows whichever shard or window it falls in; then sorted by alignment start."""
    reads = batch.query_span(candidate.start - READ_OVERLAP_BUFFER, candidate.end + READ_OVERLAP_BUFFER)
    quality = site_min_quality(
        candidate.start, reads, batch.start, batch.cigar_op, batch.cigar_len, batch.cigar_offset,
        batch.qual, batch.seq_offset,
    )  # fmt: skip
    reads = reads[quality >= thresholds.min_base_quality]
    if len(reads) > shape.max_reads:
        rng = np.random.default_rng([seed, zlib.crc32(candidate.contig.encode()), candidate.start])
        reads = rng.choice(reads, size=shape.max_reads, replace=False)
    return np.asarray(
        sorted(reads.tolist(), key=lambda r: (batch.start[r], batch.name[r], batch.read_number[r])), dtype=np.int64
    )


def candidate_images(batch: ReadBatch, candidate: Candidate, ref_codes: np.ndarray, shape: PileupShape,
                     thresholds: Thresholds, seed: int):  # fmt: skip
    """Yield (alt_indices, image) for every alt combination of the candidate.

    `ref_codes` are the reference base codes of the image columns
    [candidate.start - half_width, candidate.start + half_width].
    """
    reads = image_reads(batch, candidate, shape, thresholds, seed)
    image_start = candidate.start - shape.half_width
    base = np.zeros((shape.height, shape.width, len(CHANNELS)), dtype=np.uint8)
    base[: shape.reference_rows] = reference_band(ref_codes, shape)
    draw_reads(
        base, shape.reference_rows, reads, np.zeros(len(reads), dtype=np.uint8),
        image_start, ref_codes,
        batch.start, batch.mapq, batch.reverse, batch.tlen, batch.cigar_op, batch.cigar_len,
        batch.cigar_offset, batch.seq, batch.qual, batch.seq_offset,
    )  # fmt: skip
    # Only read_supports_variant and read_spans_variant differ between the combinations: recolour them
    # on the drawn pixels.
    rows = slice(shape.reference_rows, shape.reference_rows + len(reads))
    drawn = base[rows, :, 3] != 0
    spans = [allele_span(ref_codes, image_start, candidate.start, candidate.ref, alt) for alt in candidate.alts]
    for combination in candidate.alt_combinations():
        support = np.concatenate([candidate.supporters[i] for i in combination])
        supports = np.isin(reads, support)
        lo, hi = min(spans[i][0] for i in combination), max(spans[i][1] for i in combination)
        covers = (batch.start[reads] <= lo) & (batch.end[reads] > hi)
        image = base.copy()
        image[rows, :, SUPPORT_CHANNEL] = np.where(drawn, np.where(supports[:, None], SUPPORTS, DOES_NOT_SUPPORT), 0)
        image[rows, :, SPAN_CHANNEL] = np.where(drawn, np.where(covers[:, None], SPANS, DOES_NOT_SPAN), 0)
        yield combination, image
