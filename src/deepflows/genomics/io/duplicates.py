"""PCR and optical duplicates marked (flag 0x400) with samtools, as DeepVariant's exome runs expect: make-examples
skips reads flagged 0x400, so a duplicated fragment counts once. `deepflows mark-duplicates` runs it on its own.

samtools (pysam's own copy, in process): collate (reads by name) -> fixmate -m (mate scores and coordinates) ->
sort (by coordinate) -> markdup, then index. The output BAM and its .bai are written under temporary names beside
them and renamed into place when both are whole (deepflows.outputs.atomic_output); the scratch files go to a
temporary folder (beside the output unless `workdir` is given) that is removed whatever happens. Commands run with
--no-PG, so that the same input gives the same bytes (samtools' command lines would name the scratch files); the
scratch files are fast-compressed (level 1) and each is removed as soon as the next step has read it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import tempfile
from pathlib import Path

from deepflows.arguments import positive_int
from deepflows.errors import UserError

log = logging.getLogger("deepflows.mark_duplicates")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reads", required=True, metavar="BAM", help="aligned reads (BAM or CRAM), sorted any way")
    p.add_argument("--out", required=True, metavar="BAM",
                   help="the reads with duplicates flagged 0x400, coordinate-sorted and indexed (OUT.bai)")
    p.add_argument("--ref", metavar="FASTA", help="reference FASTA: only needed for CRAM input")
    p.add_argument("--threads", type=positive_int, default=1, help="threads for samtools (default 1)")
    p.add_argument("--workdir", metavar="DIR",
                   help="folder for the scratch files (up to about three times the input, fast-compressed); "
                        "default: beside --out")


def run(args: argparse.Namespace) -> None:
    duplicates = mark_duplicates(args.reads, args.out, args.threads, args.workdir, reference=args.ref)
    log.info("%s: %d duplicate reads marked -> %s", args.reads, duplicates, args.out)


def mark_duplicates(src: str, out: str, threads: int = 1, workdir: str | None = None, *,
                    reference: str | None = None) -> int:  # fmt: skip
    """Mark the duplicates of `src` into the coordinate-sorted, indexed BAM `out` (+ `out`.bai); returns the number
    of reads marked (samtools markdup's DUPLICATE TOTAL). Bad input or a failed step: one UserError line naming
    the file, with samtools' or htslib's own words for the cause; no output is left behind."""
    from deepflows.inputs import check_bgzf_eof, require_file
    from deepflows.outputs import atomic_output, check_new_output

    src_path = require_file(src, "reads file")
    out_path = Path(out)
    if not out_path.name.endswith(".bam"):
        raise UserError(f"{out}: the output is a BAM file; name it *.bam")
    if out_path.absolute() == src_path.absolute():
        raise UserError(f"{out}: the output must differ from the input reads")
    is_cram = src_path.suffix == ".cram"
    if is_cram and reference is None:
        raise UserError(f"{src}: CRAM needs the reference it was compressed against (--ref)")
    if is_cram:
        require_file(reference, "reference FASTA")
    elif src_path.suffix == ".bam":
        check_bgzf_eof(src_path, "BAM")
    index = Path(f"{out}.bai")
    check_new_output(out_path)
    check_new_output(index)
    extra = ["-@", str(max(int(threads) - 1, 0))]
    cram = ["--reference", str(reference)] if is_cram else []
    with _scratch(out_path, workdir) as scratch, contextlib.ExitStack() as stack:
        # entered index first, so that the BAM is renamed first: an index is never there without its BAM
        tmp_index = stack.enter_context(atomic_output(index))
        tmp_out = stack.enter_context(atomic_output(out_path))
        collated, fixed, ordered, stats = (scratch / name for name in ("collated.bam", "fixmate.bam", "sorted.bam",
                                                                         "markdup.txt"))  # fmt: skip
        _samtools("collate", src, out, "--no-PG", *extra, *cram, "-l", "1", "-o", collated, src,
                  scratch / "collate")  # fmt: skip
        _samtools("fixmate", src, out, "--no-PG", *extra, "--output-fmt", "bam,level=1", "-m", collated, fixed)
        collated.unlink()
        _samtools("sort", src, out, "--no-PG", *extra, "-l", "1", "-T", scratch / "sort", "-o", ordered, fixed)
        fixed.unlink()
        _samtools("markdup", src, out, "--no-PG", *extra, "-s", "-f", stats, "--output-fmt", "bam", ordered, tmp_out)
        ordered.unlink()
        _samtools("index", out, out, *extra, tmp_out, tmp_index)
        duplicates = _duplicate_total(stats)
    return duplicates


@contextlib.contextmanager
def _scratch(out: Path, workdir: str | None):
    """A scratch folder, removed on the way out: in `workdir`, or beside `out` named as its temporaries are (so a
    rerun after kill -9 removes one left behind: deepflows.outputs.remove_stale_temporaries)."""
    from deepflows.outputs import remove, remove_stale_temporaries, temporary_path

    if workdir is not None:
        if not Path(workdir).is_dir():
            raise UserError(f"{workdir}: --workdir is not a directory")
        with tempfile.TemporaryDirectory(dir=workdir, prefix="deepflows-markdup-") as tmp:
            yield Path(tmp)
        return
    base = out.with_name(f"{out.name}.work")
    tmp = temporary_path(base)
    remove_stale_temporaries(base)
    try:
        tmp.mkdir()
        yield tmp
    finally:
        remove(tmp)


def _samtools(command: str, src, out, *args) -> None:
    """One samtools command (pysam's, in process) with htslib's stderr held back; a failure is one line: a full
    disk names `out`, anything else `src`, with the cause in htslib's or samtools' own words (the last line)."""
    import pysam

    from deepflows.genomics.io.hts import _last_line, _no_space, htslib_call

    with htslib_call(src, f"samtools {command} failed") as held:
        try:
            getattr(pysam, command)(*map(str, args), catch_stdout=False)
        except pysam.utils.SamtoolsError as err:
            full = _no_space(out)
            if full:
                raise UserError(f"{out}: cannot write it ({full})") from None
            why = held.diagnosis() or _last_line(err)
            if command == "collate":  # the step that reads the input: its failure is the input's
                raise UserError(f"{src}: cannot read the reads, damaged or not a BAM/CRAM? (samtools collate: "
                                f"{why})") from None  # fmt: skip
            raise UserError(f"{src}: samtools {command} failed ({why})") from None


def _duplicate_total(stats: Path) -> int:
    """`DUPLICATE TOTAL: N` of samtools markdup's statistics."""
    match = re.search(r"^DUPLICATE TOTAL:\s*(\d+)\s*$", stats.read_text(), re.MULTILINE)
    if match is None:  # samtools changed its report: a bug of ours to fix, not the user's input
        raise RuntimeError(f"{stats}: no 'DUPLICATE TOTAL' in samtools markdup's statistics")
    return int(match[1])
