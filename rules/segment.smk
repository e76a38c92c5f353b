# Segmentation (DeepLab-v3+) and the Augmented Reality Microscope: each task's images and derived labels ->
# one task store (segment_data) -> a model per head (segment_train: v3plus, v3, fcn, all on MobileNetV2's
# ImageNet weights; or the given ones, `segment.tasks.{task}.models`) -> every model and the classical
# baseline scored on the task's test sets (segment_eval); the H&E model's field-of-view detection AUC
# (segment_fov) -> the AR microscope run over the slide with the H&E model, recorded with its per-frame
# detections (arm_record). Target: `imaging_segment` (config section
# `segment`, e.g. config/imaging-segment.yaml).


wildcard_constraints:
    task="|".join(SEGMENT_TASKS) or "none",
    head="fcn|v3|v3plus",


rule segment_data:
    input:
        segment_task_sources,
    output:
        directory(f"{segment_dir('{task}')}/task.zarr"),
    params:
        data=SEGMENT["data"],
    threads: 1
    resources:
        mem_mb=4096,
    log:
        "logs/segment/{task}/data.log",
    benchmark:
        "benchmarks/segment/{task}/data.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows segment-data --task {wildcards.task} --data {params.data:q} --out {output:q} 2> {log:q}"


rule segment_train:
    input:
        task=f"{segment_dir('{task}')}/task.zarr",
        config=segment_train_config,
    output:
        protected(directory(segment_trained_model_path("{task}", "{head}"))),
    params:
        workdir=lambda wildcards, output: Path(output[0]).parent / "work",
    threads: 2
    resources:
        mem_mb=8000,
    log:
        "logs/segment/{task}/train-{head}.log",
    benchmark:
        "benchmarks/segment/{task}/train-{head}.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows segment-train --config {input.config:q} --task {input.task:q} --head {wildcards.head}"
        " --workdir {params.workdir:q} --out {output:q} 2> {log:q}"


rule segment_eval:
    input:
        task=f"{segment_dir('{task}')}/task.zarr",
        models=segment_models,
    output:
        report(
            directory(f"{segment_dir('{task}')}/evaluation"),
            caption="../workflow/report/segment_evaluation.rst",
            category="Segmentation",
            patterns=["{name}.png"],
        ),
    params:
        models=segment_model_args,
        tolerance=lambda wildcards: SEGMENT_TASKS[wildcards.task]["tolerance"],
        band=lambda wildcards: SEGMENT_TASKS[wildcards.task]["band"],
    threads: 2
    resources:
        mem_mb=8000,
    log:
        "logs/segment/{task}/eval.log",
    benchmark:
        "benchmarks/segment/{task}/eval.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows segment-eval --task {input.task:q} --models {params.models} --tolerance {params.tolerance}"
        " --band {params.band} --out {output:q} 2> {log:q}"


rule segment_fov:
    input:
        task=f"{segment_dir('he_regions')}/task.zarr",
        model=lambda wildcards: _segment_model("he_regions", SEGMENT_TASKS["he_regions"]["heads"][0]),
    output:
        report(
            directory(f"{segment_dir('he_regions')}/fov"),
            caption="../workflow/report/segment_fov.rst",
            category="Segmentation",
            patterns=["{name}.png"],
        ),
    threads: 2
    resources:
        mem_mb=4000,
    log:
        "logs/segment/he_regions/fov.log",
    benchmark:
        "benchmarks/segment/he_regions/fov.tsv"
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows segment-fov --task {input.task:q} --model {input.model:q} --out {output:q} 2> {log:q}"


rule arm_record:
    input:
        slide=SEGMENT["arm"]["slide"] or [],
        model=segment_arm_model,
    output:
        video=report("results/arm/session.mp4", caption="../workflow/report/arm.rst", category="Segmentation"),
        csv="results/arm/session.csv",
    params:
        seconds=SEGMENT["arm"]["seconds"],
        fps=SEGMENT["arm"]["fps"],
    threads: 2
    resources:
        mem_mb=4000,
    log:
        "logs/arm/session.log",
    conda:
        "../envs/imaging.yaml"
    shell:
        "deepflows arm --source slide:{input.slide:q} --model {input.model:q} --duration {params.seconds}"
        " --fps {params.fps} --record {output.video:q} --csv {output.csv:q} 2> {log:q}"


rule imaging_segment:
    input:
        segment_targets,
    default_target: False
