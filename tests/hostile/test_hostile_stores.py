"""Hostile stores: chunks deleted, flipped, truncated or swapped in example shards, probabilities stores and
In Silico Labeling wells, and shard sets that mix in a shard of another run. Every reader refuses before work,
naming the store.

Faults are injected into a copy of the session's valid stores. Each fault is run through each reader of its
kind of store (`deepflows verify` among them), so a new reader joins by adding it to READERS.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from hostile_cases import ACCEPTED, CORRUPT, MISSING, Case, check_case, params

# ------------------------------------------------------------------------------------------------ readers
READERS = {
    "examples": {
        "check-shards": ("check-shards --out {out}/manifest.json {shards}", ("{out}/manifest.json",)),
        "call-variants": ("call-variants --examples {shards} --model {model} --out {out}/probs.zarr",
                          ("{out}/probs.zarr",)),  # fmt: skip
        "verify": ("verify {shards}", ()),
    },
    "probs": {
        "postprocess": ("postprocess --probs {probs} --ref {ref} --out {out}/calls.vcf.gz",
                        ("{out}/calls.vcf.gz", "{out}/calls.vcf.gz.tbi")),  # fmt: skip
        "verify": ("verify {probs}", ()),
    },
    "well": {  # an In Silico Labeling well store (isl-ingest)
        "isl-patches": ("isl-patches --well {isl_well} --split tune --size 16 --tune-band 16 --out {out}/tune.zarr",
                        ("{out}/tune.zarr",)),  # fmt: skip
        "verify": ("verify {isl_well}", ()),
    },
}
DAMAGED_SHARD = 1  # the shard of the set that gets the fault (not the first: every shard must be checked)
SHARD_NAME = "examples-00001-of-00003.zarr"
CHECKERS = ("check-shards", "verify")  # enough for our own faults; the probe's go through every reader


# ------------------------------------------------------------------------------------------------- faults
def chunk_files(store: Path, array: str) -> list[Path]:
    """The chunk files of `array`, in key order (whatever the chunk key encoding)."""
    files = sorted(p for p in (store / array).rglob("*") if p.is_file() and p.name != "zarr.json")
    assert files, f"fixture: {store}/{array} has no chunk files"
    return files


def pick(store: Path, array: str, k: int = 1) -> Path:
    files = chunk_files(store, array)
    return files[min(k, len(files) - 1)]


def delete(array: str):
    def fault(store):
        pick(store, array).unlink()

    return fault


def flip(array: str):
    def fault(store):
        chunk = pick(store, array)
        data = bytearray(chunk.read_bytes())
        i = len(data) // 2
        data[i : i + 8] = bytes(b ^ 0xFF for b in data[i : i + 8])
        chunk.write_bytes(bytes(data))

    return fault


def truncate(array: str):
    def fault(store):
        chunk = pick(store, array)
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])

    return fault


def swap(array: str):
    def fault(store):
        a, b = chunk_files(store, array)[:2]
        tmp = a.with_name(a.name + ".swap")
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)

    return fault


def delete_metadata(array: str):
    def fault(store):
        (store / array / "zarr.json").unlink()

    return fault


def garbage_group_metadata(store):
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')


def emptied(store):
    shutil.rmtree(store)
    store.mkdir()


@dataclass
class Fault:
    id: str
    kind: str  # "examples", "probs" or "well"
    apply: Callable[[Path], None]
    words: tuple[str, ...]
    readers: tuple[str, ...] = ()  # default: every reader of its kind of store


FAULTS = [
    Fault("10b-inputs-chunk-deleted", "examples", delete("inputs"), (MISSING,)),
    Fault("10c-inputs-chunk-bytes-flipped", "examples", flip("inputs"), (CORRUPT,)),
    Fault("own-inputs-chunk-truncated", "examples", truncate("inputs"), (CORRUPT,), CHECKERS),
    Fault("own-inputs-chunks-swapped", "examples", swap("inputs"), (CORRUPT,), CHECKERS),
    Fault("10d-contig-chunk-deleted", "examples", delete("contig"), (MISSING,)),
    Fault("10d-start-chunk-deleted", "examples", delete("start"), (MISSING,)),
    Fault("10d-ref-chunk-deleted", "examples", delete("ref"), (MISSING,)),
    Fault("own-start-chunk-flipped", "examples", flip("start"), (CORRUPT,), CHECKERS),
    Fault("own-inputs-array-metadata-deleted", "examples", delete_metadata("inputs"), (), CHECKERS),
    Fault("own-group-metadata-garbage", "examples", garbage_group_metadata, (), CHECKERS),
    Fault("own-store-emptied", "examples", emptied, (), CHECKERS),
    Fault("10a-probs-chunk-deleted", "probs", delete("probs"), (MISSING,)),
    Fault("own-probs-chunk-bytes-flipped", "probs", flip("probs"), (CORRUPT,)),
    Fault("own-probs-chunk-truncated", "probs", truncate("probs"), (CORRUPT,)),
    Fault("10d-probs-start-chunk-deleted", "probs", delete("start"), (MISSING,)),
    Fault("own-probs-contig-chunk-deleted", "probs", delete("contig"), (MISSING,)),
    Fault("own-isl-stack-chunk-deleted", "well", delete("0"), (MISSING,)),
    Fault("own-isl-target-chunk-flipped", "well", flip("targets/0"), (CORRUPT,)),
]
STORE_NAMES = {"examples": SHARD_NAME, "probs": "probs.zarr", "well": "isl-well.ome.zarr"}


def damaged_copy(fault: Fault):
    """A `make` for a Case: copy the valid store(s) into the case's in/ and damage one."""

    def make(d, valid, work):
        if fault.kind == "examples":
            shards = [shutil.copytree(s, d / "examples" / s.name) for s in valid.shards]
            fault.apply(Path(shards[DAMAGED_SHARD]))
            return {"shards": [Path(s) for s in shards]}
        if fault.kind == "well":
            well = Path(shutil.copytree(valid.isl_well, d / valid.isl_well.name))
            fault.apply(well)
            return {"isl_well": well}
        probs = Path(shutil.copytree(valid.probs, d / "calls" / "probs.zarr"))
        fault.apply(probs)
        return {"probs": probs}

    return make


