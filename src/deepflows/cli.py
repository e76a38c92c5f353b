"""`deepflows <stage> ...`: one subcommand per pipeline stage.

Each stage lives in its own module exposing `add_arguments(parser)` and `run(args)`. Only the module
of the stage being run is imported, so `deepflows --help` stays fast and a missing optional extra
only breaks the stages that need it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from deepflows import __version__
from deepflows.errors import UserError

# subcommand -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "simulate": ("deepflows.genomics.simulate_cli", "simulate an aligned, diploid Illumina-like sample"),
    "make-reference": ("deepflows.genomics.refgen", "write a synthetic reference FASTA with human-like repeats"),
    "make-examples": ("deepflows.genomics.make_examples", "candidate variants -> pileup images in a Zarr shard"),
    "check-shards": ("deepflows.store.check_shards", "verify that every shard of a sample is complete"),
    "shuffle-examples": ("deepflows.store.shuffle", "labelled shards -> one shuffled training store + tuning split"),
    "train": ("deepflows.nn.train", "train a pileup classifier on a training store"),
    "download": ("deepflows.download", "fetch a file (http, https, file URL) and verify its checksum"),
    "validate-config": ("deepflows.config", "check a pipeline config file against its schema"),
    "call-variants": ("deepflows.genomics.call_variants", "example shards + model -> genotype probabilities (Zarr)"),
    "postprocess": ("deepflows.genomics.postprocess", "genotype probabilities -> bgzipped, indexed VCF"),
    "benchmark": ("deepflows.genomics.benchmark_cli", "compare a VCF with a truth set, hap.py style"),
    "run-times": ("deepflows.run_times", "Snakemake benchmark files -> run time and memory per stage"),
    "gq-calibration": ("deepflows.genomics.calibration", "GQ bins of a call set vs its observed genotype error rate"),
    "fit-call-temperature": ("deepflows.genomics.call_calibration",
                             "fit a model's call temperature on called tune sets (GQ, QUAL and PL follow errors)"),
    "ingest-image": ("deepflows.imaging.io", "a PNG or TIFF (channels, z-stacks) -> an OME-Zarr multiscale image"),
    "focus-train": ("deepflows.imaging.focus_train", "train the focus-quality model on synthetically defocused fields"),
    "focus": ("deepflows.imaging.focus", "rate focus quality per patch and per image; CSVs and montages"),
    "focus-eval": ("deepflows.imaging.focus_eval", "focus model vs a classical baseline on held-out fields"),
    "provenance": ("deepflows.provenance", "a deepflows VCF's header provenance -> a table for the report"),
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only `stage` (if given) gets its full argument list."""
    parser = argparse.ArgumentParser(prog="deepflows", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"deepflows {__version__}")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == stage:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(stage)
    args = parser.parse_args(argv)
    args.command_line = "deepflows " + " ".join(argv)
    # Progress goes to stderr (a rule's log file under Snakemake); errors are the single last line.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        importlib.import_module(args._module).run(args)
    except UserError as err:
        print(f"deepflows {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
