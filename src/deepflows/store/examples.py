"""Example shards: one Zarr v3 group per shard, written under a temporary name and renamed when complete.

Group layout (schema version 1):
- `inputs` [N, height, width, channels] uint8, chunked along N, Blosc-zstd (level 1) compressed
- per-example metadata arrays of length N: `contig`, `start`, `end` (0-based half-open), `ref`, `alts`
  (comma-joined), `alt_indices` (comma-joined 0-based indices into alts), `depth`, `allele_depth`
  (comma-joined read counts: ref then each alt), and `label` when a truth set was given
- attributes: schema, schema_version, channels, shape, shard `i/n`, regions (this shard's), region_plan
  (the whole run's, see `region_plan`), sources (path, size, sha256), parameters, deepflows version, command
  line; written last, with `complete: true`, the integrity manifest of every chunk (deepflows.store.integrity),
  which every reader checks before work.

A set of shards is read together only when its shards agree on everything that made their examples
(`featurisation`); every shard is checked, and the odd one is named.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.genomics.presets import DEFAULT as DEFAULT_PRESET  # what shards made before presets were
from deepflows.outputs import check_new_output, remove, remove_stale_temporaries, removed_on_error, temporary_path
from deepflows.store import integrity

SCHEMA = "deepflows.examples"
SCHEMA_VERSION = 1
STRING_FIELDS = ("contig", "ref", "alts", "alt_indices", "allele_depth")
INT_FIELDS = ("start", "end", "depth")
META_CHUNK = 4096


class TemporaryGroup:
    """A Zarr group written beside `<out>` under a temporary name (deepflows.outputs.temporary_path) and renamed
    to `<out>` by `finalise()`.

    Cleanup is armed before anything is created: a failure while the group and its arrays are created (disk
    full), while finalising, or inside a `with` block removes the temporary, so a failed run never leaves a
    partial output. Subclasses create their arrays in `create_arrays(group)`, called by this constructor.
    """

    out: Path
    tmp: Path

    def __init__(self, out: str | Path, attrs: dict):
        import zarr

        self.out = Path(out)
        self.tmp = temporary_path(self.out)
        with self.removed_on_error():
            remove_stale_temporaries(self.out)  # of runs killed with -9
            remove(self.tmp)
            self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
            self.group.attrs.update({**attrs, "complete": False})
            self.create_arrays(self.group)

    def create_arrays(self, group) -> None:
        """Create the subclass's arrays in the new group (a failure here removes the temporary)."""

    def removed_on_error(self):
        return removed_on_error(self.tmp, self.out)

    def finalise(self, attrs: dict) -> None:
        """Write `attrs`, `complete: true` and the integrity manifest (deepflows.store.integrity), then rename
        the group into place; a failure on the way (disk full while writing attributes) removes the temporary."""
        with self.removed_on_error():
            integrity.seal(self.group, self.tmp, {**attrs, "complete": True})
            self.tmp.rename(self.out)

    def __enter__(self):
        self._block = self.removed_on_error()
        self._block.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        return self._block.__exit__(exc_type, exc, tb)


