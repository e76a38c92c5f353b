"""Aligning simulated read pairs (minimap2 through mappy, or bwa mem) into a sorted, indexed BAM."""

from __future__ import annotations

import array
import logging
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from deepflows import __version__
from deepflows.errors import UserError
from deepflows.genomics.io.hts import last_line
from deepflows.genomics.simulate.reads import ReadModel, ReadPairs

log = logging.getLogger(__name__)

_COMPLEMENT = bytes.maketrans(b"ACGTN", b"TGCAN")


def bam_header(lengths: dict[str, int], sample: str, command_line: str, read_group: dict[str, str]) -> dict:
    return {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [{"SN": name, "LN": length} for name, length in lengths.items()],
        "RG": [{"ID": sample, "SM": sample, "LB": sample, "PL": "ILLUMINA", **read_group}],
        "PG": [{"ID": "deepflows-simulate", "PN": "deepflows", "VN": __version__, "CL": command_line}],
    }


@dataclass(frozen=True)
class _Hit:
    tid: int
    pos: int
    end: int
    reverse: bool
    mapq: int
    cigar: list[tuple[int, int]]
    nm: int


def align_with_mappy(pairs: Iterator[ReadPairs], ref: str, header: dict, model: ReadModel, threads: int,
                     out_path: str) -> None:
    """Paired minimap2 (preset sr) through mappy; one primary record per read, unmapped reads kept."""
    import mappy
    import pysam

    aligner = mappy.Aligner(ref, preset="sr", n_threads=max(threads, 1))
    if not aligner:
        raise UserError(f"{ref}: minimap2 could not index the reference")
    described = {**header["PG"][0], "DS": f"aligned with minimap2 {mappy.__version__} (mappy, preset sr)"}
    header = {**header, "PG": [described]}
    buffer = mappy.ThreadBuffer()
    max_fragment = max(800, model.max_proper_insert)
    counts = Counter()
    with pysam.AlignmentFile(out_path, "wbu", header=header) as out:  # uncompressed: sorting reads it once
        tids = {name: i for i, name in enumerate(out.references)}
        sample = header["RG"][0]["ID"]
        for batch in pairs:
            for i, name in enumerate(batch.names):
                seq1, seq2 = batch.seq1[i].tobytes(), batch.seq2[i].tobytes()
                hits: list[_Hit | None] = [None, None]
                for h in aligner.map(seq1, seq2=seq2, buf=buffer, max_frag_len=max_fragment):
                    if h.is_primary and hits[h.read_num - 1] is None:
                        hits[h.read_num - 1] = _mappy_hit(h, tids, len(seq1) if h.read_num == 1 else len(seq2))
                reads = ((seq1, batch.qual1[i]), (seq2, batch.qual2[i]))
                for record in pair_records(out.header, name, reads, hits, sample, model.max_proper_insert):
                    out.write(record)
                counts["pairs"] += 1
                counts["mapped"] += sum(h is not None for h in hits)
    log.info("mappy: %d of %d reads mapped (%.2f%%)", counts["mapped"], 2 * counts["pairs"],
             100 * counts["mapped"] / max(2 * counts["pairs"], 1))


def _mappy_hit(h, tids: dict[str, int], length: int) -> _Hit:
    q_st, q_en = h.q_st, h.q_en
    if h.read_num == 2:  # mappy maps read 2 as its reverse complement and reports query positions on that
        q_st, q_en = length - h.q_en, length - h.q_st
    reverse = h.strand < 0
    lead, trail = (length - q_en, q_st) if reverse else (q_st, length - q_en)
    cigar = [(op, n) for n, op in h.cigar]
    if lead:
        cigar.insert(0, (4, lead))
    if trail:
        cigar.append((4, trail))
    return _Hit(tids[h.ctg], h.r_st, h.r_en, reverse, h.mapq, cigar, h.NM)


def pair_records(header, name: str, reads, hits: list[_Hit | None], sample: str, max_proper_insert: int) -> list:
    """Two BAM records with mate fields, TLEN and flags filled in; SEQ/QUAL in reference orientation.

    An unmapped read with a mapped mate takes the mate's position, so sorting keeps them together.
    """
    import pysam

    proper = _is_proper_pair(*hits, max_proper_insert)
    records = []
    for k in (0, 1):
        hit, mate = hits[k], hits[1 - k]
        seq, qual = reads[k]
        place = hit or mate
        a = pysam.AlignedSegment(header)
        a.query_name = name
        a.flag = 0x1 | (0x40 if k == 0 else 0x80) | (0x2 if proper else 0)
        reverse = hit is not None and hit.reverse
        a.query_sequence = (seq.translate(_COMPLEMENT)[::-1] if reverse else seq).decode()
        a.query_qualities = array.array("B", (qual[::-1] if reverse else qual).tobytes())
        if hit is None:
            a.flag |= 0x4
        else:
            a.flag |= 0x10 if reverse else 0
            a.mapping_quality = hit.mapq
            a.cigartuples = hit.cigar
        if mate is None:
            a.flag |= 0x8
        elif mate.reverse:
            a.flag |= 0x20
        if place is not None:
            a.reference_id, a.reference_start = place.tid, place.pos
            a.next_reference_id, a.next_reference_start = (mate or hit).tid, (mate or hit).pos
        if hit is not None and mate is not None and hit.tid == mate.tid:
            span = max(hit.end, mate.end) - min(hit.pos, mate.pos)
            a.template_length = span if (hit.pos, k) < (mate.pos, 1 - k) else -span
        tags = [("RG", sample, "Z")]
        if hit is not None:
            tags.insert(0, ("NM", hit.nm, "i"))
        a.set_tags(tags)
        records.append(a)
    return records


