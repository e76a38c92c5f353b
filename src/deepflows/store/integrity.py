"""Store integrity: a manifest of every file a Zarr store must hold, written when the store is finalised and
checked by every reader before any work.

Zarr reads a missing chunk as its fill value, silently: a deleted chunk of probabilities becomes 0/0 calls, a
deleted chunk of pileups makes calls vanish. So each store deepflows writes records, in its root group
attributes, the relative path, size and sha256 of every file under it except the root `zarr.json` (which holds
the manifest):

    attrs["integrity"] = {"algorithm": "sha256", "files": {"inputs/c/0/0/0/0": [size, hexdigest], ...}}

Files are listed in sorted order, so the same content gives the same bytes. `verify()` lists the store, then
stats and hashes every file once (in a few threads: hashlib releases the GIL), and refuses with one line naming
the store and the first problem: a missing, truncated, corrupt or unexpected file. Hidden files that Zarr never
reads (Snakemake's `.snakemake_timestamp` in a directory output) are neither listed nor refused.

Zarr does not write a chunk that is all fill value; such a chunk is absent from the manifest too, and reads as
the fill value, as it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deepflows.errors import UserError

KEY = "integrity"
ALGORITHM = "sha256"  # measured faster than blake2b here (SHA extensions), and the checksum users know
ROOT_METADATA = "zarr.json"
ZARR_DOT_FILES = (".zarray", ".zattrs", ".zgroup", ".zmetadata")
BLOCK = 1 << 20
# Where a store without a manifest (or a damaged one) comes from: the stage to run again.
MADE_BY = {
    "deepflows.examples": "make-examples",
    "deepflows.probs": "call-variants",
    "deepflows.training_store": "shuffle-examples",
    "ome": "ingest-image (or focus, for predictions)",
    "deepflows.isl": "isl-ingest",
    "deepflows.isl_patches": "isl-patches",
    "deepflows.sentences": "text-sentences",
    "deepflows.sentence_vectors": "text-embed",
    "deepflows.sentence_index": "text-index",
}


def manifest(root: str | Path) -> dict:
    """The manifest of the store at `root`: every file but the root zarr.json, with its size and checksum."""
    root = Path(root)
    names = _files(root)
    digests = _hash_all(root, names)
    return {"algorithm": ALGORITHM, "files": {n: [(root / n).stat().st_size, digests[n]] for n in names}}


def seal(group, root: str | Path, attrs: dict) -> None:
    """Write `attrs` and the manifest of everything else under `root` into `group` (the store's root group) in
    one update. Call it last, when nothing else will be written, just before the rename into place."""
    group.update_attributes({**attrs, KEY: manifest(root)})


def verify(path: str | Path, attrs: dict | None = None, required: bool = True, made_by: str = "") -> tuple[int, int]:
    """Check the store at `path` against its manifest; returns (files, bytes). `attrs` are its root attributes
    (read from its zarr.json when not given). A store without a manifest is refused when `required`, and
    accepted unchecked (0, 0) otherwise (stores from other tools). `made_by` names the stage that makes the
    store, for the message that tells the user to run it again."""
    path = Path(path)
    attrs = root_attributes(path) if attrs is None else attrs
    again = f"; run {made_by} again" if made_by else "; make it again"
    record = attrs.get(KEY)
    if record is None:
        if required:
            raise UserError(f"{path}: store has no integrity manifest (written by an older deepflows){again}")
        return 0, 0
    try:
        algorithm, expected = record["algorithm"], {str(k): (int(v[0]), str(v[1])) for k, v in record["files"].items()}
        hashlib.new(algorithm)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise UserError(f"{path}: store's integrity manifest is malformed{again}") from None
    present = set(_files(path))
    problems = []
    missing = sorted(set(expected) - present)
    for rel in _collapse(missing, expected):
        problems.append(f"{_noun(rel, expected)} {rel} is missing (the store's manifest lists it)")
    problems += [f"unexpected file {rel} (not in the store's manifest)" for rel in sorted(present - set(expected))]
    sizes = {rel: (path / rel).stat().st_size for rel in sorted(present & set(expected))}
    for rel, size in sizes.items():
        if size != expected[rel][0]:
            state = "truncated" if size < expected[rel][0] else "corrupt"
            problems.append(f"{_noun(rel, expected)} {rel} is {state} ({size} bytes, the manifest says "
                            f"{expected[rel][0]})")  # fmt: skip
    if not problems:  # sizes agree: now every byte
        try:
            digests = _hash_all(path, list(sizes), algorithm)
        except OSError as err:  # an unreadable file (I/O error, permissions) is a bad store too
            raise UserError(f"{path}: cannot read {err.filename} ({err.strerror or type(err).__name__})") from None
        problems += [f"{_noun(rel, expected)} {rel} is corrupt (its {algorithm} differs from the manifest's)"
                     for rel in sizes if digests[rel] != expected[rel][1]]  # fmt: skip
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(f"{path}: {problems[0]}{more}")
    return manifest_size(attrs)


def manifest_size(attrs: dict) -> tuple[int, int]:
    """(files, bytes) that a store's manifest lists; (0, 0) for a store without one."""
    files = (attrs.get(KEY) or {}).get("files") or {}
    return len(files), sum(int(entry[0]) for entry in files.values())


def root_attributes(path: str | Path) -> dict:
    """The attributes of the Zarr group at `path` (v3 zarr.json, or v2 .zattrs), read without opening it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: store not found" if not path.exists() else f"{path}: not a Zarr store (a file)")
    for name, key in ((ROOT_METADATA, "attributes"), (".zattrs", None)):
        meta = path / name
        if meta.is_file():
            try:
                document = json.loads(meta.read_bytes())
            except (OSError, ValueError) as err:
                raise UserError(f"{path}: unreadable {name} ({type(err).__name__}: {err})") from None
            attrs = document.get(key, {}) if key else document
            if not isinstance(attrs, dict):
                raise UserError(f"{path}: malformed {name} (attributes are not a mapping)")
            return attrs
    raise UserError(f"{path}: not a Zarr group (no zarr.json)")


def _files(root: Path) -> list[str]:
    """Every file under `root` (POSIX relative paths, sorted), but the root zarr.json and hidden files that Zarr
    never reads: Snakemake touches `.snakemake_timestamp` in directory outputs, file browsers and NFS leave
    `.DS_Store` and `.nfs*` files. Zarr v2's own dot-files are kept."""
    found = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        found += [(rel / f).as_posix() for f in files if not f.startswith(".") or f in ZARR_DOT_FILES]
    return sorted(f for f in found if f != ROOT_METADATA)


def _hash_all(root: Path, names: list[str], algorithm: str = ALGORITHM) -> dict[str, str]:
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(names, pool.map(lambda n: _digest(root / n, algorithm), names)))


