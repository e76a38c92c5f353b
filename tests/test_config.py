"""deepflows.config: schema defaults, one-line errors, and the validate-config stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from deepflows import config as dfconfig
from deepflows.cli import STAGES
from deepflows.config import ConfigError, load_config, load_schema, validate_config, validate_merged

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


def _write(tmp_path: Path, data, name="config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _error(data, source="cfg.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(data, source)
    message = str(info.value)
    assert "\n" not in message
    return message


def _leaves(schema, path=""):
    """Every (key path, subschema) of the schema."""
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from _leaves(sub, f"{path}{key}.")


def test_every_key_has_description_and_default():
    for key, sub in _leaves(load_schema()):
        assert sub.get("description"), f"{key} has no description"
        assert "default" in sub, f"{key} has no default"


def test_default_config_is_valid_and_matches_schema_defaults():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg == validate_config({}, "empty")  # the shipped file spells out the defaults
    assert cfg["sample"] == "demo"
    assert cfg["reference"]["fasta"] is None and cfg["reference"]["demo"]["length"] == 1_000_000
    assert cfg["reads"]["path"] is None and cfg["reads"]["simulate"]["depth"] == 30
    assert cfg["reads"]["simulate"]["read_length"] == 150
    assert cfg["make_examples"]["shards"] == 4 and cfg["make_examples"]["training"] is False


def test_partial_config_gets_nested_defaults():
    cfg = validate_config({"make_examples": {"shards": 2}}, "x.yaml")
    assert cfg["make_examples"] == {**validate_config({}, "x")["make_examples"], "shards": 2}
    assert cfg["reads"]["simulate"]["seed"] == 2


def test_input_is_not_modified():
    data = {"make_examples": {"shards": 2}}
    validate_config(data, "x.yaml")
    assert data == {"make_examples": {"shards": 2}}


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"make_examples": {"shards": "four"}}, "cfg.yaml: make_examples.shards: 'four' is not of type 'integer'"),
        ({"make_examples": {"shards": True}}, "cfg.yaml: make_examples.shards: True is not of type 'integer'"),
        ({"make_examples": {"shards": 0}}, "cfg.yaml: make_examples.shards: 0 is less than the minimum of 1"),
        ({"make_examples": {"shardz": 2}}, "cfg.yaml: make_examples.shardz: unknown key (known keys here: "),
        ({"sampel": "x"}, "cfg.yaml: sampel: unknown key"),
        ({"sample": "a b"}, "cfg.yaml: sample: 'a b' must start with a letter or digit"),
        ({"reads": {"path": "x.sam"}}, "cfg.yaml: reads.path: 'x.sam' must be a .bam or .cram path"),
        ({"make_examples": {"regions": ["chr1:1-100", "chr2"]}}, "cfg.yaml: make_examples.regions[1]: 'chr2' is not"),
        ({"reads": {"simulate": {"variants": "all"}}}, "cfg.yaml: reads.simulate.variants: 'all' is not one of"),
        ({"reference": 5}, "cfg.yaml: reference: 5 is not of type 'object'"),
        ([1, 2], "cfg.yaml: expected a mapping of keys at the top level, got list"),
    ],
)
def test_bad_values_give_one_line(data, expected):
    assert _error(data).startswith(expected)


def test_several_problems_are_counted_on_the_one_line():
    message = _error({"make_examples": {"shards": "x", "seed": "y"}})
    assert message.endswith("(and 1 more problem)")


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"reads": {"path": "r.bam"}}, "reference.fasta: must be set when reads.path is set"),
        ({"reads": {"simulate": {"variants": "truth"}}}, "truth.vcf: must be set when reads.simulate.variants"),
        (
            {"reference": {"fasta": "r.fa"}, "reads": {"path": "r.bam"}, "make_examples": {"training": True}},
            "truth.vcf: must be set when make_examples.training is true and reads.path is set",
        ),
        (
            {"make_examples": {"regions": ["c:1-2"], "regions_bed": "r.bed"}},
            "make_examples: set regions or regions_bed, not both",
        ),
    ],
)
def test_key_combinations(data, expected):
    assert _error(data).startswith(f"cfg.yaml: {expected}")


def test_training_on_simulated_reads_needs_no_truth():
    cfg = validate_config({"make_examples": {"training": True}}, "x.yaml")
    assert cfg["truth"]["vcf"] is None


def test_real_reads_with_truth_is_valid():
    data = {
        "sample": "HG001",
        "reference": {"fasta": "ref.fa.gz"},
        "reads": {"path": "reads.cram"},
        "truth": {"vcf": "truth.vcf.gz", "confident_bed": "conf.bed"},
        "make_examples": {"training": True, "regions": ["chr20:10000001-10100000"]},
    }
    assert validate_config(data, "x.yaml")["reads"]["path"] == "reads.cram"


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = _write(tmp_path, "make_examples:\n  shards: [1\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML at line \d+"):
        load_config(bad)
    # Snakemake refuses an empty config file, so validate-config does too; a directory is not a config
    with pytest.raises(ConfigError, match=r"empty\.yaml: empty config file"):
        load_config(_write(tmp_path, "# only a comment\n", "empty.yaml"))
    with pytest.raises(ConfigError, match=r": cannot read config: Is a directory"):
        load_config(tmp_path)
    assert load_config(_write(tmp_path, "{}", "braces.yaml"))["sample"] == "demo"


def test_merged_config_blames_the_file_with_the_bad_key(tmp_path):
    good = _write(tmp_path, {"sample": "s1"}, "good.yaml")
    bad = _write(tmp_path, {"make_examples": {"shards": "four"}}, "bad.yaml")
    with pytest.raises(ConfigError) as info:
        validate_merged({"sample": "s1", "make_examples": {"shards": "four"}}, [good, bad])
    assert str(info.value) == f"{bad}: make_examples.shards: 'four' is not of type 'integer'"


def test_nested_command_line_override_gets_a_hint(tmp_path):
    good = _write(tmp_path, {"sample": "s1"}, "good.yaml")
    with pytest.raises(ConfigError, match=r"\+ --config: make_examples.shards: '8' .*use a --configfile"):
        validate_merged({"make_examples": {"shards": "8"}}, [good], {"make_examples": {"shards": "8"}})


def test_validate_config_stage(tmp_path, capsys):
    assert STAGES["validate-config"][0] == "deepflows.config"
    parser = argparse.ArgumentParser()
    dfconfig.add_arguments(parser)
    dfconfig.run(parser.parse_args([str(DEFAULT_CONFIG)]))
    assert capsys.readouterr().out.strip() == f"{DEFAULT_CONFIG}: ok"
    dfconfig.run(parser.parse_args([str(_write(tmp_path, {"sample": "x"})), "--show"]))
    assert json.loads(capsys.readouterr().out)["make_examples"]["shards"] == 4
    with pytest.raises(ConfigError, match="shards: 'four'"):
        dfconfig.run(parser.parse_args([str(_write(tmp_path, {"make_examples": {"shards": "four"}}))]))


# --- Input paths: everything the run reads is there, before any job (validate-config and the Snakefile) ---------


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A working directory with a reference, reads, a truth set and BEDs (indexes beside them), as cwd."""
    monkeypatch.chdir(tmp_path)
    for name in ("ref.fa", "ref.fa.fai", "r.bam", "r.bam.bai", "t.vcf.gz", "t.vcf.gz.tbi", "t.bed", "lc.bed", "i1.png"):
        Path(name).write_text("x")
    return tmp_path


