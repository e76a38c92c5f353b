#!/usr/bin/env python3
"""Load on `deepflows serve`: 32 concurrent clients asking Talk to Books questions for a minute.

    python bench/text_serve_load.py [--index DIR] [--model DIR] [--clients 32] [--seconds 60] [--warmup 20]
                                    [--out bench/out/text_serve_load.json]

Starts the real server (`deepflows serve`, its own process, on a free 127.0.0.1 port) on the given index, or on a
tiny index of two made-up books built by the real stages when none is given. Each client (httpx, asyncio) sends its
next request as soon as the last one is answered: POST /api/search with a question drawn from a fixed list (one
request in five within one book, as "more from this book" does). A warm-up of the same load comes first (the
encoder compiles one forward pass per batch and length shape) and is not counted. Reports queries/s, p50/p90/p99
latency, errors (any answer but 200, or none), and the server's resident memory sampled every 0.5 s: the mean of
the first 10 s against the last 10 s (flat memory: no growth under steady load). Prints JSON, then Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT, deepflows

# Questions and statements of the kind Talk to Books takes; not drawn from any evaluation set.
QUESTIONS = [
    "Is it wise to marry for money?", "What makes a good friend?", "I am afraid of being alone.",
    "How should a young woman behave at a ball?", "Why do people gossip about their neighbours?",
    "Pride can ruin a family.", "What is the value of patience?", "Letters can change everything.",
    "Should children obey their parents?", "Money cannot buy happiness.", "Who inherits the estate?",
    "How do you know you are in love?", "The weather kept us indoors all week.", "Is it wrong to be proud?",
    "What do sailors do in wartime?", "A walk in the country clears the mind.", "Why was she so unhappy?",
    "Forgive those who wrong you.", "How do I tell him the truth?", "Where is the best place to live?",
    "The rich are not always kind.", "What happens after death?", "I regret what I said yesterday.",
    "A mother worries about her daughters.", "Is reading novels a waste of time?", "The king was angry.",
    "Who shall deliver me from this sorrow?", "Music makes an evening pleasant.", "Why do brothers quarrel?",
    "She refused his proposal.", "How much is a good income?", "The letter arrived too late.",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, model: str | None, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [deepflows(), "serve", "--index", str(index), "--port", str(port)] + (["--model", model] if model else [])
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"the server did not answer /api/health in 300 s:\n{log.read_text()[-3000:]}")


async def load(url: str, clients: int, seconds: float, books: list[str], seed: int) -> dict:
    latencies, errors, statuses = [], 0, {}

    async def client(http: httpx.AsyncClient, rng: random.Random, deadline: float):
        nonlocal errors
        while time.monotonic() < deadline:
            body = {"query": rng.choice(QUESTIONS), "k": 10}
            if books and rng.random() < 0.2:
                body["book_id"] = rng.choice(books)
            start = time.perf_counter()
            try:
                response = await http.post(f"{url}/api/search", json=body)
                status = response.status_code
                ok = status == 200 and response.json()["hits"]
            except httpx.HTTPError as err:
                status, ok = type(err).__name__, False
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        deadline = time.monotonic() + seconds
        began = time.perf_counter()
        await asyncio.gather(*(client(http, random.Random(seed + i), deadline) for i in range(clients)))
        wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "wall_s": round(wall, 2), "queries_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
            "errors": errors, "statuses": {str(k): v for k, v in statuses.items()}}  # fmt: skip


class RssSampler(threading.Thread):
    """The server process's resident memory every `every` seconds, with the time of each sample."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.process, self.every, self.samples, self.running = psutil.Process(pid), every, [], True

    def run(self):
        start = time.monotonic()
        while self.running:
            self.samples.append((time.monotonic() - start, self.process.memory_info().rss / 2**20))
            time.sleep(self.every)

    def summary(self, window: float = 10.0) -> dict:
        t = np.array([s[0] for s in self.samples])
        rss = np.array([s[1] for s in self.samples])
        first, last = rss[t <= t[0] + window], rss[t >= t[-1] - window]
        starts = np.arange(t[0], t[-1] - window + self.every, window)  # whole windows only
        windows = [rss[(t >= start) & (t < start + window)] for start in starts]
        return {"rss_first_10s_mb": round(float(first.mean()), 1), "rss_last_10s_mb": round(float(last.mean()), 1),
                "rss_growth_mb": round(float(last.mean() - first.mean()), 1),
                "rss_max_mb": round(float(rss.max()), 1), "rss_samples": len(rss),
                "rss_per_10s_mb": [round(float(w.mean()), 1) for w in windows if len(w)]}  # fmt: skip


def tiny_index(work: Path) -> Path:
    """Two made-up books through the real stages (sentences, embeddings, index): the default load target."""
    sys.path.insert(0, str(ROOT / "tests"))
    from text_books import build_tiny_index

    return build_tiny_index(work)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, help="a built sentence index (default: a tiny one, built here)")
    p.add_argument("--model", help="the encoder model directory the index was built with")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--warmup", type=float, default=20, help="seconds of the same load first, not counted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT / "text_serve_load.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="text-serve-load-") as tmp:
        index = args.index or tiny_index(Path(tmp))
        process, url = start_server(index, args.model, Path(tmp) / "server.log")
        try:
            health = httpx.get(f"{url}/api/health").json()
            books = [b["book_id"] for b in httpx.get(f"{url}/api/books").json()["books"]]
            if args.warmup:
                asyncio.run(load(url, args.clients, args.warmup, books, args.seed + 10_000))
            sampler = RssSampler(process.pid)
            sampler.start()
            result = asyncio.run(load(url, args.clients, args.seconds, books, args.seed))
            sampler.running = False
            sampler.join()
        finally:
            process.terminate()
            process.wait(timeout=30)
    report = {"index": str(args.index or "tiny (2 made-up books)"), "sentences": health["sentences"],
              "books": health["books"], "encoder": health["encoder"], "clients": args.clients,
              "seconds": args.seconds, "cpus": os.cpu_count(), **result, **sampler.summary()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\n| index | sentences | clients | s | queries/s | p50 ms | p99 ms | errors | RSS first 10 s MB | "
          f"RSS last 10 s MB |\n|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {report['index']} | {report['sentences']:,} | {args.clients} | {args.seconds:.0f} | "
          f"{report['queries_per_s']} | {report['p50_ms']} | {report['p99_ms']} | {report['errors']} | "
          f"{report['rss_first_10s_mb']} | {report['rss_last_10s_mb']} |")  # fmt: skip
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
