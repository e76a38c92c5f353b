"""Shared pieces of the bench scripts: where things are, and how a command is measured."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "genomics"
OUT = ROOT / "bench" / "out"
SHIPPED_MODEL = ROOT / "resources" / "models" / "wgs-illumina"
# Single-threaded numeric libraries, so "one core" means one core.
ONE_CORE_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "BLOSC_NTHREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "XLA_FLAGS": ONE_CORE_XLA}  # fmt: skip


def deepflows() -> str:
    exe = Path(sys.executable).with_name("deepflows")
    return str(exe) if exe.exists() else "deepflows"


def measure(command: str, cpu: int | None = None) -> dict:
    """Run a shell command pinned to one CPU (default: $BENCH_CPU, else 0); wall seconds, CPU seconds and
    peak RSS of its process tree (wait4 on the shell, which waits for every process of a pipeline)."""
    cpu = int(os.environ.get("BENCH_CPU", "0")) if cpu is None else cpu
    env = {**os.environ, **ONE_THREAD}
    start = time.perf_counter()
    proc = subprocess.Popen(["taskset", "-c", str(cpu), "bash", "-o", "pipefail", "-c", command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {command}\n{stderr.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


SIM10MB = OUT / "sim10mb"  # PREFIX.bam, .truth.vcf.gz, .confident.bed
SIM10MB_REF = DATA / "grch38.chr20_and_21_10M.fa.gz"


def sim10mb_command() -> list[str]:
    """GRCh38 chr20:1-10,000,000 at 30x 2x150 with the HG002 truth, simulated once for the speed benches."""
    return [deepflows(), "simulate", "--ref", str(SIM10MB_REF),
            "--truth", str(DATA / "HG002_GRCh38_1_22_v4.2.1_benchmark.chr20.vcf.gz"),
            "--region", "chr20:1-10,000,000", "--depth", "30", "--read-length", "150",
            "--seed", "1", "--sample", "HG002-sim", "--threads", "2", "--out-prefix", str(SIM10MB)]  # fmt: skip


def ensure_sim10mb() -> Path:
    """The simulated 10 Mb BAM, made on first use (its simulation is not part of any measurement)."""
    bam = Path(f"{SIM10MB}.bam")
    if not bam.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"simulating input once: {' '.join(sim10mb_command())}", file=sys.stderr)
        subprocess.run(sim10mb_command(), check=True)
    return bam


def featurizer_flags(model: Path) -> str:
    """make-examples flags that featurize as `model`'s training examples were (call-variants checks it; models
    from before realignment existed do not say, and were trained without it)."""
    import json

    return " --realign" if json.loads((Path(model) / "model.json").read_text()).get("realign") else " --no-realign"


def call_and_postprocess(examples: list[Path], model: Path, probs: Path, ref: Path, vcf: Path,
                         logs: Path | None = None) -> tuple[str, str]:  # fmt: skip
    """The pipeline after make-examples: the call-variants and postprocess commands (stderr to
    `logs/call_variants.log` and `logs/postprocess.log` when `logs` is given)."""

    def log(stage: str) -> str:
        return f" 2> {logs}/{stage}.log" if logs else ""

    shards = " ".join(map(str, examples))
    return (f"{deepflows()} call-variants --examples {shards} --model {model} --out {probs}{log('call_variants')}",
            f"{deepflows()} postprocess --probs {probs} --ref {ref} --out {vcf}{log('postprocess')}")  # fmt: skip


# Real HG002 30x Illumina reads on b37 (duplicates marked by bamsormadup), 148 bp; no GIAB truth on b37 here
HG002_B37 = {"reads": DATA / "HG002_NIST_150bp_downsampled_30x.chr20.10_10p1mb.bam", "ref": DATA / "hs37d5.chr20.fa.gz",
             "region": "20:10,000,001-10,100,000"}  # fmt: skip


def pass_calls(vcf: Path, targets: list[tuple[int, int]] | None = None) -> dict[tuple, str]:
    """(pos, ref, alts) -> genotype of the PASS calls of a one-sample VCF (inside `targets`, when given)."""
    import pysam

    calls = {}
    with pysam.VariantFile(str(vcf)) as records:
        for record in records:
            inside = targets is None or any(a <= record.start < b for a, b in targets)
            if inside and list(record.filter.keys()) in (["PASS"], []):
                genotype = "/".join(map(str, sorted(g for g in record.samples[0]["GT"] if g is not None)))
                if genotype.strip("0/"):  # a called ALT allele
                    calls[(record.pos, record.ref, record.alts)] = genotype
    return calls


def kind(key: tuple) -> str:
    _, ref, alts = key
    return "SNP" if len(ref) == 1 and all(len(a) == 1 for a in alts) else "INDEL"


def model_arg(text: str) -> tuple[str, Path]:
    """--model's [NAME=]DIR."""
    name, _, directory = text.rpartition("=")
    return name, Path(directory)


