"""`deepflows segment-data`: the segmentation tasks as stores a trainer and an evaluator read.

    deepflows segment-data --task NAME --data SHARED_DATA_DIR --out STORE.zarr

The tasks (`TASKS`; the source files are found under --data, the shared data folder):
- `label_free_nuclei`: nuclei from transmitted light (In Silico Labeling's well, Christiansen et al. 2018). Input:
  the 13 phase-contrast planes (C = 13); label: `nuclei_mask` of the well's DAPI. Split by space with
  deepflows.imaging.isl.split_mask: the bottom-right quadrant is test, the bottom 96 rows of the bottom-left
  quadrant tune, the rest train.
- `fluorescence_nuclei`: nuclei of a Hoechst stain, BBBC006's nine in-focus fields (C = 1); label:
  `nuclei_mask` of the field itself. Split by field: a01-a06 train, a07 tune, a08-a09 test. An extra test set,
  `dsb2018`: the DSB2018 image with its HUMAN instance mask, made semantic with the pixels where two nuclei
  touch set to background (`instances_to_semantic`), as the derived labels' watershed lines are.
- `he_regions`: background / tissue / haematoxylin-dense regions of an H&E slide region (CMU-1 small region,
  C = 3 RGB); label: `he_regions` of the slide. Split by space: the bottom quarter of the rows is test, the
  256 rows above it tune, the rest train. (Rows, not columns: the tissue runs top to bottom, so the bottom
  quarter is 53% tissue, 9% haematoxylin-dense, where the right quarter of the columns is 87% glass.) An
  extra test set, `tcia`: the TCIA H&E tile (another magnification and stain batch) with its derived labels.

Labels are derived (deepflows.imaging.segment.labels), computed on each whole source image before it is cut
into splits, so the cut does not change them.

The store (Zarr 3, written under a temporary name and renamed when complete, sealed with an integrity
manifest). Every split is a group of regions `SPLIT/K` (K = 0, 1, ...), each a whole rectangle of one source
image lying wholly in that split:
- `image`: float32 [H, W, C] in [0, 1]: (raw - low) / (high - low) clipped, with low and high the 0.5th and
  99.9th percentiles of the whole source image (per channel; one pair for all planes of a z-stack, as the
  well records it). Percentiles are of the whole source (test included): an unsupervised per-image
  normalisation, as a microscope would apply to each image it sees.
- `mask`: uint8 [H, W], the classes; `instances`: int32 [H, W] of the nuclei tasks (0 background).
- the region's attributes: its source, its origin [y, x] in it, its class fractions and nuclei count.
The root attributes `deepflows.segment_task` hold the task name, the class names, the channel names, the
splits (name -> role train / tune / test and number of regions), the label recipe and its parameters, the
normalisation, the split definition and the sources with their SHA-256.

A trainer draws random crops wholly inside train regions (`random_crops`; a crop never straddles two splits);
an evaluator predicts each tune or test region whole (`Task.regions`). `baseline` is each task's classical
baseline, `score_baseline` its scores on a split (deepflows.imaging.segment.metrics).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.imaging.isl import TEST, TRAIN, TUNE, split_mask
from deepflows.imaging.segment.inputs import (FIELD_INPUT, RGB_INPUT, STACK_INPUT, apply_scaling, normalise_input,
                                              scaling)
from deepflows.imaging.segment.labels import (
    HE_CLASSES,
    NUCLEI_CLASSES,
    he_baseline,
    he_regions,
    instances_to_semantic,
    nuclei_mask,
    phase_nuclei_baseline,
)
from deepflows.outputs import check_new_output

log = logging.getLogger(__name__)

SCHEMA = "deepflows.segment_task"
SCHEMA_VERSION = 1
MADE_BY = "segment-data"
ROLES = {TRAIN: "train", TUNE: "tune", TEST: "test"}
CHUNK = 256  # chunk edge in y and x
NUCLEI_PARAMS = {"sigma": 1.0, "threshold": "li", "min_area": 30, "min_distance": 5}
HE_PARAMS = {"nuclei_diameter": 16.0, "region_scale": 3.0, "closing": 5, "min_area": 2000}
# the shared data folder's files of each task
WELL_DIR = "imaging/in_silico_labeling/condition_blue_sample"
BBBC006 = "imaging/focus_quality/BBBC006_z_aligned__{field}__s1__w1_10.png"
FIELD_SPLIT = {"train": ("a01", "a02", "a03", "a04", "a05", "a06"), "tune": ("a07",), "test": ("a08", "a09")}
DSB_IMAGE, DSB_MASK = "imaging/segmentation/dsb2018_nuclei_img2d.tif", "imaging/segmentation/dsb2018_nuclei_mask2d.tif"
SLIDE, TCIA = "imaging/histology/cmu_small_region.svs", "imaging/segmentation/tcia_he_histo.jpg"


# ------------------------------------------------------------------------------------------------- regions
def split_rectangles(split_map: np.ndarray, code: int) -> list[tuple[int, int, int, int]]:
    """The pixels of `split_map` equal to `code` as rectangles (y, x, height, width): runs of rows with the
    same column runs are merged, so a quadrant gives one rectangle and an L-shape two."""
    rows = [tuple(_runs(row == code)) for row in split_map]
    rects, start = [], 0
    for y in range(1, len(rows) + 1):
        if y == len(rows) or rows[y] != rows[start]:
            rects += [(start, x0, y - start, x1 - x0) for x0, x1 in rows[start]]
            start = y
    return rects


def _runs(line: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def field_image(raw: np.ndarray) -> tuple[np.ndarray, dict]:
    """(float32 [H, W, 1] in [0, 1], its normalisation) of a one-channel field scaled as FIELD_INPUT says."""
    raw = raw[..., None]
    (norm,) = scaling(raw, FIELD_INPUT)
    return apply_scaling(raw, [norm]), norm


@dataclass
class Source:
    """One source image of a task, normalised, with its labels, cut into regions by a split map."""

    name: str
    image: np.ndarray  # float32 [H, W, C] in [0, 1]
    mask: np.ndarray  # uint8 [H, W]
    instances: np.ndarray | None  # int32 [H, W], nuclei tasks
    split_map: np.ndarray | None = None  # uint8 [H, W] of TRAIN / TUNE / TEST; None: the whole image is `split`
    split: str = ""


# ------------------------------------------------------------------------------------------------- writing
def write_task(out: Path, task: str, classes: tuple[str, ...], channels: list[str], sources: list[Source],
               attrs: dict) -> Path:  # fmt: skip
    """The store `out` of `sources` cut into regions (see the module doc); `attrs` join the root attributes."""
    import zarr

    from deepflows.outputs import atomic_output
    from deepflows.store.integrity import seal

    compressors = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
    splits: dict[str, dict] = {}
    with atomic_output(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for source in sources:
            cuts = ([(role, rect) for code, role in ROLES.items() for rect in split_rectangles(source.split_map, code)]
                    if source.split_map is not None else [(source.split, (0, 0, *source.mask.shape))])  # fmt: skip
            for role, (y, x, h, w) in cuts:
                entry = splits.setdefault(role, {"role": role if role in ROLES.values() else "test", "regions": 0})
                group = root.require_group(role).create_group(str(entry["regions"]))
                entry["regions"] += 1
                window = (slice(y, y + h), slice(x, x + w))
                arrays = {"image": source.image[window], "mask": source.mask[window]}
                if source.instances is not None:
                    arrays["instances"] = source.instances[window]
                for name, data in arrays.items():
                    chunks = (min(CHUNK, h), min(CHUNK, w), *data.shape[2:])
                    group.create_array(name, data=np.ascontiguousarray(data), chunks=chunks, compressors=compressors)
                region = {"source": source.name, "origin": [y, x], "shape": [h, w],
                          "class_fractions": class_fractions(arrays["mask"], len(classes))}  # fmt: skip
                if source.instances is not None:
                    region["nuclei"] = int(len(np.unique(arrays["instances"])) - (arrays["instances"] == 0).any())
                group.update_attributes(region)
        meta = {"version": SCHEMA_VERSION, "task": task, "classes": list(classes), "channels": channels,
                "splits": splits, **attrs}  # fmt: skip
        seal(root, tmp, {"schema": SCHEMA, SCHEMA: meta})
    return out


def class_fractions(mask: np.ndarray, classes: int) -> list[float]:
    """The fraction of the pixels of each class."""
    return (np.bincount(mask.ravel(), minlength=classes)[:classes] / max(1, mask.size)).round(6).tolist()


def _source_entry(path: Path, role: str) -> dict:
    from deepflows.store.integrity import file_sha256

    return {"path": str(path), "sha256": file_sha256(path), "role": role}


def _data_file(data: Path, relative: str) -> Path:
    from deepflows.inputs import require_file

    return require_file(Path(data) / relative, "task source")


# ------------------------------------------------------------------------------------------------- the tasks
def build_label_free_nuclei(well: str | Path, out: str | Path, test_quadrant: str = "bottom-right",
                            tune_band: int = 96) -> Path:  # fmt: skip
    """The `label_free_nuclei` store `out` of an ISL well: a well store (deepflows isl-ingest) or a folder of
    the well's ISL-named PNGs (ingested first into a temporary well beside `out`, removed afterwards)."""
    from deepflows.imaging.isl.well import find_well_files, ingest_well, is_well, open_well

    out, well = check_new_output(out), Path(well)
    if is_well(well):
        return _label_free_from_well(open_well(well), out, test_quadrant, tune_band)
    planes, targets = find_well_files(well)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.well-") as tmp:
        store = ingest_well(planes, targets, Path(tmp) / "well.ome.zarr")
        return _label_free_from_well(open_well(store), out, test_quadrant, tune_band)


