"""The approximate index: faiss IVF-PQ by inner product (the vectors are L2-normalised, so it ranks by cosine).

A coarse k-means quantizer of `nlist` lists, and residuals product-quantized into `m` codes of `bits` bits:
`m` bytes per vector at 8 bits (48 for 384 dimensions, against 768 for the float16 vector). Trained on a
sample of `train_size` rows drawn with a fixed seed (at most 160,000 by default); faiss's own k-means seeds are fixed too, so the same
vectors and parameters give the same index bytes. Vectors are added one chunk at a time (memory: the codes).
A search asks the index for `rerank` x k candidates and scores them again exactly from their float16 vectors
(deepflows.text.index.topk.rescore): product quantization alone ranks close neighbours poorly.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from deepflows.errors import UserError

log = logging.getLogger(__name__)
POINTS_PER_LIST = 39  # faiss's k-means warns with fewer training points per centroid
MAX_AUTO_NLIST = 4096  # k-means and assignment cost grow with the lists: more is for machines with more cores
MAX_AUTO_TRAIN = 160_000
DEFAULTS = {"m": 48, "bits": 8, "nprobe": 64, "rerank": 10, "seed": 0}


def auto_nlist(n: int) -> int:
    """About 4 sqrt(n) lists (a power of two, at most MAX_AUTO_NLIST), at most n / POINTS_PER_LIST so that
    k-means has data for each."""
    nlist = min(MAX_AUTO_NLIST, 1 << max(0, round(math.log2(4 * math.sqrt(max(n, 1))))))
    return max(1, min(nlist, n // POINTS_PER_LIST))


def parameters(n: int, dim: int, nlist: int | None = None, m: int = DEFAULTS["m"], bits: int = DEFAULTS["bits"],
               nprobe: int = DEFAULTS["nprobe"], rerank: int = DEFAULTS["rerank"], train_size: int | None = None,
               seed: int = DEFAULTS["seed"]) -> dict:
    """The index's parameters for n vectors of `dim`, checked (one line for an impossible setting)."""
    if dim % m:
        raise UserError(f"--pq-m {m}: must divide the vector dimension {dim}")
    nlist = nlist or auto_nlist(n)
    train_size = min(n, train_size or min(MAX_AUTO_TRAIN, max(POINTS_PER_LIST * nlist, 50_000)))
    if train_size < max(nlist, 1 << bits):
        raise UserError(f"{n} vectors are too few to train IVF-PQ with {nlist} lists and {bits}-bit codes "
                        f"(need at least {max(nlist, 1 << bits)}); use --approx none or fewer lists")  # fmt: skip
    return {"kind": "ivfpq", "metric": "inner_product", "nlist": int(nlist), "m": int(m), "bits": int(bits),
            "nprobe": int(nprobe), "rerank": int(rerank), "train_size": int(train_size), "seed": int(seed)}  # fmt: skip


def build(vectors, params: dict, chunk_rows: int):
    """An IVF-PQ index of `vectors` (a Zarr or NumPy array [n, dim], read one chunk of rows at a time)."""
    import faiss

    n, dim = vectors.shape
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["bits"], faiss.METRIC_INNER_PRODUCT)
    rows = np.sort(np.random.default_rng(params["seed"]).choice(n, params["train_size"], replace=False))
    sample = np.concatenate([np.asarray(vectors[start : start + chunk_rows], np.float32)[
        rows[(rows >= start) & (rows < start + chunk_rows)] - start] for start in range(0, n, chunk_rows)])
    log.info("IVF-PQ: training %d lists, %d x %d-bit codes on %d of %d vectors", params["nlist"], params["m"],
             params["bits"], len(sample), n)  # fmt: skip
    index.train(sample)
    for start in range(0, n, chunk_rows):
        index.add(np.ascontiguousarray(vectors[start : start + chunk_rows], np.float32))
    index.nprobe = params["nprobe"]
    return index


def search(index, queries: np.ndarray, k: int, nprobe: int, low: int | None = None, high: int | None = None):
    """(scores float32 [q, k], rows int64 [q, k]) from the index; rows low..high-1 only when given. Where fewer
    than k rows are found, rows are -1 and scores -inf."""
    import faiss

    selector = faiss.IDSelectorRange(low, high) if low is not None else None
    params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
    scores, rows = index.search(np.ascontiguousarray(queries, np.float32), k, params=params)
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    return scores, rows.astype(np.int64)


def write(index, path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read(path):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise UserError(f"{path}: unreadable faiss index ({str(err).splitlines()[0][:200]})") from None
