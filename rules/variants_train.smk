# Training and evaluation data at scale (config key `training_data`; target `training_data`).
#
# Training: the span minus the evaluation regions (and a margin) is cut into chunks; each chunk is simulated
# on its own (train_simulate, BAM temporary) and turned into labelled examples (train_make_examples); all
# chunks are shuffled into one Zarr store with a tuning split held back by region (train_shuffle).
# Evaluation: each set of training_data.eval_sets simulates the evaluation regions with its own settings
# (eval_simulate, BAM kept) and gets calling examples (eval_make_examples scatter, eval_check_shards gather);
# a set with `regions: tune` simulates the tuning regions instead (held-out calls for calibration).
# Model: train_model trains on the store (target `trained_model`; GPU and time from profiles/); with
# train.calibration_sets, calibrate_model fits its call temperature on eval sets simulated over the tune regions.
# Rules only wire files; the chunk layout comes from deepflows.genomics.simulate.training_plan (rules/common.smk).


rule training_data:
    input:
        training_data_targets(),


rule trained_model:
    input:
        final_model_path(),


rule train_simulate:
    input:
        unpack(training_simulate_inputs),
    output:
        # temp: the BAMs are only read by make_examples and are remade byte for byte from the seed.
        bam=temp("results/{sample}/train/chunks/{chunk}/reads.bam"),
        bai=temp("results/{sample}/train/chunks/{chunk}/reads.bam.bai"),
        truth="results/{sample}/train/chunks/{chunk}/reads.truth.vcf.gz",
        truth_index="results/{sample}/train/chunks/{chunk}/reads.truth.vcf.gz.tbi",
        confident="results/{sample}/train/chunks/{chunk}/reads.confident.bed",
    params:
        prefix=lambda wildcards, output: output.bam.removesuffix(".bam"),
        region=train_chunk_region,
        variants=training_variant_args,
        simulation=train_simulation_args,
        files=simulate_file_args,
        seed=train_chunk_seed,
    log:
        "logs/{sample}/train/simulate/{chunk}.log",
    benchmark:
        "benchmarks/{sample}/train/simulate/{chunk}.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows simulate --ref {input.ref:q} {params.variants} --region {params.region}"
        " {params.simulation} {params.files} --seed {params.seed} --threads {threads}"
        " --sample {wildcards.sample} --out-prefix {params.prefix:q} 2> {log:q}"


# Chunks and sets aligned with bwa mem (`aligner: bwa`): one bwa index of the reference, beside the results
# (the reference's own folder may be read-only).
rule bwa_index:
    input:
        unpack(reference_inputs),
    output:
        multiext("results/{sample}/reference/bwa/reference", ".amb", ".ann", ".bwt", ".pac", ".sa"),
    params:
        prefix=lambda wildcards, output: output[0].removesuffix(".amb"),
    log:
        "logs/{sample}/reference/bwa_index.log",
    benchmark:
        "benchmarks/{sample}/reference/bwa_index.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "bwa index -p {params.prefix:q} {input.ref:q} 2> {log:q}"


# Exome-like chunks and sets (`capture` in their simulation): the capture targets they are simulated and called over.
rule train_targets:
    input:
        unpack(reference_inputs),
    output:
        "results/{sample}/train/chunks/{chunk}/targets.bed",
    params:
        region=train_chunk_region,
        fraction=capture_fraction,
        seed=train_chunk_seed,
    log:
        "logs/{sample}/train/targets/{chunk}.log",
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows capture-targets --ref {input.ref:q} --region {params.region} --fraction {params.fraction}"
        " --seed {params.seed} --out {output:q} 2> {log:q}"


rule eval_targets:
    input:
        unpack(reference_inputs),
    output:
        "results/{sample}/eval/{evalset}/targets.bed",
    params:
        regions=eval_regions,
        fraction=capture_fraction,
        seed=lambda wildcards: TRAINING["eval_sets"][wildcards.evalset]["seed"],
    log:
        "logs/{sample}/eval/{evalset}/targets.log",
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows capture-targets --ref {input.ref:q} --region {params.regions} --fraction {params.fraction}"
        " --seed {params.seed} --out {output:q} 2> {log:q}"


rule train_make_examples:
    input:
        unpack(reference_inputs),
        unpack(preset_inputs),
        reads="results/{sample}/train/chunks/{chunk}/reads.bam",
        reads_index="results/{sample}/train/chunks/{chunk}/reads.bam.bai",
        truth="results/{sample}/train/chunks/{chunk}/reads.truth.vcf.gz",
        truth_index="results/{sample}/train/chunks/{chunk}/reads.truth.vcf.gz.tbi",
        confident="results/{sample}/train/chunks/{chunk}/reads.confident.bed",
    output:
        directory("results/{sample}/train/chunks/{chunk}/examples.zarr"),
    params:
        seed=config["make_examples"]["seed"],
        realign=REALIGN_ARG,
        preset=preset_args,
    log:
        "logs/{sample}/train/make_examples/{chunk}.log",
    benchmark:
        "benchmarks/{sample}/train/make_examples/{chunk}.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows make-examples --reads {input.reads:q} --ref {input.ref:q} --regions {input.confident:q}"
        " --truth {input.truth:q} --confident {input.confident:q} --seed {params.seed} {params.realign} {params.preset}"
        " --sample {wildcards.sample} --out {output:q} 2> {log:q}"


