"""Opening references, aligned reads and their indexes with checks that turn htslib failures into one clear line.

- An index older than its data, or one whose entries do not fit the data, is refused with a line that says how
  to rebuild it (`check_index_age`, `check_fasta_index`, `_check_bai`): htslib would silently read wrong bytes.
- A missing index is built under a temporary name beside the data and renamed into place (`_build_atomically`),
  so parallel jobs never read half an index.
- htslib writes its messages straight to file descriptor 2; `htslib_call` holds them back while it works, puts
  its diagnosis (MD5 mismatch, a bad BGZF block) into our one line on failure, and logs its warnings otherwise.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import os
import re
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from deepflows.errors import UserError, abbreviated
from deepflows.genomics.io.regions import Interval
from deepflows.inputs import check_bgzf_eof, compression, require_file

log = logging.getLogger(__name__)

# The 28-byte empty BGZF block that ends every complete BAM (SAM spec, section 4.1.2).
_UPPER_OR_N = bytes(b if b in b"ACGT" else b - 32 if b in b"acgt" else ord("N") for b in range(256))


def open_reference(path: str | Path) -> Reference:
    """A plain or bgzipped FASTA whose index fits it, as a `Reference` (pysam.FastaFile's interface); builds a
    missing .fai (and .gzi)."""
    import pysam

    path = require_file(path, "reference FASTA")
    if compression(path)[1]:
        check_bgzf_eof(path, "FASTA")
    fai, gzi = Path(f"{path}.fai"), _fasta_gzi(path)
    if not fai.exists() or (gzi is not None and not gzi.exists()):
        _build_fasta_index(path, fai, gzi)
    check_fasta_index(path, fai, gzi)
    with htslib_call(path, "cannot open FASTA"):
        fasta = pysam.FastaFile(str(path))
    if not fasta.references:
        raise UserError(f"{path}: no sequences; is it a FASTA file?")
    return Reference(fasta, path)


class Reference:
    """A pysam.FastaFile whose failed fetch (a corrupt block: CRC32 mismatch) is one line naming the file with
    htslib's diagnosis. Fetches run with htslib quiet (a hold of stderr per fetch would cost more than many
    fetches); a failed one is repeated on a fresh handle with htslib heard, to learn why."""

    def __init__(self, fasta, path: Path):
        self._fasta, self.path = fasta, path

    def fetch(self, reference=None, start=None, end=None, region=None) -> str:
        import pysam

        previous = pysam.set_verbosity(0)
        try:
            return self._fasta.fetch(reference, start, end, region)
        except (OSError, ValueError):
            pass
        finally:
            pysam.set_verbosity(previous)
        where = region or f"{reference}:{(start or 0) + 1}-{end or ''}"
        with htslib_call(self.path, f"cannot read {where}"), pysam.FastaFile(str(self.path)) as again:
            return again.fetch(reference, start, end, region)

    def __getattr__(self, name: str):  # references, lengths, filename, get_reference_length, close, ...
        return getattr(self._fasta, name)

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc) -> None:
        self._fasta.close()


def fetch_sequence(fasta, region: Interval) -> str:
    """Upper-case reference bases; anything but ACGT (IUPAC codes, gaps) becomes N."""
    return fasta.fetch(region.contig, region.start, region.end).encode().translate(_UPPER_OR_N).decode()


def open_reads(path: str | Path, reference: str | Path | None):
    """pysam.AlignmentFile for an indexed BAM or CRAM, checked for truncation and a stale index; builds a
    missing index."""
    import pysam

    path = require_file(path, "reads file")
    is_cram = path.suffix == ".cram"
    if is_cram and reference is None:
        raise UserError(f"{path}: CRAM needs the reference it was compressed against (--ref)")
    if path.suffix == ".bam":
        check_bgzf_eof(path, "BAM")
    index = reads_index(path)
    if index is None:
        index = Path(f"{path}.crai" if is_cram else f"{path}.bai")
        _build_atomically(path, [index], "samtools index", "is it coordinate-sorted (`samtools sort`)?",
                          lambda tmps: pysam.index(str(path), str(tmps[0])))  # fmt: skip
    check_index_age(path, index, f"samtools index {path}")
    if is_cram:
        _check_cram_reference(path, reference)
    with htslib_call(path, "cannot open reads"):
        reads = pysam.AlignmentFile(
            str(path), "rc" if is_cram else "rb", reference_filename=str(reference) if is_cram else None,
            index_filename=str(index), check_sq=False,  # no @SQ lines: said below, in our words
        )  # fmt: skip
    if not reads.nreferences:
        raise UserError(f"{path}: no @SQ lines in its header, so its reads are not aligned to any reference")
    if index.suffix == ".bai":
        _check_bai(path, index, reads.nreferences)
    if not reads.has_index():
        raise UserError(f"{index}: cannot be loaded as the index of {path}; rebuild it with `samtools index {path}`")
    return reads


def reads_index(path: Path) -> Path | None:
    """The index htslib would use for a BAM or CRAM (PATH.bai, .csi, .crai, or PATH without .bam + .bai)."""
    found = [Path(f"{path}{ext}") for ext in (".bai", ".csi", ".crai")] + [path.with_suffix(".bai")]
    return next((index for index in found if index.exists()), None)


@contextlib.contextmanager
def reading_reads(reads, path, region: str) -> Iterator[None]:
    """Around a fetch loop over `reads`: a read error becomes one line naming the file, or its index when the
    index does not fit the file, with htslib's diagnosis. The failed file is closed here, quietly: pysam would
    otherwise print a traceback when it is collected."""
    explain = functools.partial(_explain_reads_failure, reads, path, region)
    try:
        with htslib_call(path, f"cannot read {region}", explain=explain):
            yield
    except UserError:
        with contextlib.suppress(OSError):
            reads.close()
        raise


def _explain_reads_failure(reads, path, region: str, diagnosis: str) -> str:
    path = Path(path)
    index = reads_index(path)
    mismatch = _index_mismatch(path, index) if index is not None else None
    if mismatch:  # which of the two is wrong cannot be told from here: name both
        return (f"{path}: cannot read {region}: {diagnosis}; its index {index} {mismatch}: the file is truncated, "
                f"or the index is another file's (rebuild it with `samtools index {path}`)")  # fmt: skip
    if "MD5" in diagnosis and reads.is_cram:
        return (f"{path}: cannot read {region}: {diagnosis}; reference {reads.reference_filename.decode()} "
                "is not the one the CRAM was compressed against")  # fmt: skip
    return f"{path}: cannot read {region}: {diagnosis}; truncated or corrupt file?"


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


def _build_atomically(path: Path, indexes: list[Path], command: str, hint: str, build: Callable) -> None:
    """A missing index is built beside the file when we may write there, else we say how to build it.

    `build(tmps)` writes each of `indexes` to its temporary name beside it (deepflows.outputs.atomic_output, whose
    temporaries a rerun after kill -9 removes); they are renamed into place the last one last (its presence is
    what readers test), so a parallel job sees no index or a whole one.
    """
    import pysam

    from deepflows.outputs import atomic_output

    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path}: no index; run `{command} {path}`")
    log.info("indexing %s", path)
    with contextlib.ExitStack() as stack:
        # entered last to first, so that they leave (and rename) first to last
        tmps = [stack.enter_context(atomic_output(index)) for index in reversed(indexes)][::-1]
        with htslib_call(path, "cannot index") as held:
            try:
                build(tmps)
            except pysam.utils.SamtoolsError as err:
                raise UserError(f"{path}: cannot index ({held.diagnosis() or _last_line(err)}); {hint}") from None


def _build_fasta_index(path: Path, fai: Path, gzi: Path | None) -> None:
    """PATH.fai (and PATH.gzi for BGZF), the .gzi renamed first: readers test for the .fai."""
    import pysam

    def build(tmps: list[Path]) -> None:
        names = ["--gzi-idx", str(tmps[0]), "--fai-idx", str(tmps[1])] if gzi else ["--fai-idx", str(tmps[0])]
        pysam.faidx(str(path), *names)

    _build_atomically(path, [gzi, fai] if gzi else [fai], "samtools faidx", "is it a FASTA file?", build)


def check_index_age(data: Path, index: Path, rebuild: str) -> None:
    """Refuse an index older than its data (whole seconds, as htslib compares): its offsets are those of an
    earlier file, and htslib would read the wrong bytes or fail with a message that blames the data."""
    if int(index.stat().st_mtime) < int(data.stat().st_mtime):
        raise UserError(f"{index} is older than {data}; rebuild it with `{rebuild}`")


# ---------------------------------------------------------------------------------------------- FASTA index

_FAI_SAMPLE = 32  # entries checked against the FASTA: enough to catch a rewrapped file or another FASTA's .fai


def _fasta_gzi(path: Path) -> Path | None:
    """PATH.gzi for a bgzipped FASTA, None for a plain one; a gzip file that is not BGZF cannot be indexed."""
    is_gzip, is_bgzf = compression(path)
    if is_gzip and not is_bgzf:
        raise UserError(not_bgzip(path))
    return Path(f"{path}.gzi") if is_bgzf else None


def check_fasta_index(path: Path, fai: Path, gzi: Path | None) -> None:
    """Refuse a .fai (or .gzi) older than the FASTA, or whose entries do not land on the FASTA's lines: a FASTA
    rewrapped, or replaced, after its index was built reads as garbage sequence without an error."""
    rebuild = f"samtools faidx {path}"
    for index in (fai, gzi) if gzi else (fai,):
        check_index_age(path, index, rebuild)
    entries = _fai_entries(fai)
    if not entries:
        raise UserError(f"{fai} does not match {path} (it lists no sequence); rebuild it with `{rebuild}`")
    read_at = _bgzf_reader(path, gzi) if gzi else _plain_reader(path)
    step = max(1, len(entries) / _FAI_SAMPLE)
    for entry in dict.fromkeys(entries[min(int(i * step), len(entries) - 1)] for i in range(_FAI_SAMPLE + 1)):
        problem = _fai_entry_problem(entry, read_at)
        if problem:
            raise UserError(f"{fai} does not match {path} ({problem}); rebuild it with `{rebuild}`")


def _fai_entries(fai: Path) -> list[tuple[str, int, int, int, int]]:
    """(name, length, offset, bases per line, bytes per line) per line of a .fai."""
    entries = []
    for number, line in enumerate(fai.read_text(errors="replace").splitlines(), 1):
        fields = line.split("\t")
        try:
            entries.append((fields[0], *map(int, fields[1:5])) if len(fields) >= 5 else ())
        except ValueError:
            entries.append(())
        if not entries[-1]:
            raise UserError(f"{fai}: line {number}: not a FASTA index line; rebuild it with "
                            f"`samtools faidx {str(fai).removesuffix('.fai')}`")  # fmt: skip
    return entries


def _fai_entry_problem(entry: tuple[str, int, int, int, int], read_at: Callable[[int, int], bytes]) -> str | None:
    """What is wrong with one .fai entry, if anything: its offset must follow its `>NAME` line, its first line
    must be `bases` bases then the line end, and its last base must lie in the file, followed by a line end."""
    name, length, offset, bases, width = entry
    if length == 0:
        return None
    if bases <= 0 or width <= bases or offset <= 0:
        return f"entry '{name}' is malformed"
    before = read_at(max(0, offset - 4097), min(offset, 4097))
    lines = before[:-1].split(b"\n")
    header = lines[-1].rstrip(b"\r")
    seen_whole = len(lines) > 1 or offset <= 4097  # a longer header line is not checked
    named = header.startswith(b">") and header[1:].split()[:1] == [name.encode()]
    if not before.endswith(b"\n") or (seen_whole and not named):
        return f"'{name}' does not start at byte {offset:,}"
    first = read_at(offset, min(bases, length, 4096))
    end_of_line = read_at(offset + bases, width - bases) if length > bases else b"\n"
    if any(c in b"\r\n>" for c in first) or end_of_line not in (b"\n", b"\r\n"):
        return f"the lines of '{name}' are not {bases} bases long"
    last = length - 1
    tail = read_at(offset + last // bases * width + last % bases, 2)
    if not tail or tail[:1] in b"\r\n>" or tail[1:2] not in (b"", b"\n", b"\r"):
        return f"'{name}' does not end where its {length:,} bp should"
    return None


def _plain_reader(path: Path) -> Callable[[int, int], bytes]:
    def read_at(offset: int, size: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    return read_at


def _bgzf_reader(path: Path, gzi: Path) -> Callable[[int, int], bytes]:
    """Reads uncompressed bytes of a BGZF file at an uncompressed offset: the .gzi maps block starts
    (a uint64 count, then (compressed, uncompressed) offset pairs; block 0 is implicit)."""
    data = gzi.read_bytes()
    count = struct.unpack_from("<Q", data)[0] if len(data) >= 8 else -1
    if count < 0 or len(data) != 8 + 16 * count:
        raise UserError(f"{gzi}: not a BGZF index; rebuild it with `samtools faidx {path}`")
    pairs = [(0, 0), *(struct.unpack_from("<QQ", data, 8 + 16 * i) for i in range(count))]
    starts = [u for _, u in pairs]

    def read_at(offset: int, size: int) -> bytes:
        compressed, uncompressed = pairs[bisect.bisect_right(starts, offset) - 1]
        with open(path, "rb") as handle:
            handle.seek(compressed)
            data = handle.read(3 << 16)  # BGZF blocks hold at most 64 KiB: the range lies in the first two
        if data and not data.startswith(b"\x1f\x8b\x08\x04"):
            raise UserError(f"{gzi} does not match {path} (no BGZF block at byte {compressed:,}); "
                            f"rebuild it with `samtools faidx {path}`")  # fmt: skip
        out = bytearray()
        while data and len(out) < offset - uncompressed + size:
            member = zlib.decompressobj(31)  # one gzip member = one BGZF block
            try:
                out += member.decompress(data)
            except zlib.error as err:
                raise UserError(f"{path}: corrupt BGZF block after byte {compressed:,} ({err})") from None
            data = member.unused_data
        return bytes(out[offset - uncompressed : offset - uncompressed + size])

    return read_at


# ----------------------------------------------------------------------------------------- reads' indexes


def _check_cram_reference(path: Path, reference: str | Path) -> None:
    """A CRAM decodes only against the reference it was compressed with: contigs of another length mean
    another reference (htslib would warn, then fail later with a message that blames the CRAM)."""
    import pysam

    fai = Path(f"{reference}.fai")
    if not fai.exists():
        return  # open_reference builds it first in every stage; without it htslib says what is wrong
    ref_lengths = {name: length for name, length, *_ in _fai_entries(fai)}
    with htslib_call(path, "cannot open reads"), pysam.AlignmentFile(str(path), "rc",
                                                                     reference_filename=str(reference)) as cram:
        for name, length in zip(cram.references, cram.lengths):  # inside: htslib's warnings would only repeat it
            if name in ref_lengths and ref_lengths[name] != length:
                raise UserError(
                    f"{path}: contig '{name}' is {length:,} bp in the CRAM but {ref_lengths[name]:,} bp in "
                    f"reference {reference}: not the reference it was compressed against"
                )


def _check_bai(path: Path, index: Path, n_references: int) -> None:
    """A .bai holds one entry per @SQ line of its BAM: another count means the index of another file."""
    with open(index, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:4] != b"BAI\1":
        raise UserError(f"{index}: not a BAM index; rebuild it with `samtools index {path}`")
    count = struct.unpack_from("<i", head, 4)[0]
    if count != n_references:
        raise UserError(f"{index} is not the index of {path} ({count} references, the BAM has {n_references}); "
                        f"rebuild it with `samtools index {path}`")  # fmt: skip


def _index_mismatch(path: Path, index: Path) -> str | None:
    """After a read error: does the index point past the end of the file (the index of another, larger one)?"""
    size = path.stat().st_size
    try:
        furthest = _bai_furthest(index) if index.suffix == ".bai" else _crai_furthest(index)
    except (OSError, ValueError, IndexError, struct.error, EOFError, zlib.error):
        return None  # unreadable or another kind: htslib's diagnosis stands
    if furthest is not None and furthest > size:
        return f"points to byte {furthest:,} of this {size:,}-byte file"
    return None


def _bai_furthest(index: Path) -> int | None:
    """The largest compressed offset a .bai points to (SAM spec, section 5.2)."""
    data = index.read_bytes()
    if data[:4] != b"BAI\1":
        return None
    (n_ref,), at, furthest = struct.unpack_from("<i", data, 4), 8, 0
    for _ in range(n_ref):
        (n_bin,) = struct.unpack_from("<i", data, at)
        at += 4
        for _ in range(n_bin):
            bin_id, n_chunk = struct.unpack_from("<Ii", data, at)
            chunks = struct.unpack_from(f"<{2 * n_chunk}Q", data, at + 8)
            if bin_id == 37450:  # the pseudo-bin: its second pair counts reads, it points nowhere
                chunks = chunks[:2]
            furthest = max(furthest, *(offset >> 16 for offset in chunks), 0)
            at += 8 + 16 * n_chunk
        (n_intv,) = struct.unpack_from("<i", data, at)
        at += 4 + 8 * n_intv
    return furthest


def _crai_furthest(index: Path) -> int | None:
    """The largest container offset a .crai (gzipped text: seq, start, span, container, slice, size) names."""
    import gzip

    if index.suffix != ".crai":
        return None
    with gzip.open(index, "rt") as handle:
        return max((int(line.split("\t")[3]) for line in handle if line.strip()), default=None)


# ---------------------------------------------------------------------------------------- htslib's stderr

_HTSLIB_MESSAGE = re.compile(r"^\[([EWI])::[^\]]*\]\s*(.*)$")
# Said by htslib when a file it opens has no index, which is no news to a caller that did not ask for one.
_NO_NEWS = ("Could not retrieve index file",)
_holding = threading.Lock()  # fd 2 is one per process: one hold at a time, nested or concurrent ones share it


class _HeldStderr:
    """File descriptor 2 redirected to a temporary file while in use (htslib writes there, not to sys.stderr)."""

    def __init__(self):
        self._file = None
        self._saved = -1

    def __enter__(self) -> _HeldStderr:
        if not _holding.acquire(blocking=False):
            return self
        try:
            self._file = tempfile.TemporaryFile()
        except OSError:  # no room for it: let htslib speak directly
            _holding.release()
            return self
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        if self._file is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        _holding.release()

    def text(self) -> str:
        """What was written so far (pread: the shared file offset where writes go stays put)."""
        if self._file is None:
            return ""
        fd = self._file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def diagnosis(self) -> str | None:
        """htslib's first error message, the cause (later ones say what failed because of it)."""
        return htslib_diagnosis(self.text())

    def release(self, path, failed: bool) -> None:
        """After success, pass the held text on: htslib's messages as warnings naming `path`, other lines as they
        were written. After a failure, drop it: the error line holds htslib's diagnosis and must come last."""
        if self._file is None:
            return
        for line in () if failed else self.text().splitlines(keepends=True):
            match = _HTSLIB_MESSAGE.match(line.strip())
            if match is None:
                sys.stderr.write(line)
            elif not match[2].startswith(_NO_NEWS):
                log.warning("%s: %s", path, match[2])
        self._file.close()


