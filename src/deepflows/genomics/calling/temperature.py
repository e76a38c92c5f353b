"""`deepflows fit-call-temperature`: a temperature on the sites' genotype probabilities, fitted on called tune sets.

The example temperature (deepflows.nn.calibration) is fitted on the tune split one example at a time. A
site's genotype probabilities come from merging its examples (postprocess), and the genotype errors gather
at hard sites (repeats, error hotspots, low allele fractions) where the merged probabilities stay
over-confident: on the tune regions simulated again and called end to end, calls of GQ 20-59 were wrong
1-7% of the time where GQ promises under 1%. So a second temperature T acts on the merged distribution,

    P'(g) = P(g)^(1/T) / sum over g' of P(g')^(1/T),

fitted by maximum likelihood (golden-section search, deepflows.nn.calibration.fit_temperature) on every
site inside the confident regions whose true genotype is one of its genotypes: its candidate alleles
(normalised) carry the truth's copies. Sets given: `--set PROBS TRUTH CONFIDENT`, probabilities from
`call-variants` with the model being calibrated (checked by its sha256), never data the model trained on
or is evaluated on. T is written into the model's model.json (`calibration.call_temperature`);
call-variants passes it on in the probs store (`call_temperature_of`) and postprocess applies it (`tempered`).
Like the example temperature, it never changes a call: each site's most likely genotype, and the joint
genotypes of overlapping calls (the product of per-site probabilities), stay the same; GQ, QUAL and PL move.

    deepflows fit-call-temperature --model DIR --ref FASTA \
        --set t30/probs.zarr t30/truth.vcf.gz t30/confident.bed --set t20/probs.zarr ...
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.inputs import require_file

log = logging.getLogger("deepflows.fit_call_temperature")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model directory whose model.json gets the temperature")
    p.add_argument("--ref", required=True, metavar="FASTA", help="reference FASTA (indexed)")
    p.add_argument("--set", nargs=3, action="append", required=True, metavar=("PROBS", "TRUTH", "CONFIDENT"),
                   help="call-variants output of a held-out tune set with its truth VCF and confident BED; repeatable")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    summary = fit_call_temperature(args.model, args.ref, [tuple(s) for s in args.set])
    print(json.dumps(summary, indent=2))


def site_outcomes(probs_path: str, truth: str, confident_bed: str, fasta) -> tuple[list[np.ndarray], list[int]]:
    """(genotype probabilities before any call temperature, index of the true genotype) per usable site."""
    from deepflows.genomics.benchmark.gq_calibration import allele_key, truth_dosages
    from deepflows.genomics.calling.call_variants import open_probs
    from deepflows.genomics.calling.postprocess import genotype_site, iter_sites
    from deepflows.genomics.io.variants import Regions

    confident = Regions.from_bed(confident_bed)
    dosage = truth_dosages(truth, fasta, confident.contigs)
    distributions, truths = [], []
    for site in iter_sites(open_probs(probs_path), probs_path):
        if not confident.overlaps(site.contig, site.start, site.start + len(site.ref)):
            continue
        genotyping = genotype_site(site)
        keys = [allele_key(fasta, site.contig, site.start, site.ref, alt) for alt in site.alts]
        copies = [dosage.get(key, 0) for key in keys]
        true = [g for g, (a, b) in enumerate(genotyping.genotypes)
                if all((a == i + 1) + (b == i + 1) == c for i, c in enumerate(copies))]  # fmt: skip
        if len(true) == 1:
            distributions.append(genotyping.probs)
            truths.append(true[0])
    return distributions, truths


def fit_call_temperature(model_dir: str, ref: str, sets: list[tuple[str, str, str]]) -> dict:
    """Fit T on the sets' sites and write it into model_dir/model.json; returns what was written."""
    from deepflows.genomics.calling.call_variants import open_probs
    from deepflows.genomics.io.hts import open_reference
    from deepflows.nn.calibration import fit_temperature, mean_nll
    from deepflows.nn.model_dir import MODEL_JSON, read_model_json, write_json

    meta = read_model_json(model_dir)
    for probs, truth, confident in sets:
        require_file(truth, "truth VCF")
        require_file(confident, "confident BED")
        made_with = (dict(open_probs(probs).attrs).get("model") or {}).get("sha256")
        if made_with != meta.get("sha256"):
            raise UserError(f"{probs}: called with another model (sha256 {made_with}), not {model_dir}")
    fasta = open_reference(ref)
    distributions, truths = [], []
    for probs, truth, confident in sets:
        d, t = site_outcomes(probs, truth, confident, fasta)
        log.info("%s: %d sites with a known true genotype", probs, len(t))
        distributions += d
        truths += t
    if not truths:
        raise UserError("no site of the given sets has a true genotype among its genotypes: nothing to fit on")
    # Sites have 3, 6, 10... genotypes: pad with impossible ones. log P / T is the tempered log-odds.
    width = max(len(d) for d in distributions)
    logits = np.full((len(truths), width), -1e9)
    for row, d in enumerate(distributions):
        logits[row, : len(d)] = np.log(np.maximum(d, 1e-300))
    labels = np.asarray(truths)
    temperature = fit_temperature(logits, labels)
    calibration = {
        **(meta.get("calibration") or {}),
        "call_temperature": round(temperature, 4),
        "call_fitted_on": [p for p, _, _ in sets],
        "call_sites": len(labels),
        "call_genotype_errors": int((logits.argmax(axis=1) != labels).sum()),
        "call_nll": round(mean_nll(logits, labels), 5),
        "call_nll_calibrated": round(mean_nll(logits, labels, temperature), 5),
    }
    write_json(Path(model_dir) / MODEL_JSON, {**meta, "calibration": calibration})
    return calibration
