"""`deepflows postprocess`: genotype probabilities (from `call-variants`) -> one bgzipped, indexed VCF.

Every example of a candidate site shows one alt combination S (one alt, or a pair of alts) and carries
the model's probabilities (p0, p1, p2) of 0, 1 or 2 copies of "an allele of S". A site with alts A1..An
has n + n(n-1)/2 examples. Genotyping follows DeepVariant's postprocess_variants ("min" merge, step 2 widened):

1. Alt pruning (n > 1 only; off by default): alt Ai whose single-alt example gives QUAL_i = phred(p0_i)
   below `--multi-allelic-qual-filter` is dropped, with every example that shows it; if that drops all
   alts, the one with the highest QUAL_i stays. DeepVariant prunes at 1; with step 2's merge an alt its
   own example rules out already gets a low value in every genotype that holds it, and pruning would
   also throw away its pair examples, which can be the only ones that show a 1/2 in a homopolymer
   (CT at p1 0.97 with CTT at p0 0.89, their pair at p2 1.0). On the call-level tune sets pruning at 1
   cost 2 indels at 30x and 4 at 20x.
2. Genotype likelihoods, for every diploid genotype (a, b), a <= b, over {ref} + the remaining alts
   (allele 0 = ref): each remaining example with alt set S gives (a, b) its probability of the number
   of copies of S's alts that (a, b) holds, c = [a in S] + [b in S], which is the label that example
   gets in training when (a, b) is the truth; L(a, b) = min over the examples of p_c, and
   P(a, b) = L(a, b) / sum of all L. For one alt this is just (p0, p1, p2), normalised.
   DeepVariant's merge gives (a, b) only the examples whose S holds a or b (or, for (0, 0), all); here
   every example speaks: under 0/1 the example of alt 2 alone should show no copy, so two confident
   single-alt hets with an unsure pair example make 1/2, not 0/1.
   Then the model's call temperature T (model.json, passed on by call-variants; 1 when absent) gives
   P(a, b) ~ P(a, b)^(1/T), normalised: a calibration fitted on called tune sets
   (deepflows.genomics.calling.temperature) that moves GQ, QUAL and PL but never the most likely genotype.
3. The call is the most likely genotype (the first in VCF order on a tie). Then
       GQ   = round(phred(1 - P(call)))            (an integer; round half to even, as numpy)
       QUAL = round(phred(P(0, 0)), 1)
       PL_g = int(-10 log10(P(g) / P(call))) for the genotypes of the alleles written, in VCF order
              (truncated, as DeepVariant's VCFs show: QUAL 37.6 comes with PL 37,0,42)
   where phred(e) = -10 log10(max(e, 1e-10)): probabilities are capped at 1 - 1e-10, so GQ, QUAL
   and PL never exceed 100 and stay finite.
4. Alleles written: for a variant call, REF and the alts of the called genotype only (1/2 for a
   het-alt; an alt the call does not use is dropped, with its AD); for a hom-ref call, every alt left
   after pruning. Then the common suffix of REF and the written alts is trimmed, as DeepVariant's
   simplify_alleles does (REF GTT, ALTs G,GT, call 0/2: GTT>GT is written GT>G); POS never moves.
5. Overlapping calls (deepflows.genomics.calling.overlapping_calls): variant calls whose reference spans overlap
   and together put more than two alt alleles on one base get the most likely joint genotypes that
   fit on two haplotypes (a het deletion over a deletion called 1/1 makes the latter 0/1); GQ follows
   the new genotype, PL and QUAL stay as the site's own probabilities give them.
6. FILTER: `RefCall` for 0/0, else `LowQual` when QUAL (as written) < `--qual-filter`, else `PASS`.
   FORMAT GT:GQ:DP:AD:VAF:PL, with DP the site's depth, AD its read counts (REF, then the alts
   written) and VAF = AD(alt) / DP.

Records are sorted by the reference's contig order and position; REF alleles are checked against the
reference. Output: `<out>` (bgzipped) and `<out>.tbi`, written under temporary names and renamed at the
end; nothing is left behind on error. With `--gvcf-blocks` (make_examples' `--gvcf` files of all shards) and
`--gvcf-out`, also a gVCF: the same records plus reference blocks (deepflows.genomics.calling.gvcf); the VCF is
the same bytes either way.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepflows.arguments import non_negative_float
from deepflows.errors import UserError, abbreviated
from deepflows.genomics.calling import overlapping_calls
from deepflows.genomics.calling.gvcf import block_settings, check_blocks_of_run, gvcf_lines
from deepflows.genomics.calling.gvcf_blocks import BlocksFile
from deepflows.provenance import key_value_pairs

MIN_PROB = 1e-10  # probabilities are capped at 1 - MIN_PROB: phred values <= 100
READ_ROWS = 1 << 16
PL_SLACK = 1e-5  # phred units; float32 probabilities carry ~3e-7 of noise

log = logging.getLogger("deepflows.postprocess")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probs", required=True, metavar="PROBS.zarr", help="output of `deepflows call-variants`")
    p.add_argument("--ref", required=True, metavar="FASTA", help="reference FASTA (plain or bgzipped, indexed)")
    p.add_argument("--out", required=True, metavar="VCF.gz", help="output VCF (bgzipped; a .tbi is written beside)")
    p.add_argument("--sample", help="sample name in the VCF (default: the one recorded in the examples)")
    p.add_argument("--qual-filter", type=non_negative_float, default=1.0,
                   help="variant calls with QUAL below this get FILTER LowQual (default 1)")  # fmt: skip
    p.add_argument("--multi-allelic-qual-filter", type=non_negative_float, default=0.0,
                   help="at multi-allelic sites, drop alts whose own QUAL is below this before genotyping "
                        "(default 0: none; DeepVariant's 1 discards pair examples that may show a het-alt)")  # fmt: skip
    p.add_argument("--gvcf-blocks", nargs="+", metavar="BLOCKS.tsv.gz",
                   help="every shard's reference-confidence blocks (`make-examples --gvcf`); with --gvcf-out")  # fmt: skip
    p.add_argument("--gvcf-out", metavar="G.VCF.gz",
                   help="also write a gVCF: the VCF's records (with <*>) and the blocks (bgzipped, indexed)")  # fmt: skip
    p.add_argument("--provenance", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="extra header lines ##deepflows_KEY=VALUE, e.g. config_sha256=... from the workflow")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    summary = postprocess(args.probs, args.ref, args.out, sample=args.sample, qual_filter=args.qual_filter,
                          multi_allelic_qual_filter=args.multi_allelic_qual_filter,
                          command=getattr(args, "command_line", "deepflows postprocess"),
                          extra_provenance=parse_provenance(args.provenance), gvcf_blocks=args.gvcf_blocks,
                          gvcf_out=args.gvcf_out)  # fmt: skip
    log.info("%s", summary)


def parse_provenance(items: list[str]) -> dict[str, str]:
    """--provenance KEY=VALUE items -> {deepflows_KEY: VALUE}."""
    return {f"deepflows_{key}": value for key, value in key_value_pairs(items, "--provenance")}


# ------------------------------------------------------------------------------------------- genotyping


def phred(error: float) -> float:
    return -10.0 * math.log10(max(error, MIN_PROB))


def vcf_genotypes(alleles: list[int]) -> list[tuple[int, int]]:
    """Unordered diploid genotypes over `alleles` in VCF's PL order: (0,0), (0,1), (1,1), (0,2), (1,2), ..."""
    return [(alleles[j], alleles[k]) for k in range(len(alleles)) for j in range(k + 1)]


