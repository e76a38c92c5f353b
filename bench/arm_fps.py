"""The ARM loop's frame rate and latency on the simulated microscope, against a naive single-threaded loop.

    python bench/arm_fps.py [--seconds 20] [--model DIR|classical] [--fps 15] [--size 1024x768]
                            [--inference-size 320x240] [--slide PATH] [--json bench/out/arm_fps.json]

Both loops run in this process, one after the other, for --seconds each, over the same simulated microscope
(deepflows.imaging.arm.sources.SlideSource: CMU-1-Small-Region, 20x, panning and zooming 4x-40x, the same
seeded path) with the same segmenter and the same drawing, and no sink (what is measured is the loop):
- ours: `run_arm`, capture / inference / drawing threads with one-slot mailboxes, a camera paced by the wall
  clock (frames the loop is too slow for are dropped);
- peer: `run_naive`, capture -> infer -> draw in sequence on every frame of a camera that buffers them all.
--model defaults to the shipped segmentation model (resources/models/segment-he-regions) and falls back to the built-in
`classical` segmenter, saying so, when it is not there. Prints fps delivered, end-to-end latency p50/p95,
inference ms and drop rate for both, and ours/peer ratios, as Markdown; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT

MODEL = ROOT / "resources" / "models" / "segment-he-regions"
SLIDE = ROOT.parent / "shared" / "data" / "imaging" / "histology" / "cmu_small_region.svs"


def main() -> None:
    from deepflows.imaging.arm.cli import frame_size, load_model
    from deepflows.imaging.arm.loop import run_arm, run_naive
    from deepflows.imaging.arm.sources import SlideSource

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="run time of each loop (default 20)")
    parser.add_argument("--model", default=str(MODEL), help=f"model directory or 'classical' (default {MODEL})")
    parser.add_argument("--fps", type=float, default=15.0, help="the simulated camera's frame rate (default 15)")
    parser.add_argument("--size", type=frame_size, default=(1024, 768), help="frame WxH (default 1024x768)")
    parser.add_argument("--inference-size", type=frame_size, default=(320, 240),
                        help="WxH the model sees each frame at (default 320x240)")
    parser.add_argument("--slide", default=str(SLIDE), help="SVS/TIFF or OME-Zarr slide (default CMU-1-Small-Region)")
    parser.add_argument("--json", default=str(OUT / "arm_fps.json"), help="where to write the figures")
    args = parser.parse_args()
    model = args.model
    if model != "classical" and not Path(model).is_dir():
        print(f"note: no model at {model}; measuring the built-in 'classical' segmenter instead", file=sys.stderr)
        model = "classical"
    segmenter = load_model(model, args.inference_size)
    warm = SlideSource.open(args.slide, size=args.size, paced=False)
    segmenter(warm.render(warm.view(0)))  # first-call costs (imports, compilation) are not the loop's

    results = {}
    for who, loop, paced in (("ours", run_arm, True), ("peer", run_naive, False)):
        source = SlideSource.open(args.slide, size=args.size, fps=args.fps, paced=paced)
        summary = loop(source, segmenter, duration=args.seconds).summary()
        results[who] = {k: summary[k] for k in ("frames", "seconds", "fps", "latency_p50_ms", "latency_p95_ms",
                                                  "inference_ms", "drop_rate")}  # fmt: skip
    ours, peer = results["ours"], results["peer"]
    report = {
        "model": model, "slide": args.slide, "size": "x".join(map(str, args.size)), "camera_fps": args.fps,
        "inference_size": "x".join(map(str, args.inference_size)),
        "seconds": args.seconds, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "loops": results,
        "ratio_fps": round(ours["fps"] / peer["fps"], 2),
        "ratio_latency_p50": round(ours["latency_p50_ms"] / peer["latency_p50_ms"], 3),
        "ratio_latency_p95": round(ours["latency_p95_ms"] / peer["latency_p95_ms"], 3),
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"model {model} (sees {report['inference_size']}), {report['size']} frames, camera {args.fps:g} fps, "
          f"{args.seconds:g} s each, "
          f"{report['machine']}\n")  # fmt: skip
    print("| loop | frames | fps | latency p50 ms | latency p95 ms | inference ms | drop rate |")
    print("|---|---|---|---|---|---|---|")
    for who, r in results.items():
        print(f"| {who} | {r['frames']} | {r['fps']} | {r['latency_p50_ms']} | {r['latency_p95_ms']} | "
              f"{r['inference_ms']} | {r['drop_rate']} |")  # fmt: skip
    print(f"\nours/peer: {report['ratio_fps']}x the fps, {report['ratio_latency_p50']}x the median latency, "
          f"{report['ratio_latency_p95']}x the p95 latency")  # fmt: skip


if __name__ == "__main__":
    main()
