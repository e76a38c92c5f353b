"""Report of a training-data run (rules/variants_train.smk): examples per class, bytes per example, and the
wall time, CPU time and peak memory of every stage, read from the run's own outputs.

Sources: Snakemake's `benchmark:` TSVs (benchmarks/{sample}/train/..., benchmarks/{sample}/eval/...), the
shuffled store's summary (results/{sample}/train/train.json) and attributes, each chunk shard, and the
evaluation sets' manifests, truth VCFs and confident BEDs. Nothing is rerun: first run

    snakemake --configfile config/train-hg002-grch38.yaml --cores 2 training_data

then

    python bench/training_data_report.py [--config config/train-hg002-grch38.yaml] [--json PATH]

Prints Markdown tables and the same figures as JSON (also written to --json). Snakemake measures each job
by polling its process tree (psutil), so CPU time and peak RSS of jobs shorter than a second or two are
approximate; wall time is exact.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from deepflows.run_times import read_benchmarks

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("hom_ref", "het", "hom_alt")


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def count_vcf_records(path: Path) -> int:
    if not path.exists():
        return 0
    with gzip.open(path, "rt") as handle:
        return sum(1 for line in handle if not line.startswith("#"))


def bed_bases(path: Path) -> int:
    if not path.exists():
        return 0
    total = 0
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and not line.startswith(("#", "track", "browser")):
            total += int(fields[2]) - int(fields[1])
    return total


def report(root: Path, sample: str) -> dict | None:
    results, benchmarks = root / "results" / sample, root / "benchmarks" / sample
    summary_path = results / "train" / "train.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    store = results / "train" / "train.zarr"
    chunks = results / "train" / "chunks"
    chunk_shards = sorted(chunks.glob("*/examples.zarr"))
    chunk_examples = sum(s["examples"] for s in summary["sources"])
    training = {
        "store": str(store.relative_to(root)),
        "splits": {
            split: {
                "examples": info["examples"],
                "classes": info["classes"],
                "bytes": info["bytes"],
                "bytes_per_example": info["bytes_per_example"],
            }
            for split, info in summary["splits"].items()
        },
        "left_out_near_tune": summary["left_out_near_tune"],
        "tune_regions": summary["tune_regions"],
        "chunks": len(summary["sources"]),
        "chunk_regions": [r for s in summary["sources"] for r in (s["regions"] or [])],
        "chunk_examples": chunk_examples,
        "chunk_shard_bytes_per_example": round(sum(map(tree_bytes, chunk_shards)) / max(chunk_examples, 1), 1),
        "store_bytes_per_example": round(tree_bytes(store) / max(chunk_examples - summary["left_out_near_tune"], 1),
                                         1),
        "truth_variants": sum(count_vcf_records(p) for p in chunks.glob("*/reads.truth.vcf.gz")),
        "confident_bp": sum(bed_bases(p) for p in chunks.glob("*/reads.confident.bed")),
        "stages": {
            "simulate": read_benchmarks(list((benchmarks / "train" / "simulate").glob("*.tsv"))),
            "make_examples": read_benchmarks(list((benchmarks / "train" / "make_examples").glob("*.tsv"))),
            "shuffle": read_benchmarks([p for p in [benchmarks / "train" / "shuffle.tsv"] if p.exists()]),
        },
        "shuffle_stats": summary["stats"],
    }
    evaluation = {}
    for folder in sorted((results / "eval").glob("*")):
        manifest_path = folder / "examples" / "calling" / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        shards = sorted((folder / "examples" / "calling").glob("*.zarr"))
        n = manifest.get("examples", 0)
        bench = benchmarks / "eval" / folder.name
        evaluation[folder.name] = {
            "reads_bam_bytes": (folder / "reads.bam").stat().st_size if (folder / "reads.bam").exists() else None,
            "truth_variants": count_vcf_records(folder / "reads.truth.vcf.gz"),
            "confident_bp": bed_bases(folder / "reads.confident.bed"),
            "candidates": manifest.get("candidates"),
            "examples": n,
            "bytes_per_example": round(sum(map(tree_bytes, shards)) / max(n, 1), 1),
            "command": _simulate_command(root, sample, folder.name),
            "stages": {
                "simulate": read_benchmarks([p for p in [bench / "simulate.tsv"] if p.exists()]),
                "make_examples": read_benchmarks(list((bench / "make_examples").glob("*.tsv"))),
            },
        }
    return {"sample": sample, "training": training, "evaluation": evaluation}


def _simulate_command(root: Path, sample: str, name: str) -> str | None:
    """The simulation settings of an evaluation set, from the truth VCF's header (##deepflowsCommand)."""
    path = root / "results" / sample / "eval" / name / "reads.truth.vcf.gz"
    if not path.exists():
        return None
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if not line.startswith("##"):
                break
            if "command" in line.lower() and "simulate" in line:
                return line.strip().split("=", 1)[1]
    return None


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(data: dict) -> str:
    t, ev = data["training"], data["evaluation"]
    lines = [f"## Training data of `{data['sample']}`", ""]
    lines += ["| split | examples | " + " | ".join(CLASSES) + " | store bytes | bytes/example |",
              "|---|---:|" + "---:|" * len(CLASSES) + "---:|---:|"]  # fmt: skip
    for split, info in t["splits"].items():
        lines.append(f"| {split} | {_fmt(info['examples'])} | "
                     + " | ".join(_fmt(info["classes"][c]) for c in CLASSES)
                     + f" | {_fmt(info['bytes'])} | {_fmt(info['bytes_per_example'])} |")  # fmt: skip
    for name, info in ev.items():
        lines.append(f"| eval `{name}` (calling, unlabelled) | {_fmt(info['examples'])} | - | - | - | - "
                     f"| {_fmt(info['bytes_per_example'])} |")  # fmt: skip
    lines += [
        "",
        (
            f"{t['chunks']} training chunks, {_fmt(t['chunk_examples'])} labelled examples "
            f"({_fmt(t['left_out_near_tune'])} left out beside the tuning regions {', '.join(t['tune_regions'])}); "
            f"{_fmt(t['truth_variants'])} truth variants over {_fmt(t['confident_bp'])} confident bp. Bytes per "
            f"example: chunk shards {_fmt(t['chunk_shard_bytes_per_example'])}, shuffled store "
            f"{_fmt(t['store_bytes_per_example'])}."
        ),
        "",
        "| set | stage | jobs | wall s (sum) | wall s (longest job) | CPU s (sum) | peak RSS MB (largest job) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    stages = [("training", name, s) for name, s in t["stages"].items()]
    stages += [(f"eval `{set_name}`", name, s) for set_name, info in ev.items() for name, s in info["stages"].items()]
    for where, name, s in stages:
        lines.append(f"| {where} | {name} | {s['jobs']} | {_fmt(s.get('wall_s_sum'))} | {_fmt(s.get('wall_s_max'))} "
                     f"| {_fmt(s.get('cpu_s_sum'))} | {_fmt(s.get('peak_rss_mb_max'))} |")  # fmt: skip
    if ev:
        lines += ["", "| eval set | truth variants | confident bp | candidates | examples | reads.bam bytes |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name, info in ev.items():
            lines.append(f"| {name} | {_fmt(info['truth_variants'])} | {_fmt(info['confident_bp'])} "
                         f"| {_fmt(info['candidates'])} | {_fmt(info['examples'])} | {_fmt(info['reads_bam_bytes'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "train-hg002-grch38.yaml"),
                        help="the run's config (gives the sample name); default: config/train-hg002-grch38.yaml")
    parser.add_argument("--sample", help="the run's sample name (instead of --config)")
    parser.add_argument("--root", default=str(ROOT), help="the directory snakemake ran in (default: the repository)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "out" / "training_data_report.json"))
    args = parser.parse_args(argv)
    sample = args.sample
    if sample is None:
        import yaml

        sample = (yaml.safe_load(Path(args.config).read_text()) or {}).get("sample", "demo")
    data = report(Path(args.root), sample)
    if data is None:
        print(f"training_data_report: no training data for sample {sample!r} under {args.root}/results/ "
              f"(run: snakemake --configfile {args.config} --cores 2 training_data)", file=sys.stderr)  # fmt: skip
        return 0
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    print(markdown(data))
    print()
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
