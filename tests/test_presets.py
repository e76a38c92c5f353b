"""Datatype presets (wgs, wes) as DeepVariant's --model_type: make-examples --preset/--targets, the config keys
preset/targets/make_examples.mark_duplicates, and `deepflows mark-duplicates`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pysam
import pytest
import yaml
import zarr
from synthetic import Read, random_reference, write_bam

from deepflows import config as dfconfig
from deepflows.cli import STAGES, main
from deepflows.config import ConfigError, validate_config
from deepflows.errors import UserError
from deepflows.genomics.io.duplicates import mark_duplicates
from deepflows.genomics.presets import PRESETS, get_preset
from deepflows.store.examples import ShardWriter, check_shard_set, featurisation, run_identity

ROOT = Path(__file__).resolve().parents[1]
CONTIG, LENGTH, READ_LEN = "chrT", 4000, 100
SITES = (400, 1600, 3000)  # heterozygous SNPs
OTHER = {"A": "C", "C": "G", "G": "T", "T": "A"}


# ------------------------------------------------------------------------------------------------ presets


def test_presets():
    wgs, wes = get_preset("wgs"), get_preset("wes")
    assert (wgs.model, wgs.needs_targets, wgs.target_padding, wgs.mark_duplicates) == (
        "resources/models/wgs-illumina", False, 0, False)  # fmt: skip
    assert (wes.model, wes.needs_targets, wes.target_padding, wes.mark_duplicates) == (
        "resources/models/wes-illumina", True, 50, True)  # fmt: skip
    with pytest.raises(UserError, match=r"^--preset 'pacbio': unknown preset \(known: wgs, wes\)$"):
        get_preset("pacbio")


def test_schema_knows_every_preset():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["preset"]["enum"] == list(PRESETS)


# ------------------------------------------------------------------------------------------- make-examples


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A 4 kb contig (and a small second one) with a heterozygous SNP at each of SITES, 30 reads over each."""
    d = tmp_path_factory.mktemp("presets")
    ref = random_reference(d / "ref.fa", {CONTIG: LENGTH, "chrU": 500}, seed=3)[CONTIG]
    rng = np.random.default_rng(7)
    reads = []
    for site in SITES:
        for i in range(30):
            s = int(rng.integers(site - READ_LEN + 15, site - 15))
            seq = ref[s:site] + (OTHER[ref[site]] if i % 2 else ref[site]) + ref[site + 1 : s + READ_LEN]
            reads.append(Read(f"r{site}_{i}", s, seq, [(0, READ_LEN)], reverse=bool(i % 2), read1=bool(i % 3)))
    bam = write_bam(d / "reads.bam", {CONTIG: LENGTH, "chrU": 500}, reads)
    return {"dir": d, "fasta": d / "ref.fa", "bam": bam}


