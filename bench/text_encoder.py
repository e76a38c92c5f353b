#!/usr/bin/env python3
"""The Flax port of all-MiniLM-L6-v2 against our plain NumPy forward of the same weights: STS-B test Spearman of
both, the cosine between their embeddings of 100 STS-B sentences, and sentences per second of each.

    python bench/text_encoder.py [--sts ../shared/data/text/stsbenchmark] [--repeats 3]

The reference figure is the model card's 82.0 (STS-B test). Speed: the 100 sentences, encoded --repeats times
after a warm-up call (the port's jit compilation is not counted); the median is printed. JSON to
bench/out/text_encoder.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"


def rate(encode, texts, repeats: int) -> float:
    encode(texts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times)


def main() -> None:
    from deepflows.text.encoder import load_encoder
    from deepflows.text.encoder.reference import NumpyMiniLM
    from deepflows.text.encoder.sts import read_sts, sts_spearman

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sts", type=Path, default=SHARED / "stsbenchmark")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    first, second, gold = read_sts(args.sts / "sts-test.csv")
    port, reference = load_encoder(None), NumpyMiniLM()
    sample = first[:50] + second[:50]
    cosines = (port.encode(sample) * reference.encode(sample)).sum(axis=1)
    result = {
        "stsb_test_pairs": len(gold),
        "stsb_spearman": {"flax_port": sts_spearman(port.encode, first, second, gold),
                          "numpy_reference": sts_spearman(reference.encode, first, second, gold),
                          "model_card": 82.0},
        "cosine_port_vs_reference_100": {"min": float(cosines.min()), "mean": float(cosines.mean())},
        "sentences_per_second": {"flax_port": rate(port.encode, sample, args.repeats),
                                 "numpy_reference": rate(reference.encode, sample, args.repeats)},
    }  # fmt: skip
    speed = result["sentences_per_second"]
    result["speed_ratio_port_over_reference"] = speed["flax_port"] / speed["numpy_reference"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "text_encoder.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["stsb_spearman"]
    print(json.dumps(result, indent=2))
    print("\n| encoder | STS-B test Spearman | sentences/s |\n|---|---|---|")
    print(f"| Flax port (deepflows) | {s['flax_port']:.2f} | {speed['flax_port']:.1f} |")
    print(f"| NumPy reference | {s['numpy_reference']:.2f} | {speed['numpy_reference']:.1f} |")
    print(f"| model card | {s['model_card']:.1f} | |")
    print(f"\nport vs reference on 100 sentences: cosine min {cosines.min():.7f}; speed ratio "
          f"{result['speed_ratio_port_over_reference']:.1f}x")


if __name__ == "__main__":
    main()
