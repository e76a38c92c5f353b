"""Single-sample VCF 4.2 text: header, records, and a bgzipped + tabix-indexed file written atomically.

Formatting follows DeepVariant's VCFs so the two can be compared line by line: QUAL with one decimal
(`38` for 38.0), GQ an integer, PL integers (truncated, as DeepVariant's writer does), VAF with six
significant digits. Nothing in the output depends on the date or the machine, so the same calls give
the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deepflows.outputs import check_new_output

FORMAT = "GT:GQ:DP:AD:VAF:PL"

FILTERS = {
    "PASS": "All filters passed",
    "RefCall": "Genotyping model thinks this site is reference.",
    "LowQual": "Confidence in this variant being real is below calling threshold.",
}
FORMATS = [
    ("GT", "1", "String", "Genotype"),
    ("GQ", "1", "Integer", "Conditional genotype quality"),
    ("DP", "1", "Integer", "Read depth"),
    ("AD", "R", "Integer", "Read depth for each allele"),
    ("VAF", "A", "Float", "Variant allele fractions."),
    ("PL", "G", "Integer", "Phred-scaled genotype likelihoods, the called genotype 0 (integer part)"),
]


@dataclass(frozen=True)
class VcfRecord:
    contig: str
    pos: int  # 1-based
    ref: str
    alts: tuple[str, ...]
    qual: float  # already rounded to one decimal
    filter: str
    genotype: tuple[int, int]
    gq: int
    depth: int
    allele_depth: tuple[int, ...]  # ref, then each alt
    pl: tuple[int, ...]

    def line(self) -> str:
        vaf = ",".join(_float(ad / self.depth if self.depth else 0.0) for ad in self.allele_depth[1:])
        sample = ":".join([
            f"{self.genotype[0]}/{self.genotype[1]}",
            str(self.gq),
            str(self.depth),
            ",".join(map(str, self.allele_depth)),
            vaf,
            ",".join(map(str, self.pl)),
        ])  # fmt: skip
        alt = ",".join(self.alts) if self.alts else "."
        return "\t".join([self.contig, str(self.pos), ".", self.ref, alt, format_qual(self.qual), self.filter, ".",
                          FORMAT, sample])  # fmt: skip


def format_qual(qual: float) -> str:
    """One decimal, without a trailing `.0` (DeepVariant writes 38 and 37.6)."""
    return f"{round(qual, 1) + 0.0:.1f}".removesuffix(".0")


def _float(value: float) -> str:
    return f"{value:.6g}"


def header_lines(contigs: Iterable[tuple[str, int]], sample: str, provenance: dict[str, str],
                 gvcf: bool = False) -> list[str]:  # fmt: skip
    """`##` lines and the column line. `provenance` keys become `##KEY=VALUE` lines, in the given order. A gVCF
    also declares the `<*>` allele and its blocks' MIN_DP."""
    lines = ["##fileformat=VCFv4.2"]
    lines += [f'##FILTER=<ID={k},Description="{v}">' for k, v in FILTERS.items()]
    lines.append('##INFO=<ID=END,Number=1,Type=Integer,Description="End position (for use with symbolic alleles)">')
    if gvcf:
        lines.append('##ALT=<ID=*,Description="Any allele not shown at this position (gVCF reference blocks)">')
    lines += [f'##FORMAT=<ID={i},Number={n},Type={t},Description="{d}">' for i, n, t, d in FORMATS]
    if gvcf:
        lines.append('##FORMAT=<ID=MIN_DP,Number=1,Type=Integer,Description="Minimum DP observed within the gVCF '
                     'block">')  # fmt: skip
    for key, value in provenance.items():
        lines.append(f"##{key}={_one_line(value)}")
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contigs]
    lines.append(f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{sample}")
    return lines


def _one_line(value) -> str:
    return " ".join(str(value).split())


def write_vcf_gz(out: str | Path, header: list[str], lines: Iterable[str]) -> None:
    """Bgzip `header` + `lines` to `out` and tabix-index it (`out.tbi`), both under temporary names renamed
    at the end; nothing is left behind on failure. Lines must already be sorted."""
    import pysam

    from deepflows.genomics.io.hts import htslib_writing

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.gz")
    tmp_index = Path(f"{tmp}.tbi")
    index = Path(f"{out}.tbi")
    placed = False
    try:
        with htslib_writing(out):
            with pysam.BGZFile(str(tmp), "wb") as handle:
                handle.write(("\n".join(header) + "\n").encode())
                block: list[str] = []
                for line in lines:
                    block.append(line)
                    if len(block) == 4096:
                        handle.write(("\n".join(block) + "\n").encode())
                        block.clear()
                if block:
                    handle.write(("\n".join(block) + "\n").encode())
            pysam.tabix_index(str(tmp), preset="vcf", force=True, index=str(tmp_index))
        # The index goes first and is newer than the data, so a VCF in place always has its index.
        tmp_index.rename(index)
        placed = True
        tmp.rename(out)
    except BaseException:
        for path in (tmp, tmp_index, *([index] if placed else [])):
            path.unlink(missing_ok=True)
        raise


def check_output_path(out: str | Path, option: str = "--out") -> Path:
    return check_new_output(out, option, suffix=".vcf.gz", kind="a bgzipped VCF")