class ShardWriter(TemporaryGroup):
    """Streams examples into a temporary group and renames it to `<out>` on `commit()`.

    Used as a context manager: leaving the block by an exception removes the temporary group, so a
    failed run never leaves a partial shard behind.
    """

    def __init__(self, out: str | Path, image_shape: tuple[int, int, int], attrs: dict, labelled: bool,
                 chunk_size: int = 64):  # fmt: skip
        check_new_output(out)
        self.image_shape, self.labelled, self.chunk_size = tuple(image_shape), labelled, chunk_size
        super().__init__(out, {**attrs, "schema": SCHEMA, "schema_version": SCHEMA_VERSION})

    def create_arrays(self, group) -> None:
        import zarr

        self.inputs = group.create_array(
            "inputs",
            shape=(0, *self.image_shape),
            chunks=(self.chunk_size, *self.image_shape),
            dtype="uint8",
            # uint8 pileups: level-1 zstd compresses ~20x at ~1 ms per example; higher levels and
            # bit-shuffling measured slower and no smaller on real pileups.
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"),
        )
        self.buffer = np.zeros((self.chunk_size, *self.image_shape), dtype=np.uint8)
        self.buffered = 0
        # Metadata is streamed too (in larger chunks), so memory does not grow with the region.
        dtypes = {**dict.fromkeys(STRING_FIELDS, str), **dict.fromkeys(INT_FIELDS, "int64")}
        if self.labelled:
            dtypes["label"] = "int8"
        self.meta_arrays = {k: group.create_array(k, shape=(0,), chunks=(META_CHUNK,), dtype=dt)
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
        with self.removed_on_error():
            self._flush_images()
            self._flush_meta()
        n = int(self.inputs.shape[0])
        self.finalise({**(extra_attrs or {}), "n_examples": n})
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
    # Every chunk present and intact before any work: Zarr would read a missing one as zeros.
    integrity.verify(path, attrs, made_by=integrity.MADE_BY.get(schema, ""))
    return group


def open_shard(path: str | Path):
    """Open a complete shard read-only; refuses missing, foreign or incomplete groups with one line."""
    return open_complete_group(path, SCHEMA, SCHEMA_VERSION, "shard", "examples shard")


def check_shard_set(paths: list[str | Path]) -> list[tuple[Path, object]]:
    """Open every shard and check they are one complete i/n set made the same way (see `featurisation`);
    returns (path, group) in shard order."""
    if not paths:
        raise UserError("no shards given")
    groups = [open_shard(p) for p in paths]
    _check_agreement([(Path(p), dict(g.attrs)) for p, g in zip(paths, groups)])  # the shard count among it
    total = groups[0].attrs["shard_count"]
    by_index = {}
    for path, group in zip(paths, groups):
        index = group.attrs["shard_index"]
        if index in by_index:
            raise UserError(f"{path}: shard {index}/{total} given twice")
        by_index[index] = (Path(path), group)
    missing = [f"{i}/{total}" for i in range(total) if i not in by_index]
    if missing:
        raise UserError(f"missing shard(s) {', '.join(missing)} of {total}")
    return [by_index[i] for i in range(total)]


def _check_agreement(shards: list[tuple[Path, dict]]) -> None:
    """Refuse, naming the odd shard and the field, a set whose shards differ in their `featurisation`. The odd
    shard is the one whose value the fewest shards share (so a wrong shard 0 is named, not shard 1)."""
    made = [featurisation(attrs) for _, attrs in shards]
    keys = list(dict.fromkeys(k for m in made for k in m))
    for key in keys:
        values = [json.dumps(m.get(key), sort_keys=True) for m in made]
        if len(set(values)) == 1:
            continue
        share = {v: values.count(v) for v in values}
        odd = min(reversed(range(len(values))), key=lambda i: share[values[i]])
        ref = next(i for i, v in enumerate(values) if v != values[odd] and share[v] == max(share.values()))
        (odd_path, odd_attrs), (ref_path, ref_attrs) = shards[odd], shards[ref]
        raise UserError(f"{odd_path}: made with {_describe(key, odd_attrs)} but shard {ref_attrs.get('shard_index')}/"
                        f"{ref_attrs.get('shard_count')} ({ref_path}) with {_describe(key, ref_attrs)}")  # fmt: skip


def featurisation(attrs: dict) -> dict[str, object]:
    """What every shard of one set must share: the sample, the checksums of what the examples were made from
    (reads, reference, truth), the region plan of the run, every make-examples parameter (realign, seed,
    thresholds, preset), the image layout and the deepflows version (the featurizer's code). The default preset,
    wgs, is left out, so that a wgs run agrees with shards made before presets (and keeps their run identity)."""
    sources = attrs.get("sources") or {}
    parameters = dict(attrs.get("parameters") or {})
    if parameters.get("preset") == DEFAULT_PRESET:
        del parameters["preset"]
    return {
        "sample": attrs.get("sample"),
        # a source is the same file whatever its path: its checksum
        **{name: (fingerprint or {}).get("sha256") for name, fingerprint in sorted(sources.items())},
        "region plan": attrs.get("region_plan"),
        "shard count": attrs.get("shard_count"),
        **dict(sorted(parameters.items())),
        "channels": attrs.get("channels"),
        "shape": attrs.get("shape"),
        "deepflows_version": attrs.get("deepflows_version"),
    }


def run_identity(attrs: dict) -> str:
    """A digest of a shard's `featurisation`: the same for every shard of one run, recorded by call-variants in
    its probs store and by make-examples --gvcf in each blocks file, so that postprocess pairs only the calls
    and the reference blocks of one run."""
    return hashlib.sha256(json.dumps(featurisation(attrs), sort_keys=True, default=str).encode()).hexdigest()


def _describe(key: str, attrs: dict) -> str:
    """`key` of a shard as the messages show it (a source by its path and checksum)."""
    value = featurisation(attrs).get(key)
    source = (attrs.get("sources") or {}).get(key)
    if value is None:
        return f"{key}={DEFAULT_PRESET}" if key == "preset" else f"no {key}"
    if isinstance(source, dict):
        return f"{key} {source.get('path')} (sha256 {str(value)[:12]})"
    if key == "region plan" and isinstance(value, dict):
        return (f"a region plan of {value.get('intervals')} interval(s), {value.get('bases')} bp "
                f"(sha256 {str(value.get('sha256'))[:12]})")  # fmt: skip
    return f"{key}={value}"


def region_plan(regions) -> dict:
    """The whole run's regions, as every shard records them (`region_plan`): a digest of the region list, with
    its size, so that shards of runs over other regions are told apart without copying the list into each."""
    names = [str(r) for r in regions]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    return {"intervals": len(names), "bases": int(sum(r.length for r in regions)), "sha256": digest}


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
