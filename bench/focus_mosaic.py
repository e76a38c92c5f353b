"""Focus quality at scale: a synthetic mosaic of at least 20,000 x 20,000 pixels in OME-Zarr, rated tile by tile.

    python bench/focus_mosaic.py [--size 20160] [--cpus 1] [--threads 1] [--repeats 1] [--model DIR]
                                 [--json bench/out/focus_mosaic.json]

The mosaic (made once, in bench/out/focus_mosaic/; not part of any measurement) is uint16, Zarr chunks of
1344 x 1344 pixels (16 x 16 patches), each chunk one of the BBBC006 fields the shipped model never saw
(a07-a09, mirrored to fill the chunk; synthetic nuclei when ../shared/data is absent) at its own defocus
level (chunk index mod 11) with Poisson noise, so the ratings can be checked against the truth too. Measured side by
side, each as its own process pinned with taskset to --cpus (e.g. "1" or "0,1"; wall time, CPU time and
peak RSS of the process tree; medians of --repeats):
- ours: `deepflows focus` on the OME-Zarr with --threads Dask threads (tiles -> jitted model -> predictions
  OME-Zarr, patches.csv, images.csv, a subsampled montage), everything from process start included;
- peer: the classical sharpness baseline of `focus-eval` (Brenner gradient, variance of the Laplacian) over
  the same tiles with the same Dask threads: what a model-free rating costs.
Prints patches/s, peak memory and ours/peer ratios as Markdown, and writes JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT, deepflows, measure

MODEL = ROOT / "resources" / "models" / "focus-quality"
FIELDS = ROOT.parent / "shared" / "data" / "imaging" / "focus_quality"
CHUNK = 1344  # 16 patches of 84


@functools.lru_cache(maxsize=1)
def test_fields() -> list[np.ndarray]:
    """The BBBC006 fields the shipped model never saw (a07-a09), if ../shared/data is there."""
    from deepflows.imaging.focus_data import load_field

    return [load_field(p) for p in sorted(FIELDS.glob("BBBC006_z_aligned__a0[7-9]__s1__w1_10.png"))]


def mosaic_chunk(block_info=None) -> np.ndarray:
    """One chunk: a real held-out field, mirrored to fill the chunk (synthetic nuclei without ../shared/data),
    defocused to the chunk's level, with Poisson noise."""
    from deepflows.imaging.defocus import LEVELS, blur, poisson_noise
    from deepflows.imaging.focus_data import synthetic_field

    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    index = (y0 // CHUNK) * 1000 + x0 // CHUNK
    rng = np.random.default_rng(index)
    fields = test_fields()
    if fields:
        field = fields[index % len(fields)]
        reps = (-(-CHUNK // field.shape[0]) + 1, -(-CHUNK // field.shape[1]) + 1)
        tiled = np.block(
            [[field[:: 1 - 2 * (i % 2), :: 1 - 2 * (j % 2)] for j in range(reps[1])] for i in range(reps[0])]
        )
        dy, dx = rng.integers(0, field.shape[0]), rng.integers(0, field.shape[1])
        clean = tiled[dy : dy + y1 - y0, dx : dx + x1 - x0]
    else:
        clean = synthetic_field((y1 - y0, x1 - x0), seed=index, density=3e-4).astype(np.float32)
    return poisson_noise(blur(clean, index % LEVELS), rng).clip(0, 65535).astype(np.uint16)


def make_mosaic(size: int) -> Path:
    import dask
    import dask.array as da

    from deepflows.imaging.io import OmeZarrWriter

    path = OUT / "focus_mosaic" / f"mosaic-{size}.ome.zarr"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"making {path} once", file=sys.stderr)
        image = da.map_blocks(mosaic_chunk, chunks=((CHUNK,) * -(-size // CHUNK),) * 2, dtype=np.uint16)[:size, :size]
        with dask.config.set(scheduler="threads"):
            OmeZarrWriter(path, "yx", chunks=CHUNK, levels=3, scale={"y": 0.65, "x": 0.65}).write(image)
    return path


def peer(mosaic: str, threads: int) -> None:
    """The sharpness features of every patch, tile by tile (the peer's whole job)."""
    import dask

    from deepflows.imaging.focus_eval import sharpness_features
    from deepflows.imaging.focus_model import PATCH, to_patches
    from deepflows.imaging.io import open_ome_zarr

    plane = open_ome_zarr(mosaic)[0][0]
    n = (plane.shape[0] // PATCH) * PATCH
    plane = plane[:n, :n].rechunk(16 * PATCH)

    def block(b):
        p = to_patches(np.asarray(b, np.float32))
        return sharpness_features(p.reshape(-1, PATCH, PATCH)).reshape(p.shape[0], p.shape[1], 2)

    chunks = tuple(tuple(c // PATCH for c in axis) for axis in plane.chunks) + ((2,),)
    with dask.config.set(scheduler="threads", num_workers=threads):
        features = plane.map_blocks(block, chunks=chunks, new_axis=2, dtype=np.float64).compute()
    print(features.shape[0] * features.shape[1])


def accuracy(out: Path, size: int) -> dict:
    """Within-one and exact accuracy of the patch ratings with content, against each chunk's true level."""
    import pandas as pd

    from deepflows.imaging.defocus import LEVELS

    patches = pd.read_csv(out / "patches.csv")
    true = ((patches.y // CHUNK) * 1000 + patches.x // CHUNK) % LEVELS
    sure = patches.certainty > 0.5
    return {"patches_certain": int(sure.sum()), "exact": round(float((patches.level == true)[sure].mean()), 3),
            "within_one": round(float(((patches.level - true).abs() <= 1)[sure].mean()), 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20160, help="mosaic edge in pixels (default 20160 = 240 patches)")
    parser.add_argument("--cpus", default="1", help="taskset CPU list (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="Dask threads (default 1)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default=str(MODEL), help="focus model directory (default: the shipped one)")
    parser.add_argument("--json", default=str(OUT / "focus_mosaic.json"))
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run the peer on this mosaic
    args = parser.parse_args()
    if args.peer:
        return peer(args.peer, args.threads)

    mosaic = make_mosaic(args.size)
    patches = (args.size // 84) ** 2
    work = OUT / "focus_mosaic" / "run"
    runs = {"ours": [], "peer": []}
    for _ in range(args.repeats):
        shutil.rmtree(work, ignore_errors=True)
        runs["ours"].append(measure(f"{deepflows()} focus --images {mosaic} --model {args.model} --out {work}"
                                    f" --threads {args.threads} --batch-size 128", cpu=args.cpus))  # fmt: skip
        runs["peer"].append(
            measure(f"{sys.executable} {__file__} --peer {mosaic} --threads {args.threads}", cpu=args.cpus)
        )
    results = []
    for who, measured in runs.items():
        wall = statistics.median(m["wall_s"] for m in measured)
        results.append({"who": who, "patches": patches, "wall_s": round(wall, 1), "patches_per_s": round(patches / wall, 1),
                        "peak_rss_mb": round(max(m["peak_rss_mb"] for m in measured), 1)})  # fmt: skip
    report = {"mosaic": str(mosaic), "size": args.size, "cpus": args.cpus, "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "results": results,
              "accuracy_vs_truth": accuracy(work, args.size),
              "ratio_patches_per_s": round(results[0]["patches_per_s"] / results[1]["patches_per_s"], 3),
              "ratio_peak_rss": round(results[0]["peak_rss_mb"] / results[1]["peak_rss_mb"], 3)}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("| who | patches | wall s | patches/s | peak RSS MB |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['who']} | {r['patches']} | {r['wall_s']} | {r['patches_per_s']} | {r['peak_rss_mb']} |")
    print(f"\nours/peer: {report['ratio_patches_per_s']}x the patches/s, {report['ratio_peak_rss']}x the peak memory; "
          f"{args.size}x{args.size} px on CPUs {args.cpus} ({args.threads} thread(s)); accuracy of the certain "
          f"patches vs the chunks' true levels: {report['accuracy_vs_truth']}; JSON: {args.json}")  # fmt: skip


if __name__ == "__main__":
    main()