FAULT_CASES = [
    Case(f"{f.id}[{reader}]", command.split()[0], command, damaged_copy(f), outputs,
         (STORE_NAMES[f.kind],), f.words)
    for f in FAULTS
    for reader, (command, outputs) in READERS[f.kind].items()
    if not f.readers or reader in f.readers
]


# -------------------------------------------------------------------------------------------- shard sets
def mixed_set(run: str | None = None, replace: int | None = None, drop: int | None = None,
              duplicate: int | None = None):  # fmt: skip
    """A `make`: the valid shard set with one shard replaced by a shard of `run` (see VARIANT_RUNS), or one
    dropped, or one given twice in place of the next."""

    def make(d, valid, work):
        shards = list(valid.shards)
        if run is not None:
            shards[replace] = valid.variants[run]
        if duplicate is not None:
            shards[duplicate + 1] = shards[duplicate]
        if drop is not None:
            del shards[drop]
        return {"shards": shards}

    return make


SET_PROBLEMS = [
    # id, make, names, words
    ("9c-shard-of-another-region", mixed_set("run-other-region", replace=1), ("run-other-region",), ("region",)),
    ("9d-no-realign-shard-not-first", mixed_set("run-no-realign", replace=2), ("run-no-realign",), ("realign",)),
    ("9e-shard-with-another-seed", mixed_set("run-other-seed", replace=1), ("run-other-seed",), ("seed",)),
    ("9e-shard-with-another-reference", mixed_set("run-other-reference", replace=1), ("run-other-reference",),
     ("reference",)),
    ("own-shard-with-other-reads", mixed_set("run-other-reads", replace=1), ("run-other-reads",), ("reads",)),
    ("own-shard-of-six-in-set-of-three", mixed_set("run-six-shards", replace=1), ("run-six-shards",),
     ("shard",)),
    ("own-set-missing-a-shard", mixed_set(drop=2), ("2/3|00002",), (MISSING,)),
    ("own-set-shard-given-twice", mixed_set(duplicate=1), (SHARD_NAME + "|2/3|00002",),
     ("twice|duplicate|missing|more than once",)),
]
SET_READERS = {k: v for k, v in READERS["examples"].items() if k != "verify"}  # verify checks stores, not sets

SET_CASES = [
    Case(f"{problem}[{reader}]", reader, command, make, outputs, names, words)
    for problem, make, names, words in SET_PROBLEMS
    for reader, (command, outputs) in SET_READERS.items()
]

# ------------------------------------------------------------------------------------- positive controls
CONTROLS = [
    Case("valid-shards[verify]", "verify", "verify {shards}", expect=ACCEPTED),
    Case("valid-probs[verify]", "verify", "verify {probs}", expect=ACCEPTED),
    Case("valid-isl-well[verify]", "verify", "verify {isl_well}", expect=ACCEPTED),
    Case("valid-shards[check-shards]", "check-shards", "check-shards --out {out}/manifest.json {shards}",
         expect=ACCEPTED),
]


@pytest.mark.parametrize("case", params(FAULT_CASES))
def test_damaged_store(case, valid, work):
    check_case(case, valid, work)


@pytest.mark.parametrize("case", params(SET_CASES))
def test_mixed_shard_set(case, valid, variant_shards, work):
    check_case(case, valid, work)


@pytest.mark.parametrize("case", params(CONTROLS))
def test_valid_store_accepted(case, valid, work):
    check_case(case, valid, work)