def _label_free_from_well(well, out: Path, test_quadrant: str, tune_band: int) -> Path:
    from deepflows.imaging.isl import INPUT_CHANNEL

    if "DAPI" not in well.labels:
        raise UserError(f"{well.path}: the well has no DAPI target (labels {', '.join(well.labels)}); "
                        "label_free_nuclei derives its nuclei from DAPI")  # fmt: skip
    if not 0 <= tune_band < well.shape[0] // 2:
        raise UserError(f"{well.path}: tune band {tune_band} does not fit in a quadrant of a "
                        f"{well.shape[0]}x{well.shape[1]} well")  # fmt: skip
    norm = well.normalization[INPUT_CHANNEL]
    image = apply_scaling(np.moveaxis(well.stack.compute(), 0, -1), [norm] * well.planes)
    semantic, instances = nuclei_mask(well.targets[well.labels.index("DAPI")].compute(), **NUCLEI_PARAMS)
    split = split_mask(well.shape, test_quadrant, tune_band)
    log.info("%s: %d nuclei in the well's DAPI (%.1f%% of the pixels)", out, instances.max(), 100 * semantic.mean())
    sources = [{k: s[k] for k in ("path", "sha256", "role") if k in s} for s in well.sources]
    return write_task(out, "label_free_nuclei", NUCLEI_CLASSES, [f"{INPUT_CHANNEL} z{z}" for z in range(well.planes)],
                      [Source("well", image, semantic, instances, split)],
                      {"recipe": {"label": "nuclei_mask(DAPI)", "params": NUCLEI_PARAMS},
                       "normalization": {INPUT_CHANNEL: norm}, "input_normalization": STACK_INPUT, "sources": sources,
                       "split": {"by": "space", "test_quadrant": test_quadrant, "tune_band": tune_band}})  # fmt: skip


