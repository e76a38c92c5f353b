"""Pipeline config: load YAML, fill schema defaults, validate, check the input paths; `deepflows
validate-config CONFIG`.

The JSON Schema (workflow/schemas/config.schema.yaml) is the single description of every key. Errors are
one line naming the file, the key path and the problem, e.g.
`config/config.yaml: make_examples.shards: 'four' is not of type 'integer'`, or
`config/my-run.yaml: reads.path: /data/x.bam: not found`: validate-config and the Snakefile (whose line names
the key only) check that every input the run reads is there, with the indexes that no stage builds itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

from deepflows.errors import UserError

# The schema sits in the repository (the workflow always runs from a checkout); --schema overrides it.
REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(UserError):
    """An invalid pipeline config; str() is the one-line message."""


def load_schema(path: str | Path | None = None) -> dict:
    path = Path(path) if path else SCHEMA_PATH
    if not path.is_file():
        raise ConfigError(f"{path}: config schema not found (pass --schema)")
    return yaml.safe_load(path.read_text())


def _resolve(schema: dict, root: dict) -> dict:
    """A subschema with its local `$ref` ("#/$defs/...") merged in; the referring schema's own keys win."""
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(schema: dict, instance: Any, root: dict | None = None) -> None:
    """Set missing keys to their schema defaults, recursing into objects (in place).

    Follows local `$ref`s and fills the values of open mappings (`additionalProperties` with a schema,
    e.g. training_data.eval_sets) too.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        sub = _resolve(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            fill_defaults(sub, instance[key], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in properties:
                fill_defaults(extra, value, root)


def _key_path(parts) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in parts).replace(".[", "[")


def _describe(error) -> str:
    """One line for one jsonschema error: 'key.path: problem'."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        where = _key_path([*error.absolute_path, unknown[0]])
        return f"{where}: unknown key (known keys here: {', '.join(known)})"
    if error.validator == "pattern" and "x-hint" in error.schema:
        return f"{where}: {error.instance!r} {error.schema['x-hint']}"
    return f"{where or '(top level)'}: {error.message}"


def _check_combinations(cfg: dict) -> str | None:
    """Rules the schema cannot say plainly; returns the problem or None."""
    reads, truth, mx = cfg["reads"], cfg["truth"], cfg["make_examples"]
    simulated = reads["path"] is None
    if not simulated and cfg["reference"]["fasta"] is None:
        return "reference.fasta: must be set when reads.path is set (real reads need their own reference)"
    if simulated and reads["simulate"]["variants"] == "truth" and truth["vcf"] is None:
        return "truth.vcf: must be set when reads.simulate.variants is 'truth'"
    if mx["training"] and not simulated:
        for key in ("vcf", "confident_bed"):
            if truth[key] is None:
                return f"truth.{key}: must be set when make_examples.training is true and reads.path is set"
    if mx["regions"] and mx["regions_bed"]:
        return "make_examples: set regions or regions_bed, not both"
    if preset_of(cfg).needs_targets and cfg["targets"] is None:
        return (f"targets: must be set when preset is {cfg['preset']!r} (a BED of the capture targets: an exome is "
                f"called over them only)")  # fmt: skip
    td = cfg.get("training_data")
    if td is not None and td["variants"] == "truth" and truth["vcf"] is None:
        return "truth.vcf: must be set when training_data.variants is 'truth'"
    isl = cfg.get("isl")
    if isl is not None and isl["tune_band"] < isl["patch_size"]:
        return (f"isl.tune_band: {isl['tune_band']} rows hold no {isl['patch_size']}-pixel tune patch "
                f"(isl.patch_size); make it at least {isl['patch_size']}")  # fmt: skip
    return None


