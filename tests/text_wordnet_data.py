"""WordNet for the text tests: the hand-written tiny database in tests/data/wordnet_tiny, and the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = Path(__file__).resolve().parent / "data" / "wordnet_tiny"
REAL = Path("/usr/share/wordnet")


def real_wordnet_root() -> Path:
    """Debian wordnet-base's folder; the test is skipped when it is absent, and fails instead under CI=true."""
    if not (REAL / "data.noun").is_file():
        reason = f"{REAL}/data.noun not found: install Debian wordnet-base"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the WordNet tests must run, but {reason}", pytrace=False)
        pytest.skip(reason)
    return REAL