def build_fluorescence_nuclei(data: str | Path, out: str | Path) -> Path:
    """The `fluorescence_nuclei` store `out` of BBBC006's fields and DSB2018 under the shared data folder."""
    import tifffile

    from deepflows.imaging.io import read_image

    out = check_new_output(out)
    sources, entries, norms = [], [], {}
    for split, fields in FIELD_SPLIT.items():
        for field in fields:
            path = _data_file(data, BBBC006.format(field=field))
            raw, axes = read_image(path)
            if axes != "yx":
                raise UserError(f"{path}: a BBBC006 field must be one grey image, not axes '{axes}'")
            semantic, instances = nuclei_mask(raw, **NUCLEI_PARAMS)
            image, norms[field] = field_image(raw)
            sources.append(Source(field, image, semantic, instances, split=split))
            entries.append(_source_entry(path, f"{split} field {field}"))
    image_path, mask_path = _data_file(data, DSB_IMAGE), _data_file(data, DSB_MASK)
    raw, human = tifffile.imread(image_path), tifffile.imread(mask_path)
    if raw.ndim != 2 or human.shape != raw.shape:
        raise UserError(f"{mask_path}: DSB2018's mask {human.shape} does not match its image {raw.shape}")
    image, norms["dsb2018"] = field_image(raw)
    sources.append(Source("dsb2018", image, instances_to_semantic(human), human.astype(np.int32), split="dsb2018"))
    entries += [_source_entry(image_path, "dsb2018 image"), _source_entry(mask_path, "dsb2018 human instances")]
    return write_task(out, "fluorescence_nuclei", NUCLEI_CLASSES, ["Hoechst"], sources,
                      {"recipe": {"label": "nuclei_mask(field)", "params": NUCLEI_PARAMS,
                                  "dsb2018": "human instances, touching pixels set to background"},
                       "normalization": norms, "input_normalization": FIELD_INPUT, "sources": entries,
                       "split": {"by": "field", "fields": {k: list(v) for k, v in FIELD_SPLIT.items()},
                                 "dsb2018": "test only"}})  # fmt: skip


