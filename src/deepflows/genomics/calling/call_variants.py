"""`deepflows call-variants`: example shards + a model -> genotype probabilities in one Zarr store.

The shards are checked to be one complete i/n set and the model to read their shape and channel order
before any work. Examples stream through in fixed-size batches (chunk-aligned reads of each shard, a
reader thread decoding the next batch while the current one runs), so memory is a few batches whatever
the sample's size; the last partial batch is zero-padded so the jitted function compiles once.

Output store (schema `deepflows.probs`, version 1), written under a temporary name and renamed when
complete:
- `probs` [N, 3] float32: softmax over (0, 1, 2 copies of the example's alt combination), in the
  examples' order (shard 0 first);
- the examples' metadata, copied unchanged: `contig`, `start`, `end`, `ref`, `alts`, `alt_indices`,
  `depth`, `allele_depth`;
- attributes: schema, schema_version, n_examples, sample, shape, channels, model (name, sha256,
  architecture, path), examples (each shard's path and n_examples), sources (the shards' reads and
  reference fingerprints), deepflows_version, command, device, stats and, written last, `complete: true` and
  the integrity manifest of every chunk (deepflows.store.integrity), checked by `open_probs`.
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.outputs import check_new_output
from deepflows.store.examples import TemporaryGroup, realigned

SCHEMA = "deepflows.probs"
SCHEMA_VERSION = 1
STRING_FIELDS = ("contig", "ref", "alts", "alt_indices", "allele_depth")
INT_FIELDS = ("start", "end", "depth")
META_FIELDS = ("contig", "start", "end", "ref", "alts", "alt_indices", "depth", "allele_depth")
CHUNK = 4096  # rows per output chunk, for probs and metadata alike
LOG_EVERY_S = 30.0
CPU_MICRO_BATCH = 8  # see make_predict

log = logging.getLogger("deepflows.call_variants")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", required=True, nargs="+", metavar="SHARD.zarr",
                   help="all example shards of the sample (one complete i/n set)")  # fmt: skip
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (model.json + weights)")
    p.add_argument("--out", required=True, metavar="PROBS.zarr", help="output Zarr group of probabilities")
    p.add_argument("--batch-size", type=int, default=512, help="examples per batch (default 512)")
    p.add_argument("--micro-batch", type=int, default=None, metavar="N",
                   help="run each batch as a loop over N examples at a time (default: 8 on CPU, the whole "
                        "batch on GPU/TPU; 0 = whole batch)")  # fmt: skip
    p.add_argument("--sample-noise", type=noise_setting, default="measured", metavar="measured|unknown|X",
                   help="for a model that reads the sample noise: the value make-examples measured (default), "
                        "unknown (a model with unknown_noise calls without it), or a share of reads X in [0, 1] "
                        "measured elsewhere for this library")  # fmt: skip


def noise_setting(text: str) -> str | float:
    if text in ("measured", "unknown"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be measured, unknown or a share of reads in [0, 1]")
    return value


def run(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.micro_batch is not None and args.micro_batch < 0:
        raise UserError(f"--micro-batch {args.micro_batch}: must not be negative")
    summary = call_variants(args.examples, args.model, args.out, args.batch_size,
                            getattr(args, "command_line", "deepflows call-variants"), args.micro_batch,
                            args.sample_noise)  # fmt: skip
    log.info("%s", summary)


# ---------------------------------------------------------------------------------------------- store


class _RowBuffer:
    """Appends rows to a preallocated Zarr array in whole chunks, so no chunk is written twice."""

    def __init__(self, array, dtype):
        self.array, self.offset = array, 0
        self.buffer = np.empty((array.chunks[0], *array.shape[1:]), dtype=dtype)
        self.filled = 0

    def append(self, rows: np.ndarray) -> None:
        pos = 0
        while pos < len(rows):
            take = min(len(self.buffer) - self.filled, len(rows) - pos)
            self.buffer[self.filled : self.filled + take] = rows[pos : pos + take]
            self.filled += take
            pos += take
            if self.filled == len(self.buffer):
                self.flush()

    def flush(self) -> None:
        if self.filled:
            self.array[self.offset : self.offset + self.filled] = self.buffer[: self.filled]
            self.offset += self.filled
            self.filled = 0


class ProbsWriter(TemporaryGroup):
    """Writes a probs store of `n` rows under a temporary name; `commit()` renames it into place.

    As a context manager, leaving the block by an exception removes the temporary group.
    """

    def __init__(self, out: str | Path, n: int, attrs: dict, chunk: int = CHUNK):
        self.n, self.chunk = n, max(1, min(chunk, n))
        super().__init__(check_new_output(out), {**attrs, "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
                                             "n_examples": n})  # fmt: skip

    def create_arrays(self, group) -> None:
        probs = group.create_array("probs", shape=(self.n, 3), chunks=(self.chunk, 3), dtype="float32")
        self.probs = _RowBuffer(probs, np.float32)
        dtypes = {**dict.fromkeys(STRING_FIELDS, str), **dict.fromkeys(INT_FIELDS, "int64")}
        self.meta = {}
        for key in META_FIELDS:
            array = group.create_array(key, shape=(self.n,), chunks=(self.chunk,), dtype=dtypes[key])
            self.meta[key] = _RowBuffer(array, object if dtypes[key] is str else np.int64)

    def add_probs(self, probs: np.ndarray) -> None:
        self.probs.append(np.asarray(probs, dtype=np.float32))

    def add_meta(self, fields: dict) -> None:
        for key in META_FIELDS:
            self.meta[key].append(np.asarray(fields[key]))

    def commit(self, extra_attrs: dict | None = None) -> int:
        with self.removed_on_error():
            for buffer in (self.probs, *self.meta.values()):
                buffer.flush()
            written = {key: buffer.offset for key, buffer in {"probs": self.probs, **self.meta}.items()}
            if set(written.values()) != {self.n}:
                raise RuntimeError(f"probs store rows written {written}, expected {self.n}")
        self.finalise(extra_attrs or {})
        return self.n


def open_probs(path: str | Path):
    """Open a complete probs store read-only; one clear line for a missing, foreign, incomplete or
    malformed one (a missing array, arrays of different lengths)."""
    from deepflows.store.examples import open_complete_group

    group = open_complete_group(path, SCHEMA, SCHEMA_VERSION, "probs store")
    members = set(group.array_keys())
    missing = [k for k in ("probs", *META_FIELDS) if k not in members]
    if missing:
        raise UserError(f"{path}: probs store lacks array(s) {', '.join(missing)}")
    n = group["probs"].shape[0]
    if group["probs"].ndim != 2 or group["probs"].shape[1] != 3:
        raise UserError(f"{path}: probs has shape {list(group['probs'].shape)}, expected [N, 3]")
    lengths = {k: group[k].shape[0] for k in META_FIELDS if group[k].shape[0] != n}
    if lengths:
        raise UserError(f"{path}: array lengths differ from probs ({n}): {lengths}")
    return group


# ------------------------------------------------------------------------------------------ inference


def call_variants(examples: list[str], model_dir: str, out: str, batch_size: int = 512,
                  command: str = "deepflows call-variants", micro_batch: int | None = None,
                  sample_noise: str | float = "measured") -> dict:  # fmt: skip
    """Run the model over every example of the shard set; returns a summary (examples/s among it).
    `micro_batch` None picks CPU_MICRO_BATCH on CPUs and the whole batch elsewhere; `sample_noise` as
    --sample-noise."""
    from deepflows import __version__
    from deepflows.nn.calibration import temperature_of
    from deepflows.nn.model_dir import check_compatible, load_model
    from deepflows.store.examples import check_shard_set, run_identity

    started = time.perf_counter()
    # Checks before work: every shard present and complete, the output free, the model fits.
    shards = check_shard_set(examples)
    check_new_output(out)
    first = shards[0][1].attrs
    shape, channels = list(first["shape"]), list(first["channels"])
    model, meta = load_model(model_dir)
    check_compatible(meta, shape, channels, realigned(first), f"{shards[0][0]} vs model {model_dir}")
    noise, noise_source = _sample_noise(model, first, shards[0][0], model_dir, sample_noise)

    import jax

    device = str(jax.devices()[0])
    counts = [int(group["inputs"].shape[0]) for _, group in shards]
    n = sum(counts)
    if micro_batch is None:
        micro_batch = CPU_MICRO_BATCH if jax.default_backend() == "cpu" else 0
    batch, micro_batch = plan_batches(n, batch_size, micro_batch)
    attrs = {
        "sample": first.get("sample"),
        "shape": shape,
        "channels": channels,
        "model": {
            "name": meta.get("name") or Path(model_dir).resolve().name,
            "sha256": meta["sha256"],
            "architecture": meta["architecture"],
            "path": str(model_dir),
            "temperature": temperature_of(meta),
            "call_temperature": call_temperature_of(meta),
            "sample_noise": None if noise is None or math.isnan(noise) else noise,
            "sample_noise_source": noise_source,
        },
        "examples": [{"path": str(path), "n_examples": c} for (path, _), c in zip(shards, counts)],
        "run": run_identity(first),  # the shard set's: gVCF blocks of the same run are checked against it
        "shard_count": first.get("shard_count"),
        "sources": {k: v for k, v in first.get("sources", {}).items() if k in ("reads", "reference")},
        "deepflows_version": __version__,
        "command": command,
        "device": device,
    }
    log.info("%d examples in %d shard(s); model %s (%s); batch %d (micro-batch %s) on %s", n, len(shards),
             attrs["model"]["name"], meta["architecture"], batch, micro_batch or batch, device)  # fmt: skip
    predict, state = make_predict(model, micro_batch, temperature_of(meta), 0.0 if noise is None else noise)
    with ProbsWriter(out, n, attrs) as writer:
        for _, group in shards:
            _copy_meta(group, writer)
        infer_started = time.perf_counter()
        done = 0
        last_log = infer_started
        for probs in predict_batches(predict, state, _batches(_blocks(shards, batch), batch, tuple(shape))):
            writer.add_probs(probs)
            done += len(probs)
            now = time.perf_counter()
            if now - last_log >= LOG_EVERY_S:
                log.info("%d/%d examples, %.0f examples/s", done, n, done / (now - infer_started))
                last_log = now
        infer_s = time.perf_counter() - infer_started
        stats = {
            "n_examples": n,
            "batch_size": batch,
            "micro_batch": micro_batch or batch,
            "inference_seconds": round(infer_s, 3),
            "examples_per_second": round(n / infer_s, 1) if infer_s > 0 else None,
            "seconds": round(time.perf_counter() - started, 3),
        }
        writer.commit({"stats": stats})
    log.info("%d examples in %.1f s: %.0f examples/s (inference incl. compilation and reading)", n, infer_s,
             n / infer_s if infer_s > 0 else 0.0)  # fmt: skip
    return {"out": str(out), **stats}


def call_temperature_of(meta: dict) -> float:
    """The call temperature a model.json asks for (1.0 for models fitted before it existed); postprocess applies it."""
    return float((meta.get("calibration") or {}).get("call_temperature", 1.0))


def _sample_noise(model, attrs: dict, shard, model_dir, setting: str | float = "measured"):
    """(value, source) of the sample noise the model is given: (None, None) for a model that does not read it;
    the run's measured value (every shard measured it over the whole run), a given one, or NaN (unknown) for a
    model with unknown_noise where there is no value or `setting` says so."""
    if not getattr(model, "reads_sample_noise", False):
        if setting != "measured":
            raise UserError(f"--sample-noise {setting}: model {model_dir} does not read the sample noise")
        return None, None
    if not isinstance(setting, str):
        return float(setting), "given"
    measured = attrs.get("sample_noise") or {}
    value = measured.get("homopolymer_length_error")
    if setting == "measured" and value is not None:
        return float(value), "measured"
    if not getattr(model, "knows_unknown_noise", False):
        if setting == "unknown":
            raise UserError(f"--sample-noise unknown: model {model_dir} needs the sample noise (it was trained "
                            "without options.unknown_noise)")  # fmt: skip
        raise UserError(f"{shard}: no sample noise ({measured.get('runs', 0)} homopolymer runs measured; made "
                        f"before make-examples measured it, or over too few runs); model {model_dir} reads it: "
                        "remake the examples over larger regions, give --sample-noise, or call with a model that "
                        "does without it")  # fmt: skip
    if setting == "measured":
        log.warning("%s: no sample noise (%d homopolymer runs measured); model %s calls with it unknown", shard,
                    measured.get("runs", 0), model_dir)  # fmt: skip
    return float("nan"), "unknown"


def make_predict(model, micro_batch: int | None = None, temperature: float = 1.0, noise: float = 0.0):
    """(predict, state): `predict(state, x)` is a jitted pure function, uint8 [B, H, W, C] -> softmax [B, 3]
    of the logits divided by `temperature` (the model's calibration, deepflows.nn.calibration); a model that
    reads the sample noise gets `noise` with every example.

    With `micro_batch`, the batch runs as a loop (`lax.map`) over slices of that many examples inside the
    one compiled function: on CPUs the activations of a few examples stay in cache, which measured ~1.9x
    faster than one large convolution over 256 examples; accelerators want the whole batch at once.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from deepflows.nn.models import pileup_logits

    model.eval()  # batch norm uses its running statistics, dropout is off
    graphdef, state = nnx.split(model)

    def forward(state, x):
        logits = pileup_logits(nnx.merge(graphdef, state), x, jnp.full(x.shape[0], noise, jnp.float32))
        return jax.nn.softmax(logits.astype("float32") / temperature, axis=-1)

    @jax.jit
    def predict(state, x):
        if not micro_batch or micro_batch >= x.shape[0]:
            return forward(state, x)
        slices = x.reshape(x.shape[0] // micro_batch, micro_batch, *x.shape[1:])
        return jax.lax.map(lambda xs: forward(state, xs), slices).reshape(x.shape[0], -1)

    return predict, state


def plan_batches(n: int, batch_size: int, micro_batch: int | None) -> tuple[int, int | None]:
    """(batch, micro_batch): the batch is no larger than needed for `n` examples, and a whole number of
    micro-batches."""
    batch = max(1, min(batch_size, n))
    if micro_batch and micro_batch < batch:
        batch = -(-batch // micro_batch) * micro_batch
        return batch, micro_batch
    return batch, None


def predict_batches(predict, state, batches: Iterable[tuple[np.ndarray, int]]) -> Iterator[np.ndarray]:
    """Probabilities per batch (padding dropped). Batches are decoded on a reader thread, and each one is
    dispatched before the previous result is fetched, so reading, computing and writing overlap."""
    pending = None
    for x, valid in _prefetch(batches, depth=2):
        result = predict(state, x)  # asynchronous dispatch
        if pending is not None:
            yield np.asarray(pending[0])[: pending[1]]
        pending = (result, valid)
    if pending is not None:
        yield np.asarray(pending[0])[: pending[1]]


def _copy_meta(group, writer: ProbsWriter, step: int = CHUNK) -> None:
    n = group["inputs"].shape[0]
    for key in META_FIELDS:
        if group[key].shape[0] != n:
            raise UserError(f"{group.store_path}: {key} has {group[key].shape[0]} rows but inputs {n}")
    for lo in range(0, n, step):
        writer.add_meta({key: group[key][lo : lo + step] for key in META_FIELDS})


def _blocks(shards, rows: int) -> Iterator[np.ndarray]:
    """Each shard's inputs in reads of whole Zarr chunks, about `rows` examples at a time."""
    for _, group in shards:
        inputs = group["inputs"]
        n, chunk = inputs.shape[0], inputs.chunks[0]
        step = max(chunk, rows // chunk * chunk)
        for lo in range(0, n, step):
            yield inputs[lo : min(n, lo + step)]


def _batches(blocks: Iterable[np.ndarray], batch: int, shape: tuple) -> Iterator[tuple[np.ndarray, int]]:
    """(array [batch, *shape] uint8, valid rows): blocks regrouped into fixed-size batches across shard
    boundaries; the last one zero-padded."""
    out, filled = np.empty((batch, *shape), dtype=np.uint8), 0
    for block in blocks:
        pos = 0
        while pos < len(block):
            take = min(batch - filled, len(block) - pos)
            out[filled : filled + take] = block[pos : pos + take]
            filled, pos = filled + take, pos + take
            if filled == batch:
                yield out, batch
                out, filled = np.empty((batch, *shape), dtype=np.uint8), 0
    if filled:
        out[filled:] = 0
        yield out, filled


def _prefetch(items: Iterable, depth: int) -> Iterator:
    """Iterate `items` on a background thread, at most `depth` ahead; its exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            put(err)

    thread = threading.Thread(target=worker, name="call-variants-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