def _is_proper_pair(first: _Hit | None, second: _Hit | None, max_insert: int) -> bool:
    """Both mapped to one contig, facing each other (forward read left of reverse read), close enough."""
    if first is None or second is None or first.tid != second.tid or first.reverse == second.reverse:
        return False
    forward, backward = (second, first) if first.reverse else (first, second)
    return forward.pos <= backward.end and max(forward.end, backward.end) - min(forward.pos, backward.pos) <= max_insert


def align_with_bwa(pairs: Iterator[ReadPairs], ref: str, header: dict, threads: int, workdir: str,
                   out_path: str, index: str | None = None) -> None:
    """FASTQ files in the scratch folder, `bwa mem` against `index` (a `bwa index` prefix of the reference;
    default: the reference itself, indexed first if needed), unsorted BAM."""
    if shutil.which("bwa") is None:
        raise UserError("--aligner bwa: `bwa` is not on PATH")
    if index is not None:
        if not os.path.exists(index + ".bwt"):
            raise UserError(f"--bwa-index {index}: no {index}.bwt (make it with `bwa index -p {index} REF`)")
        ref = os.path.abspath(index)
    else:
        ref = os.path.abspath(ref)
    if not os.path.exists(ref + ".bwt"):
        log.info("bwa index %s", ref)
        done = subprocess.run(["bwa", "index", ref], capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"{ref}: bwa index failed ({last_line(done.stderr, 'no message')})")
    n_pairs = 0
    with open(os.path.join(workdir, "r1.fq"), "w") as fq1, open(os.path.join(workdir, "r2.fq"), "w") as fq2:
        for batch in pairs:
            for i, name in enumerate(batch.names):
                for fq, seq, qual in ((fq1, batch.seq1[i], batch.qual1[i]), (fq2, batch.seq2[i], batch.qual2[i])):
                    fq.write(f"@{name}\n{seq.tobytes().decode()}\n+\n{(qual + 33).tobytes().decode()}\n")
            n_pairs += len(batch.names)
    read_group = "@RG\\t" + "\\t".join(f"{key}:{value}" for key, value in header["RG"][0].items())
    # -K fixes the batch size, so the output does not depend on the thread count
    command = ["bwa", "mem", "-t", str(threads), "-K", "100000000", "-R", read_group, ref, "r1.fq", "r2.fq"]
    log_path = os.path.join(workdir, "bwa.log")
    with open(log_path, "w") as bwa_log:
        bwa = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=bwa_log)
        try:
            mapped = _copy_bwa_records(bwa.stdout, header, out_path)
        except (OSError, ValueError):  # bwa stopped early; its log says why
            mapped = None
    if bwa.wait() != 0 or mapped is None:
        with open(log_path) as text:
            raise UserError(f"{ref}: bwa mem failed ({last_line(text.read(), 'no message')})")
    log.info("bwa mem: %d of %d reads mapped (%.2f%%)", mapped, 2 * n_pairs, 100 * mapped / max(2 * n_pairs, 1))


def _copy_bwa_records(stream, header: dict, out_path: str) -> int:
    """bwa's SAM into an unsorted BAM under our header (same contig order); returns the mapped reads."""
    import pysam

    mapped = 0
    with pysam.AlignmentFile(stream, "r") as sam:
        # bwa's own @PG keeps its version but not its command line, which names the scratch FASTQs
        bwa_pg = [{k: v for k, v in pg.items() if k != "CL"} for pg in sam.header.to_dict().get("PG", [])]
        ours = {**header["PG"][0], **({"PP": bwa_pg[-1]["ID"]} if bwa_pg else {})}
        with pysam.AlignmentFile(out_path, "wbu", header={**header, "PG": [*bwa_pg, ours]}) as out:
            for record in sam:
                mapped += not record.is_unmapped
                out.write(record)
    return mapped


def sort_and_index(unsorted: str, out_path: str, threads: int, workdir: str) -> None:
    import pysam

    # --no-PG: the sort's command line would carry scratch paths that differ on every run
    pysam.sort("--no-PG", "-@", str(max(threads - 1, 0)), "-T", os.path.join(workdir, "sort"), "-o", out_path, unsorted)
    pysam.index(out_path)
