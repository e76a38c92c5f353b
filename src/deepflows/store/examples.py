"""Example shards: one Zarr v3 group per shard, written under a temporary name and renamed when complete.

Group layout (schema version 1):
- `inputs` [N, height, width, channels] uint8, chunked along N, Blosc-zstd (level 1) compressed
- per-example metadata arrays of length N: `contig`, `start`, `end` (0-based half-open), `ref`, `alts`
  (comma-joined), `alt_indices` (comma-joined 0-based indices into alts), `depth`, `allele_depth`
  (comma-joined read counts: ref then each alt), and `label` when a truth set was given
- attributes: schema, schema_version, channels, shape, shard `i/n`, regions, sources (path, size,
  sha256), parameters, deepflows version, command line, `complete: true` written last.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

SCHEMA = "deepflows.examples"
SCHEMA_VERSION = 1
STRING_FIELDS = ("contig", "ref", "alts", "alt_indices", "allele_depth")
INT_FIELDS = ("start", "end", "depth")
META_CHUNK = 4096


class TemporaryGroup:
    """A Zarr group written at `self.tmp` and renamed into place by the subclass's commit(); leaving a
    `with` block by an exception removes it, so a failed run never leaves a partial output."""

    tmp: Path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


class ShardWriter(TemporaryGroup):
    """Streams examples into `<out>.tmp-<pid>` and renames it to `<out>` on `commit()`.

    Used as a context manager: leaving the block by an exception removes the temporary group, so a
    failed run never leaves a partial shard behind.
    """

    def __init__(self, out: str | Path, image_shape: tuple[int, int, int], attrs: dict, labelled: bool,
                 chunk_size: int = 64):  # fmt: skip
        import os

        import zarr

        self.out = Path(out)
        if self.out.exists():
            raise UserError(f"{self.out}: already exists; remove it or choose another --out")
        self.tmp = self.out.with_name(f"{self.out.name}.tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self.group.attrs.update({**attrs, "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "complete": False})
        self.inputs = self.group.create_array(
            "inputs",
            shape=(0, *image_shape),
            chunks=(chunk_size, *image_shape),
            dtype="uint8",
            # uint8 pileups: level-1 zstd compresses ~20x at ~1 ms per example; higher levels and
            # bit-shuffling measured slower and no smaller on real pileups.
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"),
        )
        self.buffer = np.zeros((chunk_size, *image_shape), dtype=np.uint8)
        self.buffered = 0
        # Metadata is streamed too (in larger chunks), so memory does not grow with the region.
        dtypes = {**dict.fromkeys(STRING_FIELDS, str), **dict.fromkeys(INT_FIELDS, "int64")}
        if labelled:
            dtypes["label"] = "int8"
        self.meta_arrays = {k: self.group.create_array(k, shape=(0,), chunks=(META_CHUNK,), dtype=dt)
                            for k, dt in dtypes.items()}  # fmt: skip
        self.meta: dict[str, list] = {k: [] for k in dtypes}

    def add(self, image: np.ndarray, label: int | None = None, **meta) -> None:
        self.buffer[self.buffered] = image
        self.buffered += 1
        if self.buffered == len(self.buffer):
            self._flush_images()
        for key, values in self.meta.items():
            values.append(label if key == "label" else meta[key])
        if len(self.meta["start"]) == META_CHUNK:
            self._flush_meta()

    def _flush_images(self) -> None:
        if self.buffered:
            self.inputs.append(self.buffer[: self.buffered])
            self.buffered = 0

    def _flush_meta(self) -> None:
        for key, values in self.meta.items():
            if values:
                self.meta_arrays[key].append(np.asarray(values, dtype=self.meta_arrays[key].dtype))
                values.clear()

    def commit(self, extra_attrs: dict | None = None) -> int:
        """Flush, mark complete, rename into place; returns the number of examples."""
        self._flush_images()
        self._flush_meta()
        n = int(self.inputs.shape[0])
        self.group.attrs.update({**(extra_attrs or {}), "n_examples": n, "complete": True})
        self.tmp.rename(self.out)
        return n


def open_complete_group(path: str | Path, schema: str, version: int, name: str, kind: str | None = None,
                        hint: str = ""):  # fmt: skip
    """Open a deepflows Zarr group read-only, refusing with one line a missing path, a non-group, another
    schema or version, or a group whose writer did not finish (no `complete` attribute). `name` is what
    the messages call it ("shard"), `kind` its schema's name ("examples shard"; default `name`); `hint` is
    appended to the wrong-schema message when the group has another schema (not when it has none)."""
    import zarr

    path, kind = Path(path), kind or name
    if not path.exists():
        raise UserError(f"{path}: {name} not found")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises several types for a directory that is not a group
        raise UserError(f"{path}: not a Zarr group ({type(err).__name__})") from None
    attrs = dict(group.attrs)
    if attrs.get("schema") != schema:
        found = attrs.get("schema")
        raise UserError(f"{path}: not a deepflows {kind} (schema {found!r}){hint if found else ''}")
    if attrs.get("schema_version") != version:
        raise UserError(f"{path}: {kind} schema version {attrs.get('schema_version')}, expected {version}")
    if not attrs.get("complete"):
        raise UserError(f"{path}: {name} is incomplete (its writer did not finish)")
    return group


def open_shard(path: str | Path):
    """Open a complete shard read-only; refuses missing, foreign or incomplete groups with one line."""
    return open_complete_group(path, SCHEMA, SCHEMA_VERSION, "shard", "examples shard")


def check_shard_set(paths: list[str | Path]) -> list[tuple[Path, object]]:
    """Open every shard and check they are one complete i/n set; returns (path, group) in shard order."""
    if not paths:
        raise UserError("no shards given")
    groups = [open_shard(p) for p in paths]
    counts = {g.attrs["shard_count"] for g in groups}
    if len(counts) != 1:
        raise UserError(f"shards come from different shard counts: {sorted(counts)}")
    total = counts.pop()
    by_index = {}
    for path, group in zip(paths, groups):
        index = group.attrs["shard_index"]
        if index in by_index:
            raise UserError(f"{path}: shard {index}/{total} given twice")
        by_index[index] = (Path(path), group)
    missing = [f"{i}/{total}" for i in range(total) if i not in by_index]
    if missing:
        raise UserError(f"missing shard(s) {', '.join(missing)} of {total}")
    samples = {(g.attrs["sources"]["reads"]["sha256"], tuple(g.attrs["channels"]), tuple(g.attrs["shape"]))
               for g in groups}  # fmt: skip
    if len(samples) != 1:
        raise UserError("shards were made from different reads or image shapes")
    return [by_index[i] for i in range(total)]


def open_examples(paths: list[str | Path]):
    """All shards of a sample as one lazy Dask array of inputs, a metadata DataFrame, and labels (or None)."""
    import dask.array as da
    import pandas as pd

    groups = [group for _, group in check_shard_set(paths)]
    inputs = da.concatenate([da.from_zarr(g["inputs"]) for g in groups], axis=0)
    fields = (*STRING_FIELDS, *INT_FIELDS)
    meta = pd.DataFrame({k: np.concatenate([g[k][:] for g in groups]) for k in fields})
    labels = None
    if all("label" in g for g in groups):
        labels = da.concatenate([da.from_zarr(g["label"]) for g in groups], axis=0)
    return inputs, meta, labels


def file_fingerprint(path: str | Path, full_limit: int = 1 << 30) -> dict:
    """Path, size and sha256 of a source file. Files above `full_limit` hash their first and last
    64 MiB plus the size (recorded as `sha256_sampled`), so a genome-scale BAM is not read twice."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    block = 64 << 20
    with open(path, "rb") as handle:
        if size <= full_limit:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            return {"path": str(path), "size": size, "sha256": digest.hexdigest()}
        digest.update(handle.read(block))
        handle.seek(size - block)
        digest.update(handle.read(block))
        digest.update(str(size).encode())
    return {"path": str(path), "size": size, "sha256": digest.hexdigest(), "sha256_sampled": True}


def realigned(attrs: dict) -> bool:
    """Whether a shard's (or a store's) reads were realigned by make-examples before featurizing."""
    return bool(attrs.get("realign", (attrs.get("parameters") or {}).get("realign", False)))
