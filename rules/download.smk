# Remote inputs -> resources/cache/: `deepflows download` streams the file to a temporary name, verifies its
# sha256/md5 and renames it when it matches (a mismatch leaves nothing). Which files: config key
# download.files; which of them a run needs: the path keys of the config that point into resources/cache/.


rule download:
    input:
        download_data_of_index,
    output:
        # protected: a verified file is made read-only and Snakemake never deletes or overwrites it (a rerun
        # that would fetch it again stops instead; delete the file to fetch it again). The sidecar holds its
        # sha256 as `sha256sum` writes it (re-check with `sha256sum -c`; pin it in the config).
        file=protected("resources/cache/{cached}"),
        sha256=protected("resources/cache/{cached}.sha256"),
    params:
        url=download_url,
        checksum=download_checksum_args,
    wildcard_constraints:
        cached=download_name_pattern(),
    log:
        "logs/download/{cached}.log",
    conda:
        "../envs/genomics.yaml"
    shell:
        "deepflows download --url {params.url:q} {params.checksum} --out {output.file:q}"
        " --sha256-file {output.sha256:q} 2> {log:q}"
