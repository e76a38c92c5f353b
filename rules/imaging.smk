# Microscopy: images -> OME-Zarr (ingest_image, one job per image) -> focus quality of every image
# (focus). Target: `imaging_focus` (config section `imaging`, e.g. config/imaging-focus.yaml).

import re

from deepflows.errors import UserError
from deepflows.imaging.io import image_sources

IMAGING = config["imaging"]
try:
    IMAGING_SOURCES = image_sources(IMAGING["images"])  # image name -> path
except UserError as _err:
    sys.exit(f"error: imaging.images: {_err}")


wildcard_constraints:
    image="|".join(re.escape(name) for name in IMAGING_SOURCES) or "(?!)",
    batch=r"[A-Za-z0-9][A-Za-z0-9._-]*",


rule ingest_image:
    input:
        lambda wildcards: IMAGING_SOURCES[wildcards.image],
    output:
        directory("results/imaging/{batch}/images/{image}.ome.zarr"),
    params:
        chunks=IMAGING["chunks"],
        levels=IMAGING["levels"],
    log:
        "logs/imaging/{batch}/ingest/{image}.log",
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows ingest-image --image {input:q} --out {output:q} --chunks {params.chunks}"
        " --levels {params.levels} 2> {log:q}"


rule focus:
    input:
        images=expand("results/imaging/{{batch}}/images/{image}.ome.zarr", image=sorted(IMAGING_SOURCES)),
        model=Path(resolve_shipped(IMAGING["model"], workflow.basedir), "model.json"),
    output:
        directory("results/imaging/{batch}/focus"),
    params:
        model=lambda wildcards, input: Path(input.model).parent,
        channel=IMAGING["channel"],
        batch_size=IMAGING["batch_size"],
    threads: 2
    resources:
        mem_mb=2048,
    log:
        "logs/imaging/{batch}/focus.log",
    benchmark:
        "benchmarks/imaging/{batch}/focus.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows focus --images {input.images:q} --model {params.model:q} --out {output:q}"
        " --channel {params.channel} --batch-size {params.batch_size} --threads {threads} 2> {log:q}"


rule imaging_focus:
    input:
        f"results/imaging/{IMAGING['batch']}/focus",