def expected_combinations(n_alts: int) -> list[tuple[int, ...]]:
    """The examples make_examples writes for a site: one per alt and one per pair (0-based alt indices)."""
    return [(i,) for i in range(n_alts)] + [(i, j) for i in range(n_alts) for j in range(i + 1, n_alts)]


def alts_to_remove(n_alts: int, examples: list[tuple[tuple[int, ...], np.ndarray]], threshold: float) -> set[int]:
    """Alt alleles (1-based allele numbers) whose single-alt QUAL is below `threshold` (never all of them)."""
    if n_alts < 2 or not threshold:
        return set()
    quals = {combo[0] + 1: phred(float(p[0])) for combo, p in examples if len(combo) == 1}
    removed = {allele for allele, qual in quals.items() if qual < threshold}
    if len(removed) == n_alts:
        best = max(sorted(quals), key=lambda allele: quals[allele])  # the first on a tie
        removed.discard(best)
    return removed


def genotype_probabilities(n_alts: int, examples: list[tuple[tuple[int, ...], np.ndarray]],
                           removed: set[int] = frozenset()) -> tuple[list[tuple[int, int]], np.ndarray]:  # fmt: skip
    """(genotypes in VCF order over ref + the alts not removed, their normalised probabilities)."""
    kept = [0] + [a for a in range(1, n_alts + 1) if a not in removed]
    genotypes = vcf_genotypes(kept)
    shown = [({i + 1 for i in combo}, p) for combo, p in examples if not removed.intersection(i + 1 for i in combo)]
    # Each example's probability of the copies of its alts that the genotype holds, as its label would be.
    likelihoods = np.array([min(float(p[(a in alts) + (b in alts)]) for alts, p in shown) for a, b in genotypes],
                           dtype=np.float64)  # fmt: skip
    total = likelihoods.sum()
    if not total > 0:
        likelihoods, total = np.ones(len(genotypes)), float(len(genotypes))
    return genotypes, likelihoods / total


