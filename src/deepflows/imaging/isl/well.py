"""`deepflows isl-ingest`: the PNGs (or TIFFs) of one In Silico Labeling well -> one OME-Zarr well store, and
the readers of that store (`open_well`) and of any z-stack a model predicts from (`read_stack`).

A well's files are found by the names of the ISL data set (Christiansen et al. 2018), comma-separated
`key-value` fields:

    ...,z_depth-K,channel-PHASE_CONTRAST,is_mask-false.png                                  (plane K of the stack)
    ...,depth_computation-MAXPROJECT,channel-DAPI_CONFOCAL,is_mask-false.png   (a target: DAPI, MAP2 or NFH)

Masks (`is_mask-true`) and other channels are passed over. The planes must be z 0..n-1 with none missing, all
one 2-D shape and pixel type (uint8 or uint16), as must the targets (at least one of LABELS); anything else is
refused with one line naming the file. The store's layout is the package's contract (deepflows.imaging.isl).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepflows.arguments import positive_int
from deepflows.errors import UserError, abbreviated
from deepflows.imaging.io import IMAGE_SUFFIXES, OmeZarrWriter, open_ome_zarr, read_image
from deepflows.imaging.isl import INPUT_CHANNEL, LABELS, normalization
from deepflows.outputs import check_new_output

log = logging.getLogger(__name__)

ATTRS = "deepflows.isl"  # the root attributes that make an OME-Zarr store an ISL well
SCHEMA_VERSION = 1
TARGETS = "targets"  # the sub-image of the targets
PLANE_CHANNEL = "PHASE_CONTRAST"
PIXEL_TYPES = (np.uint8, np.uint16)


# ------------------------------------------------------------------------------------------------- the files
def name_fields(path: str | Path) -> dict[str, str]:
    """The `key-value` fields of an ISL file name (`a-1,b-C,flag` -> {a: 1, b: C}; fields without '-' dropped)."""
    stem = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return dict(field.split("-", 1) for field in stem.split(",") if "-" in field)


def target_label(channel: str) -> str | None:
    """The label (one of LABELS) a target file's channel names: `DAPI_CONFOCAL` or `DAPI`; None for others."""
    name = channel.upper().removesuffix("_CONFOCAL")
    return next((label for label in LABELS if label.upper() == name), None)


