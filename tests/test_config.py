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
    assert load_config(_write(tmp_path, "", "empty.yaml"))["sample"] == "demo"


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
