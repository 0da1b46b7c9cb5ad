"""Inner-product (= cosine) search with faiss, and the thread limit for tiny queries.

Exact search up to ``EXACT_MAX`` entries (faiss's flat inner-product kernel run
over the caller's array, a memory map included, never copied), IVF beyond (HNSW on
request); tests/test_retrieval.py measures the approximate indexes' recall@10
against exact search.
"""

from __future__ import annotations

import math

import numpy as np

from swclip.threads import limit_threads

EXACT_MAX = 1_000_000
SMALL_BATCH = 16  # up to this many queries search on one thread (see SearchIndex.search)
# --------------------------------------------------------------------------------------- faiss index


class SearchIndex:
    """Inner-product search over (N, D) float32 L2-normalised vectors.

    kind: "auto" (flat up to EXACT_MAX, IVF beyond), "flat" (exact), "ivf" or "hnsw" (approximate).
    "flat" keeps a reference to ``embeddings`` (do not modify it afterwards) and searches it with
    ``faiss.knn``, the kernel IndexFlatIP.search runs, without IndexFlatIP.add's copy: a memory-mapped
    1M × 512 gallery costs no resident copy and no 2 GB add.
    nprobe (IVF) and ef_search (HNSW) trade speed for recall; the defaults reach recall@10 >= 0.95
    in tests/test_index.py. seed: seeds IVF's k-means. small_batch_threads: OpenMP threads for up
    to SMALL_BATCH queries (None: leave faiss's setting), see :func:`limit_threads`.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        kind: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        seed: int = 0,
        small_batch_threads: int | None = 1,
    ):
        import faiss

        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"index needs a non-empty (N, D) array, got {x.shape}")
        n, d = x.shape
        if kind == "auto":
            kind = "flat" if n <= EXACT_MAX else "ivf"
        if kind == "flat":
            index = None
        elif kind == "ivf":
            # √N lists keeps k-means cheap on a CPU (1M points: 1,000 lists, trained on 64k samples)
            nlist = nlist or max(1, min(int(math.sqrt(n)), n // 39))  # faiss wants >= 39 points per list
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            rng = np.random.default_rng(seed)
            train = x if n <= 64 * nlist else x[rng.choice(n, 64 * nlist, replace=False)]
            index.train(train)
            index.nprobe = nprobe or max(1, min(nlist, nlist // 16 + 8))
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction, index.hnsw.efSearch = ef_construction, ef_search
        else:
            raise ValueError(f"index kind must be auto, flat, ivf or hnsw, got {kind!r}")
        if index is not None:
            index.add(x)
        self.index, self.kind, self.ntotal, self.dim = index, kind, n, d
        self._flat = x if index is None else None  # (N, D) float32, searched in place
        self.small_batch_threads = small_batch_threads

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries: (Q, D) -> (scores (Q, k) float32 cosine, indices (Q, k) int64), best first."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got {q.shape}")
        k = min(int(k), self.ntotal)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with limit_threads(self.small_batch_threads if len(q) <= SMALL_BATCH else None):
            if self._flat is not None:
                import faiss

                return faiss.knn(q, self._flat, k, metric=faiss.METRIC_INNER_PRODUCT)
            return self.index.search(q, k)
