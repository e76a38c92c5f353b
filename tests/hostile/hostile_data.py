"""The session's valid artefacts and the builders of small genomics and imaging inputs (used by conftest.py
and by the cases that need a variant of them)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: synthetic.py
sys.path.insert(0, str(HERE))

from hostile_contract import stage_command, stage_env  # noqa: E402
from isl_synthetic import synthetic_well, write_well_dir  # noqa: E402
from segment_synthetic import fake_shared_data  # noqa: E402
from synthetic import random_reference, tile_reads, write_bam  # noqa: E402

REPO = HERE.parents[1]
SHIPPED_MODEL = REPO / "resources" / "models" / "wgs-illumina"
FOCUS_MODEL = REPO / "resources" / "models" / "focus-quality"
ISL_UNET = REPO / "resources" / "models" / "isl-unet"
SEGMENT_MODEL = REPO / "resources" / "models" / "segment-fluorescence-nuclei"
CONTIG, LENGTH, READ_LENGTH, DEPTH = "chrA", 9000, 100, 30
SITES = list(range(150, LENGTH - 150, 240))  # 0-based SNP positions: 37 of them, about 12 per shard of 3
SHARDS = 3
COMPLEMENT = {"A": "C", "C": "G", "G": "T", "T": "A"}
BUILD_SECONDS: list[float] = []


# --------------------------------------------------------------------------------------------- valid artefacts
@dataclass
class Valid:
    """Paths of the session's valid artefacts (read-only for the cases)."""

    dir: Path
    ref: Path
    ref_other: Path  # same contig names and lengths, other bases
    bam: Path
    cram: Path
    truth: Path
    truth_plain: Path  # the same truth, uncompressed
    sites_only: Path  # the truth without FORMAT and sample columns (bgzipped, indexed)
    bed: Path
    shards: list[Path]
    probs: Path
    vcf: Path
    labelled: Path
    train_store: Path
    png: Path
    png2: Path  # another field (focus-eval wants its test images apart from its training images)
    tif: Path
    bench_tsv: Path  # a Snakemake `benchmark:` file, for run-times
    config: Path  # a pipeline config naming the reference, reads, truth and model above
    isl_dir: Path  # an In Silico Labeling well's PNGs (3 planes of 64 x 64, DAPI/MAP2/NFH), ISL file names
    isl_well: Path  # that well ingested (isl-ingest)
    isl_config: Path  # a one-step isl-train config (a tiny U-Net)
    isl_train: Path  # a train patch shard of that well (isl-patches, 32 px)
    isl_tune: Path  # its tune shard
    isl_pred: Path  # a prediction store of that well (isl-predict with the shipped U-Net)
    text_book: Path  # a plain-text book of two chapters
    text_sentences: Path  # its sentence store (text-sentences)
    text_vectors: Path  # its vector store (text-embed, the pretrained encoder)
    text_index: Path  # an index of it (text-index)
    text_chats: Path  # a chit-chat corpus of 8 three-turn conversations (dataset.json.gz's format)
    text_config: Path  # a one-step text-train config (the top layer learns, 8-token turns)
    nos_settings: Path  # optimizer-search settings whose child trains 10 steps on 40 digits (nos_digits)
    nos_history: Path  # a nos-search history table of 3 rules
    nas_settings: Path  # architecture-search settings whose child trains 10 steps on those 40 digits
    nas_models: Path  # a nas-search model table of 3 models
    seg_data: Path  # tiny stand-ins of the segmentation tasks' shared data files, under their real names
    seg_task: Path  # the fluorescence_nuclei task store of them (segment-data)
    seg_config: Path  # a one-step segment-train config
    build_seconds: float

    @property
    def placeholders(self) -> dict:
        return {"ref": self.ref, "ref_other": self.ref_other, "bam": self.bam, "cram": self.cram,
                "truth": self.truth, "truth_plain": self.truth_plain, "sites_only": self.sites_only,
                "bed": self.bed, "shards": self.shards, "probs": self.probs, "vcf": self.vcf,
                "labelled": self.labelled, "train_store": self.train_store, "png": self.png, "tif": self.tif,
                "png_url": self.png.as_uri(), "png_sha256": hashlib.sha256(self.png.read_bytes()).hexdigest(),
                "bench_tsv": self.bench_tsv, "config": self.config, "regions_bed": self.bed, "png2": self.png2,
                "model": SHIPPED_MODEL, "focus_model": FOCUS_MODEL, "isl_dir": self.isl_dir,
                "isl_well": self.isl_well, "isl_config": self.isl_config, "isl_train": self.isl_train,
                "isl_tune": self.isl_tune, "isl_pred": self.isl_pred, "isl_model": ISL_UNET,
                "train_config": REPO / "config" / "model" / "read_set.yaml", "text_book": self.text_book,
                "text_sentences": self.text_sentences, "text_vectors": self.text_vectors,
                "text_index": self.text_index, "text_chats": self.text_chats,
                "text_config": self.text_config, "nos_settings": self.nos_settings,
                "nos_history": self.nos_history, "nas_settings": self.nas_settings,
                "nas_models": self.nas_models, "seg_data": self.seg_data, "seg_task": self.seg_task,
                "seg_config": self.seg_config, "seg_model": SEGMENT_MODEL,
                "seg_image": self.seg_data / "imaging" / "focus_quality" / "BBBC006_z_aligned__a08__s1__w1_10.png",
                "seg_slide": self.seg_data / "imaging" / "histology" / "cmu_small_region.svs"}  # fmt: skip


