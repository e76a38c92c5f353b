"""`deepflows make-reference`: a deterministic synthetic reference with human-like structure.

Uniform random sequence makes variant calling trivially easy, so the generator adds what makes real
genomes hard: GC isochores, CpG depletion, homopolymers, short tandem repeats, interspersed repeat
families copied with divergence (Alu/L1/MIR-like) and a couple of segmental duplications.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from deepflows.arguments import seed
from deepflows.errors import UserError
from deepflows.outputs import atomic_output, check_new_output

log = logging.getLogger(__name__)

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
A, C, G, T = 0, 1, 2, 3
FASTA_LINE = 60

# (name, consensus length, GC, copies per Mb, divergence range, 3'-fragments like L1, poly-A tail)
REPEAT_FAMILIES = (
    ("alu", 300, 0.52, 250, (0.05, 0.15), False, True),
    ("l1", 1200, 0.40, 70, (0.05, 0.15), True, True),
    ("mir", 260, 0.45, 100, (0.10, 0.15), False, False),
)
STR_PER_MB = 500
HOMOPOLYMERS_PER_MB = 1200
SEGMENTAL_DUPLICATIONS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output FASTA; its .fai is written next to it")
    parser.add_argument("--length", type=int, required=True, help="contig length in bp")
    parser.add_argument("--contig", default="demo", help="contig name (default: %(default)s)")
    parser.add_argument("--seed", type=seed, default=7, help="random seed (default: %(default)s)")


def run(args: argparse.Namespace) -> None:
    if args.length < 1000:
        raise UserError(f"--length {args.length}: must be at least 1000 bp")
    if not args.contig or any(c.isspace() for c in args.contig):
        raise UserError(f"--contig {args.contig!r}: must be a non-empty name without spaces")
    check_new_output(args.out)
    check_new_output(f"{args.out}.fai")
    started = time.perf_counter()
    sequence = generate_reference(args.length, args.seed)
    write_fasta(args.out, {args.contig: sequence})
    gc = np.isin(sequence, np.frombuffer(b"CG", dtype=np.uint8)).mean()
    log.info("wrote %s: %s %d bp, GC %.1f%%, %.1f s", args.out, args.contig, args.length, 100 * gc,
             time.perf_counter() - started)


def generate_reference(length: int, seed: int) -> np.ndarray:
    """ASCII bytes (uint8) of one synthetic contig; the same (length, seed) gives the same sequence."""
    rng = np.random.default_rng(seed)
    codes = _background(length, rng)
    for family in REPEAT_FAMILIES:
        _add_repeat_family(codes, family, rng)
    _add_tandem_repeats(codes, rng)
    _add_homopolymers(codes, rng)
    _add_segmental_duplications(codes, rng)
    return BASES[codes]


def write_fasta(path: str, contigs: dict[str, np.ndarray]) -> None:
    """FASTA with 60-column lines plus its .fai, each written under a temporary name and renamed."""
    import pysam

    # The index is renamed into place first: it is never older than the FASTA it describes.
    with atomic_output(path) as tmp, atomic_output(f"{path}.fai") as tmp_index:
        with open(tmp, "wb") as out:
            for name, seq in contigs.items():
                data = seq.tobytes()
                out.write(f">{name}\n".encode())
                out.write(b"\n".join(data[i:i + FASTA_LINE] for i in range(0, len(data), FASTA_LINE)))
                out.write(b"\n")
        pysam.faidx(str(tmp), "--fai-idx", str(tmp_index))


def random_codes(n: int, gc: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Base codes 0-3 (ACGT) with the given GC fraction (a scalar or one value per base)."""
    strong = rng.random(n) < gc
    first = rng.random(n) < 0.5
    return np.where(strong, np.where(first, G, C), np.where(first, A, T)).astype(np.uint8)


def mutate(codes: np.ndarray, divergence: float, rng: np.random.Generator) -> np.ndarray:
    """A diverged copy: mostly substitutions, about 1 in 7 events a 1-3 bp indel."""
    out = codes.copy()
    hit = rng.random(len(out)) < divergence * 0.85
    out[hit] = (out[hit] + rng.integers(1, 4, hit.sum())) % 4
    n_indels = rng.poisson(divergence * 0.15 * len(out))
    # descending positions keep earlier edits from shifting later ones
    for pos in np.sort(rng.integers(0, len(out), n_indels))[::-1]:
        size = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            out = np.delete(out, np.s_[pos:pos + size])
        else:
            out = np.insert(out, pos, rng.integers(0, 4, size).astype(np.uint8))
    return out


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    return (3 - codes)[::-1]


