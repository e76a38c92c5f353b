"""Cases as data: a `Case` says which stage, how its bad input is made, the argv, and what the one error line
must say; `check_case` runs it under the contract. Test modules hold tables of cases and one test each.

Templates: argv is the command line after `deepflows` (stage first), split like a shell command; `{name}` fields
come from the session's valid artefacts (`Valid.placeholders`: ref, bam, cram, truth, bed, shards, probs, vcf,
model, png, ...), from `in` and `out` (the case's scratch input and output directories) and from what the case's
`make` returns. A token that is exactly `{name}` with a list value expands to several arguments
(`--examples {shards}`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from hostile_contract import Run, assert_accepted, assert_refused, assert_refused_or_warned, run_stage

# What a case expects of its run
REFUSED = "refused"  # the contract (hostile_contract.assert_refused)
REFUSED_OR_WARNED = "refused or warned"  # the contract, or success with a warning line naming the file
REFUSED_OR_CORRECT = "refused or correct"  # the contract, or success with the result good inputs give
ACCEPTED = "accepted"  # valid input: success (and, with `correct`, the right result)

# Key words, shared so that every case asks the same of the same problem (alternatives with "|").
MISSING = "not found|no such|missing|does not exist|not exist|deleted|absent|no images found"
CORRUPT = "checksum|corrupt|sha256|hash|mismatch|damaged|crc|truncat|invalid|decompress|inflate|malformed"
UNWRITABLE = ("not writable|unwritable|cannot write|can't write|cannot create|permission|not permitted|"
              "read-only|not a directory|denied")  # fmt: skip
NO_SPACE = "no space|disk full|space left|disk is full|file system is full"
STALE_INDEX = "older|stale|out of date|newer|modified|changed|does not match|doesn't match|mismatch|rebuil"
NOT_GENOTYPED = "genotype|GT|sample|sites-only|sites only|no FORMAT"
LINE = "line {line}|:{line}:|:{line} "  # "line 24", or the compiler style "file.vcf:24: ..."


@dataclass
class Case:
    id: str
    stage: str
    argv: str
    make: Callable | None = None  # make(in_dir, valid, work) -> {placeholder: value}
    outputs: tuple[str, ...] = ()  # templates, relative to the case's working directory
    names: tuple[str, ...] = ()  # patterns the error line must contain: the offending file
    words: tuple[str, ...] = ()  # patterns the error line must contain: the problem
    expect: str = REFUSED
    correct: Callable | None = None  # REFUSED_OR_CORRECT: correct(run, work, placeholders) asserts a right result
    marks: tuple = ()
    timeout: float = 180
    note: str = ""

    def param(self):
        return pytest.param(self, id=self.id, marks=list(self.marks))


def params(cases: list[Case]) -> list:
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate case ids: {sorted(duplicates)}"
    return [c.param() for c in cases]


def render(template: str, values: dict) -> str:
    return template.format(**values)


def render_argv(template: str, values: dict) -> list[str]:
    argv = []
    for token in shlex.split(template):
        key = token[1:-1] if token.startswith("{") and token.endswith("}") and token.count("{") == 1 else None
        if key in values and isinstance(values[key], (list, tuple)):
            argv += [str(v) for v in values[key]]
        else:
            argv.append(render(token, values))
    return argv


def placeholders(valid, work: Path, extra: dict | None = None) -> dict:
    return {**valid.placeholders, "in": work / "in", "out": work / "out", "work": work, **(extra or {})}


@dataclass
class Prepared:
    argv: list[str]
    outputs: list[str]
    names: list[str]
    words: list[str]
    values: dict = field(default_factory=dict)


def prepare(case: Case, valid, work: Path) -> Prepared:
    values = placeholders(valid, work)
    if case.make is not None:
        values.update(case.make(work / "in", valid, work) or {})
    argv = render_argv(case.argv, values)
    assert argv[0] == case.stage, f"case {case.id}: its command line must start with its stage {case.stage!r}"
    return Prepared(argv[1:], [render(o, values) for o in case.outputs], [render(n, values) for n in case.names],
                    [render(w, values) for w in case.words], values)  # fmt: skip


def check_case(case: Case, valid, work: Path, **run_options) -> Run:
    """Make the case's bad input, run its stage as a user would, and hold the run to the case's expectation."""
    __tracebackhide__ = True
    p = prepare(case, valid, work)
    run = run_stage(case.stage, p.argv, cwd=work, outputs=p.outputs, timeout=case.timeout, **run_options)
    judge(case, run, work, p)
    return run


def judge(case: Case, run: Run, work: Path, p: Prepared) -> None:
    __tracebackhide__ = True
    if case.expect == REFUSED:
        assert_refused(run, p.names, p.words)
    elif case.expect == REFUSED_OR_WARNED:
        assert_refused_or_warned(run, p.names, p.words)
    elif case.expect == ACCEPTED:
        assert_accepted(run)
        if case.correct:
            case.correct(run, work, p.values)
    elif case.expect == REFUSED_OR_CORRECT:
        if run.rc == 0 and not run.error_lines:
            # the stage repaired the problem (e.g. rebuilt a stale index): then the result must be right
            assert_accepted(run)
            case.correct(run, work, p.values)
        else:
            assert_refused(run, p.names, p.words)
    else:
        raise ValueError(case.expect)