def find_well_files(directory: str | Path) -> tuple[list[Path], dict[str, Path]]:
    """(planes in z order, {label: target}) of a well's directory, by the file names of the ISL data set."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: well directory {'is not a directory' if directory.exists() else 'not found'}")
    planes: dict[int, Path] = {}
    targets: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        fields = name_fields(path)
        if fields.get("is_mask", "false").lower() == "true":
            continue
        channel = fields.get("channel", "")
        if channel.upper() == PLANE_CHANNEL and "z_depth" in fields:
            if not fields["z_depth"].isdigit():
                raise UserError(f"{path}: z_depth-{fields['z_depth']} is not a plane number")
            z = int(fields["z_depth"])
            if z in planes:
                raise UserError(f"{path}: a second phase-contrast plane z_depth-{z} (the first: {planes[z].name})")
            planes[z] = path
        elif (label := target_label(channel)) is not None:
            if label in targets:
                raise UserError(f"{path}: a second {label} target (the first: {targets[label].name})")
            targets[label] = path
    if not planes:
        raise UserError(f"{directory}: no phase-contrast planes (files named like "
                        f"'...,z_depth-0,channel-{PLANE_CHANNEL},is_mask-false.png')")  # fmt: skip
    missing = sorted(set(range(max(planes) + 1)) - set(planes))
    if missing:
        raise UserError(f"{directory}: phase-contrast plane(s) z_depth-{abbreviated(map(str, missing))} missing "
                        f"(found {len(planes)} planes up to z_depth-{max(planes)}; planes must be 0..n-1)")  # fmt: skip
    if not targets:
        raise UserError(f"{directory}: no target images (files named like '...,depth_computation-MAXPROJECT,"
                        f"channel-DAPI_CONFOCAL,is_mask-false.png', channels {', '.join(LABELS)})")  # fmt: skip
    return [planes[z] for z in range(len(planes))], targets


def parse_targets(specs: list[str]) -> dict[str, Path]:
    """`LABEL=FILE` arguments -> {label: path}, each label one of LABELS, at most once."""
    targets: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        label = target_label(name)
        if not sep or not path or label is None:
            raise UserError(f"--targets {spec}: expected LABEL=FILE with LABEL one of {', '.join(LABELS)}")
        if label in targets:
            raise UserError(f"--targets {spec}: {label} is given twice")
        targets[label] = Path(path)
    return targets


# ------------------------------------------------------------------------------------------------- ingest
def _read_plane(path: Path, what: str, like: tuple[Path, np.ndarray] | None) -> np.ndarray:
    """One 2-D uint8 or uint16 image, of the shape and type of `like` (the first file of its kind) if given."""
    pixels, axes = read_image(path)
    if axes != "yx":
        raise UserError(f"{path}: {what} must be one 2-D grey image, not axes '{axes}' "
                        f"(shape {' x '.join(map(str, pixels.shape))})")  # fmt: skip
    if pixels.dtype not in PIXEL_TYPES:
        raise UserError(f"{path}: {what} has {pixels.dtype} pixels; expected uint8 or uint16")
    if like is not None:
        first, ref = like
        if pixels.shape != ref.shape:
            raise UserError(f"{path}: {what} is {pixels.shape[0]}x{pixels.shape[1]}, but {first.name} is "
                            f"{ref.shape[0]}x{ref.shape[1]} (a well's images must be registered, one size)")  # fmt: skip
        if pixels.dtype != ref.dtype:
            raise UserError(f"{path}: {what} has {pixels.dtype} pixels, but {first.name} has {ref.dtype}")
    return pixels


def _read_all(paths: list[Path], what: str) -> np.ndarray:
    """[n, y, x] of 2-D images of one shape and one pixel type (the first file's)."""
    first = _read_plane(paths[0], what, None)
    images = np.empty((len(paths), *first.shape), first.dtype)
    images[0] = first
    for i, path in enumerate(paths[1:], 1):
        images[i] = _read_plane(path, what, (paths[0], first))
    return images


def ingest_well(planes: list[str | Path], targets: dict[str, str | Path], out: str | Path, chunks: int = 256) -> Path:
    """The phase-contrast planes (in z order) and the targets ({label: file}) of one well -> the well store
    `out` (see deepflows.imaging.isl), written whole or not at all."""
    import zarr

    from deepflows.inputs import require_file
    from deepflows.outputs import atomic_output
    from deepflows.store.integrity import file_sha256, seal

    out = check_new_output(out)
    planes = [require_file(p, "phase-contrast plane") for p in planes]
    labels = [label for label in LABELS if label in targets]
    if not planes or not labels:
        raise UserError("a well needs at least one phase-contrast plane and one target")
    target_paths = [require_file(targets[label], f"{label} target") for label in labels]
    log.info("reading %d phase-contrast planes and %d targets (%s)", len(planes), len(labels), ", ".join(labels))
    stack = _read_all(planes, "a phase-contrast plane")
    fluorescence = _read_all(target_paths, "a target")
    if fluorescence.shape[1:] != stack.shape[1:]:
        (h, w), (th, tw) = stack.shape[1:], fluorescence.shape[1:]
        raise UserError(f"{target_paths[0]}: the target is {th}x{tw}, but the phase-contrast plane {planes[0].name} "
                        f"is {h}x{w} (a well's images must be registered, one size)")  # fmt: skip
    norms = {INPUT_CHANNEL: normalization(stack)}
    norms |= {label: normalization(image) for label, image in zip(labels, fluorescence)}
    sources = [{"path": str(p), "sha256": file_sha256(p), "role": INPUT_CHANNEL, "z": z} for z, p in enumerate(planes)]
    sources += [{"path": str(p), "sha256": file_sha256(p), "role": label} for label, p in zip(labels, target_paths)]
    isl = {"version": SCHEMA_VERSION, "normalization": norms, "labels": labels, "planes": len(planes),
           "shape": list(stack.shape[1:]), "sources": sources}  # fmt: skip
    root_writer = OmeZarrWriter(out, "czyx", chunks=chunks, channel_names=[INPUT_CHANNEL],
                                attrs={"dtype": str(stack.dtype), "targets_dtype": str(fluorescence.dtype)})  # fmt: skip
    targets_writer = OmeZarrWriter(out, "czyx", chunks=chunks, channel_names=labels)
    log.info("writing %s (%d x %d pixels, %d planes)", out, *stack.shape[1:], len(planes))
    with atomic_output(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        ome = root_writer.write_into(root, stack[None])
        sub = root.create_group(TARGETS)
        sub.update_attributes({"ome": targets_writer.write_into(sub, fluorescence[:, None], name=TARGETS)})
        seal(root, tmp, {"ome": ome, "deepflows": root_writer.attrs, ATTRS: isl})
    return out


# ------------------------------------------------------------------------------------------------- readers
@dataclass(eq=False)
class Well:
    """An ISL well store, opened (and checked against its integrity manifest) by `open_well`."""

    path: Path
    stack: object  # Dask [z, y, x], raw pixels
    targets: object  # Dask [labels, y, x], raw pixels
    labels: tuple[str, ...]
    normalization: dict  # channel name ("phase contrast", then each label) -> {low, high, percentiles}
    sources: list

    @property
    def planes(self) -> int:
        return int(self.stack.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.stack.shape[1]), int(self.stack.shape[2])


def is_well(path: str | Path) -> bool:
    """Whether `path` is a Zarr group with ISL well attributes (nothing else is checked)."""
    from deepflows.store.integrity import root_attributes

    try:
        return ATTRS in root_attributes(path)
    except UserError:
        return False


def open_well(path: str | Path) -> Well:
    """The well store at `path`, checked chunk by chunk against its manifest; a store that is not an ISL well
    (another OME-Zarr image, an example shard) or a malformed one is refused with one line."""
    from deepflows.store.integrity import MADE_BY, root_attributes

    path = Path(path)
    attrs = root_attributes(path)
    isl = attrs.get(ATTRS)
    if not isinstance(isl, dict):
        raise UserError(f"{path}: not an In Silico Labeling well (no {ATTRS} attributes; make one with "
                        "deepflows isl-ingest)")  # fmt: skip
    levels, axes, _ = open_ome_zarr(path, made_by=MADE_BY[ATTRS])  # verifies every file, the targets' too
    t_levels, t_axes, _ = open_ome_zarr(path / TARGETS)
    stack, targets = levels[0], t_levels[0]
    try:
        labels, norms = tuple(isl["labels"]), dict(isl["normalization"])
        problem = None
        if axes != "czyx" or t_axes != "czyx":
            problem = f"axes '{axes}' and '{t_axes}' (expected czyx for the stack and its targets)"
        elif stack.shape[0] != 1 or targets.shape[1] != 1 or targets.shape[0] != len(labels) or not labels:
            problem = f"stack {stack.shape} and targets {targets.shape} do not fit labels {list(labels)}"
        elif stack.shape[-2:] != targets.shape[-2:]:
            problem = f"stack {stack.shape} and targets {targets.shape} are not one size"
        elif stack.shape[1] != isl["planes"] or set(norms) != {INPUT_CHANNEL, *labels}:
            problem = "its planes or normalisation do not match its images"
    except (KeyError, TypeError, ValueError) as err:
        problem = f"malformed {ATTRS} attributes ({type(err).__name__}: {err})"
    if problem:
        raise UserError(f"{path}: not a valid In Silico Labeling well: {problem}")
    return Well(path, stack[0], targets[:, 0], labels, norms, list(isl.get("sources", [])))


def read_stack(path: str | Path):
    """(stack as Dask [z, y, x] of raw pixels, its normalisation {low, high, percentiles}) of an ISL well, a
    plain OME-Zarr z-stack (axes zyx or czyx, with one channel; t of one time point too) or a multi-page TIFF
    (or any image read_image reads, one channel). A well's normalisation is the one it records; for any other
    stack it is computed over the whole stack (deepflows.imaging.isl.normalization; a regular subsample of one over ~16 M pixels)."""
    import dask.array as da

    path = Path(path)
    if path.is_dir():
        if is_well(path):
            well = open_well(path)
            return well.stack, well.normalization[INPUT_CHANNEL]
        levels, axes, _ = open_ome_zarr(path)
        stack = levels[0]
    else:
        pixels, axes = read_image(path)
        stack = da.from_array(pixels, chunks=(1,) * (pixels.ndim - 2) + (1024, 1024))
    if "z" not in axes and axes.endswith("yx"):  # one plane
        stack, axes = stack[..., None, :, :], axes[:-2] + "zyx"
    extra = {a: n for a, n in zip(axes, stack.shape) if a not in "zyx" and n != 1}
    if not axes.endswith("zyx") or extra:
        more = f" ({', '.join(f'{a}={n}' for a, n in extra.items())})" if extra else ""
        raise UserError(f"{path}: a z-stack needs axes zyx (czyx with one channel); this one has '{axes}'{more}")
    stack = stack.reshape(stack.shape[-3:])
    if stack.dtype.kind not in "uif":
        raise UserError(f"{path}: unsupported pixel type {stack.dtype}")
    # percentiles of at most ~16 M pixels (a regular subsample of a larger stack): memory stays bounded
    step = max(1, int(np.ceil(np.sqrt(stack.size / 16_000_000))))
    return stack, normalization(np.asarray(stack[:, ::step, ::step]))


# ------------------------------------------------------------------------------------------------- the CLI
def add_arguments(p) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", help="a well's folder of ISL-named PNGs/TIFFs (z_depth-K phase-contrast planes, "
                                      "MAXPROJECT DAPI/MAP2/NFH targets)")  # fmt: skip
    source.add_argument("--inputs", nargs="+", metavar="FILE", help="the phase-contrast planes, in z order")
    p.add_argument("--targets", nargs="+", metavar="LABEL=FILE", default=[],
                   help=f"with --inputs: the targets, LABEL one of {', '.join(LABELS)}")  # fmt: skip
    p.add_argument("--out", required=True, help="the well store to write (e.g. results/isl/well.ome.zarr)")
    p.add_argument("--chunks", type=positive_int, default=256, help="chunk edge in y and x (default 256)")


def run(args) -> None:
    if args.dir is not None:
        if args.targets:
            raise UserError("--targets goes with --inputs; with --dir the targets are found by their file names")
        planes, targets = find_well_files(args.dir)
    else:
        targets = parse_targets(args.targets)
        if not targets:
            raise UserError(f"--inputs needs --targets LABEL=FILE (LABEL one of {', '.join(LABELS)})")
        planes = args.inputs
    ingest_well(planes, targets, args.out, chunks=args.chunks)
