"""Call temperature: fitted on sites with a known true genotype, written into model.json, applied by postprocess
without changing any call."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pysam
import pytest
from test_postprocess import SHA, write_probs

from deepflows.cli import main
from deepflows.genomics.calling.postprocess import tempered
from deepflows.genomics.calling.temperature import site_outcomes

REF = "ACGTTGCAAC" * 20
HEADER = """##fileformat=VCFv4.2
##contig=<ID=c,length=200>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS
"""
CONFIDENT, WRONG = (0.001, 0.998, 0.001), (0.002, 0.997, 0.001)


@pytest.fixture
def files(tmp_path):
    ref = tmp_path / "ref.fa"
    ref.write_text(">c\n" + REF + "\n")
    pysam.faidx(str(ref))
    (tmp_path / "conf.bed").write_text("c\t0\t150\n")
    plain = tmp_path / "truth.vcf"
    plain.write_text(HEADER + "c\t11\t.\tA\tG\t50\tPASS\t.\tGT\t0/1\nc\t21\t.\tA\tT\t50\tPASS\t.\tGT\t1/1\n")
    truth = pysam.tabix_index(str(plain), preset="vcf", force=True)
    rows = [  # (contig, start, ref, alts, depth, AD, examples): sites the model is sure of, two of them wrongly
        ("c", 10, "A", ["G"], 30, "15,15", [("0", CONFIDENT)]),  # right: truth 0/1
        ("c", 20, "A", ["T"], 30, "15,15", [("0", CONFIDENT)]),  # wrong: truth 1/1
        ("c", 30, "A", ["G"], 30, "15,15", [("0", WRONG)]),  # wrong: no truth variant
        ("c", 40, "A", ["C"], 30, "29,1", [("0", (0.99, 0.009, 0.001))]),  # right: hom-ref
        ("c", 60, "A", ["G", "T"], 30, "28,1,1",  # right: hom-ref, six genotypes
         [("0", (0.99, 0.01, 0.0)), ("1", (0.99, 0.01, 0.0)), ("0,1", (0.98, 0.02, 0.0))]),
        ("c", 170, "A", ["T"], 30, "15,15", [("0", WRONG)]),  # outside the confident regions: not used
    ]  # fmt: skip
    probs = write_probs(tmp_path / "probs.zarr", rows)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"sha256": SHA, "calibration": {"temperature": 0.9}}))
    return {"ref": str(ref), "truth": truth, "confident": str(tmp_path / "conf.bed"), "probs": str(probs),
            "model": model}  # fmt: skip


def test_tempered_keeps_the_call_and_spreads_the_rest():
    p = np.array([0.001, 0.989, 0.01])
    assert tempered(p, 1.0) is p
    soft, sharp = tempered(p, 2.0), tempered(p, 0.5)
    assert soft.sum() == pytest.approx(1) and sharp.sum() == pytest.approx(1)
    assert soft.argmax() == sharp.argmax() == 1
    assert soft[1] < p[1] < sharp[1]
    assert soft == pytest.approx(np.sqrt(p) / np.sqrt(p).sum())


def test_true_genotypes_of_the_sites(files):
    distributions, truths = site_outcomes(files["probs"], files["truth"], files["confident"],
                                          pysam.FastaFile(files["ref"]))  # fmt: skip
    # (0,1) (1,1) (0,0) (0,0) and (0,0) of six: the site at 171 lies outside the confident regions
    assert truths == [1, 2, 0, 0, 0]
    assert [len(d) for d in distributions] == [3, 3, 3, 3, 6]


def test_fit_writes_the_call_temperature_and_postprocess_applies_it(files, tmp_path, capsys):
    args = ["fit-call-temperature", "--model", str(files["model"]), "--ref", files["ref"],
            "--set", files["probs"], files["truth"], files["confident"]]  # fmt: skip
    assert main(args) == 0
    calibration = json.loads((files["model"] / "model.json").read_text())["calibration"]
    assert calibration["temperature"] == 0.9  # the example temperature is kept
    assert calibration["call_temperature"] > 2  # two of five sure calls wrong: much softer
    assert calibration["call_sites"] == 5 and calibration["call_genotype_errors"] == 2
    assert calibration["call_nll_calibrated"] < calibration["call_nll"]
    assert calibration["call_fitted_on"] == [files["probs"]]

    def calls(call_temperature: float) -> list[list[str]]:
        attrs = {"sample": "S", "model": {"name": "m", "sha256": SHA, "call_temperature": call_temperature}}
        probs = write_probs(tmp_path / f"probs-{call_temperature}.zarr", [
            ("c", 10, "A", ["G"], 30, "15,15", [("0", CONFIDENT)]),
            ("c", 40, "A", ["C"], 30, "29,1", [("0", (0.99, 0.009, 0.001))])], attrs)  # fmt: skip
        out = tmp_path / f"calls-{call_temperature}.vcf.gz"
        assert main(["postprocess", "--probs", str(probs), "--ref", files["ref"], "--out", str(out)]) == 0
        with gzip.open(out, "rt") as handle:
            text = handle.read()
        assert f"##deepflows_model_call_temperature={call_temperature}" in text
        return [line.split("\t") for line in text.splitlines() if not line.startswith("#")]

    plain, soft = calls(1.0), calls(calibration["call_temperature"])
    for a, b in zip(plain, soft):
        assert a[:5] == b[:5] and a[6] == b[6] and a[9].split(":")[0] == b[9].split(":")[0]  # same calls
        assert int(b[9].split(":")[1]) < int(a[9].split(":")[1])  # lower GQ
    assert float(soft[0][5]) < float(plain[0][5])  # and QUAL


def test_probabilities_of_another_model_are_refused(files, capsys):
    meta = json.loads((files["model"] / "model.json").read_text())
    (files["model"] / "model.json").write_text(json.dumps({**meta, "sha256": "cd" * 32}))
    args = ["fit-call-temperature", "--model", str(files["model"]), "--ref", files["ref"],
            "--set", files["probs"], files["truth"], files["confident"]]  # fmt: skip
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and files["probs"] in err[0] and "another model" in err[0]
    assert "call_temperature" not in json.loads((files["model"] / "model.json").read_text())["calibration"]


def test_unreadable_model_json_is_one_line(files, capsys):
    (files["model"] / "model.json").write_text("{not json")
    args = ["fit-call-temperature", "--model", str(files["model"]), "--ref", files["ref"],
            "--set", files["probs"], files["truth"], files["confident"]]  # fmt: skip
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.json: unreadable model description" in err[0]
    assert (files["model"] / "model.json").read_text() == "{not json"