REAL = {
    "reference": {"fasta": "ref.fa"},
    "reads": {"path": "r.bam"},
    "truth": {"vcf": "t.vcf.gz", "confident_bed": "t.bed"},
}


def _merge(base: dict, change: dict) -> dict:
    merged = dict(base)
    for key, value in change.items():
        merged[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) and key in base else value
    return merged


def _checked(data: dict) -> str | None:
    """The one-line problem check_inputs finds in the config `data` (validated first), or None."""
    try:
        dfconfig.check_inputs(validate_config(data, "x.yaml"))
    except ConfigError as err:
        assert "\n" not in str(err)
        return str(err)
    return None


def test_inputs_that_are_there_pass(inputs):
    assert _checked(_merge(REAL, {"benchmark": {"stratify": {"lc": "lc.bed"}}})) is None
    # generated inputs (demo reference, simulated reads) are not demanded; the shipped model is found in the
    # checkout from any working directory
    assert _checked({}) is None
    assert dfconfig.input_paths(validate_config({}, "x")) == [
        ("model", str(ROOT / "resources" / "models" / "wgs-illumina"), "model")
    ]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"reads": {"path": "/data/x.bam"}}, "reads.path: /data/x.bam: not found"),
        ({"reference": {"fasta": "no.fa"}}, "reference.fasta: no.fa: not found"),
        ({"truth": {"vcf": "no.vcf.gz"}}, "truth.vcf: no.vcf.gz: not found"),
        ({"truth": {"confident_bed": "no.bed"}}, "truth.confident_bed: no.bed: not found"),
        ({"make_examples": {"regions_bed": "no.bed"}}, "make_examples.regions_bed: no.bed: not found"),
        ({"benchmark": {"stratify": {"lc": "lc.bed", "sd": "sd.bed"}}}, "benchmark.stratify.sd: sd.bed: not found"),
        ({"model": "no/model"}, "model: no/model: not found"),
        ({"model": "t.bed"}, "model: t.bed: not a model directory (a file; expected model.json + weights.msgpack)"),
        ({"imaging": {"images": ["no/*.png"]}}, "imaging.images[0]: no/*.png: no image file matches"),
        ({"imaging": {"images": ["i*.png"], "model": "no/focus"}}, "imaging.model: no/focus: not found"),
        ({"imaging": {"images": ["i1.png", "ref.fa"]}}, "imaging.images[1]: ref.fa: not a PNG or TIFF file"),
        ({"imaging": {"images": ["*.b*"]}}, "imaging.images[0]: *.b*: matches lc.bed, not a PNG or TIFF"),
        ({"training_data": {"enabled": True}, "train": {"config": "no.yaml"}}, "train.config: no.yaml: not found"),
    ],
)
def test_missing_input_names_the_key(inputs, change, expected):
    assert _checked(_merge(REAL, change)) == expected


