"""Training and inference speed of the pileup classifiers on this machine's default JAX device.

    python bench/train_speed.py [--batch 64] [--steps 5] [--json bench/out/train_speed.json]

Measures, on [batch, 100, 221, 7] uint8 pileups:
- train step (forward, backward, AdamW update; the jitted step `deepflows train` runs) of small_cnn:
  steps/s and examples/s, after one compiling call;
- forward pass (inference, as call-variants runs it) of small_cnn and full-size inception_v3: examples/s;
- the data pipeline alone (deepflows.nn.data.BatchStream over a synthetic store on local disk, Zarr
  chunks of 64, Blosc-zstd): examples/s it can feed;
- `deepflows train` end to end on that store (small_cnn, a few steps): examples/s from its metrics.
Prints a Markdown table and writes the figures as JSON. CPU figures depend on the cores JAX may use
(all of them by default) and on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (100, 221, 7)


def timed(fn, repeats: int) -> float:
    """Mean seconds per call of fn() over `repeats` calls (after the caller's warm-up)."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def pileups(rng, n: int) -> np.ndarray:
    """Pileup-like images: constant-ish rows (reads) over a background of zeros, so they compress like real ones."""
    images = np.zeros((n, *SHAPE), np.uint8)
    for i in range(n):
        depth = rng.integers(20, 95)
        images[i, : 5 + depth] = rng.choice([30, 100, 180, 250], size=(5 + depth, 1, SHAPE[2]))
        images[i, : 5 + depth, :, 1] = rng.integers(0, 254, size=(5 + depth, SHAPE[1]))
    return images


def bench_train_step(batch: int, steps: int) -> dict:
    import jax
    import optax
    from flax import nnx

    from deepflows.nn.loop import train_step
    from deepflows.nn.models import build_model
    from deepflows.nn.task import key_per_step
    from deepflows.nn.train import pileup_loss

    model = build_model("small_cnn", {}, SHAPE[2], 0)
    model.train()
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3, weight_decay=1e-4), wrt=nnx.Param)
    step = nnx.cached_partial(train_step(pileup_loss, key_per_step), model, optimizer)
    rng = np.random.default_rng(0)
    images, labels = pileups(rng, batch), rng.integers(0, 3, batch).astype(np.int32)
    noise = np.zeros(batch, np.float32)  # the sample noise, which small_cnn does not read
    weights, smoothing = np.ones(3, np.float32), np.float32(0)

    def one(k=[0]):  # noqa: B006 (a counter)
        k[0] += 1
        loss, _ = step((images, labels, noise), (weights, smoothing), np.array([0, k[0]], np.uint32))
        jax.block_until_ready(loss)

    t0 = time.perf_counter()
    one()
    compile_s = time.perf_counter() - t0
    seconds = timed(one, steps)
    return {"what": "train step small_cnn", "batch": batch, "compile_s": round(compile_s, 2),
            "steps_per_s": round(1 / seconds, 3), "examples_per_s": round(batch / seconds, 1)}  # fmt: skip


def bench_forward(architecture: str, batch: int, repeats: int) -> dict:
    import jax
    from flax import nnx

    from deepflows.nn.models import build_model

    t0 = time.perf_counter()
    model = build_model(architecture, {}, SHAPE[2], 0)
    build_s = time.perf_counter() - t0
    model.eval()
    forward = nnx.cached_partial(nnx.jit(lambda m, x: m(x)), model)
    images = pileups(np.random.default_rng(1), batch)
    t0 = time.perf_counter()
    jax.block_until_ready(forward(images))
    compile_s = time.perf_counter() - t0
    seconds = timed(lambda: jax.block_until_ready(forward(images)), repeats)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return {"what": f"forward {architecture}", "batch": batch, "parameters": params, "build_s": round(build_s, 2),
            "compile_s": round(compile_s, 2), "examples_per_s": round(batch / seconds, 1)}  # fmt: skip


def make_store(root: Path, n: int) -> Path:
    from deepflows.store.examples import ShardWriter
    from deepflows.store.shuffle import shuffle_examples

    rng = np.random.default_rng(2)
    attrs = {"sample": "bench", "channels": [f"c{i}" for i in range(SHAPE[2])], "shape": list(SHAPE),
             "shard_index": 0, "shard_count": 1, "regions": ["c1:1-1000000"],
             "sources": {"reads": {"path": "bench.bam", "size": 1, "sha256": "bench"}}}  # fmt: skip
    shard = root / "bench.shard.zarr"
    images = pileups(rng, 256)
    with ShardWriter(shard, SHAPE, attrs, labelled=True) as writer:
        for i in range(n):
            writer.add(images[i % 256], label=int(rng.integers(0, 3)), contig="c1", start=10 * i, end=10 * i + 1,
                       ref="A", alts="G", alt_indices="0", depth=30, allele_depth="15,15")  # fmt: skip
        writer.commit({"stats": {}})
    store = root / "bench.zarr"
    shuffle_examples([shard], store, tune_regions=[f"c1:1-{10 * n // 10}"], seed=0, bucket_size=1024)
    return store


def bench_pipeline(store: Path, batch: int, batches: int) -> dict:
    from deepflows.nn.data import BatchStream, open_split

    stream = BatchStream(open_split(store, "train"), batch, seed=0, window_chunks=16)
    it = stream.batches(0)
    next(it)
    seconds = timed(lambda: next(it), batches)
    return {"what": "data pipeline (BatchStream, 16-chunk buffer)", "batch": batch,
            "examples_per_s": round(batch / seconds, 1)}  # fmt: skip


def bench_end_to_end(store: Path, batch: int, steps: int, workdir: Path) -> dict:
    from deepflows.nn.train import train

    config = {"model": {"architecture": "small_cnn"},
              "training": {"batch_size": batch, "steps": steps, "log_every": 1, "checkpoint_every": steps},
              "evaluation": {"every": 0}}  # fmt: skip
    t0 = time.perf_counter()
    train(store, config, workdir)
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    steady = [r["examples_per_s"] for r in records[1:]]  # the first step includes compilation
    return {"what": "deepflows train small_cnn (end to end)", "batch": batch, "steps": steps,
            "wall_s": round(wall, 1), "examples_per_s": round(float(np.median(steady)), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed train steps / forward passes (default 5)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "out" / "train_speed.json"))
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()

    import jax

    device = jax.devices()[0]
    rows = [bench_train_step(args.batch, args.steps),
            bench_forward("small_cnn", args.batch, args.steps),
            bench_forward("inception_v3", args.batch, max(2, args.steps // 2))]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="train_speed-"))
    try:
        store = make_store(tmp, 4096)
        rows.append(bench_pipeline(store, args.batch, 30))
        if not args.skip_end_to_end:
            rows.append(bench_end_to_end(store, args.batch, args.steps + 2, tmp / "run"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"device": f"{device.platform}:{device.device_kind}", "devices": len(jax.devices()),
              "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "jax": jax.__version__, "input_shape": list(SHAPE), "rows": rows}  # fmt: skip
    print(f"device {result['device']} x{result['devices']}, {result['cpu_count']} CPUs, jax {result['jax']}\n")
    print("| measurement | batch | steps/s | examples/s | compile s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['batch']} | {r.get('steps_per_s', '')} | {r['examples_per_s']} "
              f"| {r.get('compile_s', '')} |")  # fmt: skip
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{out}", file=sys.stderr)


if __name__ == "__main__":
    main()
