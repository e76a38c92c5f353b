"""Output paths, held to one rule for every stage: checked before any work, written under a temporary
name beside the output and renamed into place when complete, and removed on any failure, so that a
stage leaves either its whole output or nothing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepflows.errors import UserError


def temporary_path(out: str | Path) -> Path:
    """Where `out` is written before its rename: beside it (one file system, so the rename is atomic), named
    after it, this machine and this process, so that concurrent jobs and a rerun after kill -9 never share one."""
    out = Path(out)
    return out.with_name(_mine(f"{out.name}.tmp-"))


def remove_stale_temporaries(out: str | Path) -> None:
    """Remove the temporaries of `out` left by processes of this machine that no longer run (killed with
    -9, out of memory): a rerun cleans up after them. Other machines' temporaries, on a shared file
    system, are left alone: their processes cannot be seen from here."""
    out = Path(out)
    _remove_dead(out.parent, f"{out.name}.tmp-")


def _mine(prefix: str) -> str:
    """`prefix` of a temporary name, followed by this machine and this process: `PREFIX-HOST-PID`."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}"


def _remove_dead(directory: Path, prefix: str) -> None:
    """Remove the `PREFIX-HOST-PID` files and folders in `directory` of this machine's processes that no
    longer run."""
    ours = f"{prefix}{socket.gethostname()}-"
    for tmp in directory.glob(f"{glob.escape(ours)}*"):
        pid = tmp.name[len(ours):]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            remove(tmp)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove(path: str | Path) -> None:
    """Remove a file, a link or a directory tree, if there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


WRITE_TEST = ".deepflows-write-test-"


def check_output_dir(directory: str | Path) -> Path:
    """A directory that outputs can be created in. Permission bits do not stop root, so the check creates
    and removes a file there: read-only mounts, immutable directories and full inode tables all fail it."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "not found"
        raise UserError(f"{directory}: output directory {what}")
    _remove_dead(directory, WRITE_TEST)  # a job killed during its own test
    probe = directory / _mine(WRITE_TEST)
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"{directory}: output directory is not writable ({err.strerror})") from None
    return directory


def make_output_dir(directory: str | Path) -> Path:
    """Create `directory` (and its parents) if needed and check that outputs can be created in it."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{directory}: cannot create the output directory ({err.strerror})") from None
    return check_output_dir(directory)


def check_new_output(out: str | Path, option: str = "--out", suffix: str | None = None, kind: str = "") -> Path:
    """An output that must not exist yet, in a writable directory; when `suffix` is given it must end so
    (`kind` says what the file is, e.g. "a bgzipped VCF")."""
    out = Path(out)
    if suffix and not out.name.endswith(suffix):
        raise UserError(f"{out}: the output is {kind or 'a file'}; name it *{suffix}")
    if out.exists() or out.is_symlink():
        raise UserError(f"{out}: already exists; remove it or choose another {option}")
    check_output_dir(out.parent)
    return out


@contextmanager
def removed_on_error(tmp: str | Path, out: str | Path) -> Iterator[None]:
    """Removes the temporary `tmp` of `out` when the block fails, whatever the exception (KeyboardInterrupt
    too). An OSError is raised again naming the output the user asked for: a write on a full disk names no
    file, and one inside the temporary names a path that no longer exists."""
    try:
        yield
    except OSError as err:
        _remove_settled(tmp)
        named = _as_output(err.filename, Path(tmp), Path(out))
        if named != err.filename:
            raise OSError(err.errno, err.strerror or str(err), named) from err
        raise
    except BaseException:
        _remove_settled(tmp)
        raise


def _remove_settled(tmp: str | Path, rounds: int = 5, pause_s: float = 0.05) -> None:
    """Remove `tmp` until it stays gone. A failed Zarr write (a full disk) raises at its first failed file while
    the sibling writes it started still run on Zarr's event loop, and each makes its folders as it writes: one
    that lands after the removal makes the temporary again."""
    remove(tmp)
    for _ in range(rounds):  # failures only: a quarter of a second is cheap beside a temporary left behind
        time.sleep(pause_s)
        if os.path.lexists(tmp):
            remove(tmp)


def _as_output(filename, tmp: Path, out: Path) -> str:
    """`filename` with the temporary `tmp` replaced by `out` (`out` itself when there is no file name)."""
    if filename is None:
        return str(out)
    path = Path(filename)
    if path == tmp or tmp in path.parents:
        return str(out / path.relative_to(tmp))
    return filename


@contextmanager
def atomic_output(out: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write `out` (a file or a directory) to; renames it into place when the
    block ends normally and removes it when the block ends by an exception (`removed_on_error`)."""
    out = Path(out)
    tmp = temporary_path(out)
    remove_stale_temporaries(out)
    remove(tmp)
    with removed_on_error(tmp, out):
        yield tmp
        os.replace(tmp, out)


@contextmanager
def output_directory(out: str | Path, whole: bool = False) -> Iterator[Path]:
    """Where the files of the output directory `out` go. An existing directory is used as it is (Snakemake makes
    the folders of a rule's outputs, and several rules may write into one, as benchmark and gq-calibration do):
    each file in it is written whole or not at all by its writer. With `whole` the directory is the stage's
    output as a whole (a Snakemake `directory()`): one that holds anything is an earlier result, never written
    into; an empty one is used. A new one is written under a temporary name and renamed when the block ends
    normally, so a failed run leaves no directory behind."""
    out = Path(out)
    if out.is_dir():
        if whole and any(out.iterdir()):
            raise UserError(f"{out}: already exists and is not empty; remove it or choose another --out")
        yield check_output_dir(out)
        return
    make_output_dir(out.absolute().parent)
    with atomic_output(check_new_output(out)) as tmp:
        tmp.mkdir()
        yield tmp


def write_text(out: str | Path, text: str) -> None:
    """A whole text file, or none."""
    with atomic_output(out) as tmp:
        tmp.write_text(text)


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_figure_name(out: str | Path, option: str) -> None:
    """A figure's output name, before any work: its suffix says the format."""
    if Path(out).suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"{out}: {option} is a figure; name it *{', *'.join(FIGURE_SUFFIXES)}")


def save_figure(fig, out: str | Path, dpi: int) -> None:
    """A whole matplotlib figure file, or none (the format follows the name of `out`: .png, .pdf, .svg)."""
    out = Path(out)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=dpi)