@dataclass
class Site:
    contig: str
    start: int  # 0-based
    ref: str
    alts: tuple[str, ...]
    depth: int
    allele_depth: tuple[int, ...]
    examples: list[tuple[tuple[int, ...], np.ndarray]] = field(default_factory=list)


@dataclass
class Genotyping:
    """A site's genotype options over ref + the alts left after pruning, and their probabilities."""

    removed: set[int]
    genotypes: list[tuple[int, int]]
    probs: np.ndarray

    @property
    def best(self) -> int:
        return int(np.argmax(self.probs))


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """P^(1/T), normalised: the genotype distribution at temperature T (T = 1: unchanged)."""
    if temperature == 1.0:
        return probs
    powered = np.power(np.asarray(probs, np.float64), 1.0 / temperature)
    total = powered.sum()
    return powered / total if total > 0 else probs


def genotype_site(site: Site, multi_allelic_qual_filter: float = 0.0, call_temperature: float = 1.0) -> Genotyping:
    """Step 1-2 of the module docstring, then the model's call temperature (deepflows.genomics.calling.temperature)."""
    removed = alts_to_remove(len(site.alts), site.examples, multi_allelic_qual_filter)
    genotypes, probs = genotype_probabilities(len(site.alts), site.examples, removed)
    return Genotyping(removed, genotypes, tempered(probs, call_temperature))


def call_site(site: Site, qual_filter: float = 1.0, multi_allelic_qual_filter: float = 0.0):
    """The VcfRecord of one site (see the module docstring)."""
    genotyping = genotype_site(site, multi_allelic_qual_filter)
    return site_record(site, genotyping, genotyping.best, qual_filter)


def site_record(site: Site, genotyping: Genotyping, chosen: int, qual_filter: float = 1.0):
    """The VcfRecord of a site called as genotype number `chosen` of `genotyping` (the most likely one unless
    the overlapping calls around it needed another)."""
    from deepflows.genomics.io.vcf_writer import VcfRecord

    n_alts, removed, genotypes, probs = len(site.alts), genotyping.removed, genotyping.genotypes, genotyping.probs
    best = genotyping.best
    call = genotypes[chosen]
    gq = int(np.around(phred(float(np.sum(np.delete(probs, chosen))))))
    qual = round(max(0.0, phred(float(probs[0]))), 1)
    if call == (0, 0):
        written = [a for a in range(1, n_alts + 1) if a not in removed]
    else:
        written = sorted({a for a in call if a})
    alleles = [0, *written]
    index = {g: i for i, g in enumerate(genotypes)}
    log_best = -10.0 * math.log10(max(float(probs[best]), MIN_PROB))
    # + PL_SLACK: a ratio of exactly 0.1 stored as float32 is still PL 10, not 9
    pl = tuple(int(-10.0 * math.log10(max(float(probs[index[g]]), MIN_PROB)) - log_best + PL_SLACK)
               for g in vcf_genotypes(alleles))  # fmt: skip
    renumber = {allele: i for i, allele in enumerate(alleles)}
    ref, alts = trim_suffix(site.ref, [site.alts[a - 1] for a in written])
    if call == (0, 0):
        filter_ = "RefCall"
    elif qual < qual_filter:
        filter_ = "LowQual"
    else:
        filter_ = "PASS"
    return VcfRecord(
        contig=site.contig,
        pos=site.start + 1,
        ref=ref,
        alts=tuple(alts),
        qual=qual,
        filter=filter_,
        genotype=(renumber[call[0]], renumber[call[1]]),
        gq=gq,
        depth=site.depth,
        allele_depth=tuple(site.allele_depth[a] for a in alleles),
        pl=pl,
    )


def _overlap_call(site: Site, genotyping: Genotyping, order: dict[str, int]) -> overlapping_calls.Call:
    """The site as overlapping_calls sees it: spanning the reference bases of the alts it may call."""
    kept = [alt for a, alt in enumerate(site.alts, 1) if a not in genotyping.removed]
    ref, _ = trim_suffix(site.ref, kept)
    return overlapping_calls.Call(order[site.contig], site.start, site.start + len(ref), genotyping.genotypes,
                                  genotyping.probs, genotyping.best)  # fmt: skip