def run_valid(jobs: list[tuple[str, list]], cwd: Path, parallel: int = 3) -> None:
    """Run valid stage commands (a few at a time); any failure is a fixture error, not a case's."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            stage, argv = pending.pop(0)
            command = stage_command(stage, [str(a) for a in argv])
            proc = subprocess.Popen(command, cwd=cwd, env=stage_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
            running.append((stage, argv, proc))
        stage, argv, proc = running.pop(0)
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"hostile fixture: valid `deepflows {stage} {' '.join(map(str, argv))}` failed "
                               f"(rc {proc.returncode}):\n{err[-3000:]}")


def sh(*command, cwd=None) -> None:
    subprocess.run([str(c) for c in command], cwd=cwd, check=True, capture_output=True)


def write_vcf(path: Path, ref: str, sites=SITES, sample: str | None = "truth", extra_sample: str | None = None,
              genotype=None) -> Path:  # fmt: skip
    """A VCF of SNPs at `sites` (1/1 at every third, else 0/1); `sample=None`: sites-only."""
    genotype = genotype or (lambda k: "1/1" if k % 3 == 0 else "0/1")
    header = ["##fileformat=VCFv4.2", f"##contig=<ID={CONTIG},length={LENGTH}>",
              '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']  # fmt: skip
    columns = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
    if sample:
        columns += ["FORMAT", sample] + ([extra_sample] if extra_sample else [])
    lines = header + ["\t".join(columns)]
    for k, s in enumerate(sites):
        record = [CONTIG, str(s + 1), ".", ref[s], COMPLEMENT[ref[s]], "50", "PASS", "."]
        if sample:
            record += ["GT", genotype(k)] + (["0/1" if k % 3 else "1/1"] if extra_sample else [])
        lines.append("\t".join(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def bgzip_index(path: Path) -> Path:
    """path.vcf -> path.vcf.gz (+ .tbi); the plain file is kept."""
    import pysam

    out = Path(str(path) + ".gz")
    pysam.tabix_compress(str(path), str(out), force=True)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    return out


def write_config(path: Path, fasta, reads, truth=None, bed=None, model=SHIPPED_MODEL, sample="hostile") -> Path:
    """A pipeline config (absolute paths) for validate-config and snakemake."""
    import yaml

    config = {"sample": sample, "reference": {"fasta": str(fasta)}, "reads": {"path": str(reads)},
              "truth": {"vcf": str(truth) if truth else None, "confident_bed": str(bed) if bed else None},
              "make_examples": {"shards": SHARDS}, "model": str(model)}  # fmt: skip
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def synthetic_bam(path: Path, ref: str, seed: int = 1) -> Path:
    def edit(i, start, seq, cigar):
        seq = list(seq)
        for k, site in enumerate(SITES):
            if start <= site < start + len(seq) and (i % 2 or k % 3 == 0):
                seq[site - start] = COMPLEMENT[ref[site]]
        return "".join(seq), cigar

    reads = tile_reads(ref, 0, LENGTH, DEPTH, READ_LENGTH, "r", edit=edit, rng=np.random.default_rng(seed))
    return write_bam(path, {CONTIG: LENGTH}, reads)


def write_png(path: Path, shape=(256, 256), dtype=np.uint16, seed=0) -> Path:
    """A smooth, textured 16-bit field (enough structure for focus patches)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 20000 + 15000 * np.sin(x / 7.0) * np.cos(y / 5.0) + rng.normal(0, 2000, shape)
    image = np.clip(image, 0, np.iinfo(dtype).max).astype(dtype)
    Image.fromarray(image).save(path)
    return path


