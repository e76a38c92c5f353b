"""`deepflows shuffle-examples`: labelled example shards -> one shuffled training store with a tuning split.

The shards need not be one i/n set: any complete, labelled `deepflows.examples` shards with the same image
shape and channels (e.g. one per simulated training chunk) are merged. Every example goes to one split by
where its candidate starts: inside a tuning region -> `tune`; within `--tune-margin` bp outside one ->
left out (its reads overlap the tuning region's); anywhere else -> `train`. Tuning examples are whole
regions, not random examples, so neighbouring examples that share reads never sit on both sides.

Each split is a uniform random permutation of its examples, made in two passes with memory bounded by the
bucket size, not by the store size:

1. scatter: the shards are read 256 examples at a time; every example draws a bucket
   uniformly from B = ceil(n / bucket_size) and is appended, compressed, to that bucket's temporary file;
2. gather: one bucket at a time is loaded, permuted and appended to the output.

Uniform bucket choice followed by a uniform permutation of each bucket, buckets concatenated in order, is
a uniform permutation of the whole split. Every draw comes from generators seeded by `--seed`, and the
shards are taken in an order fixed by their content (regions and source checksums), so the same shards,
seed, bucket size and chunk size give the same store whatever order the shards are listed in.

Output: one Zarr v3 group, written as `<out>.tmp-<pid>` and renamed when complete:

    train.zarr/            attrs: schema deepflows.training_store v1, splits (examples and class counts),
      train/               tune_regions, tune_margin, seed, bucket_size, sources, complete, integrity
        inputs  [N, H, W, C] uint8, chunks of --chunk-size along N
        contig start end ref alts alt_indices depth allele_depth  [N]
        label   [N] int8
        sample_noise  [N] float32: the shard's sample noise (deepflows.genomics.examples.sample_noise), NaN
                      where the shard has none
      tune/                the same arrays (possibly N = 0)

`open_training_store(path, split)` gives one split as (Dask inputs, metadata DataFrame, Dask labels).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.outputs import remove, remove_stale_temporaries, removed_on_error, temporary_path, write_text
from deepflows.store.examples import (
    INT_FIELDS,
    META_CHUNK,
    SCHEMA,
    SCHEMA_VERSION,
    STRING_FIELDS,
    open_shard,
    realigned,
)
from deepflows.store.integrity import seal

log = logging.getLogger("deepflows.shuffle")

STORE_SCHEMA = "deepflows.training_store"
STORE_SCHEMA_VERSION = 1
SPLITS = ("train", "tune")
CLASS_NAMES = ("hom_ref", "het", "hom_alt")
SHARD_FIELDS = ("inputs", *STRING_FIELDS, *INT_FIELDS, "label")
FIELDS = (*SHARD_FIELDS, "sample_noise")  # the last is a shard attribute, repeated per example
_REGION = re.compile(r"^(?P<contig>[^:\s]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


# ----------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", nargs="+", help="labelled example shards (Zarr groups made by make-examples --truth)")
    p.add_argument("--out", required=True, help="output Zarr group, e.g. train.zarr (must not exist)")
    p.add_argument("--tune-regions", nargs="*", default=[], metavar="chr:start-end",
                   help="regions (1-based inclusive) whose examples form the tuning split; none: no tuning split")
    p.add_argument("--tune-margin", type=int, default=0, metavar="BP",
                   help="leave out examples starting up to BP bp outside a tuning region (default 0)")
    p.add_argument("--seed", type=int, required=True, help="seed of the shuffle")
    p.add_argument("--bucket-size", type=int, default=2048, metavar="N",
                   help="mean examples per shuffle bucket; bounds memory (default 2048)")
    p.add_argument("--chunk-size", type=int, default=64, help="examples per Zarr chunk of inputs (default 64)")
    p.add_argument("--summary", metavar="JSON", help="also write the store's summary (splits, class counts) here")
    p.add_argument("--tmp-dir", metavar="DIR",
                   help="where the temporary buckets go (default: beside --out); needs about 2.5x the store's size")


def run(args: argparse.Namespace) -> None:
    problems = [
        (args.bucket_size < 16, f"--bucket-size {args.bucket_size}: must be at least 16"),
        (args.chunk_size < 1, f"--chunk-size {args.chunk_size}: must be at least 1"),
        (args.tune_margin < 0, f"--tune-margin {args.tune_margin}: must not be negative"),
        (args.seed < 0, f"--seed {args.seed}: must not be negative"),
    ]
    for failed, message in problems:
        if failed:
            raise UserError(message)
    summary = shuffle_examples(
        args.shards,
        args.out,
        tune_regions=args.tune_regions,
        tune_margin=args.tune_margin,
        seed=args.seed,
        bucket_size=args.bucket_size,
        chunk_size=args.chunk_size,
        tmp_dir=args.tmp_dir,
        command=getattr(args, "command_line", "deepflows shuffle-examples"),
    )
    if args.summary:
        write_text(args.summary, json.dumps(summary, indent=2) + "\n")
    log.info("%s", json.dumps(summary["splits"]))


# ----------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    contig: str
    start: int  # 0-based
    end: int  # exclusive

    def __str__(self) -> str:
        return f"{self.contig}:{self.start + 1}-{self.end}"


def parse_tune_region(text: str) -> Region:
    match = _REGION.match(text.strip())
    if not match:
        raise UserError(f"--tune-regions '{text}': expected chr:start-end (1-based, inclusive)")
    start, end = int(match["start"].replace(",", "")) - 1, int(match["end"].replace(",", ""))
    if start < 0 or end <= start:
        raise UserError(f"--tune-regions '{text}': empty or inverted interval")
    return Region(match["contig"], start, end)


def route(contig: np.ndarray, start: np.ndarray, regions: list[Region], margin: int) -> np.ndarray:
    """Per example: 0 train, 1 tune, -1 left out (within `margin` bp outside a tuning region)."""
    codes = np.zeros(len(start), dtype=np.int8)
    near = np.zeros(len(start), dtype=bool)
    for r in regions:
        on_contig = contig == r.contig
        codes[on_contig & (start >= r.start) & (start < r.end)] = 1
        near |= on_contig & (start >= r.start - margin) & (start < r.end + margin)
    codes[near & (codes == 0)] = -1
    return codes


# ----------------------------------------------------------------------------- sources


@dataclass
class Source:
    path: Path
    group: object
    n: int
    arrays: dict | None = None

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def sample_noise(self) -> float:
        value = (self.attrs.get("sample_noise") or {}).get("homopolymer_length_error")
        return np.nan if value is None else float(value)


def open_sources(paths: list[str | Path]) -> list[Source]:
    """Open every shard (complete, labelled, one image shape), ordered by content rather than argument order."""
    if not paths:
        raise UserError("no shards given")
    seen: dict[Path, str] = {}
    for p in paths:
        resolved = Path(p).resolve()
        if resolved in seen:
            raise UserError(f"{p}: shard given twice")
        seen[resolved] = str(p)
    sources, identities, layout = [], {}, None
    for p in paths:
        group = open_shard(p)
        attrs = dict(group.attrs)
        if "label" not in group:
            raise UserError(f"{p}: shard has no labels (made without --truth); training needs labelled examples")
        this = (tuple(attrs["channels"]), tuple(attrs["shape"]))
        if layout is None:
            layout, realign = this, realigned(attrs)
        elif this != layout:
            raise UserError(f"{p}: image shape or channels {this} differ from the other shards' {layout}")
        elif realigned(attrs) != realign:
            raise UserError(f"{p}: made {'with' if realigned(attrs) else 'without'} --realign, unlike the shards "
                            "before it; one store holds examples of one featurizer")  # fmt: skip
        # Content, not paths: the shard's regions and the checksums of what it was made from.
        checksums = {k: v.get("sha256") for k, v in (attrs.get("sources") or {}).items() if isinstance(v, dict)}
        identity = json.dumps([attrs.get("regions"), checksums, attrs.get("shard_index"), attrs.get("shard_count")],
                              sort_keys=True)  # fmt: skip
        if identity in identities:
            raise UserError(f"{p}: the same shard as {identities[identity]} (same sources and regions)")
        identities[identity] = str(p)
        n = int(group["inputs"].shape[0])
        if n != attrs.get("n_examples", n):
            raise UserError(f"{p}: holds {n} examples but its attributes say {attrs['n_examples']}")
        sources.append((identity, Source(Path(p), group, n)))
    return [source for _, source in sorted(sources, key=lambda item: item[0])]


def _read_block(source: Source, lo: int, hi: int) -> dict[str, np.ndarray]:
    try:
        if not source.arrays:
            source.arrays = {name: source.group[name] for name in SHARD_FIELDS}
        block = {name: array[lo:hi] for name, array in source.arrays.items()}
        return {**block, "sample_noise": np.full(hi - lo, source.sample_noise, np.float32)}
    except Exception as err:  # noqa: BLE001 (codec and store errors of a damaged shard come in many types)
        raise UserError(f"{source.path}: cannot read examples {lo}-{hi} ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------- temporary buckets


class BucketFile:
    """An append-only file of compressed frames, each a few examples with all their fields.

    Appending never rewrites earlier data (unlike a compressed Zarr chunk), so pass 1 holds no per-bucket
    buffers: its memory is one block of the source, whatever the number of buckets.
    Frame: 8-byte header length, JSON header (rows, and per field dtype, shape, byte length), the fields.
    """

    def __init__(self, path: Path):
        self.path = path
        self.n = 0

    def append(self, block: dict[str, np.ndarray]) -> None:
        from numcodecs import Blosc

        # lz4: the buckets live for minutes; it compresses pileups ~9x at ~3x the speed of zstd.
        codec = Blosc(cname="lz4", clevel=1, shuffle=Blosc.NOSHUFFLE)
        header, payloads = {"rows": None, "fields": []}, []
        for name, values in block.items():
            header["rows"] = len(values)
            if values.dtype.kind in "OUT":  # strings (numpy StringDType is kind 'T')
                raw, dtype, shape = "\x00".join(values.tolist()).encode(), "str", [len(values)]
            else:
                raw, dtype, shape = np.ascontiguousarray(values).tobytes(), values.dtype.str, list(values.shape)
            payload = codec.encode(raw) if raw else b""
            header["fields"].append({"name": name, "dtype": dtype, "shape": shape, "nbytes": len(payload)})
            payloads.append(payload)
        encoded = json.dumps(header).encode()
        with open(self.path, "ab") as handle:
            handle.write(struct.pack("<Q", len(encoded)) + encoded)
            for payload in payloads:
                handle.write(payload)
        self.n += header["rows"]

    def read(self) -> dict[str, np.ndarray]:
        """All rows, each field in one array filled frame by frame (no second copy of the bucket)."""
        from numcodecs import Blosc

        codec = Blosc()
        out: dict[str, np.ndarray] = {}
        strings: dict[str, list[str]] = {}
        if not self.path.exists():
            return out
        row = 0
        with open(self.path, "rb") as handle:
            while head := handle.read(8):
                header = json.loads(handle.read(struct.unpack("<Q", head)[0]))
                rows = header["rows"]
                for field in header["fields"]:
                    payload = handle.read(field["nbytes"])
                    raw = codec.decode(payload) if payload else b""
                    name = field["name"]
                    if field["dtype"] == "str":
                        strings.setdefault(name, []).extend(bytes(raw).decode().split("\x00") if rows else [])
                        continue
                    if name not in out:
                        out[name] = np.empty((self.n, *field["shape"][1:]), dtype=field["dtype"])
                    out[name][row : row + rows] = np.frombuffer(raw, dtype=field["dtype"]).reshape(field["shape"])
                row += rows
        if row != self.n:
            raise RuntimeError(f"{self.path}: read {row} rows, wrote {self.n}")  # a bug, not a user error
        for name, values in strings.items():
            out[name] = np.array(values, dtype=np.dtypes.StringDType())
        return out


# ----------------------------------------------------------------------------- output


class SplitWriter:
    """Writes one split's `n` examples, in order, into arrays created at their final size.

    Images go out in whole chunks (a few at a time), metadata in whole metadata chunks, so no chunk is
    written twice and no array is resized; the remainder waits for the next call or `close()`.
    """

    def __init__(self, group, n: int, image_shape: tuple, chunk_size: int):
        import zarr

        codec = zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")
        self.arrays = {
            "inputs": group.create_array("inputs", shape=(n, *image_shape), chunks=(chunk_size, *image_shape),
                                         dtype="uint8", compressors=codec, fill_value=0)
        }
        dtypes = {**dict.fromkeys(STRING_FIELDS, str), **dict.fromkeys(INT_FIELDS, "int64"), "label": "int8",
                  "sample_noise": "float32"}  # fmt: skip
        for name, dtype in dtypes.items():
            self.arrays[name] = group.create_array(name, shape=(n,), chunks=(META_CHUNK,), dtype=dtype)
        self.n = n
        self.step = {name: (chunk_size * max(1, 256 // chunk_size) if name == "inputs" else META_CHUNK)
                     for name in FIELDS}  # fmt: skip
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}
        self.n_pending = dict.fromkeys(FIELDS, 0)
        self.written = dict.fromkeys(FIELDS, 0)
        self.class_counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)

    def add(self, block: dict[str, np.ndarray]) -> None:
        self.class_counts += np.bincount(block["label"], minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
        for name in FIELDS:
            self.pending[name].append(block[name])
            self.n_pending[name] += len(block[name])
            if self.n_pending[name] >= self.step[name]:
                self._flush(name, whole=True)

    def _flush(self, name: str, whole: bool) -> None:
        if not self.n_pending[name]:
            return
        values = np.concatenate(self.pending[name])
        take = (len(values) // self.step[name]) * self.step[name] if whole else len(values)
        at = self.written[name]
        if at + take > self.n:
            raise RuntimeError(f"{name}: more examples than counted")  # a bug, not a user error
        self.arrays[name][at : at + take] = values[:take]
        self.pending[name] = [values[take:]] if take < len(values) else []
        self.n_pending[name] -= take
        self.written[name] += take

    def close(self) -> int:
        for name in FIELDS:
            self._flush(name, whole=False)
        if set(self.written.values()) != {self.n}:
            raise RuntimeError(f"wrote {self.written} examples, expected {self.n}")  # a bug, not a user error
        return self.n


# ----------------------------------------------------------------------------- the shuffle


def shuffle_examples(shards, out, *, tune_regions=(), tune_margin=0, seed=0, bucket_size=2048, chunk_size=64,
                     tmp_dir=None, command="deepflows shuffle-examples") -> dict:  # fmt: skip
    """Merge and shuffle labelled shards into one store at `out`; returns its summary. Nothing is left on error."""
    import zarr

    from deepflows import __version__

    started = time.perf_counter()
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: already exists; remove it or choose another --out")
    regions = [parse_tune_region(t) for t in tune_regions]
    sources = open_sources(shards)
    first = sources[0].attrs
    image_shape = tuple(first["shape"])

    # Count each split first: the number of buckets follows from it.
    counts = np.zeros(3, dtype=np.int64)  # train, tune, left out
    per_source = []
    for src in sources:
        c = [0, 0, 0]
        contigs, starts = src.group["contig"], src.group["start"]
        for lo in range(0, src.n, META_CHUNK):  # metadata only, a chunk at a time
            hi = min(src.n, lo + META_CHUNK)
            codes = route(contigs[lo:hi], starts[lo:hi], regions, tune_margin)
            c = [c[0] + int((codes == 0).sum()), c[1] + int((codes == 1).sum()), c[2] + int((codes == -1).sum())]
        per_source.append(c)
        counts += c
    if regions and counts[1] == 0:
        raise UserError(f"--tune-regions {' '.join(map(str, regions))}: no example starts inside them "
                        "(check the contig names and coordinates)")  # fmt: skip
    if counts[0] == 0:
        raise UserError("no example is left for the training split")
    n_buckets = {split: max(1, math.ceil(int(counts[i]) / bucket_size)) for i, split in enumerate(SPLITS)}
    log.info("%d shards, %d examples: %d train, %d tune, %d left out near tuning regions; buckets %s",
             len(sources), counts.sum(), counts[0], counts[1], counts[2], n_buckets)  # fmt: skip

    tmp = temporary_path(out)
    buckets_dir = (Path(tmp_dir) if tmp_dir else out.parent) / f".{out.name}.buckets"
    scratch = temporary_path(buckets_dir)
    for path in (out, buckets_dir):  # what runs killed with -9 left behind
        remove_stale_temporaries(path)
    remove(tmp)
    remove(scratch)
    try:
        with removed_on_error(tmp, out):
            scratch.mkdir(parents=True)
            buckets = {split: [BucketFile(scratch / f"{split}-{b:06d}.bin") for b in range(n_buckets[split])]
                       for split in SPLITS}  # fmt: skip
            # Pass 1: scatter. One generator per split, drawn in the fixed source order.
            scatter_rng = {split: np.random.default_rng([seed, 0, i]) for i, split in enumerate(SPLITS)}
            # Blocks of at most 256 examples (about 40 MB of pileups): a few copies of one block are the memory of
            # pass 1, whatever the bucket size.
            block = min(256, bucket_size)
            routed_labels = {split: np.zeros(len(CLASS_NAMES), np.int64) for split in SPLITS}
            t1 = time.perf_counter()
            for k, src in enumerate(sources):
                for lo in range(0, src.n, block):
                    data = _read_block(src, lo, min(src.n, lo + block))
                    codes = route(data["contig"], data["start"], regions, tune_margin)
                    for i, split in enumerate(SPLITS):
                        rows = np.flatnonzero(codes == i)
                        if not rows.size:
                            continue
                        routed_labels[split] += np.bincount(data["label"][rows], minlength=3)[:3]
                        chosen = scatter_rng[split].integers(0, n_buckets[split], rows.size)
                        for b in np.unique(chosen):
                            picked = rows[chosen == b]
                            buckets[split][b].append({name: values[picked] for name, values in data.items()})
                log.info("scattered shard %d/%d (%s, %d examples)", k + 1, len(sources), src.path, src.n)
            scatter_seconds = time.perf_counter() - t1

            # Pass 2: gather, one bucket in memory at a time.
            t2 = time.perf_counter()
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            splits = {}
            for i, split in enumerate(SPLITS):
                group = root.create_group(split)
                writer = SplitWriter(group, int(counts[i]), image_shape, chunk_size)
                for b, bucket in enumerate(buckets[split]):
                    data = bucket.read()
                    if not data:
                        continue
                    n = len(data["label"])
                    order = np.random.default_rng([seed, 1, i, b]).permutation(n)
                    for lo in range(0, n, writer.step["inputs"]):  # the permuted copy is made a slice at a time
                        picked = order[lo : lo + writer.step["inputs"]]
                        writer.add({name: values[picked] for name, values in data.items()})
                    bucket.path.unlink()
                    del data
                n = writer.close()
                if n != counts[i] or not np.array_equal(writer.class_counts, routed_labels[split]):
                    raise RuntimeError(f"{split}: wrote {n} examples, routed {counts[i]}")  # a bug, not a user error
                classes = {name: int(c) for name, c in zip(CLASS_NAMES, writer.class_counts)}
                splits[split] = {"examples": n, "classes": classes, "buckets": n_buckets[split]}
                group.update_attributes({
                    "schema": f"{STORE_SCHEMA}.split", "split": split, "n_examples": n, "class_counts": classes,
                    "channels": first["channels"], "shape": list(image_shape),
                })  # fmt: skip
                log.info("wrote %s: %d examples %s", split, n, classes)
            gather_seconds = time.perf_counter() - t2
            for i, split in enumerate(SPLITS):
                splits[split]["bytes"] = _tree_bytes(tmp / split)
                splits[split]["bytes_per_example"] = round(splits[split]["bytes"] / max(splits[split]["examples"], 1), 1)
            summary = {
                "store": str(out),
                "schema": STORE_SCHEMA,
                "schema_version": STORE_SCHEMA_VERSION,
                "example_schema": {"schema": SCHEMA, "schema_version": SCHEMA_VERSION},
                "channels": first["channels"],
                "shape": list(image_shape),
                "realign": realigned(first),
                "class_names": list(CLASS_NAMES),
                "splits": splits,
                "left_out_near_tune": int(counts[2]),
                "tune_regions": [str(r) for r in regions],
                "tune_margin": tune_margin,
                "seed": seed,
                "bucket_size": bucket_size,
                "chunk_size": chunk_size,
                "sources": [
                    {"path": str(s.path), "examples": s.n, "train": c[0], "tune": c[1], "left_out": c[2],
                     "sample": s.attrs.get("sample"), "regions": s.attrs.get("regions"),
                     "sample_noise": s.attrs.get("sample_noise"),
                     "sources": s.attrs.get("sources")}
                    for s, c in zip(sources, per_source)
                ],
                "stats": {"scatter_seconds": round(scatter_seconds, 3), "gather_seconds": round(gather_seconds, 3),
                          "seconds": round(time.perf_counter() - started, 3)},
                "deepflows_version": __version__,
                "command": command,
            }
            # Last: the manifest of every chunk written above (deepflows.store.integrity), then the rename.
            seal(root, tmp, {**{k: v for k, v in summary.items() if k != "store"}, "complete": True})
            tmp.rename(out)
    finally:
        remove(scratch)
    return summary


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ----------------------------------------------------------------------------- reading


def open_store_root(path: Path):
    """The root group of a complete training store of this schema; one clear line for anything else."""
    from deepflows.store.examples import open_complete_group

    return open_complete_group(path, STORE_SCHEMA, STORE_SCHEMA_VERSION, "training store",
                               hint=" (make one from example shards with deepflows shuffle-examples)")


def open_training_store(path: str | Path, split: str = "train"):
    """One split of a training store: (Dask array of inputs, metadata DataFrame, Dask array of labels)."""
    import dask.array as da
    import pandas as pd

    path = Path(path)
    if split not in SPLITS:
        raise UserError(f"split '{split}': expected one of {', '.join(SPLITS)}")
    root = open_store_root(path)
    group = root[split]
    inputs = da.from_zarr(group["inputs"])
    meta = pd.DataFrame({k: group[k][:] for k in (*STRING_FIELDS, *INT_FIELDS)})
    labels = da.from_zarr(group["label"])
    return inputs, meta, labels
