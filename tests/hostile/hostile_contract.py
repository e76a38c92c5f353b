"""The hostile-input contract, and the one way the suite runs a stage.

Every stage is run as a user runs it: `python -m deepflows.cli STAGE ...` in a subprocess, in a scratch working
directory, with a timeout. `sys.executable` and the inherited environment (PYTHONPATH included) pick the code
under test, so `PYTHONPATH=/tmp/before/src pytest tests/hostile` measures an older checkout with the same cases.

A refusal must satisfy every clause of `assert_refused` (the project's promise for bad input, DESIGN.md
"Conventions"):

  1. the exit status is a plain failure: 0 < rc < 128 (no signal: no segfault, no abort, no kill);
  2. stderr has exactly one line starting `deepflows STAGE: error:`, and it is the last non-blank line;
  3. that line names the offending file and, where a case says so, the problem (key words);
  4. no "Traceback" and no "Exception ignored" anywhere in stderr, and no raw htslib diagnostic
     (`[E::...]`, `[W::...]`): htslib's diagnosis belongs in the one line, its noise nowhere;
  5. nothing at the output path(s) (an output that existed before is left as it was);
  6. nothing left beside the outputs: no temporary (`*.tmp-*`, `.*.tmp-*`, `*.tmp`) and no other new entry in
     the output directories.

A pattern (for `names` and `words`) is a case-insensitive substring; "a|b" accepts either alternative. Names are
matched after the scratch directories' own (test-named) parts are taken out of the line; words with every path
masked, so that a file called `zero.tif` or `model.json` does not say "zero" or "JSON" for the message.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT = 180
TEMPORARY_PATTERNS = ("*.tmp-*", ".*.tmp-*", "*.tmp")
FORBIDDEN_IN_STDERR = ("Traceback", "Exception ignored")
HTSLIB_DIAGNOSTICS = ("[E::", "[W::")

# Every run of the session, in order (conftest's report hook reads the ones a test made).
RUNS: list["Run"] = []


@dataclass
class Run:
    """One stage run: what was asked, what came back, and the output directories' listing before and after."""

    stage: str
    argv: list[str]
    cwd: Path
    rc: int
    stdout: str
    stderr: str
    before: dict[Path, set[str]] = field(default_factory=dict)
    after: dict[Path, set[str]] = field(default_factory=dict)
    existed: dict[Path, tuple | None] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def last_line(self) -> str:
        return self.lines[-1] if self.lines else "(stderr empty)"

    @property
    def error_prefix(self) -> str:
        return f"deepflows {self.stage}: error:"

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith(self.error_prefix)]

    @property
    def warning_lines(self) -> list[str]:
        return [line for line in self.lines if "warning" in line.lower()]

    def describe(self) -> str:
        tail = "\n".join("    " + line for line in self.lines[-15:]) or "    (empty)"
        return (f"  command: (cd {self.cwd} && {shlex.join(['deepflows', self.stage, *self.argv])})\n"
                f"  rc: {self.rc}\n  last stderr line: {self.last_line}\n  stderr tail:\n{tail}")


def _state(path: Path) -> tuple | None:
    """What is at `path` (None: nothing), enough to tell whether a run touched it."""
    if not os.path.lexists(path):
        return None
    st = os.lstat(path)
    listing = tuple(sorted(os.listdir(path))) if path.is_dir() and not path.is_symlink() else ()
    return (st.st_mode, st.st_size, st.st_mtime_ns, listing)


def _listing(directory: Path) -> set[str]:
    try:
        return set(os.listdir(directory))
    except OSError:
        return set()


def stage_command(stage: str, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "deepflows.cli", stage, *argv]


def stage_env(extra: dict | None = None) -> dict:
    """The environment of a stage run: this one (PYTHONPATH selects the code under test), made quiet and
    deterministic (no user site, no GPU probing noise), plus `extra`."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONNOUSERSITE"] = "1"
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


def run_stage(stage: str, argv: list, cwd: Path, outputs=(), timeout: float = DEFAULT_TIMEOUT,
              wrapper: list[str] | None = None, env: dict | None = None,
              listing_after: "callable | None" = None) -> Run:  # fmt: skip
    """Run `deepflows STAGE ARGV` in `cwd` and record the output directories before and after.

    `wrapper` goes in front of the command (e.g. `unshare -m sh -c ...` for a full filesystem); then
    `listing_after(directory) -> set | None` may give a directory's listing as the wrapper saw it."""
    argv = [str(a) for a in argv]
    outputs = [Path(cwd, o) for o in outputs]
    directories = sorted({o.parent for o in outputs})
    before = {d: _listing(d) for d in directories}
    existed = {o: _state(o) for o in outputs}
    command = (wrapper or []) + stage_command(stage, argv)
    try:
        proc = subprocess.run(command, cwd=cwd, env=stage_env(env), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        rc = -int(signal.SIGKILL)
        stdout = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = (err.stderr or b"").decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        stderr += f"\n[hostile suite: killed after the {timeout} s timeout]"
    after = {}
    for d in directories:
        seen = listing_after(d) if listing_after else None
        after[d] = _listing(d) if seen is None else seen
    run = Run(stage, argv, Path(cwd), rc, stdout, stderr, before, after, existed)
    RUNS.append(run)
    return run


def matches(line: str, pattern: str) -> bool:
    """`pattern` ("a|b|c") matches when any alternative is a case-insensitive substring of `line`."""
    low = line.lower()
    return any(alt.strip().lower() in low for alt in pattern.split("|") if alt.strip())


def scrubbed(line: str, cwd: Path) -> str:
    """`line` with the scratch directories' own names taken out (pytest names them after the test, so a case
    id such as `...-fai-...` would otherwise match the words it asks for): the working directory becomes
    `<work>`, its parent `<tmp>`."""
    return line.replace(str(cwd), "<work>").replace(str(cwd.parent), "<tmp>")


def without_paths(line: str) -> str:
    """`line` with every path (a token with a '/') masked: what is left is what the line says."""
    return re.sub(r"[^\s'\"`(),;]*/[^\s'\"`(),;]*", "<path>", line)


def temporaries(names) -> list[str]:
    return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in TEMPORARY_PATTERNS))