def build_valid(d: Path) -> Valid:
    """Build every valid artefact under `d` with the stages under test."""
    import tifffile
    from PIL import Image

    t0 = time.monotonic()
    ref = random_reference(d / "ref.fa", {CONTIG: LENGTH}, seed=5)[CONTIG]
    random_reference(d / "ref_other.fa", {CONTIG: LENGTH}, seed=6)
    bam = synthetic_bam(d / "reads.bam", ref)
    sh("samtools", "view", "-C", "-T", d / "ref.fa", "-o", d / "reads.cram", bam)
    sh("samtools", "index", d / "reads.cram")
    truth_plain = write_vcf(d / "truth.vcf", ref)
    truth = bgzip_index(truth_plain)
    sites_only = bgzip_index(write_vcf(d / "sites_only.vcf", ref, sample=None))
    bed = d / "confident.bed"
    bed.write_text(f"{CONTIG}\t0\t{LENGTH}\n")
    png, png2 = write_png(d / "field.png"), write_png(d / "field2.png", seed=1)
    tif = d / "field.tif"
    tifffile.imwrite(tif, np.asarray(Image.open(png)))
    bench_tsv = d / "make_examples.benchmark.tsv"
    bench_tsv.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                         "12.5\t0:00:12\t300.1\t900.2\t280.0\t281.0\t0.1\t2.0\t95.0\t11.9\n")
    config = write_config(d / "config.yaml", d / "ref.fa", bam, truth, bed)
    isl_dir = write_well_dir(d / "isl", *synthetic_well((160, 160), planes=13), extra=False)
    isl_well = d / "isl-well.ome.zarr"
    isl_config = d / "isl-train.yaml"
    isl_config.write_text("model: {architecture: isl_unet, options: {widths: [4, 8]}}\ndata: {margin: 4, shift: 0}\n"
                          "training: {batch_size: 2, steps: 1}\nevaluation: {every: 1}\n")

    text_book = d / "book.txt"
    text_book.write_text("A HOSTILE BOOK\n\nBy A. Tester\n\nCHAPTER I\n\nThe first sentence is here. A second one\n"
                         "follows it.\n\nCHAPTER II\n\nThe storm broke the lamp. Nobody saw it.\n")
    text_sentences, text_vectors, text_index = d / "book.sent.zarr", d / "book.vec.zarr", d / "text-index"
    text_chats, text_config = d / "chats.json.gz", d / "text-train.yaml"
    chats = {f"c{i}": {"messages": [[{"text": t, "sender": s}] for t, s in (("hi", "a"), (f"hello {i}", "b"),
                                                                          ("bye", "a"))]} for i in range(8)}
    with gzip.open(text_chats, "wt", encoding="utf-8") as f:
        json.dump(chats, f)
    text_config.write_text("model: {architecture: sentence_bert, options: {trainable_layers: 1}}\n"
                           "data: {max_tokens: 8, tune_conversations: 2}\ntraining: {batch_size: 2, steps: 1}\n"
                           "evaluation: {every: 1}\n")

    nos_digits, nos_settings, nos_history = d / "digits.csv.gz", d / "nos.yaml", d / "nos-history.tsv"
    with gzip.open(nos_digits, "wt") as f:
        f.writelines(",".join(map(str, [*(np.arange(784) * (i + 1) % 256), i % 10])) + "\n" for i in range(40))
    nos_settings.write_text(f"batch: 2\nchild: {{data: {nos_digits}, steps: 10, check_every: 10, "
                            "learning_rates: [0.1]}\n")
    nos_history.write_text("algorithm\tseed\tindex\tbatch\trule\treward\tstatus\tlearning_rate\tevaluated\t"
                           "seconds\telapsed\n" + "".join(f"random\t0\t{i}\t0\t{r}\t{w}\tok\t0.1\tTrue\t1.0\t{i + 1}\n"
                                                          for i, (r, w) in enumerate((("g", 0.5), ("adam", 0.6),
                                                                                      ("sign(g)", 0.4)))))  # fmt: skip
    nas_settings, nas_models = d / "nas.yaml", d / "nas-models.tsv"
    nas_settings.write_text(f"child: {{data: {nos_digits}, steps: 10, check_every: 10, channels: 2, batch_size: 4}}\n"
                            "evolution: {population: 2, sample: 1}\n")
    nas_models.write_text("id\tcell\tparent\tstatus\treward\tstarted\tfinished\n" + "".join(
        f"{i}\t{c}\t\tdone\t{w}\t{i}.0\t{i + 1}.0\n" for i, (c, w) in enumerate(
            (("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|", 0.5),
             ("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", 0.4),
             ("|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", 0.3)))))  # fmt: skip

    seg_data, seg_task, seg_config = d / "segment-data", d / "segment-task.zarr", d / "segment-train.yaml"
    fake_shared_data(seg_data)
    seg_config.write_text("data: {crop: 32, tile: 32}\ntraining: {batch_size: 2, steps: 1}\nevaluation: {every: 1}\n")

    examples = d / "examples"
    examples.mkdir()
    shards = [examples / f"examples-{i:05d}-of-{SHARDS:05d}.zarr" for i in range(SHARDS)]
    labelled = d / "labelled" / "examples-00000-of-00001.zarr"
    labelled.parent.mkdir()
    common = ["--reads", bam, "--ref", d / "ref.fa", "--chunk-size", "4"]
    run_valid([*(("make-examples", [*common, "--shard", f"{i}/{SHARDS}", "--out", shards[i]]) for i in range(SHARDS)),
               ("make-examples", [*common, "--truth", truth, "--confident", bed, "--out", labelled]),
               ("isl-ingest", ["--dir", isl_dir, "--out", isl_well, "--chunks", "32"]),
               ("text-sentences", ["--book", text_book, "--out", text_sentences, "--chunk-rows", "4"]),
               ("segment-data", ["--task", "fluorescence_nuclei", "--data", seg_data, "--out", seg_task])], d)  # fmt: skip
    probs, train_store = d / "calls" / "probs.zarr", d / "train" / "train.zarr"
    probs.parent.mkdir()
    train_store.parent.mkdir()
    run_valid([("call-variants", ["--examples", *shards, "--model", SHIPPED_MODEL, "--out", probs]),
               ("shuffle-examples", [labelled, "--out", train_store, "--seed", "1",
                                     "--tune-regions", f"{CONTIG}:1-3000"])], d)  # fmt: skip
    vcf = d / "calls" / "calls.vcf.gz"
    isl_train, isl_tune, isl_pred = d / "isl-train.zarr", d / "isl-tune.zarr", d / "isl-pred.ome.zarr"
    isl_split = ["--size", "32", "--tune-band", "32"]
    run_valid([("postprocess", ["--probs", probs, "--ref", d / "ref.fa", "--out", vcf]),
               ("isl-patches", ["--well", isl_well, "--split", "train", "--patches", "4", *isl_split, "--out", isl_train]),
               ("isl-patches", ["--well", isl_well, "--split", "tune", *isl_split, "--out", isl_tune]),
               ("isl-predict", ["--stack", isl_well, "--model", ISL_UNET, "--out", isl_pred, "--tile", "80",
                                "--context", "16"]),
               ("text-embed", ["--sentences", text_sentences, "--out", text_vectors, "--batch-size", "4"])], d)
    run_valid([("text-index", ["--shards", text_vectors, "--out", text_index])], d)  # fmt: skip
    BUILD_SECONDS.append(time.monotonic() - t0)
    return Valid(d, d / "ref.fa", d / "ref_other.fa", bam, d / "reads.cram", truth, truth_plain, sites_only, bed,
                 shards, probs, vcf, labelled, train_store, png, png2, tif, bench_tsv, config, isl_dir, isl_well,
                 isl_config, isl_train, isl_tune, isl_pred, text_book, text_sentences, text_vectors, text_index,
                 text_chats, text_config, nos_settings, nos_history, nas_settings, nas_models, seg_data,
                 seg_task, seg_config, time.monotonic() - t0)  # fmt: skip