def file_sha256(path: str | Path) -> str:
    """The sha256 of a whole file, read in blocks (a large TIFF is never held in memory for it)."""
    return _digest(Path(path), "sha256")


def _digest(path: Path, algorithm: str) -> str:
    digest, buffer = hashlib.new(algorithm), bytearray(BLOCK)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _collapse(missing: list[str], expected: dict) -> list[str]:
    """Missing files, with a folder (an array, a group) named once when everything listed under it is gone."""
    listed, gone = _folder_counts(expected), _folder_counts(missing)
    out, covered = [], None
    for rel in missing:
        if covered and rel.startswith(covered):
            continue
        folders = [rel.rsplit("/", k)[0] + "/" for k in range(rel.count("/"), 0, -1)]  # outermost first
        # only arrays and groups (folders with metadata) are named, not the folders of chunk keys
        covered = next((f for f in folders if gone.get(f) == listed[f] and f + ROOT_METADATA in expected), None)
        out.append(covered.rstrip("/") if covered else rel)
    return out


def _folder_counts(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth]) + "/"
            counts[folder] = counts.get(folder, 0) + 1
    return counts


def _noun(rel: str, expected: dict) -> str:
    if rel in expected:
        return "metadata file" if Path(rel).name in (ROOT_METADATA, *ZARR_DOT_FILES) else "chunk"
    below = [f[len(rel) + 1 :] for f in expected if f.startswith(rel + "/")]
    return "array" if any(b.startswith("c/") for b in below) or below == [ROOT_METADATA] else "group"
