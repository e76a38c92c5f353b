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
    "simulate": ("deepflows.genomics.simulate.cli", "simulate an aligned, diploid Illumina-like sample"),
    "capture-targets": ("deepflows.genomics.simulate.targets", "draw exome-like capture targets (BED) for simulated WES"),
    "make-reference": ("deepflows.genomics.simulate.reference",
                       "write a synthetic reference FASTA with human-like repeats"),
    "mark-duplicates": ("deepflows.genomics.io.duplicates",
                        "flag PCR duplicates (samtools collate, fixmate, sort, markdup) -> sorted, indexed BAM"),
    "make-examples": ("deepflows.genomics.examples.make_examples",
                      "candidate variants -> pileup images in a Zarr shard"),
    "check-shards": ("deepflows.store.check_shards", "verify that every shard of a sample is complete"),
    "verify": ("deepflows.store.verify", "check Zarr stores deepflows wrote against their integrity manifests"),
    "shuffle-examples": ("deepflows.store.shuffle", "labelled shards -> one shuffled training store + tuning split"),
    "train": ("deepflows.nn.train", "train a pileup classifier on a training store"),
    "download": ("deepflows.download", "fetch a file (http, https, file URL) and verify its checksum"),
    "validate-config": ("deepflows.config", "check a pipeline config file against its schema"),
    "call-variants": ("deepflows.genomics.calling.call_variants",
                      "example shards + model -> genotype probabilities (Zarr)"),
    "postprocess": ("deepflows.genomics.calling.postprocess", "genotype probabilities -> bgzipped, indexed VCF"),
    "benchmark": ("deepflows.genomics.benchmark.cli", "compare a VCF with a truth set, hap.py style"),
    "run-times": ("deepflows.run_times", "Snakemake benchmark files -> run time and memory per stage"),
    "gq-calibration": ("deepflows.genomics.benchmark.gq_calibration",
                       "GQ bins of a call set vs its observed genotype error rate"),
    "fit-call-temperature": ("deepflows.genomics.calling.temperature",
                             "fit a model's call temperature on called tune sets (GQ, QUAL and PL follow errors)"),
    "ingest-image": ("deepflows.imaging.io", "a PNG or TIFF (channels, z-stacks) -> an OME-Zarr multiscale image"),
    "focus-train": ("deepflows.imaging.focus_train", "train the focus-quality model on synthetically defocused fields"),
    "focus": ("deepflows.imaging.focus", "rate focus quality per patch and per image; CSVs and montages"),
    "focus-eval": ("deepflows.imaging.focus_eval", "focus model vs a classical baseline on held-out fields"),
    "isl-ingest": ("deepflows.imaging.isl.well",
                   "In Silico Labeling: a well's phase-contrast z-stack and fluorescence targets -> one OME-Zarr well"),
    "isl-patches": ("deepflows.imaging.isl.patches",
                    "In Silico Labeling: a well -> a shard of train, tune or test patches (Zarr)"),
    "isl-train": ("deepflows.imaging.isl.train", "train an In Silico Labeling model on z-stack patch shards"),
    "isl-predict": ("deepflows.imaging.isl.predict",
                    "predict fluorescent labels (and their uncertainty) for a whole z-stack, tile by tile"),
    "isl-ridge": ("deepflows.imaging.isl.baselines",
                  "In Silico Labeling baseline: ridge regression on multi-scale filtered planes -> prediction store"),
    "isl-evaluate": ("deepflows.imaging.isl.evaluate",
                     "In Silico Labeling predictions vs the well's fluorescence on one split: r, calibration, figures"),
    "segment-data": ("deepflows.imaging.segment.tasks",
                     "a segmentation task (label-free nuclei, fluorescence nuclei, H&E regions) -> a task store (Zarr)"),
    "segment-train": ("deepflows.imaging.segment.train",
                      "train a DeepLab model (FCN, v3 or v3+ head on MobileNetV2) on a segmentation task store"),
    "segment": ("deepflows.imaging.segment.cli", "segment images of any size with a trained model: masks, overlays"),
    "segment-eval": ("deepflows.imaging.segment.evaluate",
                     "segmentation models and the classical baseline on a task's test sets: mIoU, boundary F1"),
    "segment-fov": ("deepflows.imaging.segment.fov",
                    "field-of-view detection of a task's target region (AUC): a classifier head on the backbone"),
    "arm": ("deepflows.imaging.arm.cli",
            "the Augmented Reality Microscope: live frames -> model -> green contours, streamed and recorded"),
    "text-train": ("deepflows.text.response.finetune",
                   "fine-tune the sentence encoder as a dual encoder on chit-chat input/response pairs"),
    "nos-search": ("deepflows.automl.search.cli",
                   "Neural Optimizer Search: propose and score update rules (controller, random, evolution)"),
    "nos-evaluate": ("deepflows.automl.search.evaluate_cli", "train the optimizer search's child task with one rule"),
    "nos-report": ("deepflows.automl.search.report",
                   "optimizer searches' histories -> best-so-far curves, per-search table, top rules re-measured"),
    "nas-compare": ("deepflows.automl.nas.compare_cli",
                    "architecture search algorithms compared on NAS-Bench-201's and HPOLib's tables (100s of runs)"),
    "nas-search": ("deepflows.automl.nas.cli",
                   "architecture search: train NAS-Bench-201-like cells on digits (aging evolution and baselines)"),
    "nas-report": ("deepflows.automl.nas.report",
                   "live architecture searches -> progress, best cells drawn, best cells retrained vs the hand design"),
    "provenance": ("deepflows.provenance", "a deepflows VCF's header provenance -> a table for the report"),
    "text-sentences": ("deepflows.text.books.sentences",
                       "a book (Gutenberg or plain text, verse TSV) -> its sentences with book, chapter, offsets (Zarr)"),
    "text-embed": ("deepflows.text.index.embed", "a book's sentence store -> its float16 sentence vectors (Zarr)"),
    "text-index": ("deepflows.text.index.build",
                   "books' vector stores -> one sentence index (Zarr + a faiss IVF-PQ approximate index)"),
    "text-search": ("deepflows.text.index.search", "a query -> the index's best-responding sentences (table or JSON)"),
    "serve": ("deepflows.text.web.serve", "Talk to Books and Semantris over a sentence index: a local web app"),
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
    # Progress goes to stderr (a rule's log file under Snakemake); errors are the single last line. The log
    # writes to its own copy of stderr, so that it still flows while htslib's stderr is held back
    # (deepflows.genomics.io.hts.htslib_call) and htslib's noise can be kept off the user's screen.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=_own_stderr())  # fmt: skip
    # Zarr writes chunks concurrently on its own event loop: when one write fails (a full disk), the error is
    # raised here once, and its siblings' identical errors would reach stderr later, as asyncio's "exception
    # was never retrieved" tracebacks after the one error line.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        importlib.import_module(args._module).run(args)
    except UserError as err:
        return _fail(args.stage, str(err), 2)
    except KeyboardInterrupt:
        return 130
    except OSError as err:  # the machine's answer, not a bug: disk full, read-only file system, permissions
        return _fail(args.stage, describe_os_error(err), 1)
    except MemoryError:
        return _fail(args.stage, "out of memory (give the job more memory, or smaller shards or batches)", 1)
    except Exception as err:  # noqa: BLE001 - a bug: still one line for the user, the traceback kept in a file
        return _fail(args.stage, f"internal error, please report it: {type(err).__name__}: {err} "
                                 f"(traceback in {_save_traceback(args.stage)})", 3)  # fmt: skip
    return 0


def _own_stderr():
    """A line-buffered stream on a duplicate of file descriptor 2 (sys.stderr itself where it has none)."""
    import os

    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (pytest's capture, an IDE)
        return sys.stderr


def describe_os_error(err: OSError) -> str:
    """`PATH: No space left on device`: the file and the system's words for what went wrong."""
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    what = err.strerror or str(err) or type(err).__name__
    return f"{where}: {what}" if where else what


def _fail(stage: str, message: str, code: int) -> int:
    """Print the one error line (the last line of the stage's output) and return the exit code."""
    print(f"deepflows {stage}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _save_traceback(stage: str) -> str:
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix=f"deepflows-{stage}-", suffix=".traceback.txt",
                                     delete=False) as handle:  # fmt: skip
        traceback.print_exc(file=handle)
    return handle.name


if __name__ == "__main__":
    sys.exit(main())