def test_a_directory_is_not_an_input_file(inputs):
    (inputs / "d.bed").mkdir()
    problem = _checked(_merge(REAL, {"truth": {"confident_bed": "d.bed"}}))
    assert problem == "truth.confident_bed: d.bed: is a directory, not a file"


def test_model_is_demanded_only_when_the_run_calls_variants(inputs):
    training = _merge(REAL, {"model": "no/model", "make_examples": {"training": True}})
    assert _checked(training) is None


def test_model_directory_is_checked_like_call_variants_would(inputs):
    model = inputs / "m"
    model.mkdir()
    assert _checked(_merge(REAL, {"model": "m"})) == "model: m: not a model directory (no model.json)"
    (model / "model.json").write_text("[]")
    assert _checked(_merge(REAL, {"model": "m"})) == (
        "model: m/model.json: unreadable model description (a JSON list, not an object)"
    )


def test_indexes_the_stages_build_are_not_demanded(inputs, monkeypatch):
    for name in ("r.bam.bai", "ref.fa.fai", "t.vcf.gz.tbi"):
        (inputs / name).unlink()
    # make-examples builds the .bai and .fai beside a file in a writable folder; benchmark indexes a copy
    assert _checked(REAL) is None
    monkeypatch.setattr(dfconfig, "_writable_folder", lambda path: False)
    assert _checked(REAL) == (
        "reference.fasta: ref.fa: no index (ref.fa.fai) and its folder is not writable to build one;"
        " run `samtools faidx ref.fa`"
    )
    (inputs / "ref.fa.fai").write_text("x")
    assert _checked(REAL) == (
        "reads.path: r.bam: no index (r.bam.bai) and its folder is not writable to build one;"
        " run `samtools index r.bam`"
    )
    (inputs / "r.bai").write_text("x")  # samtools' other name for it
    assert _checked(REAL) is None


def test_training_data_plans_from_the_reference_index(inputs):
    """training_data reads the .fai when the run starts (its chunks), so no stage can build it in time."""
    (inputs / "ref.fa.fai").unlink()
    planned = {"reference": {"fasta": "ref.fa"}, "training_data": {"enabled": True}}
    assert _checked(planned) == (
        "reference.fasta: ref.fa: no index (ref.fa.fai): training_data plans its chunks from it;"
        " run `samtools faidx ref.fa`"
    )


def test_labels_need_the_truth_index(inputs):
    (inputs / "t.vcf.gz.tbi").unlink()
    training = _merge(REAL, {"make_examples": {"training": True}})
    assert _checked(training) == (
        "truth.vcf: t.vcf.gz: no index (t.vcf.gz.tbi) for make-examples' labels; run `tabix -p vcf t.vcf.gz`"
    )
    (inputs / "t.vcf.gz.csi").write_text("x")
    assert _checked(training) is None


def test_cache_paths_are_fetched_not_demanded(inputs):
    entry = {"url": "https://example.org/r.bam", "md5": "0" * 32}
    cached = _merge(REAL, {"reads": {"path": "resources/cache/x/r.bam"}})
    assert _checked(cached) == (
        "reads.path: resources/cache/x/r.bam is not there and download.files has no entry 'x/r.bam' to fetch it;"
        " add one, or point the key at a local copy"
    )
    assert _checked(_merge(cached, {"download": {"files": {"x/r.bam": entry}}})) is None


def test_validate_config_names_the_file_and_key(inputs, capsys):
    from deepflows.cli import main

    config = _write(inputs, _merge(REAL, {"reads": {"path": "/data/x.bam"}}), "run.yaml")
    assert main(["validate-config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deepflows validate-config: error: {config}: reads.path: /data/x.bam: not found"]
    assert main(["validate-config", str(_write(inputs, REAL, "ok.yaml"))]) == 0
