"""Batches from a training store (`deepflows shuffle-examples`), streamed through Dask/Zarr (and, for a task whose
data fit in memory, from arrays: ArrayStream).

Training order is a pure function of (seed, step), so a run resumed from a checkpoint at step k sees
exactly the batches an uninterrupted run sees from step k on:

- the split is read in whole chunks of `inputs` (chunked along N); an epoch visits the chunks in a
  random order drawn from (seed, epoch), grouped into windows of `window_chunks` consecutive chunks
  of that order (the shuffle buffer);
- each window is loaded (its chunks decompressed in parallel by Dask's threads) and its examples are
  permuted by a generator seeded with (seed, epoch, window): `shuffled`; or, with `balanced`, drawn
  with replacement, each with probability inverse to its class's frequency in the split, as many as
  the window holds, so the classes come out evenly on average and an epoch keeps its length;
- the epochs' example streams are concatenated and cut into batches of `batch_size`: batch k is
  stream positions [k * batch_size, (k + 1) * batch_size), which may straddle two windows or epochs.

Memory is a window or two of images (window_chunks x chunk x 155 kB for 100x221x7 pileups: 4 x 64
-> 40 MB) plus the split's labels (one byte per example), whatever the store's size. A background
thread prepares the next batches while the accelerator trains on the current one.
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepflows.errors import UserError

CLASS_NAMES = ("hom_ref", "het", "hom_alt")


@dataclass
class Split:
    """One split of a training store: lazy images, labels in memory, and what the model needs to know."""

    store: Path
    name: str
    inputs: object  # dask array [N, H, W, C] uint8, chunked along N as the store
    labels: np.ndarray  # [N] int8
    noise: np.ndarray  # [N] float32: each example's sample noise, NaN where the store has none
    chunk: int
    channels: list[str]
    attrs: dict  # the store's root attributes

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def shape(self) -> list[int]:
        return [int(s) for s in self.inputs.shape[1:]]

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk)

    def read_chunks(self, chunk_ids) -> np.ndarray:
        """The examples of these chunks, concatenated in the given order (decompressed in parallel)."""
        import dask
        import dask.array as da

        blocks = [self.inputs.blocks[int(c)] for c in chunk_ids]
        return dask.compute(da.concatenate(blocks, axis=0), scheduler="threads")[0]

    def chunk_rows(self, chunk_ids) -> np.ndarray:
        """Example indices of these chunks, in the order `read_chunks` returns them."""
        return np.concatenate([np.arange(c * self.chunk, min((c + 1) * self.chunk, self.n)) for c in chunk_ids])


def store_fingerprint(path: str | Path) -> dict:
    """Path (as given: model.json travels to other machines) and sha256 of the store's root metadata (zarr.json
    for Zarr v3, .zattrs for v2): the attributes record the store's sources, their checksums, the seed and the
    split sizes, so they identify its content."""
    path = Path(path)
    for name in ("zarr.json", ".zattrs"):
        meta = path / name
        if meta.is_file():
            return {"path": str(path), "metadata": name, "sha256": hashlib.sha256(meta.read_bytes()).hexdigest()}
    raise UserError(f"{path}: no zarr.json or .zattrs; not a Zarr group")


def open_split(path: str | Path, split: str) -> Split:
    """A labelled split of a training store, checked; one clear line for anything wrong with it."""
    import dask.array as da

    from deepflows.store.shuffle import open_store_root

    path = Path(path)
    root = open_store_root(path)
    attrs = dict(root.attrs)
    if split not in root:
        raise UserError(f"{path}: no '{split}' split in the training store")
    group = root[split]
    if "inputs" not in group:
        raise UserError(f"{path}/{split}: no 'inputs' array")
    if "label" not in group:
        raise UserError(f"{path}/{split}: no 'label' array; training needs labelled examples (make-examples --truth)")
    array = group["inputs"]
    if array.ndim != 4 or array.dtype != np.uint8:
        raise UserError(f"{path}/{split}/inputs: expected [N, height, width, channels] uint8, "
                        f"got {list(array.shape)} {array.dtype}")  # fmt: skip
    labels = np.asarray(group["label"][:])
    if len(labels) != array.shape[0]:
        raise UserError(f"{path}/{split}: {len(labels)} labels for {array.shape[0]} examples")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise UserError(f"{path}/{split}/label: values must be 0 (hom-ref), 1 (het) or 2 (hom-alt); "
                        f"found {int(labels.min())}..{int(labels.max())}")  # fmt: skip
    noise = (np.asarray(group["sample_noise"][:], np.float32) if "sample_noise" in group
             else np.full(len(labels), np.nan, np.float32))  # stores shuffled before the noise was measured
    channels = attrs.get("channels") or dict(group.attrs).get("channels")
    if not channels or len(channels) != array.shape[-1]:
        raise UserError(f"{path}: the store's attributes name {len(channels or [])} channels "
                        f"for {array.shape[-1]} in the images")  # fmt: skip
    return Split(store=path, name=split, inputs=da.from_zarr(array), labels=labels.astype(np.int8), noise=noise,
                 chunk=int(array.chunks[0]), channels=list(channels), attrs=attrs)  # fmt: skip


class BatchStream:
    """Training batches as a pure function of (seed, step); see the module docstring."""

    def __init__(self, split: Split, batch_size: int, seed: int, window_chunks: int = 4, sampling: str = "shuffled"):
        if split.n == 0:
            raise UserError(f"{split.store}/{split.name}: no examples")
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.window_chunks = max(1, window_chunks)
        self.sampling = sampling
        counts = split.class_counts
        # balanced: P(example) proportional to 1 / (its class's count); absent classes never come up.
        self.class_p = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)

    # --- the order ------------------------------------------------------------------------------------------

    def windows(self, epoch: int) -> list[np.ndarray]:
        """The chunk ids of each window of an epoch."""
        order = np.random.default_rng([self.seed, 1, epoch]).permutation(self.split.n_chunks)
        return [order[i : i + self.window_chunks] for i in range(0, len(order), self.window_chunks)]

    def window_order(self, epoch: int, index: int, rows: np.ndarray) -> np.ndarray:
        """Positions within a window's examples (rows: their indices in the split), in training order."""
        rng = np.random.default_rng([self.seed, 2, epoch, index])
        if self.sampling == "balanced":
            p = self.class_p[self.split.labels[rows]]
            return rng.choice(len(rows), size=len(rows), replace=True, p=p / p.sum())
        return rng.permutation(len(rows))

    def position(self, step: int) -> dict:
        """Where batch `step` starts: examples seen so far, epoch, offset in the epoch."""
        seen = step * self.batch_size
        return {"examples_seen": seen, "epoch": seen // self.split.n, "offset": seen % self.split.n}

    # --- the stream -----------------------------------------------------------------------------------------

    def _examples(self, start: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(images, labels, sample noise) runs in stream order from stream position `start` on, one window at a time."""
        epoch, offset = divmod(start, self.split.n)
        while True:
            for index, chunk_ids in enumerate(self.windows(epoch)):
                rows = self.split.chunk_rows(chunk_ids)
                if offset >= len(rows):  # a window before the resume point: skip without reading it
                    offset -= len(rows)
                    continue
                order = self.window_order(epoch, index, rows)[offset:]
                offset = 0
                images = self.split.read_chunks(chunk_ids)
                yield images[order], self.split.labels[rows[order]], self.split.noise[rows[order]]
            epoch += 1

    def batches(self, step: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Batches `step`, `step + 1`, ... (images uint8 [B, H, W, C], labels int32 [B], sample noise float32 [B])."""
        for *batch, _ in rebatch(self._examples(step * self.batch_size), self.batch_size, self.split.shape):
            yield tuple(batch)  # the stream never ends, so every batch is full


class ArrayStream:
    """Training batches of arrays held in memory, as a pure function of (seed, step): epoch e visits the examples
    in the order of a permutation drawn from (seed, e), and batch k is positions [k * batch_size, (k + 1) *
    batch_size) of the epochs one after another, as BatchStream's (without its windows: it reads nothing)."""

    def __init__(self, arrays: tuple[np.ndarray, ...], batch_size: int, seed: int):
        self.arrays, self.batch_size, self.seed = tuple(arrays), batch_size, seed
        self.n = len(self.arrays[0])
        if self.n == 0 or any(len(a) != self.n for a in self.arrays):
            raise UserError(f"{[len(a) for a in self.arrays]} examples per array: need the same number, not none")

    def batches(self, step: int) -> Iterator[tuple[np.ndarray, ...]]:
        """Batches `step`, `step + 1`, ...: tuples of the arrays' rows, `batch_size` each."""
        epoch, offset = divmod(step * self.batch_size, self.n)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        while True:
            rows = []
            while sum(map(len, rows)) < self.batch_size:
                if offset == self.n:
                    epoch, offset = epoch + 1, 0
                    order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                take = order[offset : offset + self.batch_size - sum(map(len, rows))]
                rows.append(take)
                offset += len(take)
            yield tuple(a[np.concatenate(rows)] for a in self.arrays)


def eval_batches(split: Split, batch_size: int, max_examples: int | None = None):
    """The first `max_examples` (default all) of a split in store order, as fixed-size batches:
    (images [B, ...] uint8, labels [B] int32, sample noise [B] float32, valid count); the last batch is padded
    with zeros."""
    n = split.n if max_examples is None else min(split.n, max_examples)

    def runs():
        for first in range(0, math.ceil(n / split.chunk), 4):
            ids = list(range(first, min(first + 4, math.ceil(n / split.chunk))))
            block = split.read_chunks(ids)
            rows = split.chunk_rows(ids)
            keep = rows < n
            yield block[keep], split.labels[rows[keep]], split.noise[rows[keep]]

    yield from rebatch(runs(), batch_size, split.shape)


def rebatch(runs: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], batch_size: int, shape: tuple):
    """Runs of (images, labels, sample noise) of any length -> (images [B, ...] uint8, labels [B] int32, sample
    noise [B] float32, valid count) batches of exactly `batch_size`; a last partial batch, if the runs end, is
    padded with zeros."""
    arrays = (np.zeros((batch_size, *shape), np.uint8), np.zeros(batch_size, np.int32),
              np.zeros(batch_size, np.float32))
    filled = 0
    for run in runs:
        at, n = 0, len(run[1])
        while at < n:
            take = min(batch_size - filled, n - at)
            for array, values in zip(arrays, run):
                array[filled : filled + take] = values[at : at + take]
            filled += take
            at += take
            if filled == batch_size:
                yield *(a.copy() for a in arrays), batch_size
                filled = 0
    if filled:
        for array in arrays:
            array[filled:] = 0
        yield *(a.copy() for a in arrays), filled


class Prefetcher:
    """Runs an iterator in a background thread, `depth` items ahead; `close()` stops it."""

    _END = object()

    def __init__(self, iterator: Iterator, depth: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(iterator,), daemon=True, name="batch-prefetch")
        self.thread.start()

    def _run(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as err:  # noqa: BLE001 (re-raised in the consumer)
            self.error = err
        self._put_end()

    def _put_end(self) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(self._END, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self._END:
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
