"""Process-wide CPU thread limits for torch and faiss.

A tiny piece of work (one photo's encode and search, one small batch's weights) costs less than
waking a thread team, and on a loaded machine far less: such blocks run under :func:`limit_threads`.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_threads_lock = threading.Lock()
_threads_depth = 0
_threads_saved: tuple[int, int] = (0, 0)


@contextlib.contextmanager
def limit_threads(n: int | None):
    """Run the block with at most ``n`` torch intra-op and faiss OpenMP threads (None: unchanged).

    One photo's encode and search are tiny; waking a thread team costs more than the work, and
    on a loaded machine far more (figures in docs/benchmarks.md). The settings are
    process-wide: overlapping blocks (app sessions in threads) share one saved state, restored
    when the last block leaves.
    """
    global _threads_depth, _threads_saved
    if n is None:
        yield
        return
    import faiss

    with _threads_lock:
        if _threads_depth == 0:
            _threads_saved = (torch.get_num_threads(), faiss.omp_get_max_threads())
        _threads_depth += 1
        torch.set_num_threads(max(1, min(n, _threads_saved[0])))
        faiss.omp_set_num_threads(max(1, min(n, _threads_saved[1])))
    try:
        yield
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0:
                torch.set_num_threads(_threads_saved[0])
                faiss.omp_set_num_threads(_threads_saved[1])
