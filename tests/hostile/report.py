"""Markdown table of one or more hostile-suite runs (the JSON files that HOSTILE_REPORT=FILE makes).

    python tests/hostile/report.py after.json                  # case, status, last stderr line
    python tests/hostile/report.py before.json after.json      # case, before, after (last lines of the latter)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STATUS = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}


def cell(text: str | None, width: int = 160) -> str:
    text = (text or "").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    labels = [Path(p).stem for p in paths]
    cases = sorted(set().union(*runs))
    print("| case | " + " | ".join(labels) + " | last stderr line (" + labels[-1] + ", where not passed) |")
    print("|---|" + "---|" * len(runs) + "---|")
    for case in cases:
        statuses = [STATUS.get(r.get(case, {}).get("outcome"), "-") for r in runs]
        last = runs[-1].get(case, {})
        detail = "" if last.get("outcome") == "passed" else (last.get("last_line") or last.get("reason"))
        print(f"| {case} | " + " | ".join(statuses) + f" | {cell(detail)} |")
    for label, r in zip(labels, runs):
        counts = {s: sum(1 for v in r.values() if v["outcome"] == s) for s in ("passed", "failed", "skipped")}
        print(f"\n{label}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped", end="")
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