def htslib_diagnosis(text: str) -> str | None:
    """The message of the first `[E::...]` line of htslib's stderr, if any."""
    for line in text.splitlines():
        match = _HTSLIB_MESSAGE.match(line.strip())
        if match and match[1] == "E":
            return match[2]
    return None


@contextlib.contextmanager
def htslib_call(path, action: str, *, explain: Callable[[str], str | None] | None = None) -> Iterator[_HeldStderr]:
    """Run htslib calls (open, fetch, iterate) with its stderr held back; yields the hold (`.diagnosis()`).

    A failure (pysam raises OSError, ValueError or NotImplementedError) becomes one UserError:
    `explain(diagnosis)` if given and it answers, else `PATH: ACTION: DIAGNOSIS`, where DIAGNOSIS is htslib's own
    first error line (MD5 mismatch, bad BGZF block) or pysam's words. Then what htslib wrote is dropped: the error
    line says it, and is the last line. On success its warnings are logged, naming `path`.
    Keep the block short (one open, one window's fetch): nothing of ours should need stderr inside it.
    """
    held = _HeldStderr()
    failed = True
    try:
        with held:
            try:
                yield held
            except (OSError, ValueError, NotImplementedError) as err:
                diagnosis = held.diagnosis() or _first_line(err)
                message = explain(diagnosis) if explain else None
                raise UserError(message or f"{path}: {action}: {diagnosis}") from None
            failed = False
    finally:
        held.release(path, failed)


def htslib_writing(out) -> contextlib.AbstractContextManager:
    """Around htslib's writes of `out` (BGZF, BAM, sorting, indexes): a failure is one line naming it, with
    htslib's words held back. htslib reports a failed write without its errno, so a full file system is
    recognised by its free space."""

    def explain(diagnosis: str) -> str:
        return f"{out}: cannot write it ({_no_space(out) or diagnosis})"

    return htslib_call(out, "cannot write it", explain=explain)


def _no_space(out) -> str | None:
    directory = Path(out).absolute().parent
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    stats = os.statvfs(directory)
    return "No space left on device" if stats.f_bavail * stats.f_frsize < 1 << 20 else None


def not_bgzip(path) -> str:
    """The line for a gzip file that htslib cannot index or seek in."""
    return f"{path}: gzip-compressed but not with bgzip, so it cannot be indexed; recompress it with `bgzip`"


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