def validate_config(
    config: dict, source: str | Path, schema: dict | None = None, combinations: bool = True
) -> dict:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError (one line) if invalid."""
    import jsonschema

    schema = schema if schema is not None else load_schema()
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    fill_defaults(schema, cfg)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(cfg),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    if errors:
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0])}{more}")
    problem = _check_combinations(cfg) if combinations else None
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return cfg


def read_yaml(path: str | Path, allow_empty: bool = True) -> Any:
    """The YAML document of `path` ({} for an empty file, unless not `allow_empty`); one line if unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    if data is None and not allow_empty:
        raise ConfigError(f"{path}: empty config file (Snakemake refuses one); give at least one key, e.g. sample")
    return {} if data is None else data


def load_config(path: str | Path, schema_path: str | Path | None = None) -> dict:
    """Read a YAML config file and return it validated, with defaults filled in."""
    return validate_config(read_yaml(path, allow_empty=False), path, load_schema(schema_path))


def validate_merged(config: dict, files, overrides: dict | None = None, schema_path=None) -> dict:
    """Validate Snakemake's merged config (configfile + --configfile + --config).

    Each file is checked on its own first, so a bad key is reported against the file that holds it;
    then the merge is checked (defaults, and the rules between keys).
    """
    schema = load_schema(schema_path)
    for path in files:
        validate_config(read_yaml(path), path, schema, combinations=False)
    sources = [str(f) for f in files] + (["--config"] if overrides else [])
    try:
        return validate_config(config, " + ".join(sources) or "config", schema)
    except ConfigError as err:
        if overrides and "' is not of type" in str(err):  # Snakemake reads nested --config values as text
            raise ConfigError(f"{err} (nested --config values are read as text: use a --configfile)") from None
        raise


# --- What the preset decides (deepflows.genomics.presets), unless the config says otherwise -----------------


def preset_of(cfg: dict):
    """The config's datatype preset (`preset`; the schema allows only known names)."""
    from deepflows.genomics.presets import get_preset

    return get_preset(cfg.get("preset") or "wgs", "preset:")


def model_of(cfg: dict) -> str:
    """`model`, or when null the preset's shipped model (relative to the checkout: see resolve_shipped)."""
    return cfg["model"] or preset_of(cfg).model


def marks_duplicates(cfg: dict) -> bool:
    """Whether duplicates are marked before make_examples: `make_examples.mark_duplicates`, or when null the
    preset's choice."""
    chosen = cfg["make_examples"].get("mark_duplicates")
    return preset_of(cfg).mark_duplicates if chosen is None else bool(chosen)


# --- Input paths: everything the run reads is there before any job starts --------------------------------

CACHE_DIR = "resources/cache"


def resolve_shipped(path: str, checkout: str | Path = REPO_ROOT) -> str:
    """`path` as given; a relative path missing from the working directory is looked up in the deepflows
    checkout, where the shipped models and training configs live, so `-d DIR` runs find them too."""
    if Path(path).is_absolute() or Path(path).exists() or not (Path(checkout) / path).exists():
        return path
    return str(Path(checkout) / path)


def index_files(path: str, kind: str) -> list[str]:
    """The usual index files beside an indexed input of `kind` (reads, vcf or labels, fasta); none for others."""
    if kind == "reads":
        return [f"{path}.crai" if path.endswith(".cram") else f"{path}.bai"]
    if kind in ("vcf", "labels"):
        return [f"{path}.tbi"]
    if kind in ("fasta", "planned_fasta"):
        return [f"{path}.fai", f"{path}.gzi"] if path.endswith(".gz") else [f"{path}.fai"]
    return []