def trim_suffix(ref: str, alts: list[str]) -> tuple[str, list[str]]:
    """Drop the last base shared by all alleles while every allele keeps at least one base."""
    while alts and all(len(a) > 1 for a in (ref, *alts)) and len({a[-1] for a in (ref, *alts)}) == 1:
        ref, alts = ref[:-1], [a[:-1] for a in alts]
    return ref, alts


# ---------------------------------------------------------------------------------------------- stage


def postprocess(probs_path: str, ref_path: str, out: str, sample: str | None = None, qual_filter: float = 1.0,
                multi_allelic_qual_filter: float = 0.0, command: str = "deepflows postprocess",
                extra_provenance: dict[str, str] | None = None, gvcf_blocks: list[str] | None = None,
                gvcf_out: str | None = None) -> dict:  # fmt: skip
    from deepflows import __version__
    from deepflows.genomics.calling.call_variants import open_probs
    from deepflows.genomics.io.hts import open_reference
    from deepflows.genomics.io.vcf_writer import (
        check_output_path,
        header_lines,
        write_vcf_gz,
    )
    from deepflows.provenance import software_versions

    started = time.perf_counter()
    out_path = check_output_path(out)
    if bool(gvcf_blocks) != bool(gvcf_out):
        raise UserError("--gvcf-blocks and --gvcf-out go together (the blocks come from `make-examples --gvcf`)")
    gvcf_path = check_output_path(gvcf_out) if gvcf_out else None
    if gvcf_path is not None and gvcf_path.resolve() == out_path.resolve():
        raise UserError(f"--gvcf-out {gvcf_out}: must differ from --out")
    group = open_probs(probs_path)
    reference = open_reference(ref_path)
    contig_lengths = dict(zip(reference.references, reference.lengths))
    block_files = [BlocksFile(path, contig_lengths, ref_path) for path in gvcf_blocks or []]
    attrs = dict(group.attrs)
    if block_files:
        check_blocks_of_run(block_files, attrs, probs_path)
    order = {name: i for i, name in enumerate(reference.references)}
    sample = sample or attrs.get("sample") or "sample"
    if not sample.strip() or any(c in sample for c in "\t\n"):
        raise UserError(f"--sample {sample!r}: a sample name needs a character and no tabs or newlines")
    model = attrs.get("model") or {}
    call_temperature = float(model.get("call_temperature", 1.0))

    records, variants = [], []
    counts = {"sites": 0, "examples": 0, "PASS": 0, "RefCall": 0, "LowQual": 0, "multiallelic": 0}

    def add(contig: int, start: int, record) -> None:
        counts[record.filter] += 1
        counts["multiallelic"] += len(record.alts) > 1
        records.append((contig, start, record))

    checked: set[str] = set()
    for site in iter_sites(group, probs_path):
        if site.contig not in checked:
            if site.contig not in order:
                missing = sorted(set(group["contig"][:].tolist()) - set(order))
                raise UserError(f"{probs_path}: contig(s) {abbreviated(missing)} not in reference {ref_path} "
                                f"(it has {abbreviated(reference.references)})")  # fmt: skip
            checked.add(site.contig)
        bases = reference.fetch(site.contig, site.start, site.start + len(site.ref)).upper()
        if bases != site.ref.upper():
            found = bases or "beyond the contig end"
            raise UserError(f"{probs_path}: REF {site.ref} at {site.contig}:{site.start + 1} does not match "
                            f"reference {ref_path} ({found}): called against another reference?")  # fmt: skip
        counts["sites"] += 1
        counts["examples"] += len(site.examples)
        genotyping = genotype_site(site, multi_allelic_qual_filter, call_temperature)
        if genotyping.genotypes[genotyping.best] == (0, 0):
            add(order[site.contig], site.start, site_record(site, genotyping, genotyping.best, qual_filter))
        else:  # written once the calls overlapping it are known
            site.examples = []
            variants.append((site, genotyping, _overlap_call(site, genotyping, order)))
    variants.sort(key=lambda v: (v[2].contig, v[2].start))
    counts["overlaps_resolved"] = overlapping_calls.resolve([call for _, _, call in variants])
    for site, genotyping, call in variants:
        add(call.contig, call.start, site_record(site, genotyping, call.chosen, qual_filter))
    records.sort(key=lambda r: (r[0], r[1]))
    for previous, current in itertools.pairwise(records):
        if previous[:2] == current[:2]:
            raise UserError(f"{probs_path}: site {reference.references[current[0]]}:{current[1] + 1} appears twice")

    provenance = {
        "source": f"deepflows {__version__}",
        "deepflows_version": __version__,
        "deepflows_software": software_versions(),
        "deepflows_model": model.get("name", "unknown"),
        "deepflows_model_sha256": model.get("sha256", "unknown"),
        "deepflows_model_temperature": str(model.get("temperature", 1.0)),
        "deepflows_model_call_temperature": str(call_temperature),
        "deepflows_call_variants_command": attrs.get("command", "unknown"),
        "deepflows_command": command,
        "reference": str(ref_path),
        **(extra_provenance or {}),
    }
    header = header_lines(contig_lengths.items(), sample, provenance)
    if gvcf_path is not None:
        gvcf_header = header_lines(contig_lengths.items(), sample, {**provenance, **block_settings(block_files)},
                                   gvcf=True)  # fmt: skip
        write_vcf_gz(gvcf_path, gvcf_header, gvcf_lines(records, block_files, reference))
    try:
        write_vcf_gz(out_path, header, (record.line() for _, _, record in records))
    except BaseException:
        if gvcf_path is not None:  # both outputs or neither
            for path in (gvcf_path, Path(f"{gvcf_path}.tbi")):
                path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    gvcf = {"gvcf_out": str(gvcf_path)} if gvcf_path else {}
    return {"out": str(out_path), **gvcf, **counts, "seconds": round(seconds, 3)}


