"""`deepflows verify STORE...`: check stores that deepflows wrote against their integrity manifests.

Each store is opened as its own readers open it (examples shard, probabilities store, training store,
OME-Zarr image), so the checks are the same ones every stage makes before work: complete, of a known schema,
every file present with its recorded size and checksum, nothing extra. Prints `PATH: ok (N files, X MB)` per
good store; a bad one gives the one-line error (the first one, with a count when several are bad).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepflows.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stores", nargs="+", metavar="STORE",
                   help="Zarr stores that deepflows wrote (shards, probs, training stores, OME-Zarr images)")


def run(args: argparse.Namespace) -> None:
    bad = []
    for store in args.stores:
        try:
            files, size = verify_store(store)
        except UserError as err:
            bad.append(str(err))
            continue
        print(f"{store}: ok ({files} files, {size / 1e6:.1f} MB)", flush=True)
    if bad:
        more = f" (and {len(bad) - 1} more bad store(s))" if len(bad) > 1 else ""
        raise UserError(bad[0] + more)


def verify_store(path: str | Path) -> tuple[int, int]:
    """Open the store at `path` with the reader of its kind (which verifies it); returns (files, bytes)."""
    from deepflows.store.integrity import KEY, MADE_BY, manifest_size, root_attributes, verify

    path = Path(path)
    attrs = root_attributes(path)
    schema = attrs.get("schema")
    if KEY not in attrs and schema not in MADE_BY and "deepflows" not in attrs:
        raise UserError(f"{path}: no integrity manifest: not a store that deepflows wrote, or a part of one "
                        "(verify the whole store)")  # fmt: skip
    if schema == "deepflows.examples":
        from deepflows.store.examples import open_shard

        open_shard(path)
    elif schema == "deepflows.probs":
        from deepflows.genomics.calling.call_variants import open_probs

        open_probs(path)
    elif schema == "deepflows.training_store":
        from deepflows.store.shuffle import open_store_root

        open_store_root(path)
    elif "ome" in attrs:
        from deepflows.imaging.io import open_ome_zarr

        open_ome_zarr(path)
    else:  # a store of another (or a future) schema: its manifest still says what it must hold
        return verify(path, attrs)
    return manifest_size(attrs)