def he_split_map(shape: tuple[int, int], test_fraction: float = 0.25, tune_rows: int = 256) -> np.ndarray:
    """uint8 [H, W]: TEST over the bottom `test_fraction` of the rows, TUNE over the `tune_rows` rows above it,
    TRAIN elsewhere."""
    h, w = shape
    test = h - int(round(h * test_fraction))
    if not 0 < test - tune_rows < test < h:
        raise UserError(f"a {h}x{w} slide has no room for a test quarter and a {tune_rows}-row tune strip")
    split = np.full(shape, TRAIN, np.uint8)
    split[test - tune_rows : test] = TUNE
    split[test:] = TEST
    return split


def build_he_regions(data: str | Path, out: str | Path, tune_rows: int = 256) -> Path:
    """The `he_regions` store `out` of the CMU slide region and the TCIA tile under the shared data folder."""
    from PIL import Image

    from deepflows.imaging.segment.inputs import read_slide

    out = check_new_output(out)
    slide_path, tile_path = _data_file(data, SLIDE), _data_file(data, TCIA)
    slide, _ = read_slide(slide_path)
    try:
        with Image.open(tile_path) as im:
            tile = np.asarray(im.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise UserError(f"{tile_path}: unreadable H&E tile ({type(err).__name__}: {err})") from None
    if slide.ndim != 3 or slide.shape[-1] != 3 or slide.dtype != np.uint8:
        raise UserError(f"{slide_path}: expected an RGB uint8 slide, not {slide.dtype} {slide.shape}")
    sources = []
    for name, rgb, split_map, split in (("cmu_slide", slide, he_split_map(slide.shape[:2], tune_rows=tune_rows), ""),
                                        ("tcia", tile, None, "tcia")):  # fmt: skip
        image = normalise_input(rgb, RGB_INPUT)
        sources.append(Source(name, image, he_regions(rgb, **HE_PARAMS), None, split_map, split))
    return write_task(out, "he_regions", HE_CLASSES, ["R", "G", "B"], sources,
                      {"recipe": {"label": "he_regions(rgb)", "params": HE_PARAMS}, "input_normalization": RGB_INPUT,
                       "sources": [_source_entry(slide_path, "slide"), _source_entry(tile_path, "tcia test tile")],
                       "split": {"by": "space", "test": "bottom quarter of the rows",
                                 "tune": f"{tune_rows} rows above test", "tcia": "test only"}})  # fmt: skip


TASKS = {
    "label_free_nuclei": lambda data, out: build_label_free_nuclei(Path(data) / WELL_DIR, out),
    "fluorescence_nuclei": build_fluorescence_nuclei,
    "he_regions": build_he_regions,
}


def task_sources(name: str, shared_data_dir: str | Path) -> list[Path]:
    """The shared data files task `name` is built from (a workflow's inputs: a changed file rebuilds the task)."""
    from deepflows.imaging.isl.well import find_well_files

    data = Path(shared_data_dir)
    if name == "label_free_nuclei":
        planes, targets = find_well_files(data / WELL_DIR)
        return [*planes, *targets.values()]
    if name == "fluorescence_nuclei":
        fields = [BBBC006.format(field=f) for names in FIELD_SPLIT.values() for f in names]
        return [_data_file(data, p) for p in (*fields, DSB_IMAGE, DSB_MASK)]
    if name == "he_regions":
        return [_data_file(data, SLIDE), _data_file(data, TCIA)]
    raise UserError(f"--task {name}: expected one of {', '.join(TASKS)}")


def build_task(name: str, shared_data_dir: str | Path, out: str | Path) -> Path:
    """The store `out` of task `name` (one of TASKS) from the shared data folder."""
    if name not in TASKS:
        raise UserError(f"--task {name}: expected one of {', '.join(TASKS)}")
    data = Path(shared_data_dir)
    if not data.is_dir():
        raise UserError(f"{data}: shared data folder {'is not a directory' if data.exists() else 'not found'}")
    return TASKS[name](data, out)


# ------------------------------------------------------------------------------------------------- reading
@dataclass
class Region:
    """One region of a split: Zarr arrays (read with [:] or np.asarray) and where it comes from."""

    image: object  # float32 [H, W, C]
    mask: object  # uint8 [H, W]
    instances: object | None  # int32 [H, W]
    source: str
    origin: tuple[int, int]


@dataclass
class Task:
    """A task store opened (and checked against its integrity manifest) by `open_task`."""

    path: Path
    attrs: dict

    @property
    def name(self) -> str:
        return self.attrs["task"]

    @property
    def classes(self) -> list[str]:
        return list(self.attrs["classes"])

    def splits(self, role: str | None = None) -> list[str]:
        """The split names, or those of one role (train, tune, test: the extra test sets are test too)."""
        return [name for name, s in self.attrs["splits"].items() if role is None or s["role"] == role]

    def regions(self, split: str) -> list[Region]:
        import zarr

        if split not in self.attrs["splits"]:
            raise UserError(f"{self.path}: no split {split!r} (splits: {', '.join(self.attrs['splits'])})")
        group = zarr.open_group(str(self.path / split), mode="r")
        out = []
        for k in range(self.attrs["splits"][split]["regions"]):
            g = group[str(k)]
            out.append(Region(g["image"], g["mask"], g["instances"] if "instances" in g else None,
                              g.attrs["source"], tuple(g.attrs["origin"])))  # fmt: skip
        return out


def open_task(path: str | Path) -> Task:
    """The task store at `path`, verified file by file; anything else is refused with one line."""
    from deepflows.store.integrity import root_attributes, verify

    path = Path(path)
    attrs = root_attributes(path)
    meta = attrs.get(SCHEMA)
    if attrs.get("schema") != SCHEMA or not isinstance(meta, dict):
        raise UserError(f"{path}: not a segmentation task store (make one with deepflows {MADE_BY})")
    verify(path, attrs, made_by=MADE_BY)
    return Task(path, meta)


def in_memory(regions: list[Region]) -> list[Region]:
    """The regions with their arrays read into memory (a trainer crops them thousands of times)."""
    return [dataclasses.replace(r, image=np.asarray(r.image), mask=np.asarray(r.mask),
                                instances=None if r.instances is None else np.asarray(r.instances))
            for r in regions]  # fmt: skip


def random_crops(regions: list[Region], size: int, count: int, rng: np.random.Generator):
    """(images float32 [count, size, size, C], masks uint8 [count, size, size]): crops drawn uniformly among
    all the size x size windows wholly inside one of `regions` (those of one split: a crop never straddles two
    splits; a region is drawn in proportion to its number of windows)."""
    windows = np.array([max(0, r.mask.shape[0] - size + 1) * max(0, r.mask.shape[1] - size + 1) for r in regions])
    if not windows.sum():
        raise UserError(f"no {size}x{size} crop fits in a region")
    picks = rng.choice(len(regions), size=count, p=windows / windows.sum())
    channels = regions[0].image.shape[-1]
    images = np.empty((count, size, size, channels), np.float32)
    masks = np.empty((count, size, size), np.uint8)
    for i, k in enumerate(picks):
        h, w = regions[k].mask.shape
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        images[i] = regions[k].image[y : y + size, x : x + size]
        masks[i] = regions[k].mask[y : y + size, x : x + size]
    return images, masks


# ------------------------------------------------------------------------------------------------- baselines
def baseline(task: str, image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] classes of the task's classical baseline on one normalised region image [H, W, C]:
    label_free_nuclei: `phase_nuclei_baseline` of the planes; fluorescence_nuclei: `nuclei_mask` of the image
    itself (the label recipe: the baseline a model must match on derived labels; on DSB2018's human mask,
    a real test); he_regions: `he_baseline` (grey levels, not the label recipe)."""
    image = np.asarray(image)
    if task == "label_free_nuclei":
        return phase_nuclei_baseline(np.moveaxis(image, -1, 0), **NUCLEI_PARAMS)[0]
    if task == "fluorescence_nuclei":
        return nuclei_mask(image[..., 0], **NUCLEI_PARAMS)[0]
    if task == "he_regions":
        return he_baseline(image, HE_PARAMS["nuclei_diameter"], HE_PARAMS["region_scale"])
    raise UserError(f"task {task!r}: expected one of {', '.join(TASKS)}")


def score_baseline(task: Task, split: str, tolerance: float = 2.0, band: float = 4.0) -> dict:
    """The task's classical baseline's scores on every region of `split` (deepflows.imaging.segment.metrics)."""
    from deepflows.imaging.segment.metrics import score_regions

    pairs = [(baseline(task.name, r.image[:]), r.mask[:]) for r in task.regions(split)]
    return score_regions(pairs, len(task.classes), tolerance=tolerance, band=band)


# ------------------------------------------------------------------------------------------------- the CLI
def add_arguments(p) -> None:
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="the task to build")
    p.add_argument("--data", required=True, help="the shared data folder (holds imaging/...)")
    p.add_argument("--out", required=True, help="the task store to write (e.g. results/segment/he_regions.zarr)")


def run(args) -> None:
    build_task(args.task, args.data, args.out)
