#!/usr/bin/env python3
"""Talk to Books at scale: how fast sentences are embedded, how fast and how well the index answers at 100k, 1M
and 10M sentences, what a million sentences cost in memory and on disk, and what 100,000 books would need.

    python bench/text_index_scale.py [--index results/text/books/index] [--sizes 100000,1000000,10000000]
                                     [--queries 200] [--embed-sentences 1024] [--out bench/out/text_index_scale]

1. Embedding: the sentence encoder (deepflows.text.encoder, all-MiniLM-L6-v2 in JAX on the CPU) on real book
   sentences drawn from the index (after one warm-up call that compiles), sentences/s.
2. Scale: synthetic vectors drawn like the real ones (a Gaussian with the real index's mean and covariance,
   re-normalised to unit length, float16), streamed chunk by chunk into a Zarr array (never whole in memory).
   Per size: the exact top-10 (deepflows.text.index.topk, streaming the chunks) of `--queries` queries drawn the same
   way, the faiss IVF-PQ index built as text-index builds it (deepflows.text.index.ivfpq, default parameters), its
   queries/s (one batch of all queries, and one query at a time) and recall@10 against the exact top-10, alone
   and with its 100 best candidates scored again exactly (their vectors read from the Zarr chunks; 50 queries).
3. The real index: recall@10 of its own IVF-PQ index against exact search, for real sentences as queries.
4. Memory: on disk per million sentences (vectors, IVF-PQ, the real index's metadata and text per sentence);
   RSS of a process holding the IVF-PQ index (a fresh process, minus one that only imported faiss).
5. Projection to 100,000 books of Austen's average sentences per book.
Prints JSON and a Markdown table; writes them under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT  # noqa: E402

DIM, CHUNK = 384, 32768
AUSTEN = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


def embed_speed(index, sentences: int, batch_size: int) -> dict:
    from deepflows.text.encoder import load_encoder

    rng = np.random.default_rng(0)
    rows = rng.choice(len(index), sentences + 256, replace=False)
    texts = [index.hit(r)["text"] for r in rows]
    encoder = load_encoder(None)
    encoder.encode(texts[:256], batch_size)  # compiles the length buckets
    cpu, t0 = time.process_time(), time.perf_counter()
    encoder.encode(texts[256:], batch_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
    return {"sentences": sentences, "batch_size": batch_size, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "sentences_per_s": round(sentences / wall, 1), "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2)}  # fmt: skip


def real_statistics(index) -> tuple[np.ndarray, np.ndarray]:
    vectors = index._group["vectors"][:].astype(np.float64)
    return vectors.mean(axis=0), np.cov(vectors, rowvar=False)


def synthetic_store(path: Path, n: int, mean: np.ndarray, cov: np.ndarray, seed: int):
    """Zarr float16 [n, 384] of unit vectors x / |x|, x ~ N(mean, cov); chunk i drawn from seed (seed, i), so a
    complete store is reused by a rerun. Returns (array, seconds to write or 0 when reused)."""
    import zarr

    from deepflows.text.books.sentence_table import compressors

    if path.exists():
        group = zarr.open_group(str(path), mode="r")
        if group.attrs.get("complete") and group["vectors"].shape == (n, DIM):
            return group["vectors"], 0.0
    factor = np.linalg.cholesky(cov + 1e-9 * np.eye(DIM))
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array("vectors", shape=(n, DIM), chunks=(CHUNK, DIM), dtype=np.float16,
                               compressors=compressors())  # fmt: skip
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, n, CHUNK)):
        array[start : start + CHUNK] = draw(min(CHUNK, n - start), mean, factor, (seed, i))
    group.attrs["complete"] = True
    return array, time.perf_counter() - t0


def draw(n: int, mean: np.ndarray, factor: np.ndarray, seed) -> np.ndarray:
    x = mean + np.random.default_rng(seed).standard_normal((n, DIM)) @ factor.T
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def exact_search(array, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    from deepflows.text.index.topk import exact_topk

    n = array.shape[0]
    blocks = [(s, lambda s=s: array[s : s + CHUNK]) for s in range(0, n, CHUNK)]
    t0 = time.perf_counter()
    _, rows = exact_topk(queries, blocks, CHUNK, k, 0, n)
    return rows, time.perf_counter() - t0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def approx_runs(index, queries: np.ndarray, truth: np.ndarray, nprobes, vectors_of, k: int = 10,
                rerank_queries: int | None = None) -> list[dict]:  # fmt: skip
    """Per nprobe: IVF-PQ alone, and IVF-PQ's 10 x k candidates scored again exactly (their vectors read by
    `vectors_of`, as SentenceIndex does; on the first `rerank_queries` queries only, when given: reading them
    from a streamed store is slow); recall@10 against `truth`, queries/s in one batch, ms for one query."""
    from deepflows.text.index import ivfpq
    from deepflows.text.index.topk import rescore

    def search(q, nprobe, rerank):
        scores, rows = ivfpq.search(index, q, k * rerank, nprobe)
        return rescore(q, rows, vectors_of, k)[1] if rerank > 1 else rows

    runs = []
    for nprobe in nprobes:
        for rerank in (1, 10):
            used = len(queries) if rerank == 1 or rerank_queries is None else rerank_queries
            search(queries[:2], nprobe, rerank)  # warm
            t0 = time.perf_counter()
            rows = search(queries[:used], nprobe, rerank)
            batch = time.perf_counter() - t0
            singles = min(len(queries), 20 if rerank == 1 else 5)  # a re-ranked query may read many chunks
            t0 = time.perf_counter()
            for q in queries[:singles]:
                search(q[None], nprobe, rerank)
            single = (time.perf_counter() - t0) / singles
            runs.append({"nprobe": nprobe, "rerank": rerank, "queries": used,
                         "recall_at_10": round(recall(rows, truth[:used]), 4),
                         "queries_per_s_batch": round(used / batch, 1),
                         "latency_ms_single": round(1000 * single, 2)})  # fmt: skip
    return runs


def held_rss_mb(faiss_file: Path) -> float:
    """RSS of a fresh process holding the faiss index, minus that of one that only imported faiss (VmRSS: a
    child's ru_maxrss starts at its parent's RSS when it forked)."""
    code = "import re, faiss\n{}print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])"
    base = subprocess.run([sys.executable, "-c", code.format("")], capture_output=True, text=True, check=True)
    held = subprocess.run([sys.executable, "-c", code.format(f"index = faiss.read_index({str(faiss_file)!r})\n")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return (int(held.stdout) - int(base.stdout)) / 1024


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def scale_run(n: int, mean, cov, queries, out: Path, nprobes, seed: int) -> dict:
    from deepflows.text.index import ivfpq

    array, write_s = synthetic_store(out / f"vectors-{n}.zarr", n, mean, cov, seed)
    truth, exact_s = exact_search(array, queries, 10)
    params = ivfpq.parameters(n, DIM)
    t0 = time.perf_counter()
    index = ivfpq.build(array, params, CHUNK)
    build_s = time.perf_counter() - t0
    faiss_file = out / f"ivfpq-{n}.faiss"
    ivfpq.write(index, faiss_file)
    result = {"sentences": n, "write_vectors_s": round(write_s, 1),
              "vectors_disk_mb": round(directory_bytes(out / f"vectors-{n}.zarr") / 2**20, 1),
              "exact_s": round(exact_s, 2), "exact_queries_per_s_batch": round(len(queries) / exact_s, 2),
              "ivfpq": {k: params[k] for k in ("nlist", "m", "bits", "train_size")},
              "ivfpq_build_s": round(build_s, 1), "ivfpq_disk_mb": round(faiss_file.stat().st_size / 2**20, 1),
              "ivfpq_rss_mb": round(held_rss_mb(faiss_file), 1),
              "approx": approx_runs(index, queries, truth, nprobes, lambda rows: array.oindex[rows],
                                    rerank_queries=50)}  # fmt: skip
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def real_index_run(index, nprobes, queries: int) -> dict:
    if index._approx is None:
        return {}
    rows = np.random.default_rng(1).choice(len(index), queries, replace=False)
    vectors = index._group["vectors"].oindex[np.sort(rows)].astype(np.float32)
    _, truth = index.search(vectors, 10, exact=True)
    return {"sentences": len(index), "ivfpq": {k: index.approximate[k] for k in ("nlist", "m", "bits")},
            "approx": approx_runs(index._approx, vectors, truth, nprobes, index.vectors_of)}  # fmt: skip


def per_million(index_path: Path, n_real: int, scale: list[dict]) -> dict:
    store = index_path / "sentences.zarr"
    vectors = directory_bytes(store / "vectors")
    metadata = directory_bytes(store) - vectors
    biggest = max(scale, key=lambda r: r["sentences"]) if scale else None
    out = {"metadata_and_text_disk_mb": round(metadata / n_real * 1e6 / 2**20, 1),
           "vectors_disk_mb_real": round(vectors / n_real * 1e6 / 2**20, 1)}  # fmt: skip
    if biggest:
        m = 1e6 / biggest["sentences"]
        out.update(vectors_disk_mb=round(biggest["vectors_disk_mb"] * m, 1),
                   ivfpq_disk_mb=round(biggest["ivfpq_disk_mb"] * m, 1),
                   ivfpq_rss_mb=round(biggest["ivfpq_rss_mb"] * m, 1),
                   exact_s_per_query_batch=round(biggest["exact_s"] * m, 2))  # fmt: skip
    out["metadata_rss_mb"] = round(20 * 1e6 / 2**20, 1)  # SentenceIndex holds 4+8+8 bytes a sentence in memory
    return out


def projection(index, mem: dict, embed: dict | None, books: int = 100_000) -> dict:
    austen = [b for b in index.books() if b["book_id"] in AUSTEN]
    per_book = sum(b["sentences"] for b in austen) / max(1, len(austen))
    n = per_book * books
    millions = n / 1e6
    out = {"books": books, "sentences_per_book": round(per_book), "sentences": int(n)}
    out["disk_gb"] = round(millions * (mem.get("vectors_disk_mb", mem["vectors_disk_mb_real"])
                                       + mem.get("ivfpq_disk_mb", 0) + mem["metadata_and_text_disk_mb"]) / 1024, 1)
    out["ivfpq_rss_gb"] = round(millions * mem.get("ivfpq_rss_mb", 0) / 1024, 1)
    out["metadata_rss_gb"] = round(millions * mem["metadata_rss_mb"] / 1024, 1)
    if embed:
        out["embed_days_on_2_cores"] = round(n / embed["sentences_per_s"] / 86400, 1)
    if "exact_s_per_query_batch" in mem:
        out["exact_search_s_per_batch"] = round(millions * mem["exact_s_per_query_batch"])
    return out


def markdown(result: dict) -> str:
    lines = []
    if result.get("embed"):
        e = result["embed"]
        lines += ["| embedding | sentences | batch | wall s | CPU s | sentences/s | load avg |", "|---|---:|---:|---:|---:|---:|---:|",
                  f"| all-MiniLM-L6-v2, JAX CPU ({e['cpus']} cores) | {e['sentences']} | {e['batch_size']} | {e['wall_s']} "
                  f"| {e['cpu_s']} | {e['sentences_per_s']} | {e['load_average_1min']} |", ""]  # fmt: skip
    lines += ["| sentences | exact q/s (batch) | IVF-PQ nlist/m | build s | nprobe | rerank | recall@10 | q/s (batch) "
              "| ms/query (single) | vectors disk MB | IVF-PQ disk MB | IVF-PQ RSS MB |",
              "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["scale"]:
        for a in r["approx"]:
            lines.append(f"| {r['sentences']:,} | {r['exact_queries_per_s_batch']} | {r['ivfpq']['nlist']}/{r['ivfpq']['m']} "
                         f"| {r['ivfpq_build_s']} | {a['nprobe']} | {a['rerank']} | {a['recall_at_10']} | {a['queries_per_s_batch']} "
                         f"| {a['latency_ms_single']} | {r['vectors_disk_mb']} | {r['ivfpq_disk_mb']} | {r['ivfpq_rss_mb']} |")  # fmt: skip
    if result.get("real"):
        r = result["real"]
        for a in r["approx"]:
            lines.append(f"| {r['sentences']:,} (real books) | - | {r['ivfpq']['nlist']}/{r['ivfpq']['m']} | - "
                         f"| {a['nprobe']} | {a['rerank']} | {a['recall_at_10']} | {a['queries_per_s_batch']} | {a['latency_ms_single']} "
                         "| - | - | - |")  # fmt: skip
    lines += ["", "| per million sentences | MB |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in result["per_million"].items()]
    lines += ["", "| 100,000 books | |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in result["projection"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "results" / "text" / "books" / "index")
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", default="16,64")
    parser.add_argument("--embed-sentences", type=int, default=1024, help="0: skip the embedding measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT / "text_index_scale")
    args = parser.parse_args()
    from deepflows.text.index import SentenceIndex

    args.out.mkdir(parents=True, exist_ok=True)
    index = SentenceIndex.open(args.index)
    nprobes = [int(v) for v in args.nprobe.split(",")]
    result = {"index": str(args.index), "real_sentences": len(index)}
    result["embed"] = embed_speed(index, args.embed_sentences, args.batch_size) if args.embed_sentences else None
    print(json.dumps(result), file=sys.stderr, flush=True)
    result["real"] = real_index_run(index, nprobes, args.queries)
    mean, cov = real_statistics(index)
    factor = np.linalg.cholesky(cov + 1e-9 * np.eye(DIM))
    queries = draw(args.queries, mean, factor, (args.seed, 10**6)).astype(np.float32)  # no chunk has seed 10**6
    sizes = [int(v) for v in args.sizes.split(",") if v]
    result["scale"] = [scale_run(n, mean, cov, queries, args.out, nprobes, args.seed) for n in sizes]
    result["per_million"] = per_million(args.index, len(index), result["scale"])
    result["projection"] = projection(index, result["per_million"], result["embed"])
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "result.md").write_text(table + "\n")
    print(json.dumps(result, indent=2))
    print(table)


if __name__ == "__main__":
    main()
