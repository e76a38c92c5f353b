"""Forward speed of DeepLab (MobileNetV2) on this machine's CPU, ours against XLA's own depthwise convolution, and
whether it can keep up with the Augmented Reality Microscope (>= 10 frames/s).

    nice python bench/segment_speed.py [--heads v3plus,v3,fcn] [--output-stride 16] [--channels 3] [--repeats 7]
                                       [--sizes 1024x768,512x384,320x240] [--json bench/out/segment_speed.json]

Jitted, batch 1, eval mode, one warm-up call (the compilation) per size, then the median of `repeats` calls.
- ours: the model as shipped, depthwise convolutions as sums of shifted copies (deepflows.imaging.segment.mobilenet);
- peer: the same weights with XLA's grouped convolution (`feature_group_count`), what nnx.Conv runs by itself.
The AR microscope runs the model on each 1024x768 frame resized to 320x240 (`deepflows arm --inference-size`).
The figures depend on the cores JAX may use (all of them by default) and on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT

from deepflows.imaging.segment import mobilenet
from deepflows.nn.models import build_model


def grouped(x, kernel, stride: int, dilation: int):
    """The peer: XLA's grouped convolution, torch's padding."""
    pad = dilation * (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                        rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])  # fmt: skip


def median_ms(model, x, repeats: int) -> float:
    forward = nnx.jit(lambda m, x: m(x))
    forward(model, x).block_until_ready()  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(model, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default="v3plus,v3,fcn")
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16))
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default="1024x768,512x384,320x240")
    parser.add_argument("--json", default=str(OUT / "segment_speed.json"))
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print(f"DeepLab, output stride {args.output_stride}, {args.channels} channels, batch 1, "
          f"{jax.devices()[0].platform} with {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| head | input (W x H) | ours ms | ours frames/s | peer (grouped conv) ms | peer/ours |")
    print("|---|---|---|---|---|---|")
    ours_depthwise, rows = mobilenet.depthwise, []
    for head in args.heads.split(","):
        model = build_model("deeplab", {"head": head, "output_stride": args.output_stride}, args.channels, 0)
        model.eval()
        for w, h in sizes:
            x = np.random.default_rng(0).random((1, h, w, args.channels), np.float32)
            mobilenet.depthwise = ours_depthwise
            ours = median_ms(model, x, args.repeats)
            mobilenet.depthwise = grouped
            peer = median_ms(model, x, args.repeats)
            mobilenet.depthwise = ours_depthwise
            rows.append({"head": head, "width": w, "height": h, "ours_ms": round(ours, 1), "peer_ms": round(peer, 1)})
            print(f"| {head} | {w} x {h} | {ours:.0f} | {1000 / ours:.1f} | {peer:.0f} | {peer / ours:.1f} |",
                  flush=True)  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"output_stride": args.output_stride, "channels": args.channels,
                                           "cpus": os.cpu_count(), "rows": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
