"""`deepflows provenance`: what made a call set, read back from its VCF header, as a table for the report.

    deepflows provenance --vcf calls.vcf.gz --out provenance.tsv [--extra snakemake=9.1.0 ...]

postprocess writes the provenance into the VCF header (`##source`, `##deepflows_*`, `##reference`): deepflows
and library versions, the model's name and sha256, the config's sha256 (from the workflow), the commands. The
VCF stays the single record; this table only shows it, so the report and the calls cannot disagree.
"""

from __future__ import annotations

import argparse
import platform
import re
from importlib import metadata
from pathlib import Path

from deepflows.errors import UserError
from deepflows.inputs import require_file
from deepflows.outputs import check_new_output
from deepflows.tables import read_lines, write_tsv

# The libraries whose versions can change a call: the featurizer's, the model's and the writer's.
LIBRARIES = ("jax", "jaxlib", "flax", "numpy", "numba", "pysam", "zarr")
HEADER_KEYS = ("source", "reference")  # besides every deepflows_* key
COLUMNS = ("key", "value")


def software_versions() -> str:
    """'python=3.12.3 jax=0.7.0 ...': the interpreter and LIBRARIES, 'absent' for one not installed."""
    versions = [f"python={platform.python_version()}"]
    for name in LIBRARIES:
        try:
            versions.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}=absent")
    return " ".join(versions)


def read_vcf_provenance(path: str | Path) -> list[tuple[str, str]]:
    """The provenance `##KEY=VALUE` lines of a bgzipped or plain VCF's header, in file order."""
    rows = []
    for _, line in read_lines(require_file(path, "VCF")):
        if not line.startswith("##"):
            break
        key, sep, value = line[2:].rstrip("\n").partition("=")
        if sep and (key in HEADER_KEYS or key.startswith("deepflows_")):
            rows.append((key, value))
    if not any(key.startswith("deepflows_") for key, _ in rows):
        raise UserError(f"{path}: no ##deepflows_ header lines: not a VCF written by deepflows postprocess")
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vcf", required=True, help="a VCF written by deepflows postprocess")
    p.add_argument("--out", required=True, metavar="TSV", help="key and value per line")
    p.add_argument("--extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="rows added after the header's, e.g. the workflow's snakemake version")  # fmt: skip


def key_value_pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    """`KEY=VALUE` command-line items -> [(KEY, VALUE)]; KEY is letters, digits and '_', VALUE not blank
    (it may hold '=')."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", key) or not value.strip():
            raise UserError(f"{option} {item!r}: expected KEY=VALUE (KEY: letters, digits, '_')")
        pairs.append((key, value))
    return pairs


def run(args: argparse.Namespace) -> None:
    check_new_output(args.out)
    rows = read_vcf_provenance(args.vcf) + key_value_pairs(args.extra, "--extra")
    write_tsv(({"key": k, "value": v} for k, v in rows), COLUMNS, args.out)
