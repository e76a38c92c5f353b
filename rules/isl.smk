# In Silico Labeling: a well's PNGs -> one OME-Zarr well store (isl_ingest) -> sharded train and tune patches
# (isl_patches) -> the trained networks (isl_train, {net}: fovea, the ISL model, and unet, the U-Net L2
# baseline; or given ones, `isl.model` and `isl.unet_model`) -> their predictions over the whole well
# (isl_predict), beside a ridge-regression baseline (isl_ridge) -> their evaluation on the test quadrant
# (isl_evaluate). Target: `imaging_isl` (config section `isl`, e.g. config/imaging-isl.yaml).

import re


wildcard_constraints:
    well=re.escape(ISL["well"]),
    split="train|tune",
    net="fovea|unet",


rule isl_ingest:
    input:
        unpack(isl_well_files),
    output:
        directory(f"{isl_dir('{well}')}/well.ome.zarr"),
    params:
        data=ISL["data"],
        chunks=ISL["chunks"],
    threads: 1
    resources:
        mem_mb=2048,
    log:
        "logs/isl/{well}/ingest.log",
    benchmark:
        "benchmarks/isl/{well}/ingest.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows isl-ingest --dir {params.data:q} --out {output:q} --chunks {params.chunks} 2> {log:q}"


rule isl_patches:
    input:
        well=f"{isl_dir('{well}')}/well.ome.zarr",
    output:
        temp(directory(f"{isl_dir('{well}')}/patches/{{split}}-{{shard}}-of-{{nshards}}.zarr")),
    params:
        shard=isl_shard_arg,
        size=ISL["patch_size"],
        split_args=ISL_SPLIT_ARGS,
        patches_args=isl_patches_args,
    threads: 1
    resources:
        mem_mb=2048,
    log:
        "logs/isl/{well}/patches/{split}-{shard}-of-{nshards}.log",
    benchmark:
        "benchmarks/isl/{well}/patches/{split}-{shard}-of-{nshards}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows isl-patches --well {input.well:q} --split {wildcards.split} --shard {params.shard}"
        " --size {params.size} {params.patches_args} {params.split_args} --out {output:q} 2> {log:q}"


rule isl_train:
    input:
        train=isl_train_patches,
        tune=isl_tune_patches,
        config=isl_train_config,
    output:
        protected(directory(isl_trained_model_path("{well}", "{net}"))),
    params:
        workdir=lambda wildcards, output: Path(output[0]).parent / "work",
    threads: 4
    resources:
        mem_mb=16000,
    log:
        "logs/isl/{well}/train-{net}.log",
    benchmark:
        "benchmarks/isl/{well}/train-{net}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows isl-train --config {input.config:q} --patches {input.train:q} --tune {input.tune:q}"
        " --workdir {params.workdir:q} --out {output:q} 2> {log:q}"


rule isl_predict:
    input:
        well=f"{isl_dir('{well}')}/well.ome.zarr",
        model=isl_model_path,
    output:
        directory(f"{isl_dir('{well}')}/predictions-{{net}}.ome.zarr"),
    params:
        tta="--tta" if ISL["tta"] else "",
    threads: 2
    resources:
        mem_mb=8000,
    log:
        "logs/isl/{well}/predict-{net}.log",
    benchmark:
        "benchmarks/isl/{well}/predict-{net}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows isl-predict --stack {input.well:q} --model {input.model:q} --out {output:q} {params.tta}"
        " 2> {log:q}"


rule isl_ridge:
    input:
        well=f"{isl_dir('{well}')}/well.ome.zarr",
    output:
        directory(f"{isl_dir('{well}')}/ridge.ome.zarr"),
    params:
        split_args=ISL_SPLIT_ARGS,
        seed=ISL["seed"],
    threads: 1
    resources:
        mem_mb=4000,
    log:
        "logs/isl/{well}/ridge.log",
    benchmark:
        "benchmarks/isl/{well}/ridge.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows isl-ridge --well {input.well:q} --out {output:q} {params.split_args} --seed {params.seed}"
        " 2> {log:q}"


rule isl_evaluate:
    input:
        well=f"{isl_dir('{well}')}/well.ome.zarr",
        predictions=f"{isl_dir('{well}')}/predictions-fovea.ome.zarr",
        unet=f"{isl_dir('{well}')}/predictions-unet.ome.zarr",
        ridge=f"{isl_dir('{well}')}/ridge.ome.zarr",
    output:
        report(
            directory(f"{isl_dir('{well}')}/evaluation"),
            caption="../workflow/report/isl_evaluation.rst",
            category="In Silico Labeling",
            patterns=["{name}.png"],
        ),
    params:
        split_args=ISL_SPLIT_ARGS,
    threads: 1
    resources:
        mem_mb=4000,
    log:
        "logs/isl/{well}/evaluate.log",
    benchmark:
        "benchmarks/isl/{well}/evaluate.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows isl-evaluate --well {input.well:q} --predictions {input.predictions:q}"
        " --baseline ridge={input.ridge:q} --baseline unet={input.unet:q} {params.split_args} --out {output:q}"
        " 2> {log:q}"


rule imaging_isl:
    input:
        f"{isl_dir()}/evaluation",
