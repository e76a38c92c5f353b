"""Pileup images with DeepVariant's seven channels and pixel encodings plus `read_spans_variant`, drawn
by a compiled kernel.

Layout: `reference_rows` rows of reference, then one row per read, columns centred on the candidate.
A read is drawn base by base along its CIGAR: aligned bases at their column; an insertion at its anchor
base (the reference base before it) with read_base 0 and the quality of the first inserted base; a
deletion at its anchor with read_base 0 and the quality of the base before it; deleted bases stay
empty (gaps). Soft clips and skips are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from deepflows.genomics.examples.allele_counts import DEL, INS, _is_match

CHANNELS = (
    "read_base",
    "base_quality",
    "mapping_quality",
    "strand",
    "read_supports_variant",
    "base_differs_from_ref",
    "insert_size",
    "read_spans_variant",  # ours: does the read cover the variant's whole repeat (see allele_span)
)

# Pixel values (DeepVariant's defaults; SPANS / DOES_NOT_SPAN are ours, on the same scale).
BASE_COLOR = np.array([250, 30, 180, 100, 0], dtype=np.uint8)  # A C G T N
FORWARD, REVERSE = 70, 240
SUPPORTS, DOES_NOT_SUPPORT = 254, 152
SPANS, DOES_NOT_SPAN = 254, 152
DIFFERS, MATCHES = 254, 50
MAX_PIXEL = 254.0
BASE_QUALITY_CAP, MAPPING_QUALITY_CAP, INSERT_SIZE_CAP = 40, 60, 1000


@dataclass(frozen=True)
class PileupShape:
    height: int = 100
    width: int = 221
    reference_rows: int = 5

    @property
    def max_reads(self) -> int:
        return self.height - self.reference_rows

    @property
    def half_width(self) -> int:
        return (self.width - 1) // 2


@numba.njit(cache=True, nogil=True)
def _scale(value, cap):
    return np.uint8(int(MAX_PIXEL * (min(value, cap) / cap)))


@numba.njit(cache=True, nogil=True)
def site_min_quality(position, read_ids, starts, cigar_op, cigar_len, cigar_offset, qual, seq_offset):
    """Per read: the lowest base quality drawn at `position` (255 when nothing is drawn there).

    A read whose drawn quality at the candidate is below the base-quality floor is left out of the
    image, as DeepVariant does.
    """
    out = np.full(len(read_ids), 255, dtype=np.int32)
    for i in range(len(read_ids)):
        r = read_ids[i]
        pos = starts[r]
        qpos = seq_offset[r]
        for c in range(cigar_offset[r], cigar_offset[r + 1]):
            op = cigar_op[c]
            length = cigar_len[c]
            if _is_match(op):
                if pos <= position < pos + length:
                    out[i] = min(out[i], qual[qpos + position - pos])
                pos += length
                qpos += length
            elif op == INS:
                if pos - 1 == position:
                    out[i] = min(out[i], qual[qpos])
                qpos += length
            elif op == DEL:
                if pos - 1 == position and qpos > seq_offset[r]:
                    out[i] = min(out[i], qual[qpos - 1])
                pos += length
            elif op == 4:  # soft clip: consumes query only
                qpos += length
            elif op == 3:  # skip: consumes reference only
                pos += length
            if pos > position + 1:
                break
    return out


@numba.njit(cache=True, nogil=True)
def draw_reads(
    image, first_row, read_ids, supports, image_start, ref_codes,
    starts, mapq, reverse, tlen, cigar_op, cigar_len, cigar_offset, seq, qual, seq_offset,
):  # fmt: skip
    """Draw reads `read_ids` into rows first_row, first_row+1, ... of `image` [height, width, 8] (not
    read_spans_variant, which depends on the alleles shown)."""
    width = image.shape[1]
    for i in range(len(read_ids)):
        r = read_ids[i]
        row = first_row + i
        mq = _scale(mapq[r], MAPPING_QUALITY_CAP)
        strand = np.uint8(REVERSE if reverse[r] else FORWARD)
        support = np.uint8(SUPPORTS if supports[i] else DOES_NOT_SUPPORT)
        insert = _scale(tlen[r], INSERT_SIZE_CAP)
        pos = starts[r]
        qpos = seq_offset[r]
        for c in range(cigar_offset[r], cigar_offset[r + 1]):
            op = cigar_op[c]
            length = cigar_len[c]
            if _is_match(op):
                for k in range(length):
                    col = pos + k - image_start
                    if 0 <= col < width:
                        base = seq[qpos + k]
                        image[row, col, 0] = BASE_COLOR[base]
                        image[row, col, 1] = _scale(qual[qpos + k], BASE_QUALITY_CAP)
                        image[row, col, 5] = MATCHES if base == ref_codes[col] else DIFFERS
                        image[row, col, 2] = mq
                        image[row, col, 3] = strand
                        image[row, col, 4] = support
                        image[row, col, 6] = insert
                pos += length
                qpos += length
                continue
            anchor_q = -1
            if op == INS:
                anchor_q = qpos
                qpos += length
            elif op == DEL:
                if qpos > seq_offset[r]:
                    anchor_q = qpos - 1
                pos += length
            elif op == 4:
                qpos += length
            elif op == 3:
                pos += length
            if anchor_q >= 0:
                # The anchor is the reference base before the indel: pos - 1 for an insertion, and
                # (deletion start) - 1 for a deletion.
                col = (pos - 1 if op == INS else pos - length - 1) - image_start
                if 0 <= col < width:
                    image[row, col, 0] = 0
                    image[row, col, 1] = _scale(qual[anchor_q], BASE_QUALITY_CAP)
                    image[row, col, 5] = DIFFERS
                    image[row, col, 2] = mq
                    image[row, col, 3] = strand
                    image[row, col, 4] = support
                    image[row, col, 6] = insert


def reference_band(ref_codes: np.ndarray, shape: PileupShape) -> np.ndarray:
    """The rows that show the reference: bases, top qualities, forward strand, no support, no difference."""
    row = np.empty((shape.width, len(CHANNELS)), dtype=np.uint8)
    row[:, 0] = BASE_COLOR[ref_codes]
    row[:, 1] = int(MAX_PIXEL)
    row[:, 2] = int(MAX_PIXEL)
    row[:, 3] = FORWARD
    row[:, 4] = DOES_NOT_SUPPORT
    row[:, 5] = MATCHES
    row[:, 6] = int(MAX_PIXEL)
    row[:, 7] = SPANS
    return np.broadcast_to(row, (shape.reference_rows, shape.width, len(CHANNELS)))