# Shards of other runs, each to be mixed into the valid set in place of the valid shard of the same index:
# name -> (shard index, shard count, make-examples options that differ from the valid run's, flags).
VARIANT_RUNS = {
    "run-other-region": (1, SHARDS, {"--regions": f"{CONTIG}:1-4500"}, []),  # 9c: another region plan
    "run-no-realign": (2, SHARDS, {}, ["--no-realign"]),  # 9d: not the first shard
    "run-other-seed": (1, SHARDS, {"--seed": "7"}, []),  # 9e
    "run-other-reference": (1, SHARDS, {"--ref": "{ref_other}"}, []),  # 9e: same contigs, other bases
    "run-other-reads": (1, SHARDS, {"--reads": "{bam_other}"}, []),  # other reads of the same reference
    "run-six-shards": (1, 6, {}, []),  # another shard count
}


def build_variant_shards(valid: Valid, d: Path) -> dict[str, Path]:
    """One shard of each of VARIANT_RUNS, named as the valid run names its shards, in the run's own directory."""
    values = {"ref_other": valid.ref_other, "bam_other": synthetic_bam(d / "reads_other.bam", fetch(valid.ref), 11)}
    jobs, paths = [], {}
    for name, (index, count, overrides, flags) in VARIANT_RUNS.items():
        path = d / name / f"examples-{index:05d}-of-{count:05d}.zarr"
        path.parent.mkdir()
        options = {"--reads": valid.bam, "--ref": valid.ref, "--shard": f"{index}/{count}", "--chunk-size": "4",
                   **{k: v.format(**values) for k, v in overrides.items()}}  # fmt: skip
        jobs.append(("make-examples", [*(x for kv in options.items() for x in kv), *flags, "--out", path]))
        paths[name] = path
    run_valid(jobs, d)
    return paths


def fetch(fasta: Path, contig: str = CONTIG) -> str:
    import pysam

    with pysam.FastaFile(str(fasta)) as handle:
        return handle.fetch(contig)


def examples_equal(a: Path, b: Path) -> None:
    """Two example stores hold the same examples (arrays compared; attributes such as sources may differ)."""
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    na, nb = ga["start"].shape[0], gb["start"].shape[0]
    assert na == nb, f"accepted, but wrong: {na} examples in {a.name}, {nb} in the expected {b.name}"
    for key in ("contig", "start", "ref", "alts", "inputs"):
        assert np.array_equal(ga[key][:], gb[key][:]), f"accepted, but wrong: {a.name} and {b.name} differ in {key}"


def concatenated(stores: list[Path]) -> dict:
    """The examples of a shard set, in shard order, as one set of arrays (the set must not depend on the count)."""
    import zarr

    groups = [zarr.open_group(str(s), mode="r") for s in stores]
    return {k: np.concatenate([g[k][:] for g in groups]) for k in ("contig", "start", "ref", "alts", "inputs")}


def newer_than(index: Path, data: Path) -> None:
    """Make `index` look fresh: newer than its data, so only its content can betray it."""
    t = os.path.getmtime(data) + 10
    os.utime(index, (t, t))