def input_paths(cfg: dict, checkout: str | Path = REPO_ROOT) -> list[tuple[str, str, str]]:
    """(config key, path, kind) of every configured input the config's run reads (generated ones, the demo
    reference and simulated reads, are not in the config). Kinds: fasta, reads, vcf, labels (a truth VCF that
    make-examples reads for labels), planned_fasta (a reference whose .fai training_data reads before the run),
    file, model (a model directory), images (a file or glob), directory (a folder of inputs), books (a book file,
    a folder or glob of them)."""
    simulated = cfg["reads"]["path"] is None
    training = cfg["make_examples"]["training"]
    labels = training and not simulated  # make-examples reads the truth by region: it needs the .tbi
    training_data = cfg["training_data"]["enabled"]  # its chunks are planned from the .fai as the run starts
    items = [
        ("reference.fasta", cfg["reference"]["fasta"], "planned_fasta" if training_data else "fasta"),
        ("reads.path", cfg["reads"]["path"], "reads"),
        ("truth.vcf", cfg["truth"]["vcf"], "labels" if labels else "vcf"),
        ("truth.confident_bed", cfg["truth"]["confident_bed"], "file"),
        ("make_examples.regions_bed", cfg["make_examples"]["regions_bed"], "file"),
        ("targets", cfg.get("targets"), "file"),
        *((f"benchmark.stratify.{name}", path, "file") for name, path in sorted(cfg["benchmark"]["stratify"].items())),
    ]
    if not (training or training_data):  # the run calls variants
        items.append(("model", resolve_shipped(model_of(cfg), checkout), "model"))
    if training_data:
        items.append(("train.config", resolve_shipped(cfg["train"]["config"], checkout), "file"))
    if cfg["imaging"]["images"]:
        items += [(f"imaging.images[{i}]", spec, "images") for i, spec in enumerate(cfg["imaging"]["images"])]
        items.append(("imaging.model", resolve_shipped(cfg["imaging"]["model"], checkout), "model"))
    isl = cfg["isl"]
    if isl["data"]:
        items.append(("isl.data", isl["data"], "directory"))
        for model, recipe in (("model", "model_config"), ("unet_model", "unet_config")):  # given, or trained
            if isl[model]:
                items.append((f"isl.{model}", resolve_shipped(isl[model], checkout), "model"))
            else:
                items.append((f"isl.{recipe}", resolve_shipped(isl[recipe], checkout), "file"))
    text = cfg.get("text") or {}
    for i, entry in enumerate(text.get("books", [])):
        items.append((f"text.books[{i}]", entry if isinstance(entry, str) else entry["path"], "books"))
    if text.get("model"):
        items.append(("text.model", resolve_shipped(text["model"], checkout), "model"))
    return [(key, path, kind) for key, path, kind in items if path]


def check_inputs(cfg: dict, checkout: str | Path = REPO_ROOT) -> None:
    """Raise ConfigError ('KEY: PATH: problem') for the first input of the config's run that is missing,
    unreadable or without an index that its stage cannot build."""
    for key, path, kind in input_paths(cfg, checkout):
        check_input(key, path, kind, cfg["download"]["files"])


def check_input(key: str, path: str, kind: str, downloads: dict | None = None) -> None:
    """One input (`kind` as in input_paths). A path under resources/cache/ with an entry in `downloads`
    (download.files) is fetched by the workflow (rule download), as are its indexes that have entries."""
    downloads = downloads or {}

    def cached(name: str) -> bool:
        return name.startswith(f"{CACHE_DIR}/") and name.removeprefix(f"{CACHE_DIR}/") in downloads

    if path.startswith(f"{CACHE_DIR}/") and not Path(path).exists() and not cached(path):
        name = path.removeprefix(f"{CACHE_DIR}/")
        raise ConfigError(f"{key}: {path} is not there and download.files has no entry {name!r} to fetch it;"
                          " add one, or point the key at a local copy")  # fmt: skip
    problem = None if cached(path) else _path_problem(path, kind)
    problem = problem or _index_problem(path, kind, lambda name: cached(name) or Path(name).exists())
    if problem:
        raise ConfigError(f"{key}: {problem}")