rule train_shuffle:
    input:
        shards=training_shards,
    output:
        store=directory(training_store_path("{sample}")),
        summary=report(
            "results/{sample}/train/train.json",
            caption="../workflow/report/training_store.rst",
            category="Training data",
            subcategory="{sample}",
        ),
    params:
        tune=tune_region_args,
        seed=TRAINING["shuffle"]["seed"],
        bucket_size=TRAINING["shuffle"]["bucket_size"],
        chunk_size=TRAINING["shuffle"]["chunk_size"],
    log:
        "logs/{sample}/train/shuffle.log",
    benchmark:
        "benchmarks/{sample}/train/shuffle.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows shuffle-examples {input.shards:q} --out {output.store:q} {params.tune} --seed {params.seed}"
        " --bucket-size {params.bucket_size} --chunk-size {params.chunk_size} --summary {output.summary:q}"
        " 2> {log:q}"


rule eval_simulate:
    input:
        unpack(training_simulate_inputs),
    output:
        # kept (not temp): later stages call variants on these reads
        bam="results/{sample}/eval/{evalset}/reads.bam",
        bai="results/{sample}/eval/{evalset}/reads.bam.bai",
        truth="results/{sample}/eval/{evalset}/reads.truth.vcf.gz",
        truth_index="results/{sample}/eval/{evalset}/reads.truth.vcf.gz.tbi",
        confident="results/{sample}/eval/{evalset}/reads.confident.bed",
    params:
        prefix=lambda wildcards, output: output.bam.removesuffix(".bam"),
        regions=eval_regions,
        variants=training_variant_args,
        simulation=eval_simulation_args,
        files=simulate_file_args,
    log:
        "logs/{sample}/eval/{evalset}/simulate.log",
    benchmark:
        "benchmarks/{sample}/eval/{evalset}/simulate.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows simulate --ref {input.ref:q} {params.variants} --region {params.regions}"
        " {params.simulation} {params.files} --threads {threads} --sample {wildcards.sample} --out-prefix {params.prefix:q}"
        " 2> {log:q}"


# Scatter: shard i of n owns the i-th slice of the evaluation regions; calling mode (no labels).
rule eval_make_examples:
    input:
        unpack(reference_inputs),
        unpack(preset_inputs),
        reads="results/{sample}/eval/{evalset}/reads.bam",
        reads_index="results/{sample}/eval/{evalset}/reads.bam.bai",
    output:
        directory("results/{sample}/eval/{evalset}/examples/calling/examples-{shard}-of-{nshards}.zarr"),
    params:
        shard=lambda wildcards: f"{int(wildcards.shard)}/{int(wildcards.nshards)}",
        regions=eval_regions,
        seed=config["make_examples"]["seed"],
        realign=REALIGN_ARG,
        preset=preset_args,
    log:
        "logs/{sample}/eval/{evalset}/make_examples/{shard}-of-{nshards}.log",
    benchmark:
        "benchmarks/{sample}/eval/{evalset}/make_examples/{shard}-of-{nshards}.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows make-examples --reads {input.reads:q} --ref {input.ref:q} --regions {params.regions}"
        " --shard {params.shard} --out {output:q} --seed {params.seed} {params.realign} {params.preset}"
        " --sample {wildcards.sample} 2> {log:q}"


# Gather: fails unless every shard of the set is present and complete.
rule eval_check_shards:
    input:
        shards=eval_shard_paths,
    output:
        report(
            "results/{sample}/eval/{evalset}/examples/calling/manifest.json",
            caption="../workflow/report/eval_manifest.rst",
            category="Evaluation data",
            subcategory="{sample}",
        ),
    log:
        "logs/{sample}/eval/{evalset}/check_shards.log",
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows check-shards --out {output:q} {input.shards:q} 2> {log:q}"


# The workdir keeps Orbax checkpoints, so a killed or preempted job resumes where it stopped when rerun.
rule train_model:
    input:
        store=training_store_path("{sample}"),
        config=resolve_shipped(config["train"]["config"], workflow.basedir),
    output:
        protected(directory(trained_model_path("{sample}"))),
    params:
        workdir=lambda wildcards, output: Path(output[0]).parent,
    log:
        "logs/{sample}/train/train_model.log",
    benchmark:
        "benchmarks/{sample}/train/train_model.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows train --examples {input.store:q} --config {input.config:q} --workdir {params.workdir:q}"
        " 2> {log:q}"


# An eval set's calling examples through the trained model (the calibration sets' probabilities).
rule eval_call_variants:
    input:
        shards=eval_shard_paths,
        manifest="results/{sample}/eval/{evalset}/examples/calling/manifest.json",
        model=trained_model_path("{sample}"),
    output:
        temp(directory("results/{sample}/eval/{evalset}/probs.zarr")),
    log:
        "logs/{sample}/eval/{evalset}/call_variants.log",
    benchmark:
        "benchmarks/{sample}/eval/{evalset}/call_variants.tsv"
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows call-variants --examples {input.shards:q} --model {input.model:q} --out {output:q} 2> {log:q}"


# The trained model with its call temperature fitted on the calibration sets (tune regions only).
rule calibrate_model:
    input:
        unpack(calibration_inputs),
    output:
        protected(directory(calibrated_model_path("{sample}"))),
    params:
        sets=calibration_set_args,
    log:
        "logs/{sample}/train/calibrate_model.log",
    conda:
        "../envs/genomics.yaml"
    shell:
        "cp -r {input.model:q} {output:q} && chmod -R u+w {output:q}"
        " && deepflows fit-call-temperature --model {output:q} --ref {input.ref:q} {params.sets} > {log:q} 2>&1"
