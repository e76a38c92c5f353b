# Neural Optimizer Search: one search per proposer and seed (nos_search), then the report (nos_report).
# Target: `automl_nos` (config section `automl`, e.g. config/automl-nos.yaml; search settings in
# config/automl/nos.yaml). A killed search resumes from its state folder; the evaluation cache is shared.
# Architecture search: the tabular comparison (nas_compare), live searches (nas_search), their report
# (nas_report). Target: `automl_nas` (config section `automl.nas`, e.g. config/automl-nas.yaml; live search
# settings in config/automl/nas.yaml). A killed live search resumes from its store.


wildcard_constraints:
    algorithm="controller|evolution|random",
    nas_algorithm="aging|non-aging|random|reinforce|pairwise",
    init="random|hand",
    seed=r"\d+",


rule nos_search:
    input:
        settings=AUTOML["settings"],
    output:
        f"{NOS_DIR}/history/{{algorithm}}-s{{seed}}.tsv",
    params:
        workdir=f"{NOS_DIR}/state/{{algorithm}}-s{{seed}}",
        cache=f"{NOS_DIR}/cache.sqlite",
        rules=AUTOML["rules"],
    threads: 2
    resources:
        mem_mb=3000,
    log:
        "logs/automl/nos/{algorithm}-s{seed}.log",
    benchmark:
        "benchmarks/automl/nos/{algorithm}-s{seed}.tsv"
    conda:
        "../envs/automl.yaml"
    shell:
        "deepflows nos-search --algorithm {wildcards.algorithm} --seed {wildcards.seed} --rules {params.rules}"
        " --settings {input.settings:q} --workdir {params.workdir:q} --cache {params.cache:q}"
        " --workers {threads} --out {output:q} 2> {log:q}"


rule nos_report:
    input:
        settings=AUTOML["settings"],
        histories=nos_histories(),
    output:
        curves=report(
            f"{NOS_DIR}/report/curves.png",
            caption="../workflow/report/nos_curves.rst",
            category="Neural Optimizer Search",
        ),
        top=report(
            f"{NOS_DIR}/report/top_rules.md",
            caption="../workflow/report/nos_top_rules.rst",
            category="Neural Optimizer Search",
        ),
        searches=f"{NOS_DIR}/report/searches.md",
        table=f"{NOS_DIR}/report/top_rules.tsv",
    params:
        out=lambda wildcards, output: os.path.dirname(output.curves),
        seeds=" ".join(map(str, AUTOML["reevaluate_seeds"])),
        cache=f"{NOS_DIR}/cache.sqlite",
    threads: 2
    resources:
        mem_mb=3000,
    log:
        "logs/automl/nos/report.log",
    conda:
        "../envs/automl.yaml"
    shell:
        "deepflows nos-report --histories {input.histories:q} --settings {input.settings:q}"
        " --reevaluate-seeds {params.seeds} --cache {params.cache:q} --workers {threads} --out {params.out:q}"
        " 2> {log:q}"


rule automl_nos:
    input:
        rules.nos_report.output,


rule nas_compare:
    output:
        runs=f"{NAS_DIR}/comparison/runs.tsv",
        curves=report(
            f"{NAS_DIR}/comparison/curves.png",
            caption="../workflow/report/nas_comparison_curves.rst",
            category="Architecture search",
        ),
        table=report(
            f"{NAS_DIR}/comparison/table.md",
            caption="../workflow/report/nas_comparison_table.rst",
            category="Architecture search",
        ),
        tuning=f"{NAS_DIR}/comparison/tuning.md",
    params:
        out=lambda wildcards, output: os.path.dirname(output.runs),
        runs=NAS["comparison"]["runs"],
        budget=NAS["comparison"]["budget"],
        hpolib_runs=NAS["comparison"]["hpolib_runs"],
        tune_runs=NAS["comparison"]["tune_runs"],
    threads: 2
    resources:
        mem_mb=3000,
    log:
        "logs/automl/nas/compare.log",
    benchmark:
        "benchmarks/automl/nas/compare.tsv"
    conda:
        "../envs/automl.yaml"
    shell:
        "deepflows nas-compare --runs {params.runs} --budget {params.budget} --hpolib-runs {params.hpolib_runs}"
        " --tune-runs {params.tune_runs} --out {params.out:q} 2> {log:q}"


rule nas_search:
    input:
        settings=NAS["settings"],
    output:
        f"{NAS_DIR}/live/{{nas_algorithm}}-{{init}}-s{{seed}}.tsv",
    params:
        workdir=f"{NAS_DIR}/state/{{nas_algorithm}}-{{init}}-s{{seed}}",
        models=NAS["models"],
    threads: 2
    resources:
        mem_mb=3000,
    log:
        "logs/automl/nas/{nas_algorithm}-{init}-s{seed}.log",
    benchmark:
        "benchmarks/automl/nas/{nas_algorithm}-{init}-s{seed}.tsv"
    conda:
        "../envs/automl.yaml"
    shell:
        "deepflows nas-search --algorithm {wildcards.nas_algorithm} --init {wildcards.init} --seed {wildcards.seed}"
        " --models {params.models} --settings {input.settings:q} --workdir {params.workdir:q}"
        " --workers {threads} --out {output:q} 2> {log:q}"


rule nas_report:
    input:
        settings=NAS["settings"],
        searches=nas_searches(),
    output:
        progress=report(
            f"{NAS_DIR}/report/progress.png",
            caption="../workflow/report/nas_progress.rst",
            category="Architecture search",
        ),
        cells=report(
            f"{NAS_DIR}/report/cells.png",
            caption="../workflow/report/nas_cells.rst",
            category="Architecture search",
        ),
        retrain=report(
            f"{NAS_DIR}/report/retrain.md",
            caption="../workflow/report/nas_retrain.rst",
            category="Architecture search",
        ),
        searches=f"{NAS_DIR}/report/searches.md",
        table=f"{NAS_DIR}/report/retrain.tsv",
    params:
        out=lambda wildcards, output: os.path.dirname(output.progress),
        seeds=" ".join(map(str, NAS["retrain_seeds"])),
    threads: 2
    resources:
        mem_mb=3000,
    log:
        "logs/automl/nas/report.log",
    conda:
        "../envs/automl.yaml"
    shell:
        "deepflows nas-report --models {input.searches:q} --settings {input.settings:q}"
        " --retrain-seeds {params.seeds} --out {params.out:q} 2> {log:q}"


rule automl_nas:
    input:
        rules.nas_compare.output,
        rules.nas_report.output,
