# Neural Optimizer Search: one search per proposer and seed (nos_search), then the report (nos_report).
# Target: `automl_nos` (config section `automl`, e.g. config/automl-nos.yaml; search settings in
# config/automl/nos.yaml). A killed search resumes from its state folder; the evaluation cache is shared.


wildcard_constraints:
    algorithm="controller|evolution|random",
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
