"""Pipeline config: load YAML, fill schema defaults, validate; `deepflows validate-config CONFIG`.

The JSON Schema (workflow/schemas/config.schema.yaml) is the single description of every key. Errors are
one line naming the file, the key path and the problem, e.g.
`config/config.yaml: make_examples.shards: 'four' is not of type 'integer'`.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import yaml

from deepflows.errors import UserError

# The schema sits in the repository (the workflow always runs from a checkout); --schema overrides it.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


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
    td = cfg.get("training_data")
    if td is not None and td["variants"] == "truth" and truth["vcf"] is None:
        return "truth.vcf: must be set when training_data.variants is 'truth'"
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


def read_yaml(path: str | Path) -> Any:
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
    return {} if data is None else data


def load_config(path: str | Path, schema_path: str | Path | None = None) -> dict:
    """Read a YAML config file and return it validated, with defaults filled in."""
    return validate_config(read_yaml(path), path, load_schema(schema_path))


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


# --- `deepflows validate-config` -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (e.g. config/config.yaml)")
    parser.add_argument("--schema", help="JSON Schema (YAML); default: the repository's workflow/schemas/")
    parser.add_argument("--show", action="store_true", help="print the config with defaults filled in, as JSON")


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.schema)
    print(json.dumps(cfg, indent=2) if args.show else f"{args.config}: ok")