def _bed(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _make(sample, out, *extra) -> int:
    return main(["make-examples", "--reads", str(sample["bam"]), "--ref", str(sample["fasta"]), "--out", str(out),
                 "--no-realign", *map(str, extra)])  # fmt: skip


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return lines[-1]


def test_unknown_preset_is_one_line(sample, tmp_path, capsys):
    assert _make(sample, tmp_path / "o.zarr", "--preset", "pacbio") == 2
    assert _error(capsys) == ("deepflows make-examples: error: --preset 'pacbio': unknown preset "
                              "(known: wgs, wes)")  # fmt: skip
    assert not (tmp_path / "o.zarr").exists()


def test_wes_needs_targets(sample, tmp_path, capsys):
    assert _make(sample, tmp_path / "o.zarr", "--preset", "wes") == 2
    assert _error(capsys) == ("deepflows make-examples: error: --preset wes needs --targets BED: an exome is "
                              "called over its capture targets only")  # fmt: skip
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize(
    "lines, words",
    [
        (["20\t100\t200"], "line 1: contig '20' is not in the reference"),  # a b37 BED against a chr reference
        ([], "no intervals"),
        ([f"{CONTIG}\t100\t100"], "no intervals"),
        ([f"{CONTIG}\t100"], "line 1: not a BED line"),
    ],
)
def test_bad_targets_are_one_line(sample, tmp_path, capsys, lines, words):
    targets = _bed(tmp_path / "targets.bed", *lines)
    assert _make(sample, tmp_path / "o.zarr", "--preset", "wes", "--targets", targets) == 2
    error = _error(capsys)
    assert error.startswith(f"deepflows make-examples: error: {targets}: ") and words in error, error
    assert list(tmp_path.iterdir()) == [targets]


def test_targets_outside_regions(sample, tmp_path, capsys):
    targets = _bed(tmp_path / "targets.bed", f"{CONTIG}\t3000\t3100")
    assert _make(sample, tmp_path / "o.zarr", "--preset", "wes", "--targets", targets, "--regions",
                 f"{CONTIG}:1-1000") == 2  # fmt: skip
    assert f"{targets}: no target overlaps --regions {CONTIG}:1-1000" in _error(capsys)


def _starts(store: Path) -> list[int]:
    return sorted(set(zarr.open_group(str(store), mode="r")["start"][:].tolist()))


def test_wes_calls_inside_the_padded_targets_only(sample, tmp_path):
    # 0-based half-open: the first target stops just short of the SNP at 400, which its 50 bp padding reaches
    targets = _bed(tmp_path / "targets.bed", "# capture kit", f"{CONTIG}\t360\t400", f"{CONTIG}\t2990\t3010")
    wes, wgs, plain = tmp_path / "wes.zarr", tmp_path / "wgs.zarr", tmp_path / "plain.zarr"
    assert _make(sample, wes, "--preset", "wes", "--targets", targets) == 0
    assert _make(sample, wgs, "--preset", "wgs", "--targets", targets) == 0  # wgs pads by 0 bp
    assert _make(sample, plain) == 0
    assert _starts(wes) == [400, 3000]
    assert _starts(wgs) == [3000]
    assert _starts(plain) == list(SITES)

    attrs = dict(zarr.open_group(str(wes), mode="r").attrs)
    assert attrs["parameters"]["preset"] == "wes"
    assert attrs["regions"] == [f"{CONTIG}:311-450", f"{CONTIG}:2941-3060"]
    assert attrs["sources"]["targets"]["path"] == str(targets) and len(attrs["sources"]["targets"]["sha256"]) == 64
    plain_attrs = dict(zarr.open_group(str(plain), mode="r").attrs)
    assert plain_attrs["parameters"]["preset"] == "wgs" and "targets" not in plain_attrs["sources"]

    # within --regions too
    within = tmp_path / "within.zarr"
    assert _make(sample, within, "--preset", "wes", "--targets", targets, "--regions", f"{CONTIG}:2001-4000") == 0
    assert _starts(within) == [3000]


def test_one_calling_run_does_not_mix_presets(sample, tmp_path, capsys):
    targets = _bed(tmp_path / "targets.bed", f"{CONTIG}\t0\t{LENGTH}")
    s0, s1 = tmp_path / "s0.zarr", tmp_path / "s1.zarr"
    assert _make(sample, s0, "--preset", "wes", "--targets", targets, "--shard", "0/2") == 0
    assert _make(sample, s1, "--preset", "wgs", "--targets", targets, "--shard", "1/2") == 0
    with pytest.raises(UserError, match=r"s1.zarr: made with preset=wgs but shard 0/2 .* with preset=wes"):
        check_shard_set([s0, s1])


def test_a_wgs_shard_agrees_with_one_made_before_presets():
    """The default preset is not part of what a shard set must share: shards made before presets (no `preset`)
    and wgs shards are one featurisation, with one run identity (gVCF blocks and probs stay paired)."""
    before = {"sample": "s", "parameters": {"seed": 1, "realign": True}, "sources": {}}
    wgs = {**before, "parameters": {**before["parameters"], "preset": "wgs"}}
    wes = {**before, "parameters": {**before["parameters"], "preset": "wes"}}
    assert featurisation(wgs) == featurisation(before) and run_identity(wgs) == run_identity(before)
    assert featurisation(wes)["preset"] == "wes" and run_identity(wes) != run_identity(before)


def test_a_training_store_mixes_wes_and_wgs_shards(tmp_path):
    """The WES model trains on WES and WGS chunks together: shuffle-examples takes both."""
    from deepflows.store.shuffle import shuffle_examples

    shape = (4, 6, 3)
    shards = []
    for n, preset in enumerate(("wes", "wgs")):
        attrs = {"sample": "s", "channels": ["a", "b", "c"], "shape": list(shape), "shard_index": 0,
                 "shard_count": 1, "regions": [f"c{n}:1-1000"], "parameters": {"realign": False, "preset": preset},
                 "sources": {"reads": {"path": f"{preset}.bam", "size": 1, "sha256": f"sha-{preset}"}}}  # fmt: skip
        path = tmp_path / f"{preset}.zarr"
        with ShardWriter(path, shape, attrs, labelled=True, chunk_size=8) as writer:
            for i in range(20):
                writer.add(np.full(shape, i, dtype=np.uint8), label=i % 3, contig=f"c{n}", start=10 * i,
                           end=10 * i + 1, ref="A", alts="G", alt_indices="0", depth=i, allele_depth="1,2")  # fmt: skip
            writer.commit({"stats": {}})
        shards.append(path)
    summary = shuffle_examples(shards, tmp_path / "train.zarr", seed=1, bucket_size=16, chunk_size=8)
    assert summary["splits"]["train"]["examples"] == 40


def test_benchmark_counts_the_targets_only(tmp_path):
    """An exome's calls are benchmarked over its capture targets (within --regions), as hap.py's -T."""
    import test_benchmark as tb

    from deepflows.genomics.benchmark.compare import BenchmarkOptions, compare

    fasta = tmp_path / "ref.fa"
    fasta.write_text(f">{tb.CONTIG}\n{tb.REFERENCE}\n")
    pysam.faidx(str(fasta))
    bed = _bed(tmp_path / "confident.bed", f"{tb.CONTIG}\t0\t{tb.LENGTH}")
    targets = _bed(tmp_path / "targets.bed", f"{tb.CONTIG}\t250\t350", f"{tb.CONTIG}\t1150\t1250")
    truth = tb.write_vcf(tmp_path / "truth.vcf", [tb.snp(300), tb.snp(900), tb.snp(1200)])
    query = tb.write_vcf(tmp_path / "query.vcf", [tb.snp(300), tb.snp(600)])

    def snps(**options):
        result = compare(BenchmarkOptions(truth=truth, confident=bed, query=query, ref=fasta, **options))
        return tb.counts(result, "SNP")

    assert snps()["T"] == 3 and snps()["FP"] == 1
    assert snps(targets=targets) == {"T": 2, "TP": 1, "FN": 1, "Q": 1, "QTP": 1, "FP": 0, "UNK": 0}
    assert snps(targets=targets, regions=[f"{tb.CONTIG}:1-1000"]) == tb.tp(1)
    with pytest.raises(UserError, match="no target overlaps --regions"):
        snps(targets=targets, regions=[f"{tb.CONTIG}:500-700"])


# ----------------------------------------------------------------------------------------------- config


def _config(**keys) -> dict:
    return validate_config(keys, "x.yaml")


def test_config_preset_keys():
    cfg = _config()
    assert (cfg["preset"], cfg["targets"], cfg["model"], cfg["make_examples"]["mark_duplicates"]) == (
        "wgs", None, None, None)  # fmt: skip
    assert dfconfig.model_of(cfg) == "resources/models/wgs-illumina" and not dfconfig.marks_duplicates(cfg)
    wes = _config(preset="wes", targets="kit.bed")
    assert dfconfig.model_of(wes) == "resources/models/wes-illumina" and dfconfig.marks_duplicates(wes)
    mine = _config(preset="wes", targets="kit.bed", model="my/model", make_examples={"mark_duplicates": False})
    assert dfconfig.model_of(mine) == "my/model" and not dfconfig.marks_duplicates(mine)
    assert dfconfig.marks_duplicates(_config(make_examples={"mark_duplicates": True}))


@pytest.mark.parametrize(
    "keys, problem",
    [
        ({"preset": "pacbio"}, "x.yaml: preset: 'pacbio' is not one of ['wgs', 'wes']"),
        ({"preset": "wes"}, "x.yaml: targets: must be set when preset is 'wes'"),
        ({"targets": "kit.txt"}, "x.yaml: targets: 'kit.txt' must be a .bed or .bed.gz path"),
        ({"make_examples": {"mark_duplicates": "yes"}}, "x.yaml: make_examples.mark_duplicates: 'yes' is not of type"),
    ],
)
def test_config_errors_are_one_line(keys, problem):
    with pytest.raises(ConfigError) as err:
        validate_config(keys, "x.yaml")
    assert str(err.value).startswith(problem) and "\n" not in str(err.value)


def test_config_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^targets: kit.bed: not found$"):
        dfconfig.check_inputs(_config(targets="kit.bed"))
    _bed(tmp_path / "kit.bed", f"{CONTIG}\t1\t100")
    checkout = tmp_path / "checkout"  # a checkout without the shipped exome model
    assert ("targets", "kit.bed", "file") in dfconfig.input_paths(_config(targets="kit.bed"), checkout)
    with pytest.raises(ConfigError) as err:
        dfconfig.check_inputs(_config(preset="wes", targets="kit.bed"), checkout)
    assert str(err.value).startswith("model: resources/models/wes-illumina: model not found (the shipped model of "
                                     "preset 'wes' is not in this checkout")  # fmt: skip


def test_validate_config_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text("preset: wes\n")
    assert main(["validate-config", str(path)]) == 2
    assert _error(capsys).startswith(f"deepflows validate-config: error: {path}: targets: must be set when preset "
                                     f"is 'wes'")  # fmt: skip


# ------------------------------------------------------------------------------------------ mark-duplicates


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """A BAM of 40 read pairs, 8 of them with 2 extra copies (other names, same fragment): 16 duplicate pairs."""
    d = tmp_path_factory.mktemp("markdup")
    ref = random_reference(d / "ref.fa", {CONTIG: LENGTH}, seed=1)[CONTIG]
    rng = np.random.default_rng(0)
    reads, copies = [], {}
    for i in range(40):
        start = 80 * i + int(rng.integers(0, 40))  # fragments apart: only the copies are duplicates
        mate = start + 250
        names = [f"p{i}c{c}" for c in range(3 if i < 8 else 1)]
        copies[i] = names
        for name in names:
            reads.append(Read(name, start, ref[start : start + 100], [(0, 100)], read1=True, tlen=350))
            reads.append(Read(name, mate, ref[mate : mate + 100], [(0, 100)], reverse=True, read1=False, tlen=-350))
    # unsorted on purpose: mark-duplicates sorts by name and by coordinate itself
    return {"dir": d, "bam": write_bam(d / "dup.bam", {CONTIG: LENGTH}, reads), "copies": copies}


def test_mark_duplicates(duplicated, tmp_path, capsys):
    out = tmp_path / "markdup.bam"
    assert mark_duplicates(str(duplicated["bam"]), str(out), threads=2) == 32  # reads: 16 pairs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["markdup.bam", "markdup.bam.bai"]
    with pysam.AlignmentFile(str(out)) as bam:
        assert bam.header.to_dict()["HD"]["SO"] == "coordinate"
        flagged = {}
        for read in bam.fetch(CONTIG):
            flagged.setdefault(read.query_name, set()).add(read.is_duplicate)
    assert all(len(v) == 1 for v in flagged.values()), "both reads of a pair are marked alike"
    for i, names in duplicated["copies"].items():
        marked = [name for name in names if flagged[name] == {True}]
        assert len(marked) == len(names) - 1, (i, names, marked)  # every copy but one

    again = tmp_path / "again"
    again.mkdir()
    assert main(["mark-duplicates", "--reads", str(duplicated["bam"]), "--out", str(again / "m.bam")]) == 0
    assert (again / "m.bam").read_bytes() == out.read_bytes(), "same input, same bytes (threads aside)"
    capsys.readouterr()
    assert main(["mark-duplicates", "--reads", str(duplicated["bam"]), "--out", str(out)]) == 2
    assert _error(capsys) == f"deepflows mark-duplicates: error: {out}: already exists; remove it or choose another --out"


def test_make_examples_skips_marked_duplicates(sample, tmp_path):
    """make-examples reads a marked BAM as it is (the rule's path): its flagged reads do not count."""
    out = tmp_path / "markdup.bam"
    assert mark_duplicates(str(sample["bam"]), str(out), workdir=str(tmp_path)) > 0
    with pysam.AlignmentFile(str(out)) as bam:
        kept = [sum(not r.is_duplicate for r in bam.fetch(CONTIG, site, site + 1)) for site in SITES]
    assert main(["make-examples", "--reads", str(out), "--ref", str(sample["fasta"]), "--no-realign",
                 "--out", str(tmp_path / "o.zarr")]) == 0  # fmt: skip
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert group["start"][:].tolist() == list(SITES) and group["depth"][:].tolist() == kept
    assert min(kept) < 30  # some reads were marked, and not counted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["markdup.bam", "markdup.bam.bai", "o.zarr"]


def test_mark_duplicates_bad_input(duplicated, tmp_path, capsys):
    cut = tmp_path / "cut.bam"
    data = duplicated["bam"].read_bytes()
    eof = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    cut.write_bytes(data[: len(data) // 2] + eof)
    assert main(["mark-duplicates", "--reads", str(cut), "--out", str(tmp_path / "o.bam")]) == 2
    error = _error(capsys)
    assert error.startswith(f"deepflows mark-duplicates: error: {cut}: cannot read the reads"), error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.bam"]
    assert main(["mark-duplicates", "--reads", str(tmp_path / "no.bam"), "--out", str(tmp_path / "o.bam")]) == 2
    assert _error(capsys) == f"deepflows mark-duplicates: error: {tmp_path / 'no.bam'}: reads file not found"
    assert main(["mark-duplicates", "--reads", str(duplicated["bam"]), "--out", str(tmp_path / "o.sam")]) == 2
    assert "name it *.bam" in _error(capsys)


def test_mark_duplicates_is_a_stage():
    assert STAGES["mark-duplicates"][0] == "deepflows.genomics.io.duplicates"


# ------------------------------------------------------------------------------------------------ workflow


@pytest.mark.workflow
def test_dry_run_of_an_exome(tmp_path):
    import test_workflow as tw

    for name in ("ref.fa", "r.bam", "t.vcf.gz", "t.vcf.gz.tbi", "t.bed"):
        (tmp_path / name).touch()
    _bed(tmp_path / "kit.bed", "c\t10\t90")
    exome = {**tw.REAL_READS, "preset": "wes", "targets": "kit.bed", "truth": {"vcf": "t.vcf.gz", "confident_bed": "t.bed"}}
    # model: null calls with the preset's shipped model
    run = tw.snakemake(tmp_path, "-n", "-p", configfile=tw.write_config(tmp_path, exome))
    assert run.returncode == 0, run.stderr
    assert re.search(r"deepflows call-variants .*--model \S*resources/models/wes-illumina", run.stdout)
    model = ROOT / "resources" / "models" / "wgs-illumina"
    run = tw.snakemake(tmp_path, "-n", "-p", configfile=tw.write_config(tmp_path, {**exome, "model": str(model)}))
    assert run.returncode == 0, run.stderr
    counts = tw.job_counts(run.stdout)
    assert counts["mark_duplicates"] == 1 and counts["make_examples"] == 4
    assert "deepflows mark-duplicates --reads r.bam --out results/demo/reads/markdup.bam --threads" in run.stdout
    assert ("--reads results/demo/reads/markdup.bam --ref ref.fa --preset wes --targets kit.bed --regions c:1-100 "
            "--shard 0/4") in run.stdout  # fmt: skip
    assert re.search(r"deepflows benchmark .* --regions c:1-100 --targets kit.bed +--out results/demo/benchmark ",
                     run.stdout)  # fmt: skip
    # duplicates left as they are when asked; wes without targets: one line naming the key
    run = tw.snakemake(tmp_path, "-n", "-p", configfile=tw.write_config(
        tmp_path, {**exome, "model": str(model), "make_examples": {"mark_duplicates": False, "regions": ["c:1-100"]}}))
    assert "mark_duplicates" not in tw.job_counts(run.stdout) and "--reads r.bam --ref ref.fa --preset wes" in run.stdout
    cfg = tw.write_config(tmp_path, {**exome, "targets": None})
    error = tw.one_error(tw.snakemake(tmp_path, "-n", configfile=cfg))
    assert error.startswith(f"error: {cfg}") and error.endswith(": targets: must be set when preset is 'wes' (a BED "
                                                                "of the capture targets: an exome is called over them only)")
