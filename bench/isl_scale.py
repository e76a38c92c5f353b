#!/usr/bin/env python3
"""In Silico Labeling at scale: a synthetic SIZE x SIZE x 13-plane stack, tiled from the real well, predicted
tile by tile through Dask; tiles/s and peak memory of isl-predict beside the ridge baseline's prediction.

    python bench/isl_scale.py --well results/isl/condition_blue_sample/well.ome.zarr
                              --model resources/models/isl-neurons [--size 20000] [--tile 256]
                              [--statistics median,q05,q95] [--threads 2] [--ridge-size 4096]
                              [--out bench/out/isl_scale]

The stack is the well's 1024 x 1024 planes repeated, every other copy mirrored so that the copies meet
without an edge, and cropped to SIZE: a lazy Dask array (nothing of it is ever whole in memory), written
once as an OME-Zarr z-stack (chunks of 1024 x 1024 x 1 plane) so that isl-predict reads it as a user's
stack. Each command runs in its own process, measured by benchlib.measure (wall and CPU seconds, peak RSS
of the process tree, on all the CPUs given with --cpus). The ridge baseline (deepflows isl-ridge needs a
well with targets: it is run on a well of --ridge-size made the same way; its time includes its fit on
200,000 training pixels) gives the peer's pixels/s.
Prints a Markdown table: pixels, tiles, wall s, tiles/s, megapixels/s, peak RSS, and the ratio of ours
to the ridge's pixels/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, deepflows, measure


def mirrored_tiling(image, size: int):
    """A lazy [..., size, size] array of `image` [..., h, w] repeated, every other copy flipped (y, x)."""
    import dask.array as da

    h, w = image.shape[-2:]
    flips = {(fy, fx): image[..., ::(-1 if fy else 1), ::(-1 if fx else 1)] for fy in (0, 1) for fx in (0, 1)}
    rows = [[flips[(i % 2, j % 2)] for j in range(-(-size // w))] for i in range(-(-size // h))]
    return da.block(rows)[..., :size, :size]


def write_stack(well: Path, size: int, out: Path) -> None:
    """The synthetic z-stack [z, y, x] as a plain OME-Zarr image (zyx), raw pixels."""
    import dask.array as da

    from deepflows.imaging.io import OmeZarrWriter
    from deepflows.imaging.isl.well import open_well

    stack = open_well(well).stack
    tiled = mirrored_tiling(da.from_array(stack.compute(), chunks=(1, 1024, 1024)), size)
    OmeZarrWriter(out, "zyx", chunks=1024).write(tiled.rechunk((1, 1024, 1024)))


def write_well(well: Path, size: int, out: Path) -> None:
    """A well of size x size: the stack and its targets tiled alike, as isl-ingest would store them."""
    import numpy as np
    from PIL import Image

    from deepflows.imaging.isl.well import ingest_well, open_well

    source = open_well(well)
    folder = out.with_suffix(".pngs")
    folder.mkdir(parents=True, exist_ok=True)
    planes = []
    for z in range(source.planes):
        planes.append(folder / f"z{z}.png")
        Image.fromarray(np.asarray(mirrored_tiling(source.stack[z], size))).save(planes[-1])
    targets = {}
    for i, label in enumerate(source.labels):
        targets[label] = folder / f"{label}.png"
        Image.fromarray(np.asarray(mirrored_tiling(source.targets[i], size))).save(targets[label])
    ingest_well(planes, targets, out, chunks=1024)
    shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--well", required=True, help="the real well (deepflows isl-ingest)")
    parser.add_argument("--model", required=True, help="the isl-train model to predict with")
    parser.add_argument("--size", type=int, default=20000, help="side of the synthetic stack in pixels")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--statistics", default="median,q05,q95")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpus", default="0-1", help="CPUs the commands may use (taskset list)")
    parser.add_argument("--ridge-size", type=int, default=4096, help="side of the ridge peer's well (0: skip)")
    parser.add_argument("--out", default=str(OUT / "isl_scale"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stack = out / f"stack-{args.size}.ome.zarr"
    write_stack(Path(args.well), args.size, stack)
    df = deepflows()
    ours = measure(f"{df} isl-predict --stack {stack} --model {args.model} --out {out / 'pred.ome.zarr'} "
                   f"--tile {args.tile} --statistics {args.statistics} --threads {args.threads}", cpu=args.cpus)  # fmt: skip
    tiles = (-(-args.size // args.tile)) ** 2
    rows = [("isl-predict (ours)", args.size, tiles, ours)]
    if args.ridge_size:
        well = out / f"well-{args.ridge_size}.ome.zarr"
        write_well(Path(args.well), args.ridge_size, well)
        ridge = measure(f"{df} isl-ridge --well {well} --out {out / 'ridge.ome.zarr'}", cpu=args.cpus)
        rows.append(("isl-ridge (peer)", args.ridge_size, (-(-args.ridge_size // args.tile)) ** 2, ridge))
    print(f"| command | image | tiles of {args.tile} | wall s | tiles/s | Mpx/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    speed = {}
    for name, size, n, m in rows:
        speed[name] = size * size / m["wall_s"]
        print(f"| {name} | {size} x {size} x 13 | {n} | {m['wall_s']:.0f} | {n / m['wall_s']:.2f} | "
              f"{speed[name] / 1e6:.3f} | {m['peak_rss_mb']:.0f} |")  # fmt: skip
    if len(speed) == 2:
        a, b = speed.values()
        print(f"\npixels/s, ours / ridge: {a / b:.2f}")
    (out / "summary.json").write_text(json.dumps({n: {"size": s, "tiles": t, **m} for n, s, t, m in rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
