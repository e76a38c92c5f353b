"""Microscopy images in and out: PNG/TIFF files, and OME-Zarr (NGFF) multiscale images read as Dask arrays.

Written images follow NGFF 0.5 (Zarr v3; the metadata under the group attribute `ome`): one `multiscales`
entry with axes named and typed in NGFF order (t, c, z, y, x; those the image has), a scale transform per
level (each level halves y and x), and `omero` channel labels. NGFF 0.4 groups (Zarr v2, `multiscales` at
the top of the attributes) are read as well. A group is written under a temporary name and renamed when
complete, so a reader never sees half an image; its integrity manifest (deepflows.store.integrity) lets every
reader check each chunk before use.
"""

from __future__ import annotations

import os
import re
from glob import glob
from pathlib import Path

import numpy as np

from deepflows.arguments import positive_float
from deepflows.errors import UserError
from deepflows.inputs import require_file
from deepflows.outputs import check_new_output

NGFF_VERSION = "0.5"
AXIS_ORDER = "tczyx"
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def read_image(path: str | Path) -> tuple[np.ndarray, str]:
    """(pixels, axes) of a PNG or TIFF, axes in NGFF order (e.g. "yx", "cyx", "zyx", "czyx").

    8- and 16-bit (and float) pixels are kept as stored. PNG colour channels become `c`. For TIFF the axes
    come from the file's own description (tifffile's series axes: Z, C, T, S for samples; Q, I for an
    unnamed stack, read as z). Unreadable or truncated files, and images with too few or too many
    dimensions, raise UserError naming the file.
    """
    path = require_file(path, "image")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                _check_memory(path, series.shape, series.dtype)
                pixels, axes = series.asarray(), series.axes.upper()  # one array, decoded in place
            axes = axes.translate(str.maketrans("SQIP", "CZZZ"))
        elif suffix == ".png":
            pixels = _read_png(path)
            axes = "YX" if pixels.ndim == 2 else "YXC"
        else:
            raise UserError(f"{path}: not a PNG or TIFF image (suffix {suffix or 'none'})")
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL and tifffile raise many types for truncated or corrupt files
        if "imagecodecs" in str(err):  # tifffile: a compression (LZW, ZSTD, JPEG...) it decodes only with it
            raise UserError(f"{path}: {err} (pip install imagecodecs; part of deepflows[imaging])") from None
        raise UserError(f"{path}: unreadable or truncated image ({type(err).__name__}: {err})") from None
    axes = axes.lower()
    if pixels.size == 0:
        raise UserError(f"{path}: the image has no pixels (shape {' x '.join(map(str, pixels.shape))}, axes {axes})")
    if len(set(axes)) != len(axes) or not set(axes) <= set(AXIS_ORDER):
        raise UserError(f"{path}: unsupported image axes '{axes}' (expected some of t, c, z, y, x)")
    order = sorted(range(len(axes)), key=lambda i: AXIS_ORDER.index(axes[i]))
    pixels, axes = np.transpose(pixels, order), "".join(axes[i] for i in order)
    if not axes.endswith("yx") or pixels.ndim < 2:
        raise UserError(f"{path}: an image needs y and x axes; this one has {pixels.ndim} ({axes})")
    if pixels.dtype == bool or pixels.dtype.kind not in "uif":
        raise UserError(f"{path}: unsupported pixel type {pixels.dtype}")
    return pixels, axes


