"""A tiny sentence index of two made-up books, built by the real stages (text-sentences, text-embed, text-index):
for the web app's browser tests and bench/text_serve_load.py."""

from __future__ import annotations

from pathlib import Path

BOOKS = {
    "garden": """The Garden Year

By Ada Thornton

CHAPTER I

Roses need sun and water every day. The gardener waters the roses at dawn, before the heat comes.

Weeds grow fast after rain. Pull them before they seed, or they will take the whole bed.

CHAPTER II

In winter the garden sleeps. The old gardener reads seed catalogues by the fire and plans the spring.
""",
    "sea": """Tales of the Sea

By Benjamin Hale

CHAPTER I

The ship sailed across the stormy ocean. Waves broke over the deck and the sailors held the ropes.

The captain loved the sea more than the land. He never married, and he never wished to.

CHAPTER II

When the storm passed, the crew sang songs of home. Is it wise to marry a sailor? His wife waits for years.
""",
}


def build_tiny_index(work: Path, model: str | None = None) -> Path:
    """`work`/tiny.index, from the books above written to `work`/books."""
    from deepflows.cli import main

    (work / "books").mkdir(parents=True, exist_ok=True)
    shards = []
    for book_id, text in BOOKS.items():
        (work / "books" / f"{book_id}.txt").write_text(text)
        model_args = ["--model", model] if model else []
        for argv in (["text-sentences", "--book", str(work / "books" / f"{book_id}.txt"), "--out",
                      str(work / f"{book_id}.sentences.zarr")],
                     ["text-embed", "--sentences", str(work / f"{book_id}.sentences.zarr"), "--out",
                      str(work / f"{book_id}.vectors.zarr"), *model_args]):  # fmt: skip
            if main(argv) != 0:
                raise RuntimeError(f"deepflows {' '.join(argv)} failed")
        shards.append(str(work / f"{book_id}.vectors.zarr"))
    if main(["text-index", "--shards", *shards, "--out", str(work / "tiny.index")]) != 0:
        raise RuntimeError("deepflows text-index failed")
    return work / "tiny.index"


_built: dict[Path, Path] = {}


def tiny_index_once(tmp_path_factory) -> Path:
    """The tiny index, built once per test session (by the first test module that asks for it)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _built:
        _built[base] = build_tiny_index(tmp_path_factory.mktemp("tiny-index"))
    return _built[base]


def other_encoder(work: Path) -> Path:
    """A fine-tuned model directory that differs from the pretrained encoder in one bias: another encoder, whose
    fingerprint an index built with it records."""
    from test_text_encoder import _finetuned_dir

    from deepflows.text.encoder import base_weights, file_sha256, package_dir

    bias = base_weights()[("layers", 5, "out_norm", "bias")] + 0.01
    work.mkdir(parents=True, exist_ok=True)
    return _finetuned_dir(work, file_sha256(package_dir() / "model.safetensors"),
                          {"layers": {"5": {"out_norm": {"bias": bias}}}})
