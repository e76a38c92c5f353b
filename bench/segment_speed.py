"""Forward speed of DeepLab-v3+ (MobileNetV2, output stride 16) on this machine's CPU: can it keep up with the
Augmented Reality Microscope (>= 10 frames/s at 1024 x 768)?

    nice python bench/segment_speed.py [--head v3plus] [--output-stride 16] [--channels 3] [--repeats 5]

Jitted, batch 1, eval mode, one warm-up call (the compilation) per size, then the median of `repeats` calls.
The figures depend on the cores JAX may use (all of them by default) and on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np
from flax import nnx

from deepflows.nn.models import build_model

SIZES = ((768, 1024), (384, 512))  # height, width: the microscope's camera frame and half of it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", default="v3plus", choices=("fcn", "v3", "v3plus"))
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16))
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = build_model("deeplab", {"head": args.head, "output_stride": args.output_stride}, args.channels, 0)
    model.eval()
    forward = nnx.jit(lambda m, x: m(x))
    print(f"DeepLab {args.head}, output stride {args.output_stride}, {args.channels} channels, batch 1, "
          f"{jax.devices()[0].platform} with {os.cpu_count()} CPUs")  # fmt: skip
    print("| input (W x H) | median ms | frames/s |\n|---|---|---|")
    for h, w in SIZES:
        x = np.random.default_rng(0).random((1, h, w, args.channels), np.float32)
        forward(model, x).block_until_ready()  # compiles
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward(model, x).block_until_ready()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"| {w} x {h} | {median * 1000:.0f} | {1 / median:.1f} |")


if __name__ == "__main__":
    main()
