# Talk to Books' sentence index: each book of `text.books` -> its sentences (text_sentences, pysbd, one job per
# book; temporary) -> their sentence vectors (text_embed, one job per book; kept, so a new book embeds only
# itself) -> one index of every book (text_build_index: sentences, float16 vectors, faiss IVF-PQ).
# Target: `text_index` (config section `text`, e.g. config/text-books.yaml).

import re


wildcard_constraints:
    corpus=re.escape(TEXT["corpus"]),
    book="|".join(re.escape(book) for book in TEXT_BOOKS) or "(?!)",


rule text_sentences:
    input:
        text_book_file,
    output:
        temp(directory(f"{text_dir('{corpus}')}/sentences/{{book}}.zarr")),
    params:
        book_args=text_book_args,
        chunk_rows=TEXT["chunk_rows"],
    threads: 1
    resources:
        mem_mb=2000,
    log:
        "logs/text/{corpus}/sentences/{book}.log",
    benchmark:
        "benchmarks/text/{corpus}/sentences/{book}.tsv"
    conda:
        "../envs/text.yaml"
    shell:
        "deepflows text-sentences --book {input:q} {params.book_args} --chunk-rows {params.chunk_rows}"
        " --out {output:q} 2> {log:q}"


rule text_embed:
    input:
        unpack(text_model_inputs),
        sentences=f"{text_dir('{corpus}')}/sentences/{{book}}.zarr",
    output:
        directory(f"{text_dir('{corpus}')}/vectors/{{book}}.zarr"),
    params:
        model=text_model_arg,
        batch_size=TEXT["batch_size"],
    threads: 2
    resources:
        mem_mb=4000,
    log:
        "logs/text/{corpus}/embed/{book}.log",
    benchmark:
        "benchmarks/text/{corpus}/embed/{book}.tsv"
    conda:
        "../envs/text.yaml"
    shell:
        "deepflows text-embed --sentences {input.sentences:q} {params.model} --batch-size {params.batch_size}"
        " --out {output:q} 2> {log:q}"


rule text_build_index:
    input:
        text_vector_paths,
    output:
        directory(f"{text_dir('{corpus}')}/index"),
    params:
        approx=text_approx_args,
        chunk_rows=TEXT["chunk_rows"],
    threads: 2
    resources:
        mem_mb=8000,
    log:
        "logs/text/{corpus}/index.log",
    benchmark:
        "benchmarks/text/{corpus}/index.tsv"
    conda:
        "../envs/text.yaml"
    shell:
        "deepflows text-index --shards {input:q} {params.approx} --chunk-rows {params.chunk_rows} --out {output:q}"
        " 2> {log:q}"


rule text_index:
    input:
        text_index_path(),
