"""`deepflows arm`: the Augmented Reality Microscope's live loop, from the command line.

    deepflows arm --source slide:PATH|video:PATH|camera:N [--model classical|DIR] [--serve PORT]
                  [--record OUT.mp4] [--csv OUT.csv] [--show] [--duration S] [--max-frames N]
                  [--size 1024x768] [--fps 15] [--heatmap] [--threshold 0.5] [--seed 0] [--magnification X]

`slide:PATH` is a simulated microscope panning and zooming (4x-40x) over an SVS/TIFF or an OME-Zarr image
(deepflows.imaging.arm.sources); `--size` and `--seed` apply to it. Videos and cameras keep their own frame
size; `--fps` replaces their frame rate. `--model classical` is the built-in haematoxylin segmenter
(deepflows.imaging.arm.classical); a directory is a trained model (deepflows.imaging.segment.predict).

It runs until `--duration`, `--max-frames`, the video's end or Ctrl-C; a run stopped by Ctrl-C keeps its
recording. `--record` and `--csv` are renamed into place at the end; a failed run leaves neither.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from deepflows.arguments import at_least, positive_float, positive_int, seed
from deepflows.errors import UserError
from deepflows.outputs import check_new_output

log = logging.getLogger("deepflows.arm")
DEFAULT_FPS = 15.0  # the simulated microscope's camera


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: WIDTHxHEIGHT, each 16 to 8192 pixels."""
    found = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not found or not all(16 <= int(v) <= 8192 for v in found.groups()):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, each 16 to 8192 pixels, e.g. 1024x768; not {text!r}")
    return int(found.group(1)), int(found.group(2))


def port(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text}")
    return value


def probability(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True,
                   help="slide:PATH (SVS/TIFF or OME-Zarr, simulated microscope), video:PATH, or camera:N")  # fmt: skip
    p.add_argument("--model", default="classical",
                   help="'classical' (haematoxylin-dense regions, no training) or a segmentation model directory")
    p.add_argument("--serve", type=port, help="stream the live view to http://127.0.0.1:PORT/ (0: any free port)")
    p.add_argument("--record", help="write the overlaid frames to this MP4 (must not exist)")
    p.add_argument("--csv", help="write one row of detections per shown frame to this CSV (must not exist)")
    p.add_argument("--show", action="store_true", help="show an OpenCV window (needs an OpenCV with a GUI)")
    p.add_argument("--duration", type=positive_float, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many shown frames")
    p.add_argument("--size", type=frame_size, default=(1024, 768),
                   help="simulated camera frame, WxH (default 1024x768)")
    p.add_argument("--fps", type=positive_float,
                   help=f"camera frame rate (default: the video's; {DEFAULT_FPS:g} for slides)")
    p.add_argument("--heatmap", action="store_true", help="tint the frame by the probability under the contours")
    p.add_argument("--threshold", type=probability, default=0.5, help="probability outlined (default 0.5)")
    p.add_argument("--seed", type=seed, default=0, help="the simulated microscope's pan and zoom path (default 0)")
    p.add_argument("--inference-size", type=frame_size, default=(320, 240),
                   help="WxH a model directory's network sees each frame at (default 320x240: >= 10 fps on 2 CPU "
                        "cores; the probabilities are resized back to the frame)")  # fmt: skip
    p.add_argument("--magnification", type=positive_float,
                   help="the slide's native magnification (default: from the file, else 20)")


def open_source(spec: str, size: tuple[int, int], fps: float | None, path_seed: int, native: float | None):
    from deepflows.imaging.arm.sources import CameraSource, SlideSource, VideoFileSource

    kind, _, where = spec.partition(":")
    if kind == "slide" and where:
        return SlideSource.open(where, native, size=size, fps=fps or DEFAULT_FPS, seed=path_seed)
    if kind == "video" and where:
        return VideoFileSource(where, fps=fps)
    if kind == "camera" and where.isdigit():
        return CameraSource(int(where), fps=fps)
    raise UserError(f"--source {spec}: expected slide:PATH, video:PATH or camera:N")


def load_model(model: str, inference_size: tuple[int, int] = (320, 240)):
    """The segmenter named by --model."""
    if model == "classical":
        from deepflows.imaging.arm.classical import haematoxylin_score

        return haematoxylin_score
    if Path(model).is_dir():
        from deepflows.imaging.segment.predict import load_segmenter

        return load_segmenter(model, inference_size=inference_size)
    raise UserError(f"--model {model}: neither 'classical' nor a model directory")


def run(args: argparse.Namespace) -> None:
    from deepflows.imaging.arm.loop import run_arm
    from deepflows.imaging.arm.sinks import CsvRecorder, MjpegServer, Mp4Recorder, WindowSink

    if args.record:
        check_new_output(args.record, "--record", ".mp4", "an MP4 video")
    if args.csv:
        check_new_output(args.csv, "--csv", ".csv", "a CSV table")
    if args.record and (args.size[0] % 2 or args.size[1] % 2) and args.source.startswith("slide:"):
        raise UserError(f"--size {args.size[0]}x{args.size[1]}: a recorded video needs an even width and height")
    segmenter = load_model(args.model, args.inference_size)
    segmenter(np.zeros((args.size[1], args.size[0], 3), np.uint8))  # imports and compilation before the clock runs
    source = open_source(args.source, args.size, args.fps, args.seed, args.magnification)
    sinks, ok = [], False
    try:
        if args.show:
            sinks.append(WindowSink())
        if args.serve is not None:
            sinks.append(MjpegServer(args.serve, title=args.source))
            log.info("live view at %s", sinks[-1].url)
        if args.record:
            sinks.append(Mp4Recorder(args.record, source.fps))
        if args.csv:
            sinks.append(CsvRecorder(args.csv))
        stats = run_arm(source, segmenter, sinks, threshold=args.threshold, heatmap=args.heatmap,
                        duration=args.duration, max_frames=args.max_frames)  # fmt: skip
        ok = bool(stats.records)  # no frame shown: no outputs either
    finally:
        for sink in sinks:
            sink.close(ok)
        source.close()
    summary = stats.summary()
    if not summary["frames"]:
        raise UserError(f"--source {args.source}: no frame was shown")
    log.info("%d frames in %.1f s: %.1f fps, latency p50 %.0f ms, p95 %.0f ms, inference %.1f ms, %.1f%% dropped",
             summary["frames"], summary["seconds"], summary["fps"], summary["latency_p50_ms"],
             summary["latency_p95_ms"], summary["inference_ms"], 100 * summary["drop_rate"])  # fmt: skip
