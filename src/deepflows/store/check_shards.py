"""`deepflows check-shards`: the gather step. Every shard of a sample must be present and complete."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", help="the shard Zarr groups of one sample")
    p.add_argument("--out", required=True, help="manifest JSON to write (examples per shard, totals)")


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from deepflows.outputs import check_new_output, write_text
    from deepflows.store.examples import check_shard_set

    check_new_output(args.out)
    shard_set = check_shard_set(args.shards)
    shards = [
        {"path": str(path), "shard": f"{g.attrs['shard_index']}/{g.attrs['shard_count']}",
         "examples": g.attrs["n_examples"], **g.attrs["stats"]}
        for path, g in shard_set
    ]  # fmt: skip
    groups = [g for _, g in shard_set]
    labels = {}
    if all("label" in g for g in groups):
        values = np.concatenate([g["label"][:] for g in groups])
        labels = {str(k): int(v) for k, v in zip(*np.unique(values, return_counts=True))}
    first = groups[0].attrs
    manifest = {
        "sample": first["sample"],
        "shard_count": first["shard_count"],
        "examples": sum(s["examples"] for s in shards),
        "candidates": sum(s["n_candidates"] for s in shards),
        "labels": labels,
        "channels": first["channels"],
        "shape": first["shape"],
        "shards": shards,
    }
    write_text(args.out, json.dumps(manifest, indent=2) + "\n")
