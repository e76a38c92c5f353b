"""Base-quality binning as Illumina instruments write it, so models meet the quality strings of real runs.

NovaSeq (RTA3) reports four values, HiSeq X / 4000 and NextSeq (RTA2) eight bins (Illumina's technical
note "Reducing whole-genome data storage footprint", 2014): each Phred score is replaced by its bin's value.
"""

from __future__ import annotations

import numpy as np

# (lowest score of the bin, value written), in ascending order; scores below the first bin keep their value
QUALITY_BINS: dict[str, tuple[tuple[int, int], ...]] = {
    "none": (),
    "novaseq": ((0, 2), (3, 12), (15, 23), (31, 37)),
    "hiseqx": ((2, 6), (10, 15), (20, 22), (25, 27), (30, 33), (35, 37), (40, 40)),
}


def binning_table(scheme: str) -> np.ndarray:
    """Lookup table [256] from a Phred score to the score written under `scheme`."""
    table = np.arange(256, dtype=np.uint8)
    for low, value in QUALITY_BINS[scheme]:
        table[low:] = value
    return table


def bin_qualities(quals: np.ndarray, scheme: str) -> np.ndarray:
    """Phred scores (uint8, any shape) as written under `scheme`; 'none' returns them unchanged."""
    return quals if scheme == "none" else binning_table(scheme)[quals]