def iter_sites(group, path, rows: int = READ_ROWS) -> Iterator[Site]:
    """Sites of a probs store, read in blocks of `rows`; a site's examples must be consecutive and complete
    (one per alt and one per pair of alts), as call-variants writes them."""
    n = group["probs"].shape[0]
    site: Site | None = None
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        probs = np.asarray(group["probs"][lo:hi], dtype=np.float64)
        if not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise UserError(f"{path}: probs has negative or non-finite values in rows {lo}-{hi - 1}")
        cols = {k: group[k][lo:hi].tolist() for k in ("contig", "start", "ref", "alts", "alt_indices", "depth",
                                                      "allele_depth")}  # fmt: skip
        for i in range(hi - lo):
            contig, start, ref, alts = cols["contig"][i], cols["start"][i], cols["ref"][i], cols["alts"][i]
            if (
                site is None
                or (contig, start, ref) != (site.contig, site.start, site.ref)
                or alts != ",".join(site.alts)
            ):
                if site is not None:
                    yield _checked(site, path)
                site = _new_site(contig, start, ref, alts, cols["depth"][i], cols["allele_depth"][i], path)
            site.examples.append((_combination(cols["alt_indices"][i], len(site.alts), site, path), probs[i]))
    if site is not None:
        yield _checked(site, path)


def _new_site(contig, start, ref, alts, depth, allele_depth, path) -> Site:
    where = f"{path}: {contig}:{int(start) + 1}"
    alt_list = tuple(alts.split(",")) if alts else ()
    if not ref or not alt_list or not all(alt_list):
        raise UserError(f"{where}: REF {ref!r} / ALT {alts!r} is not a variant site")
    try:
        ad = tuple(int(x) for x in allele_depth.split(","))
    except ValueError:
        raise UserError(f"{where}: allele_depth {allele_depth!r} is not comma-separated counts") from None
    if len(ad) != len(alt_list) + 1:
        raise UserError(f"{where}: allele_depth {allele_depth!r} needs {len(alt_list) + 1} counts (REF + ALTs)")
    return Site(contig, int(start), ref, alt_list, int(depth), ad)


def _combination(text: str, n_alts: int, site: Site, path) -> tuple[int, ...]:
    try:
        combo = tuple(int(x) for x in text.split(","))
    except ValueError:
        combo = ()
    if not combo or not all(0 <= i < n_alts for i in combo):
        raise UserError(f"{path}: {site.contig}:{site.start + 1}: alt_indices {text!r} do not index {n_alts} alt(s)")
    return combo


def _checked(site: Site, path) -> Site:
    got = [combo for combo, _ in site.examples]
    expected = expected_combinations(len(site.alts))
    if sorted(got) != sorted(expected):
        raise UserError(f"{path}: {site.contig}:{site.start + 1} has examples for alt combinations "
                        f"{_combos(got)} but needs {_combos(expected)} (consecutive, once each)")  # fmt: skip
    return site


def _combos(combos) -> str:
    return " ".join(",".join(map(str, c)) for c in combos)
