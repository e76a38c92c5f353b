"""Opening references and aligned reads with checks that turn htslib failures into one clear line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from deepflows.errors import UserError, abbreviated
from deepflows.genomics.regions import Interval

log = logging.getLogger(__name__)

# The 28-byte empty BGZF block that ends every complete BAM (SAM spec, section 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_UPPER_OR_N = bytes(b if b in b"ACGT" else b - 32 if b in b"acgt" else ord("N") for b in range(256))


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if not path.is_file():
        raise UserError(f"{path}: {what} is not a regular file")
    return path


def open_reference(path: str | Path):
    """pysam.FastaFile for a plain or bgzipped FASTA; builds a missing .fai when it can."""
    import pysam

    path = require_file(path, "reference FASTA")
    if not Path(f"{path}.fai").exists():
        _build_index(path, pysam.faidx, "samtools faidx", "gzip files must be bgzipped")
    try:
        return pysam.FastaFile(str(path))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot open FASTA ({_first_line(err)})") from None


def fetch_sequence(fasta, region: Interval) -> str:
    """Upper-case reference bases; anything but ACGT (IUPAC codes, gaps) becomes N."""
    return fasta.fetch(region.contig, region.start, region.end).encode().translate(_UPPER_OR_N).decode()


def open_reads(path: str | Path, reference: str | Path | None):
    """pysam.AlignmentFile for an indexed BAM or CRAM, checked for truncation; builds a missing index."""
    import pysam

    path = require_file(path, "reads file")
    is_cram = path.suffix == ".cram"
    if is_cram and reference is None:
        raise UserError(f"{path}: CRAM needs the reference it was compressed against (--ref)")
    if path.suffix == ".bam":
        _check_bgzf_eof(path)
    index = next((Path(f"{path}{ext}") for ext in (".bai", ".csi", ".crai") if Path(f"{path}{ext}").exists()), None)
    if index is None and path.suffix == ".bam":
        alt = path.with_suffix(".bai")
        index = alt if alt.exists() else None
    if index is None:
        _build_index(path, pysam.index, "samtools index", "is it coordinate-sorted?")
    try:
        reads = pysam.AlignmentFile(
            str(path), "rc" if is_cram else "rb", reference_filename=str(reference) if is_cram else None
        )
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot open reads ({_first_line(err)})") from None
    if not reads.has_index():
        raise UserError(f"{path}: index could not be loaded")
    return reads


def check_contigs(reads_path, reads, ref_path, reference, contigs: list[str]) -> None:
    """Every contig we will read must exist in both files with the same length; name both sides if not."""
    read_lengths = dict(zip(reads.references, reads.lengths))
    ref_lengths = dict(zip(reference.references, reference.lengths))
    for contig in contigs:
        if contig not in read_lengths:
            alias = contig[3:] if contig.startswith("chr") else f"chr{contig}"
            hint = f"; the reads name it '{alias}'" if alias in read_lengths else ""
            raise UserError(
                f"{reads_path}: contig '{contig}' of reference {ref_path} is not in the reads' header{hint} "
                f"(reads have {abbreviated(read_lengths)})"
            )
        if read_lengths[contig] != ref_lengths[contig]:
            raise UserError(
                f"{reads_path}: contig '{contig}' is {read_lengths[contig]:,} bp in the reads but "
                f"{ref_lengths[contig]:,} bp in reference {ref_path}: aligned to a different assembly?"
            )


def _build_index(path: Path, build, command: str, hint: str) -> None:
    """A missing index is built beside the file when we may write there; otherwise say how to build it."""
    import pysam

    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path}: no index; run `{command} {path}`")
    log.info("indexing %s", path)
    pysam.set_verbosity(0)  # htslib's own error lines would repeat ours
    try:
        build(str(path))
    except pysam.utils.SamtoolsError as err:
        raise UserError(f"{path}: cannot index ({_last_line(err)}); {hint}") from None


def _check_bgzf_eof(path: Path) -> None:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size < len(_BGZF_EOF):
            raise UserError(f"{path}: truncated BAM ({size} bytes)")
        handle.seek(size - len(_BGZF_EOF))
        if handle.read() != _BGZF_EOF:
            raise UserError(f"{path}: truncated BAM (no BGZF end-of-file block); re-copy or regenerate it")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _last_line(err: Exception) -> str:
    """samtools errors quote their whole stderr; its last line says what went wrong."""
    return last_line(str(err).split("stderr=", 1)[-1].replace("\\n", "\n").strip(" '\"\n"), type(err).__name__)


def last_line(text: str, default: str) -> str:
    """The last non-blank line of a tool's stderr, stripped (`default` if none): usually what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else default