def _read_png(path: Path) -> np.ndarray:
    """A PNG's pixels as one writable array. PIL's own export (np.asarray: tobytes) holds two more whole
    copies at its peak; copying in strips of rows holds only the decoded image and the array."""
    from PIL import Image, ImageMode

    # Deliberately no pixel limit: PIL's decompression-bomb guard (about 89 Mpx warns, 179 Mpx fails) is for
    # servers opening strangers' uploads; a 20,000 x 20,000 field or slide scan is an ordinary input here.
    # Memory is the real limit, checked against the image's decoded size instead.
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        mode = ImageMode.getmode(im.mode)
        _check_memory(path, (im.height, im.width, len(mode.bands)), np.dtype(mode.typestr))
        im.load()
        first = np.asarray(im.crop((0, 0, im.width, 1)))
        pixels = np.empty((im.height, *first.shape[1:]), first.dtype)
        rows = max(1, (16 << 20) // max(1, first.nbytes))  # strips of about 16 MB
        for top in range(0, im.height, rows):
            pixels[top : top + rows] = np.asarray(im.crop((0, top, im.width, min(im.height, top + rows))))
    return pixels


def _check_memory(path: Path, shape, dtype) -> None:
    """Refuse an image whose decoded pixels would not fit in this machine's memory (a tiny file can claim
    any size), before trying."""
    need = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        values = f"{' x '.join(map(str, shape))} {np.dtype(dtype).name} values"
        raise UserError(f"{path}: {values} need {need / 2**30:.1f} GiB decoded, more than this machine's "
                        f"{have / 2**30:.1f} GiB of memory")  # fmt: skip


def _multiscales(axes: str, levels: int, scale: dict[str, float], translation: dict[str, float], name: str) -> dict:
    datasets = []
    for level in range(levels):
        factors = [scale.get(a, 1.0) * (2**level if a in "yx" else 1) for a in axes]
        transforms = [{"type": "scale", "scale": factors}]
        if translation:
            transforms.append({"type": "translation", "translation": [translation.get(a, 0.0) for a in axes]})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return {
        "name": name,
        "axes": [{"name": a, "type": AXIS_TYPES[a], **({"unit": "micrometer"} if a in "zyx" else {})} for a in axes],
        "datasets": datasets,
    }


def store_all(image, array, compute_kwargs: dict | None = None) -> None:
    """da.store of `image` into the Zarr `array` that returns, or raises, only once none of its chunk writes is
    still running. Dask's threaded scheduler raises at the first failed task (a full disk) while its other
    threads may still be writing chunks, and Zarr makes a chunk's folders as it writes it: a write still under
    way would make the temporary store again after its cleanup removed it. So the writes run on a pool of our
    own, drained (the queued writes cancelled) before this returns."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import dask.array as da

    kwargs = dict(compute_kwargs or {})
    scheduler = kwargs.pop("scheduler", None) or dask.config.get("scheduler", None) or "threads"
    if scheduler not in ("threads", "threading"):  # one process writes in order (sync) or the caller's scheduler
        da.store(image, array, lock=False, scheduler=scheduler, **kwargs)
        return
    workers = kwargs.pop("num_workers", None) or dask.config.get("num_workers", None) or os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)
    try:
        da.store(image, array, lock=False, scheduler="threads", pool=pool, **kwargs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class OmeZarrWriter:
    """Writes a Dask or NumPy image as an NGFF 0.5 multiscale group under a temporary name, renamed to `<out>`
    by `write()` once every level is complete; an exception on the way removes the temporary group. A store of
    several images (an In Silico Labeling well: the stack, and its targets as a sub-image) writes each with
    `write_into()` into its own temporary group, and seals and renames it itself."""

    def __init__(self, out: str | Path, axes: str, chunks: int = 1024, levels: int = 1,
                 scale: dict[str, float] | None = None, translation: dict[str, float] | None = None,
                 channel_names: list[str] | None = None, attrs: dict | None = None):  # fmt: skip
        self.out, self.axes, self.chunks, self.levels = Path(out), axes, int(chunks), int(levels)
        self.scale, self.translation = scale or {}, translation or {}
        self.channel_names, self.attrs = channel_names, attrs or {}
        check_new_output(self.out)

    def write(self, image, compute_kwargs: dict | None = None) -> Path:
        import zarr

        from deepflows.outputs import atomic_output
        from deepflows.store.integrity import seal

        with atomic_output(self.out) as tmp:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            ome = self.write_into(group, image, compute_kwargs=compute_kwargs)
            # Last: the attributes and the manifest of every chunk (deepflows.store.integrity), then the rename.
            seal(group, tmp, {"ome": ome, "deepflows": self.attrs})
        return self.out

    def write_into(self, group, image, name: str | None = None, compute_kwargs: dict | None = None) -> dict:
        """Write the levels of `image` into the open Zarr `group` (the root of a store being written, or a
        group inside it) and return the group's NGFF metadata (`ome`), for the caller to write: with the
        root's integrity manifest (`seal`) last, or as a sub-image's attributes before that."""
        import dask.array as da
        import zarr

        image = image if isinstance(image, da.Array) else da.from_array(image)
        if image.ndim != len(self.axes):
            raise ValueError(f"image has {image.ndim} dimensions but axes are '{self.axes}'")
        chunks = tuple(self.chunks if a in "yx" else 1 for a in self.axes)
        level_image = image
        for level in range(self.levels):
            if level:
                # 2x2 mean over y and x; integer images stay integer (rounded).
                factors = {i: (2 if a in "yx" else 1) for i, a in enumerate(self.axes)}
                trimmed = level_image[tuple(slice(0, s - s % factors[i]) for i, s in enumerate(level_image.shape))]
                mean = da.coarsen(np.mean, trimmed.astype(np.float32), factors)
                level_image = (
                    mean.round().astype(image.dtype) if image.dtype.kind in "ui" else mean.astype(image.dtype)
                )
            level_chunks = tuple(min(c, s) for c, s in zip(chunks, level_image.shape))
            level_image = level_image.rechunk(level_chunks)
            array = group.create_array(str(level), shape=level_image.shape, chunks=level_chunks,
                                       dtype=level_image.dtype, dimension_names=list(self.axes),
                                       compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"))  # fmt: skip
            store_all(level_image, array, compute_kwargs)
            level_image = da.from_zarr(array)
        ome = {
            "version": NGFF_VERSION,
            "multiscales": [_multiscales(self.axes, self.levels, self.scale, self.translation, name or self.out.name)],
        }
        if "c" in self.axes:
            n = image.shape[self.axes.index("c")]
            names = self.channel_names or [f"channel {i}" for i in range(n)]
            ome["omero"] = {"channels": [{"label": str(name)} for name in names]}
        return ome


def open_ome_zarr(path: str | Path, made_by: str | None = None) -> tuple[list, str, dict]:
    """(levels as Dask arrays, full resolution first; axes, e.g. "cyx"; the multiscales entry) of an OME-Zarr
    image, NGFF 0.4 or 0.5. `made_by`: the stage to run again when the store is damaged (default: ingest-image
    or focus)."""
    import dask.array as da
    import zarr

    from deepflows.store.integrity import MADE_BY, verify

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises several types for a missing or foreign directory
        raise UserError(f"{path}: not a Zarr group ({type(err).__name__}: {err})") from None
    attrs = dict(group.attrs)
    meta = attrs.get("ome", attrs)  # 0.5 nests the metadata under "ome"; 0.4 keeps it at the top
    if not meta.get("multiscales"):
        raise UserError(f"{path}: not an OME-Zarr image (no multiscales metadata)")
    # Images deepflows wrote carry a manifest and are checked chunk by chunk; those of other tools cannot be.
    verify(path, attrs, required="deepflows" in attrs, made_by=made_by or MADE_BY["ome"])
    multiscales = meta["multiscales"][0]
    try:
        axes = "".join(a["name"] if isinstance(a, dict) else a for a in multiscales["axes"])
        levels = [da.from_zarr(group[d["path"]]) for d in multiscales["datasets"]]
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: malformed multiscales metadata ({err})") from None
    if any(level.ndim != len(axes) for level in levels):
        raise UserError(f"{path}: arrays do not have the {len(axes)} dimensions its axes '{axes}' name")
    return levels, axes, multiscales


def ingest(source: str | Path, out: str | Path, chunks: int = 1024, levels: int = 3, scale: dict | None = None) -> Path:
    """One PNG or TIFF -> an OME-Zarr multiscale group (pyramid of `levels`, y and x halved each time)."""
    from deepflows.store.integrity import file_sha256

    pixels, axes = read_image(source)
    levels = max(1, min(levels, int(np.log2(max(1, min(pixels.shape[-2:])))) + 1))
    attrs = {"source": {"path": str(source), "sha256": file_sha256(source)}, "dtype": str(pixels.dtype)}
    return OmeZarrWriter(out, axes, chunks=chunks, levels=levels, scale=scale, attrs=attrs).write(pixels)


def expand_images(spec: str | list[str]) -> list[Path]:
    """Image files named by a directory, a glob or a list of paths (sorted; none found is an error)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    found: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            found += sorted(Path(f) for f in glob(s))
    if not found:
        raise UserError(f"{' '.join(specs)}: no images found")
    return found


def image_sources(specs: list[str]) -> dict[str, str]:
    """Image name (file name without its suffixes) -> path, for files and globs; a glob that matches nothing
    is kept as a path, so that the step reading it reports it missing."""
    sources: dict[str, str] = {}
    for spec in specs:
        for path in sorted(glob(spec)) or [spec]:
            name = re.sub(r"(\.ome)?\.(zarr|png|tiff?)$", "", Path(path).name, flags=re.IGNORECASE)
            if sources.get(name, path) != path:
                raise UserError(f"two images are named {name!r} ({sources[name]}, {path})")
            sources[name] = path
    return sources


def add_arguments(p) -> None:
    p.add_argument("--image", required=True, help="PNG or TIFF (8- or 16-bit; channels and z-stacks kept)")
    p.add_argument("--out", required=True, help="OME-Zarr group to write (e.g. results/x.ome.zarr)")
    p.add_argument("--chunks", type=int, default=1024, help="chunk edge in y and x (default 1024)")
    p.add_argument("--levels", type=int, default=3, help="multiscale levels, each halving y and x (default 3)")
    p.add_argument("--pixel-size", type=positive_float, default=1.0, help="y and x pixel size in micrometres")


def run(args) -> None:
    if args.chunks < 1 or args.levels < 1:
        raise UserError("--chunks and --levels must be at least 1")
    ingest(args.image, args.out, chunks=args.chunks, levels=args.levels,
           scale={"y": args.pixel_size, "x": args.pixel_size})  # fmt: skip