def deepflows_commands(reads: Path, ref: Path, regions: list[str], work: Path, models: dict[str, Path],
                       extra: str = "") -> dict[str, str]:
    """Shell commands, one per deepflows model (keyed by caller name), each writing `work/<caller>.vcf.gz`. The
    models share one make-examples run (the first model's command makes the examples; their featurisation
    must agree). `extra`: more make-examples flags (a preset, targets)."""
    flags = {featurizer_flags(model) for model in models.values()}
    if len(flags) > 1:
        raise SystemExit(f"--model: the models featurize differently ({', '.join(sorted(flags))}); bench them apart")
    make_examples = (f"{deepflows()} make-examples --reads {reads} --ref {ref} --regions {' '.join(regions)}{extra}"
                     f" --sample sample --out {work}/examples.zarr{flags.pop()} 2> {work}/make_examples.log")
    commands = {}
    for i, (caller, model) in enumerate(models.items()):
        (work / caller).mkdir()
        call, post = call_and_postprocess([work / "examples.zarr"], model, work / caller / "probs.zarr", ref,
                                          work / f"{caller}.vcf.gz", logs=work / caller)  # fmt: skip
        commands[caller] = f"{make_examples} && {call} && {post}" if i == 0 else f"{call} && {post}"
    return commands


def peer_commands(reads: Path, ref: Path, work: Path, bcf_where: str, fb_where: str) -> dict[str, str]:
    """bcftools (`mpileup -a AD,DP | call -mv`) and freebayes on the same reads, writing `work/<caller>.vcf.gz`;
    `bcf_where` / `fb_where`: where each looks (`-r REGIONS` or `-R BED`; `--region R ...` or `--targets BED`)."""
    return {
        "bcftools": f"bcftools mpileup -f {ref} {bcf_where} -a AD,DP {reads} 2>/dev/null"
                    f" | bcftools call -mv -Oz -o {work}/bcftools.vcf.gz",
        "freebayes": f"freebayes -f {plain_reference(ref)} {fb_where} {reads} | bgzip > {work}/freebayes.vcf.gz",
    }  # fmt: skip


def plain_reference(fasta: Path) -> Path:
    """freebayes reads only uncompressed FASTA: a plain, indexed copy is made once under bench/out."""
    plain = OUT / (fasta.name.removesuffix(".gz") if fasta.suffix == ".gz" else fasta.name)
    if not Path(f"{plain}.fai").exists():
        OUT.mkdir(parents=True, exist_ok=True)
        with (gzip.open(fasta, "rb") if fasta.suffix == ".gz" else open(fasta, "rb")) as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        subprocess.run(["samtools", "faidx", str(plain)], check=True)
    return plain


def binned_copy(source: Path, out: Path, scheme: str = "novaseq") -> None:
    """The BAM with every base quality binned as `scheme` (deepflows.genomics.simulate.qualities), indexed."""
    import array

    import pysam

    from deepflows.genomics.simulate.qualities import binning_table

    table = binning_table(scheme)
    out.parent.mkdir(parents=True, exist_ok=True)
    with pysam.AlignmentFile(str(source)) as reads, pysam.AlignmentFile(str(out), "wb", template=reads) as binned:
        for read in reads:
            if read.query_qualities is not None:
                read.query_qualities = array.array("B", table[read.query_qualities].tobytes())
            binned.write(read)
    pysam.index(str(out))
