"""Hostile output locations: unwritable (as root: an immutable directory, a path under a regular file), a full
disk (no inode for the temporary; full in the middle of the data), and an output that already exists.

Every writing stage is listed once in WRITERS with its output(s) under `{dest}`; each location is crossed with
the writers it applies to. The tests run as root (CI too), and mode bits do not stop root, so chmod is not used.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hostile_cases import NO_SPACE, UNWRITABLE, Case, check_case, params
from hostile_faults import DISK_FULL, disk_full, disk_full_mode

# stage -> (command line with the output under {dest}, outputs, htslib writes them: injection cannot reach it)
WRITERS = {
    "make-examples": ("make-examples --reads {bam} --ref {ref} --shard 1/3 --chunk-size 4 --out {dest}/ex.zarr",
                      ("{dest}/ex.zarr",), False),  # fmt: skip
    "call-variants": ("call-variants --examples {shards} --model {model} --out {dest}/probs.zarr",
                      ("{dest}/probs.zarr",), False),  # fmt: skip
    "check-shards": ("check-shards --out {dest}/manifest.json {shards}", ("{dest}/manifest.json",), False),
    "simulate": ("simulate --ref {ref} --random-variants --depth 2 --read-length 100 --seed 3 --out-prefix {dest}/sim",
                 ("{dest}/sim.bam", "{dest}/sim.truth.vcf.gz", "{dest}/sim.confident.bed"), True),  # fmt: skip
    "capture-targets": ("capture-targets --ref {ref} --fraction 0.2 --out {dest}/targets.bed", ("{dest}/targets.bed",),
                        False),  # fmt: skip
    "make-reference": ("make-reference --out {dest}/ref.fa --length 200000", ("{dest}/ref.fa", "{dest}/ref.fa.fai"),
                       False),  # fmt: skip
    "ingest-image": ("ingest-image --image {png} --out {dest}/field.ome.zarr --chunks 64", ("{dest}/field.ome.zarr",),
                     False),  # fmt: skip
    "focus": ("focus --images {png} --model {focus_model} --out {dest}/focus --threads 1", ("{dest}/focus",), False),
    "download": ("download --url {png_url} --sha256 {png_sha256} --out {dest}/field.png", ("{dest}/field.png",),
                 False),  # fmt: skip
    "postprocess": ("postprocess --probs {probs} --ref {ref} --out {dest}/calls.vcf.gz",
                    ("{dest}/calls.vcf.gz", "{dest}/calls.vcf.gz.tbi"), True),  # fmt: skip
    "benchmark": ("benchmark --truth {truth} --confident {bed} --query {vcf} --ref {ref} --out {dest}/bench",
                  ("{dest}/bench",), False),  # fmt: skip
    "gq-calibration": ("gq-calibration --calls {vcf} --truth {truth} --confident {bed} --ref {ref} --out {dest}/gq.tsv "
                       "--plot {dest}/gq.png", ("{dest}/gq.tsv", "{dest}/gq.png"), False),  # fmt: skip
    "provenance": ("provenance --vcf {vcf} --out {dest}/provenance.tsv", ("{dest}/provenance.tsv",), False),
    "run-times": ("run-times --out {dest}/run_times.tsv make_examples={bench_tsv}", ("{dest}/run_times.tsv",), False),
    "shuffle-examples": ("shuffle-examples {labelled} --out {dest}/train.zarr --seed 1", ("{dest}/train.zarr",), False),
    "mark-duplicates": ("mark-duplicates --reads {bam} --out {dest}/md.bam", ("{dest}/md.bam", "{dest}/md.bam.bai"),
                        True),  # fmt: skip
    "isl-ingest": ("isl-ingest --dir {isl_dir} --out {dest}/well.ome.zarr", ("{dest}/well.ome.zarr",), False),
    "isl-patches": ("isl-patches --well {isl_well} --split train --patches 40 --size 16 --tune-band 16 --out "
                    "{dest}/train.zarr", ("{dest}/train.zarr",), False),  # fmt: skip
    "isl-predict": ("isl-predict --stack {isl_well} --model {isl_model} --out {dest}/pred.ome.zarr --tile 80 "
                    "--context 16", ("{dest}/pred.ome.zarr",), False),  # fmt: skip
    "isl-ridge": ("isl-ridge --well {isl_well} --tune-band 32 --out {dest}/ridge.ome.zarr", ("{dest}/ridge.ome.zarr",),
                  False),  # fmt: skip
    "isl-evaluate": ("isl-evaluate --well {isl_well} --predictions {isl_pred} --tune-band 32 --out {dest}/eval",
                     ("{dest}/eval",), False),  # fmt: skip
    "segment-data": ("segment-data --task fluorescence_nuclei --data {seg_data} --out {dest}/t.zarr", ("{dest}/t.zarr",),
                     False),  # fmt: skip
    "segment": ("segment --images {seg_image} --model {seg_model} --tile 32 --out {dest}/s", ("{dest}/s",), False),
    "segment-eval": ("segment-eval --task {seg_task} --models v3plus={seg_model} --tile 32 --out {dest}/e",
                     ("{dest}/e",), False),  # fmt: skip
    "segment-fov": ("segment-fov --task {seg_task} --model {seg_model} --field 16x16 --stride 8 --out {dest}/f",
                    ("{dest}/f",), False),  # fmt: skip
    "arm": ("arm --source slide:{seg_slide} --model classical --max-frames 2 --size 64x48 --fps 50 --csv {dest}/a.csv",
            ("{dest}/a.csv",), False),  # fmt: skip
    "text-sentences": ("text-sentences --book {text_book} --out {dest}/s.zarr", ("{dest}/s.zarr",), False),
    "text-index": ("text-index --shards {text_vectors} --out {dest}/index", ("{dest}/index",), False),
}
# Trainers (train, focus-train, isl-train, segment-train, text-train) are not here: they publish a model into its
# folder beside what the folder holds (a model card; deepflows.nn.model_dir.publish_model), by design.
# The probe's 11a/11c stages; the others are ours. 11b: postprocess segfaulted (rc 139) on an unwritable directory.
PROBED_UNWRITABLE = {"make-examples", "call-variants", "check-shards", "simulate", "make-reference", "ingest-image",
                     "focus", "download", "postprocess"}  # fmt: skip
DISK_FULL_WRITERS = ["make-examples", "call-variants", "ingest-image", "postprocess", "simulate", "make-reference",
                     "shuffle-examples", "benchmark", "mark-duplicates", "isl-predict", "segment"]  # fmt: skip


def output_name(stage: str) -> str:
    """The basename of a writer's (first) output: the line names it, or its directory."""
    return WRITERS[stage][1][0].rsplit("/", 1)[-1]