def _per_mb(rate: float, length: int) -> int:
    return int(round(rate * length / 1e6))


def _background(length: int, rng: np.random.Generator) -> np.ndarray:
    # isochores: tens of kb with their own GC, plus kb-scale wobble inside them
    sizes = np.maximum(rng.exponential(30_000, length // 2_000 + 2).astype(int), 2_000)
    gc = np.repeat(np.clip(rng.normal(0.455, 0.05, len(sizes)), 0.35, 0.6), sizes)
    while len(gc) < length:
        gc = np.concatenate([gc, gc])
    wobble = np.repeat(rng.normal(0, 0.03, length // 1_000 + 1), 1_000)
    codes = random_codes(length, np.clip(gc[:length] + wobble[:length], 0.25, 0.65), rng)
    # CpG depletion: methylated C in CG deaminates to T (TG on this strand or CA on the other)
    cpg = np.flatnonzero((codes[:-1] == C) & (codes[1:] == G))
    cpg = cpg[rng.random(len(cpg)) < 0.75]
    on_this_strand = rng.random(len(cpg)) < 0.5
    codes[cpg[on_this_strand]] = T
    codes[cpg[~on_this_strand] + 1] = A
    return codes


def _place(codes: np.ndarray, element: np.ndarray, rng: np.random.Generator) -> None:
    """Overwrite a random stretch with the element, the way later insertions land on older ones."""
    if len(element) >= len(codes):
        return
    start = int(rng.integers(0, len(codes) - len(element)))
    codes[start:start + len(element)] = element


def _add_repeat_family(codes: np.ndarray, family: tuple, rng: np.random.Generator) -> None:
    _name, size, gc, per_mb, (low, high), fragments, poly_a = family
    consensus = random_codes(size, gc, rng)
    for _ in range(_per_mb(per_mb, len(codes))):
        copy = consensus
        if fragments:  # L1 copies are mostly 5'-truncated
            copy = consensus[-int(rng.integers(150, size + 1)):]
        copy = mutate(copy, rng.uniform(low, high), rng)
        if poly_a:
            copy = np.concatenate([copy, np.full(int(rng.integers(6, 21)), A, np.uint8)])
        if rng.random() < 0.5:
            copy = reverse_complement_codes(copy)
        _place(codes, copy, rng)


def _add_tandem_repeats(codes: np.ndarray, rng: np.random.Generator) -> None:
    for _ in range(_per_mb(STR_PER_MB, len(codes))):
        unit_size = int(rng.choice([2, 3, 4], p=[0.5, 0.25, 0.25]))
        unit = rng.integers(0, 4, unit_size).astype(np.uint8)
        while (unit == unit[0]).all():  # a one-base unit would be a homopolymer
            unit = rng.integers(0, 4, unit_size).astype(np.uint8)
        copies = min(30, 3 + int(rng.geometric(0.12)))
        _place(codes, mutate(np.tile(unit, copies), 0.02, rng), rng)


def _add_homopolymers(codes: np.ndarray, rng: np.random.Generator) -> None:
    for _ in range(_per_mb(HOMOPOLYMERS_PER_MB, len(codes))):
        base = rng.choice([A, T]) if rng.random() < 0.8 else rng.choice([C, G])
        length = min(20, 6 + int(rng.geometric(0.25)))
        _place(codes, np.full(length, base, np.uint8), rng)


def _add_segmental_duplications(codes: np.ndarray, rng: np.random.Generator) -> None:
    max_size = min(20_000, len(codes) // 20)
    for _ in range(SEGMENTAL_DUPLICATIONS):
        size = int(rng.integers(max_size // 2, max_size + 1))
        source = int(rng.integers(0, len(codes) - size))
        # the target must not overlap its source, or the copy would not be a second copy
        before, after = max(source - size, 0), max(len(codes) - size - (source + size), 0)
        if before + after == 0:
            continue
        target = int(rng.integers(0, before + after))
        if target >= before:
            target += source + size - before
        copy = mutate(codes[source:source + size], rng.uniform(0.005, 0.03), rng)[:size]
        codes[target:target + len(copy)] = copy
