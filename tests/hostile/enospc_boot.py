"""Run `python -m deepflows.cli ...` with a full disk under one directory, without mounting anything.

    python enospc_boot.py DIR BUDGET LISTING python -m deepflows.cli STAGE ARGS...

Every file that Python opens for writing under DIR shares BUDGET bytes; past it, writes (and, with a budget
of 0, the open itself) fail with OSError(ENOSPC), as on a full file system. At exit, DIR's entries are written
to LISTING. Writes done by C libraries (htslib) are not reached: the hostile suite skips those cases here.
"""

from __future__ import annotations

import atexit
import builtins
import errno
import io
import os
import runpy
import sys

directory, budget, listing = os.path.abspath(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
command = sys.argv[4:]
assert command[1:3] == ["-m", "deepflows.cli"], command
left = [budget]
_open = io.open


def _full(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class _Budgeted:
    """A file object whose writes draw on the shared budget."""

    def __init__(self, raw, path):
        self._raw, self._path = raw, path

    def write(self, data):
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if n > left[0]:
            raise _full(self._path)
        left[0] -= n
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()

    def __iter__(self):
        return iter(self._raw)


def _patched_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
        path = os.path.abspath(os.fsdecode(file))
        if path == directory or path.startswith(directory + os.sep):
            if left[0] <= 0:
                raise _full(path)
            return _Budgeted(_open(file, mode, *args, **kwargs), path)
    return _open(file, mode, *args, **kwargs)


builtins.open = io.open = _patched_open


@atexit.register
def _write_listing():
    with _open(listing, "w") as handle:
        handle.write("\n".join(os.listdir(directory)) + "\n")


sys.argv = ["deepflows", *command[3:]]
runpy.run_module("deepflows.cli", run_name="__main__", alter_sys=True)