def writer_case(case_id: str, stage: str, names: tuple, words: tuple, dest: str) -> Case:
    command, outputs, _ = WRITERS[stage]
    outputs = tuple(o.replace("{dest}", dest) for o in outputs)
    return Case(case_id, stage, command.replace("{dest}", dest), None, outputs, names, words)


def probe_id(stage: str, probe: str) -> str:
    return probe if stage in PROBED_UNWRITABLE else "own"


IMMUTABLE = [writer_case(f"{'11b' if s == 'postprocess' else probe_id(s, '11a-11c')}-immutable-dir[{s}]", s,
                         (f"{output_name(s)}|locked",), (UNWRITABLE,), "{locked}") for s in WRITERS]  # fmt: skip
UNDER_A_FILE = [writer_case(f"own-output-under-a-file[{s}]", s, (f"{output_name(s)}|file.txt",), (UNWRITABLE,),
                            "{out}/file.txt") for s in WRITERS]  # fmt: skip
FULL = [(kind, writer_case(f"{'12b' if kind == 'no-inodes' else '12a'}-disk-{kind}[{s}]", s,
                           (f"{output_name(s)}|spool",), (NO_SPACE,), "{work}/spool"))
        for kind in DISK_FULL for s in DISK_FULL_WRITERS]  # fmt: skip


@pytest.mark.parametrize("case", params(IMMUTABLE))
def test_immutable_output_directory(case, valid, work, immutable_dir):
    """11a/11b/11c: the output's directory cannot be written, not even by root (chattr +i)."""
    check_case(replace(case, make=lambda d, valid, work: {"locked": immutable_dir}), valid, work)


@pytest.mark.parametrize("case", params(UNDER_A_FILE))
def test_output_under_a_regular_file(case, valid, work):
    """The output's directory is a regular file (ENOTDIR); the file itself stays untouched."""
    (work / "out" / "file.txt").write_text("not a directory\n")
    # the file existed before the run, so the contract's "outputs" clause checks that it is left as it was
    check_case(replace(case, outputs=(*case.outputs, "{out}/file.txt")), valid, work)


@pytest.mark.parametrize("kind,case", [pytest.param(k, c, id=c.id) for k, c in FULL])
def test_disk_full(kind, case, valid, work):
    """12a/12b: the disk fills up under the output; the refusal leaves no temporary (`OUT.tmp-*`) behind."""
    mode, why = disk_full_mode()
    if mode == "inject" and WRITERS[case.stage][2]:
        pytest.skip(f"{why}; injected ENOSPC cannot reach htslib's writes of {case.stage}")
    (work / "spool").mkdir()
    wrapper, listing_after = disk_full(work / "spool", kind)
    check_case(case, valid, work, wrapper=wrapper, listing_after=listing_after)


# A result already there is never overwritten: a rerun into it is refused and leaves it as it was. download is
# left out by design: a file already present is verified against its checksum and kept, or fetched again.
EXISTING = [writer_case(f"own-output-exists[{s}]", s, (output_name(s),), ("already exists|holds a benchmark",),
                        "{out}") for s in WRITERS if s != "download"]  # fmt: skip


def earlier_result(path: Path) -> None:
    """What an earlier run left at `path`: a directory for stores and folders, a file otherwise."""
    if path.suffix in (".zarr", "") or path.name.endswith(".ome.zarr"):
        path.mkdir(parents=True)
        (path / "summary.csv").write_text("an earlier result\n")  # a benchmark folder's file, a store's stray
    else:
        path.write_text("an earlier result\n")


@pytest.mark.parametrize("case", params(EXISTING))
def test_existing_output(case, valid, work):
    earlier_result(work / case.outputs[0].replace("{out}/", "out/"))
    check_case(case, valid, work)
