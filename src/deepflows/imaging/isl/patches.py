"""`deepflows isl-patches`: one shard of In Silico Labeling patches, cut from a well store into Zarr.

A P x P window belongs to a split (deepflows.imaging.isl.split_mask) only when every pixel of it does: the
window sums of a summed-area table of the split's pixels say which windows are wholly inside.

- train: K windows drawn uniformly, with replacement, among the split's windows by
  `numpy.random.default_rng([seed, shard])`, so a shard is a pure function of the well, its settings, the
  seed and its index. Each is augmented as in the ISL paper: one of the 8 dihedral transforms (rot90 k
  times, then a left-right flip for k >= 4: `dihedral`), the same for input and targets; and the input alone
  gets a contrast and a brightness jitter, `x * c + b` in normalised units with c ~ U(0.8, 1.25) and
  b ~ U(-0.1, 0.1), the same for all planes of a patch. `--no-augment` keeps them as they are.
- tune and test: the non-overlapping grid of windows (stride P, from the top-left corner of the split's
  pixels) that lie wholly inside the split, in row-major order, dealt round-robin to the shards; never
  augmented. K, when given, caps a shard's patches.

A shard is one Zarr v3 group (written under a temporary name, sealed with its integrity manifest and renamed):
`inputs` float16 [K, P, P, Z] (the z planes as channels, normalised, not clipped), `targets` float16
[K, P, P, L] (normalised and clipped to [0, 1]), `origin` int32 [K, 2] (y, x of the window in the well) and
`transform` int8 [K] (the dihedral transform), chunked along K; its attributes `deepflows.isl_patches` record
the well, its normalisation, the labels, the split settings, the shard and the augmentation.
`load_patches` (or lazily `open_patches`) reads a set of shards as one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deepflows.arguments import non_negative_int, positive_int, seed
from deepflows.errors import UserError
from deepflows.imaging.isl import INPUT_CHANNEL, QUADRANTS, SPLITS, TRAIN, normalize, split_mask
from deepflows.outputs import check_new_output

log = logging.getLogger(__name__)

SCHEMA = "deepflows.isl_patches"
SCHEMA_VERSION = 1
CHUNK = 32  # patches per chunk
CONTRAST = (0.8, 1.25)  # input contrast factor, uniform
BRIGHTNESS = (-0.1, 0.1)  # input brightness offset in normalised units, uniform
AUGMENT = {"dihedral": True, "contrast": list(CONTRAST), "brightness": list(BRIGHTNESS)}
# What every shard of a set must share to be read as one.
AGREE = ("size", "labels", "planes", "split", "test_quadrant", "tune_band", "augment", "region")


def _rot90(a, k: int):
    """np.rot90(a, k, axes=(0, 1)), in slices and a swap of axes, so that a traced JAX array takes it too."""
    k = int(k) % 4
    if k == 1:
        return a[:, ::-1].swapaxes(0, 1)
    if k == 2:
        return a[::-1, ::-1]
    return a.swapaxes(0, 1)[:, ::-1] if k == 3 else a


def dihedral(patch, k: int):
    """Transform k of the 8 symmetries of the square on the first two axes of `patch` (y, x; NumPy or JAX):
    rot90 k mod 4 times, then a left-right flip when k >= 4. k = 0 is the identity."""
    out = _rot90(patch, k)
    return out[:, ::-1] if k >= 4 else out


def undo_dihedral(patch, k: int):
    """The inverse of dihedral(., k)."""
    return _rot90(patch[:, ::-1] if k >= 4 else patch, -int(k))


def inside_windows(mask: np.ndarray, split: int, size: int) -> np.ndarray:
    """bool [H - size + 1, W - size + 1]: the size x size windows (by top-left corner) wholly in `split`
    (empty when the well is smaller than a window), from a summed-area table of the split's pixels."""
    h, w = mask.shape
    if size > h or size > w:
        return np.zeros((max(0, h - size + 1), max(0, w - size + 1)), bool)
    table = np.zeros((h + 1, w + 1), np.int64)
    np.cumsum(np.cumsum(mask == split, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return sums == size * size


def grid_windows(mask: np.ndarray, split: int, size: int) -> np.ndarray:
    """int [n, 2]: the non-overlapping windows (stride `size`, from the top-left corner of the split's pixels)
    wholly in `split`, in row-major order."""
    inside = inside_windows(mask, split, size)
    rows, cols = np.nonzero(mask == split)
    if not inside.any() or not len(rows):
        return np.zeros((0, 2), np.int64)
    ys = np.arange(rows.min(), inside.shape[0], size)
    xs = np.arange(cols.min(), inside.shape[1], size)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    keep = inside[yy, xx]
    return np.stack([yy[keep], xx[keep]], axis=1)


def draw_windows(mask: np.ndarray, split: int, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """int [count, 2]: windows drawn uniformly (with replacement) among those wholly in `split`."""
    inside = inside_windows(mask, split, size)
    flat = np.flatnonzero(inside)
    picks = flat[rng.integers(0, len(flat), count)] if len(flat) else flat
    return np.stack(np.unravel_index(picks, inside.shape), axis=1)


def plan_shard(shape: tuple[int, int], split: str, size: int, shard: tuple[int, int], seed: int,
               patches: int | None, test_quadrant: str, tune_band: int, augment: bool,
               region: tuple[int, int, int, int] | None = None) -> dict:  # fmt: skip
    """The windows of one shard and their augmentation, before any pixel is read: {origin [K, 2],
    transform [K], contrast [K], brightness [K]} (no augmentation: transform 0, contrast 1, brightness 0).
    `region` (y, x, height, width) keeps only the windows inside that rectangle of the split: a small crop,
    as transfer learning learns a new label from."""
    index, count = shard
    if tune_band >= shape[0] // 2:
        raise UserError(f"--tune-band {tune_band} does not fit in a quadrant of a {shape[0]}x{shape[1]} well "
                        f"(at most {shape[0] // 2 - 1} rows)")  # fmt: skip
    mask = split_mask(shape, test_quadrant, tune_band)
    if region is not None:
        top, left, height, width = region
        outside = np.ones(shape, bool)
        outside[top:top + height, left:left + width] = False
        mask[outside] = np.iinfo(mask.dtype).max  # no split: no window may touch it
    code = SPLITS[split]
    if not inside_windows(mask, code, size).any():
        raise UserError(f"no {size}x{size} window lies wholly in the {split} split of a {shape[0]}x{shape[1]} well "
                        f"(test quadrant {test_quadrant}, tune band {tune_band}"
                        f"{'' if region is None else f', region {list(region)}'}); use a smaller --size"
                        + (" or a wider --tune-band" if split == "tune" else ""))  # fmt: skip
    if code == TRAIN:
        if not patches:
            raise UserError("--patches: train shards need a number of patches to draw (at least 1)")
        rng = np.random.default_rng([seed, index])
        origin = draw_windows(mask, code, size, patches, rng)
        if augment:
            transform = rng.integers(0, 8, patches)
            contrast = rng.uniform(*CONTRAST, patches)
            brightness = rng.uniform(*BRIGHTNESS, patches)
    else:
        grid = grid_windows(mask, code, size)
        origin = grid[index::count][: patches or None]
        augment = False
        if not len(origin):
            raise UserError(f"--shard {index}/{count}: the {split} split has only {len(grid)} {size}x{size} windows, "
                            f"none left for this shard; use at most {len(grid)} shards")  # fmt: skip
    n = len(origin)
    if not augment:
        transform, contrast, brightness = np.zeros(n, np.int64), np.ones(n), np.zeros(n)
    return {"origin": origin.astype(np.int32), "transform": transform.astype(np.int8),
            "contrast": contrast.astype(np.float32), "brightness": brightness.astype(np.float32)}  # fmt: skip


def extract_patches(well_path: str | Path, split: str, out: str | Path, size: int = 96, patches: int | None = None,
                    shard: tuple[int, int] = (0, 1), seed: int = 0, test_quadrant: str = "bottom-right",
                    tune_band: int = 96, augment: bool = True, chunk: int = CHUNK,
                    region: tuple[int, int, int, int] | None = None) -> Path:  # fmt: skip
    """Write one shard of `split` patches of the well store at `well_path` to `out` (see the module doc)."""
    import zarr

    from deepflows.imaging.isl.well import open_well
    from deepflows.outputs import atomic_output
    from deepflows.store.integrity import seal

    out = check_new_output(out)
    if split not in SPLITS:
        raise UserError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    if test_quadrant not in QUADRANTS:
        raise UserError(f"--test-quadrant {test_quadrant}: expected one of {', '.join(QUADRANTS)}")
    well = open_well(well_path)
    augment = augment and SPLITS[split] == TRAIN
    try:
        plan = plan_shard(well.shape, split, size, shard, seed, patches, test_quadrant, tune_band, augment, region)
    except UserError as err:
        raise UserError(f"{well.path}: {err}") from None
    n, planes, labels = len(plan["origin"]), well.planes, len(well.labels)
    log.info("%s: %d %s patches of %dx%d (shard %d/%d) from %s", out, n, split, size, size, *shard, well.path)
    # The whole well, normalised, channels last: [H, W, Z] and [H, W, L] (a well is some tens of MB raw).
    stack = np.moveaxis(normalize(well.stack.compute(), well.normalization[INPUT_CHANNEL]), 0, -1)
    targets = np.stack([np.clip(normalize(well.targets[i].compute(), well.normalization[label]), 0, 1)
                        for i, label in enumerate(well.labels)], axis=-1)  # fmt: skip
    attrs = {"well": str(well.path), "normalization": well.normalization, "labels": list(well.labels),
             "planes": planes, "split": split, "size": size, "shard": list(shard), "seed": seed, "patches": n,
             "test_quadrant": test_quadrant, "tune_band": tune_band, "augment": AUGMENT if augment else None,
             "region": None if region is None else [int(v) for v in region],
             "well_sources": [{k: s[k] for k in ("path", "sha256", "role") if k in s} for s in well.sources]}  # fmt: skip
    compressors = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
    with atomic_output(out) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        arrays = {name: group.create_array(name, shape=(n, *rest), chunks=(chunk, *rest), dtype=dtype,
                                           compressors=compressors)
                  for name, rest, dtype in (("inputs", (size, size, planes), np.float16),
                                            ("targets", (size, size, labels), np.float16),
                                            ("origin", (2,), np.int32), ("transform", (), np.int8))}  # fmt: skip
        arrays["origin"][:] = plan["origin"]
        arrays["transform"][:] = plan["transform"]
        for start in range(0, n, chunk):  # one chunk of patches in memory at a time
            stop = min(n, start + chunk)
            x = np.empty((stop - start, size, size, planes), np.float16)
            y = np.empty((stop - start, size, size, labels), np.float16)
            for i in range(start, stop):
                (top, left), k = plan["origin"][i], plan["transform"][i]
                window = (slice(top, top + size), slice(left, left + size))
                x[i - start] = dihedral(stack[window], k) * plan["contrast"][i] + plan["brightness"][i]
                y[i - start] = dihedral(targets[window], k)
            arrays["inputs"][start:stop] = x
            arrays["targets"][start:stop] = y
        seal(group, tmp, {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, SCHEMA: attrs})
    return out


def open_patches(paths) -> tuple:
    """(inputs Dask float16 [N, P, P, Z], targets Dask float16 [N, P, P, L], attrs) of a set of shards in the
    order given, each checked against its integrity manifest. The shards must agree on the patch size, labels,
    planes, split settings and augmentation; the same shard (well, index, and for train the seed) may not come
    twice. `attrs` are the first shard's, with `patches` the total and `shards` the paths."""
    import dask.array as da
    import zarr

    from deepflows.store.integrity import MADE_BY, root_attributes, verify

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise UserError("no patch shards given")
    inputs, targets, first, seen = [], [], None, {}
    for path in paths:
        attrs = root_attributes(path)
        meta = attrs.get(SCHEMA)
        if attrs.get("schema") != SCHEMA or not isinstance(meta, dict):
            raise UserError(f"{path}: not an In Silico Labeling patch shard (make one with deepflows isl-patches)")
        verify(path, attrs, made_by=MADE_BY[SCHEMA])
        try:
            # tune and test shards are the same whatever the seed: only a train shard's draws depend on it
            key = (meta["well"], tuple(meta["shard"]), meta["seed"] if meta["split"] == "train" else None)
            first = first or (path, meta)
            differ = [k for k in AGREE if meta.get(k) != first[1].get(k)]
        except (KeyError, TypeError) as err:
            raise UserError(f"{path}: malformed {SCHEMA} attributes ({type(err).__name__}: {err})") from None
        if differ:
            what = ", ".join(f"{k} {meta.get(k)} vs {first[1].get(k)}" for k in differ)
            raise UserError(f"{path}: does not match {first[0]} ({what}); shards read together must come from one "
                            "patch setting")  # fmt: skip
        if key in seen:
            raise UserError(f"{path}: the same shard as {seen[key]} (well, shard {key[1][0]}/{key[1][1]}"
                            f"{'' if key[2] is None else f', seed {key[2]}'}): given twice")  # fmt: skip
        seen[key] = path
        group = zarr.open_group(str(path), mode="r")
        inputs.append(da.from_zarr(group["inputs"]))
        targets.append(da.from_zarr(group["targets"]))
    x, y = da.concatenate(inputs, axis=0), da.concatenate(targets, axis=0)
    return x, y, {**first[1], "patches": int(x.shape[0]), "shards": [str(p) for p in paths]}


def load_patches(paths) -> tuple[np.ndarray, np.ndarray, dict]:
    """`open_patches`, read into memory: (inputs float16 [N, P, P, Z], targets float16 [N, P, P, L], attrs)."""
    x, y, attrs = open_patches(paths)
    return np.asarray(x), np.asarray(y), attrs


# ------------------------------------------------------------------------------------------------- the CLI
def add_arguments(p) -> None:
    p.add_argument("--well", required=True, help="the well store (deepflows isl-ingest)")
    p.add_argument("--split", required=True, choices=sorted(SPLITS), help="which split's windows to cut")
    p.add_argument("--shard", default="0/1", help="this shard as i/n (0-based), default 0/1")
    p.add_argument("--patches", type=non_negative_int, default=None,
                   help="train: patches to draw (required); tune/test: at most this many (default all)")  # fmt: skip
    p.add_argument("--size", type=positive_int, default=96, help="patch edge in pixels (default 96)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the train draws (with the shard index)")
    p.add_argument("--out", required=True, help="the shard to write (e.g. results/isl/patches/train-0-of-4.zarr)")
    p.add_argument("--test-quadrant", choices=QUADRANTS, default="bottom-right",
                   help="the quadrant held out for testing (default bottom-right)")  # fmt: skip
    p.add_argument("--tune-band", type=non_negative_int, default=96,
                   help="rows of the tune strip beside the test quadrant (default 96)")  # fmt: skip
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train: no dihedral transforms nor brightness/contrast jitter")  # fmt: skip
    p.add_argument("--region", type=_region, metavar="Y,X,H,W",
                   help="only windows inside this rectangle of the split (e.g. one 256 x 256 crop to learn from)")
    p.add_argument("--chunk-patches", type=positive_int, default=CHUNK, help=f"patches per chunk (default {CHUNK})")


def _region(text: str) -> tuple[int, int, int, int]:
    import argparse

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or min(values[2:]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Y,X,HEIGHT,WIDTH in pixels (e.g. 128,128,256,256)")
    return values


def run(args) -> None:
    from deepflows.genomics.io.regions import parse_shard

    extract_patches(args.well, args.split, args.out, size=args.size, patches=args.patches,
                    shard=parse_shard(args.shard), seed=args.seed, test_quadrant=args.test_quadrant,
                    tune_band=args.tune_band, augment=args.augment, chunk=args.chunk_patches,
                    region=args.region)  # fmt: skip