def _path_problem(path: str, kind: str) -> str | None:
    """'PATH: what is wrong with the input itself', or None."""
    if kind == "images":
        return _images_problem(path)
    if kind == "books":
        from deepflows.text.books.corpus import BOOK_SUFFIXES, book_files

        return None if book_files(path) else f"{path}: no book file (*{', *'.join(BOOK_SUFFIXES)}) found"
    if kind == "directory":
        return None if Path(path).is_dir() else f"{path}: {'is not a directory' if Path(path).exists() else 'not found'}"
    if not Path(path).exists():
        shipped = _shipped_by(path) if kind == "model" else None
        if shipped:
            return (f"{path}: model not found (the shipped model of preset {shipped!r} is not in this checkout; set "
                    f"`model` to a model directory)")  # fmt: skip
        return f"{path}: not found"
    if kind == "model":
        return _model_problem(path)
    if Path(path).is_dir():
        return f"{path}: is a directory, not a file"
    return None if os.access(path, os.R_OK) else f"{path}: not readable (permission denied)"


def _shipped_by(path: str) -> str | None:
    """The preset whose shipped model `path` names (resources/models/NAME, wherever the checkout is), or None."""
    from deepflows.genomics.presets import PRESETS

    parts = Path(path).parts
    return next((p.name for p in PRESETS.values() if parts[-len(Path(p.model).parts):] == Path(p.model).parts), None)


def _images_problem(spec: str) -> str | None:
    """A file or glob of imaging.images must name PNG or TIFF files, at least one."""
    from glob import glob

    from deepflows.imaging.io import IMAGE_SUFFIXES

    found = glob(spec) or ([spec] if Path(spec).is_file() else [])
    if not found:
        return f"{spec}: no image file matches"
    other = [name for name in found if not name.lower().endswith(IMAGE_SUFFIXES)]
    if not other:
        return None
    return f"{spec}: not a PNG or TIFF file" if other == [spec] else f"{spec}: matches {other[0]}, not a PNG or TIFF"


def _model_problem(path: str) -> str | None:
    """What call-variants or focus would refuse before reading the weights (their sha256 is checked then)."""
    from deepflows.nn.model_dir import model_description

    try:
        meta = model_description(path)
    except UserError as err:
        return str(err)
    weights = Path(path, meta["weights"])
    return None if weights.is_file() else f"{weights}: model weights not found"


def _index_problem(path: str, kind: str, present) -> str | None:
    """'PATH: ...' for a missing index that no stage builds, or None. Every stage that opens the reference, and
    make-examples for the reads, builds a missing .fai/.gzi or .bai/.crai beside its file when that folder is
    writable. make-examples reads a labels truth VCF by region and never indexes it (benchmark and simulate
    index a temporary copy of an unindexed truth)."""
    if kind == "labels":
        if present(f"{path}.tbi") or present(f"{path}.csi"):
            return None
        return f"{path}: no index ({path}.tbi) for make-examples' labels; run `tabix -p vcf {path}`"
    if kind == "planned_fasta":
        if present(f"{path}.fai"):
            return None
        return f"{path}: no index ({path}.fai): training_data plans its chunks from it; run `samtools faidx {path}`"
    if kind == "reads":  # any index htslib finds (genomics.io.hts.open_reads)
        names = [f"{path}{ext}" for ext in (".bai", ".csi", ".crai")] + [f"{path.removesuffix('.bam')}.bai"]
        found = any(map(present, names))
    elif kind == "fasta":
        found = all(map(present, index_files(path, kind)))
    else:
        return None
    if found or _writable_folder(path):
        return None
    tool = "samtools faidx" if kind == "fasta" else "samtools index"
    index = index_files(path, kind)[0]
    return f"{path}: no index ({index}) and its folder is not writable to build one; run `{tool} {path}`"


def _writable_folder(path: str) -> bool:
    """Whether a file can be made beside `path` (the nearest existing folder, for a file still to be fetched)."""
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK)


# --- `deepflows validate-config` -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (e.g. config/config.yaml)")
    parser.add_argument("--schema", help="JSON Schema (YAML); default: the repository's workflow/schemas/")
    parser.add_argument("--show", action="store_true", help="print the config with defaults filled in, as JSON")


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.schema)
    try:
        check_inputs(cfg)  # relative paths as Snakemake sees them: from the working directory
    except ConfigError as err:
        raise ConfigError(f"{args.config}: {err}") from None
    print(json.dumps(cfg, indent=2) if args.show else f"{args.config}: ok")