def contract_violations(run: Run, names=(), words=()) -> list[str]:
    """Every clause of the refusal contract that `run` breaks (empty: it holds)."""
    bad = []
    # 1. a plain failure, not a signal (subprocess gives -N for a signal; a shell wrapper gives 128+N)
    if run.rc == 0:
        bad.append("exit status 0: the bad input was accepted")
    elif run.rc < 0 or run.rc >= 128:
        sig = -run.rc if run.rc < 0 else run.rc - 128
        name = signal.Signals(sig).name if sig in {s.value for s in signal.Signals} else f"signal {sig}"
        bad.append(f"exit status {run.rc}: killed by {name}, not a clean refusal")
    # 2. exactly one error line, and it is the last
    errors = run.error_lines
    if len(errors) != 1:
        bad.append(f"{len(errors)} lines start with {run.error_prefix!r} (want exactly 1)")
    elif run.lines[-1] != errors[0]:
        bad.append(f"the error line is not the last non-blank line of stderr (last: {run.lines[-1]!r})")
    # 3. it names the file and the problem (an "internal error" report is a bug, not a diagnosis)
    line = scrubbed(errors[-1], run.cwd) if errors else ""
    if "internal error" in line.lower():
        bad.append("the error line reports an internal error (a bug), not a diagnosis of the input")
    for pattern in names:
        if not matches(line, pattern):
            bad.append(f"the error line does not name the file: none of {pattern!r}")
    for pattern in words:
        if not matches(without_paths(line), pattern):
            bad.append(f"the error line does not say the problem: none of {pattern!r}")
    # 4. no traceback, no raw htslib noise
    for word in FORBIDDEN_IN_STDERR:
        if word in run.stderr:
            bad.append(f"{word!r} in stderr")
    noise = [x for x in run.lines if x.lstrip().startswith(HTSLIB_DIAGNOSTICS)]
    if noise:
        bad.append(f"raw htslib diagnostics in stderr ({len(noise)}), first: {noise[0]!r}")
    # 5. nothing at the outputs (an output that was there before is untouched); the directory's listing after
    #    the run counts too, for outputs on a file system that only the run saw (a tmpfs in its own namespace)
    for out, before in run.existed.items():
        now = _state(out)
        listed = out.name in run.after.get(out.parent, set()) - run.before.get(out.parent, set())
        if before is None and (now is not None or listed):
            bad.append(f"output left behind: {out}")
        elif before is not None and now != before:
            bad.append(f"existing output was modified: {out}")
    # 6. nothing new beside the outputs, temporaries least of all
    for directory, before in run.before.items():
        outputs = {o.name for o in run.existed if o.parent == directory}  # clause 5's business
        new = sorted(run.after.get(directory, set()) - before - outputs)
        temps = temporaries(new)
        if temps:
            bad.append(f"temporary left in {directory}: {', '.join(temps)}")
        others = [n for n in new if n not in temps]
        if others:
            bad.append(f"new entries left in {directory}: {', '.join(others)}")
    return bad


def assert_refused(run: Run, names=(), words=()) -> None:
    """THE contract for bad input (see the module docstring); fails with every broken clause listed."""
    __tracebackhide__ = True
    bad = contract_violations(run, names, words)
    if bad:
        raise AssertionError("contract broken:\n" + "\n".join(f"  - {b}" for b in bad) + "\n" + run.describe())


def accepted_violations(run: Run) -> list[str]:
    """What keeps a run that should succeed from being a clean success."""
    bad = []
    if run.rc != 0:
        bad.append(f"exit status {run.rc} (want 0: this input is valid)")
    if run.error_lines:
        bad.append(f"error line: {run.error_lines[-1]!r}")
    for word in FORBIDDEN_IN_STDERR:
        if word in run.stderr:
            bad.append(f"{word!r} in stderr")
    for directory in run.after:
        temps = temporaries(run.after[directory] - run.before.get(directory, set()))
        if temps:
            bad.append(f"temporary left in {directory}: {', '.join(temps)}")
    return bad


def assert_accepted(run: Run) -> None:
    __tracebackhide__ = True
    bad = accepted_violations(run)
    if bad:
        raise AssertionError("valid input not accepted:\n" + "\n".join(f"  - {b}" for b in bad) + "\n"
                             + run.describe())


def assert_refused_or_warned(run: Run, names=(), words=()) -> None:
    """Not silent: either a refusal under the contract, or success with a warning line naming `names`."""
    __tracebackhide__ = True
    if run.rc == 0 and not run.error_lines:
        warned = [x for x in run.warning_lines if all(matches(scrubbed(x, run.cwd), p) for p in names)]
        if warned and not accepted_violations(run):
            return
        raise AssertionError("silent: exit 0 without a warning line naming " + " and ".join(map(repr, names))
                             + "\n" + run.describe())
    assert_refused(run, names, words)
