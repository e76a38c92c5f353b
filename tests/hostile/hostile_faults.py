"""Faults that stop root too: a full file system under the output, made for one stage run.

Preferred: a small tmpfs mounted on the output directory inside a private mount namespace (`unshare -m`), so the
mount lives exactly as long as the stage and nothing outside sees it; the wrapper lists the directory before
the namespace goes, for the contract's "nothing left" clauses. Where mount namespaces are not allowed (an
unprivileged container), `enospc_boot.py` runs the stage with Python's file writes under the output directory
failing with ENOSPC after a byte budget: that reaches every Python writer (Zarr stores, JSON, TSV) but not
htslib's (BAM, BGZF VCF), whose cases are then skipped with that reason. HOSTILE_DISK_FULL=tmpfs|inject forces
one.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (tmpfs options, byte budget of the injected fault): where the disk fills up
DISK_FULL = {
    "no-inodes": ("size=64k,nr_inodes=1", 0),  # 12b: nothing can be created, not even the temporary
    "full-mid-write": ("size=4k", 4000),  # 12a: the first page of data fits, nothing more
}

_TMPFS_SCRIPT = r"""
d="$1"; opts="$2"; listing="$3"; shift 3
mount -t tmpfs -o "$opts" hostile-full "$d" 2>/dev/null || { echo "hostile suite: cannot mount tmpfs" >&2; exit 97; }
cd "$PWD"
"$@"; rc=$?
ls -A "$d" > "$listing" 2>/dev/null
exit $rc
"""


@functools.cache
def disk_full_mode() -> tuple[str, str]:
    """('tmpfs' | 'inject', why)."""
    forced = os.environ.get("HOSTILE_DISK_FULL")
    if forced in ("tmpfs", "inject"):
        return forced, f"HOSTILE_DISK_FULL={forced}"
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        proc = subprocess.run(["unshare", "-m", "--", "mount", "-t", "tmpfs", "-o", "size=4k", "probe", str(probe)],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        ok, why = proc.returncode == 0, proc.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, why = False, str(err)
    finally:
        probe.rmdir()
    return ("tmpfs", "unshare -m + tmpfs") if ok else ("inject", f"no tmpfs in a mount namespace here ({why})")


def disk_full(directory: Path, kind: str) -> tuple[list[str], callable]:
    """A wrapper command that runs a stage with `directory` on a full file system, and the `listing_after`
    that tells what the stage left in it."""
    options, budget = DISK_FULL[kind]
    mode, _ = disk_full_mode()
    listing = directory.with_name(directory.name + ".listing")
    if mode == "tmpfs":
        wrapper = ["unshare", "-m", "--", "sh", "-c", _TMPFS_SCRIPT, "sh", str(directory), options, str(listing)]
    else:
        wrapper = [sys.executable, str(HERE / "enospc_boot.py"), str(directory), str(budget), str(listing)]

    def listing_after(d: Path):
        if d != directory:
            return None
        try:
            return set(listing.read_text().split())
        except OSError:
            return {"(the wrapper left no listing)"}

    return wrapper, listing_after
