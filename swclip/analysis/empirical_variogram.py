"""Empirical semivariograms against geodesic distance: lag bins, pair blocking, pair sampling.

    γ(h) = mean of δ(i, j) over the pairs whose great-circle distance falls in h's lag bin
    δ(i, j) = ½ (z_i − z_j)²    "half_sq_diff": a scalar field or per-sample errors (Matheron)
    δ(i, j) = 1 − v_i·v_j       "cosine": embeddings, the γ of the semivariogram loss (docs/method.md)

scikit-gstat has no great-circle distance, no hook for a custom pairwise
dissimilarity, and its all-pairs ``Variogram`` needs about 3 GB for 10k points.
So the pairs are enumerated here, in blocks of at most ``BLOCK`` × ``BLOCK`` (or
``BLOCK`` × ``COL_BLOCK`` when all pairs are used): never an n × n matrix. When
all n(n−1)/2 pairs exceed ``max_pairs``, the samples are shuffled (seeded) into
groups of equal size and whole group × group blocks are drawn without
replacement. Every pair then has the same chance of being used, embeddings
still meet as matrix products, and the result states how many pairs it used.
Fitting a model to the result: ``swclip.analysis.variogram``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from swclip.geo import check_latlon, chord_to_m, to_numpy, unit_vectors

DISSIMILARITIES = ("cosine", "half_sq_diff")
BINNINGS = ("fixed", "equal_count")
MIN_SAMPLES = 30  # below this a city's variogram is noise; the result says so instead of fitting
BLOCK = 256  # rows per block: a (256, 256) block of pairs is one small GEMM
COL_BLOCK = 4096  # columns per block when all pairs are enumerated
EDGE_SAMPLE = 1_000_000  # distances kept (seeded subsample) to place equal-count bin edges


@dataclass
class EmpiricalVariogram:
    """Binned semivariance. Arrays have one entry per lag bin (K bins, K + 1 edges).

    ok=False (with ``reason``) means no variogram exists for this input: too
    few samples, NaN values, zero variance, all samples at one spot. Then the
    arrays are empty and :func:`fit_variogram` returns a no-fit with the same reason.
    """

    ok: bool
    reason: str = ""
    dissimilarity: str = ""
    bin_edges_m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K + 1,) metres
    bin_centres_m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) metres
    lag_m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) mean pair distance per bin, NaN if empty
    gamma: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) mean dissimilarity, NaN if empty
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (K,) pairs per bin
    n_samples: int = 0
    n_pairs_used: int = 0  # pairs that fell into a bin (distance < max lag)
    n_pairs_sampled: int = 0  # pairs examined, inside or beyond the max lag
    n_pairs_total: int = 0  # n(n−1)/2
    all_pairs: bool = False
    max_lag_m: float = float("nan")
    mean_dissimilarity: float = float("nan")  # over all examined pairs: the sill a field without structure would have
    seed: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict (lists for arrays, None for NaN)."""
        out = {}
        for k, v in self.__dict__.items():
            if isinstance(v, np.ndarray):
                v = [None if (isinstance(x, float) and math.isnan(x)) else x for x in v.tolist()]
            elif isinstance(v, float) and math.isnan(v):
                v = None
            out[k] = v
        return out


def _no_variogram(reason: str, dissimilarity: str, n: int, seed: int) -> EmpiricalVariogram:
    return EmpiricalVariogram(ok=False, reason=reason, dissimilarity=dissimilarity, n_samples=n, seed=seed)


def _input_problem(
    latlon: np.ndarray, values: np.ndarray | None, embeddings: np.ndarray | None, min_samples: int
) -> str:
    """Why no variogram can exist for these inputs, or "" if one can."""
    n = latlon.shape[0]
    if n < min_samples:
        return f"only {n} samples; a variogram needs at least {min_samples}"
    data = values if values is not None else embeddings
    bad = ~np.isfinite(data.reshape(n, -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "values" if values is not None else "embeddings"
        return f"{what} have {int(bad.sum())} NaN or inf row(s), first at row {i}; drop or fill them first"
    if embeddings is not None:
        norms = np.linalg.norm(embeddings, axis=1)
        if (norms == 0).any():
            return f"embeddings row {int(np.flatnonzero(norms == 0)[0])} is all zeros; cosine distance is undefined"
    if np.all(data == data[:1]):
        return "all values are identical (zero variance): there is no spatial structure to fit"
    x = unit_vectors(latlon)
    if np.all(x == x[:1]):
        return "all samples are at the same location: there are no lags"
    return ""


def _blocks(n: int, max_pairs: int | None, rng: np.random.Generator):
    """The pair blocks to use: list of (rows, cols, upper_only), and whether they are all pairs."""
    total = n * (n - 1) // 2
    if max_pairs is None or total <= max_pairs:
        blocks = []
        for r0 in range(0, n, BLOCK):
            rows = np.arange(r0, min(r0 + BLOCK, n))
            for c0 in range(r0, n, COL_BLOCK):
                blocks.append((rows, np.arange(c0, min(c0 + COL_BLOCK, n)), True))
        return blocks, True
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs}")
    # at least ~32 blocks, so the pairs come from many groups, not a few
    size = int(min(BLOCK, max(1, math.isqrt(max_pairs // 32))))
    groups = np.array_split(rng.permutation(n), math.ceil(n / size))
    g = len(groups)
    biggest = max(len(x) for x in groups) ** 2
    n_blocks = int(min(g * (g - 1) // 2, max(1, max_pairs // biggest)))
    a, b = np.triu_indices(g, 1)
    pick = np.sort(rng.choice(a.size, size=n_blocks, replace=False))
    return [(groups[a[p]], groups[b[p]], False) for p in pick], False


def _block_distances_m(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, upper_only: bool):
    """Great-circle distances of a block's pairs, flattened, and the mask of pairs kept."""
    chord = np.sqrt(((x[rows][:, None, :] - x[cols][None, :, :]) ** 2).sum(-1))  # (R, C), unit sphere
    d_m = chord_to_m(chord)
    keep = cols[None, :] > rows[:, None] if upper_only else np.ones(d_m.shape, dtype=bool)
    return d_m, keep


def _block_dissimilarity(rows, cols, values, embeddings, dissimilarity):
    if dissimilarity == "cosine":
        return 1.0 - (embeddings[rows] @ embeddings[cols].T).astype(np.float64)  # (R, C)
    diff = values[rows][:, None] - values[cols][None, :]
    return 0.5 * diff * diff


def empirical_variogram(
    latlon: Any,
    values: Any = None,
    embeddings: Any = None,
    dissimilarity: str | None = None,
    bins: Any = 20,
    binning: str = "fixed",
    max_lag_m: float | None = None,
    max_pairs: int | None = 2_000_000,
    seed: int = 0,
    min_samples: int = MIN_SAMPLES,
) -> EmpiricalVariogram:
    """Empirical semivariogram of ``values`` (N,) or ``embeddings`` (N, D) against great-circle distance.

    latlon: (N, 2) degrees. Give exactly one of ``values`` (a scalar field or
    per-sample errors; dissimilarity "half_sq_diff" by default) or
    ``embeddings`` (L2-normalised here; "cosine" by default).

    bins: the number of lag bins, or an increasing array of bin edges in metres
    starting at 0 (then ``binning`` and ``max_lag_m`` are ignored). A pair at
    distance d falls in bin k when edges[k] <= d < edges[k+1], as in
    scikit-gstat. binning: "fixed" (equal widths on [0, max_lag_m]) or
    "equal_count" (edges at quantiles of the pair distances below max_lag_m).
    max_lag_m: default half the largest distance among the examined pairs
    (beyond that the bins hold few, edge-only pairs).

    max_pairs: use all n(n−1)/2 pairs when there are at most this many (None:
    always all pairs, still in blocks); otherwise sample whole blocks of pairs
    with ``seed`` (see the module docstring). Memory stays O(N + BLOCK·COL_BLOCK).

    Bad data (fewer than ``min_samples`` rows, NaN/inf values, zero variance,
    all samples at one spot) gives ``ok=False`` and a ``reason``; malformed
    arguments (shapes, unknown options, invalid coordinates) raise ValueError.
    """
    inputs = _prepare(latlon, values, embeddings, dissimilarity, binning, min_samples)
    if isinstance(inputs, EmpiricalVariogram):
        inputs.seed = seed
        return inputs
    latlon, values, embeddings, dissimilarity = inputs
    n = latlon.shape[0]
    rng = np.random.default_rng(seed)
    x = unit_vectors(latlon)  # (N, 3) float64
    blocks, all_pairs = _blocks(n, max_pairs, rng)

    def distances():
        for rows, cols, upper in blocks:
            d_m, keep = _block_distances_m(x, rows, cols, upper)
            yield d_m[keep]

    edges = _edges(bins, binning, max_lag_m, distances, sum(r.size * c.size for r, c, _ in blocks), rng)
    if isinstance(edges, str):
        return _no_variogram(edges, dissimilarity, n, seed)
    pairs = (_block_pairs(x, rows, cols, upper, values, embeddings, dissimilarity) for rows, cols, upper in blocks)
    return _binned(edges, pairs, dissimilarity, n, all_pairs, seed)


def _prepare(latlon, values, embeddings, dissimilarity, binning, min_samples):
    """Checked inputs (latlon, values, embeddings L2-normalised, dissimilarity), or the no-variogram result
    for bad data; ValueError for malformed arguments (see :func:`empirical_variogram`)."""
    if (values is None) == (embeddings is None):
        raise ValueError("give exactly one of values (N,) or embeddings (N, D)")
    dissimilarity = dissimilarity or ("cosine" if embeddings is not None else "half_sq_diff")
    if dissimilarity not in DISSIMILARITIES:
        raise ValueError(f"unknown dissimilarity {dissimilarity!r}; choose one of {DISSIMILARITIES}")
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; choose one of {BINNINGS}")
    latlon = to_numpy(latlon, np.float64)
    check_latlon(latlon)
    n = latlon.shape[0]
    if values is not None:
        values = to_numpy(values, np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.shape != (n,):
            raise ValueError(f"values must have shape ({n},) to match latlon, got {values.shape}")
        if dissimilarity == "cosine":
            raise ValueError("dissimilarity 'cosine' needs embeddings (N, D), not scalar values")
    else:
        embeddings = to_numpy(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise ValueError(f"embeddings must have shape ({n}, D) to match latlon, got {embeddings.shape}")
        if dissimilarity == "half_sq_diff":
            raise ValueError("dissimilarity 'half_sq_diff' needs scalar values (N,), not embeddings")
    problem = _input_problem(latlon, values, embeddings, min_samples)
    if problem:
        return _no_variogram(problem, dissimilarity, n, 0)
    if embeddings is not None:
        embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return latlon, values, embeddings, dissimilarity


def _block_pairs(x, rows, cols, upper, values, embeddings, dissimilarity):
    """(distances (P,) m, dissimilarities (P,)) of one block's kept pairs."""
    d_m, keep = _block_distances_m(x, rows, cols, upper)
    return d_m[keep], _block_dissimilarity(rows, cols, values, embeddings, dissimilarity)[keep]


def _binned(edges, pairs, dissimilarity, n, all_pairs, seed) -> EmpiricalVariogram:
    """Bin an iterable of (distances, dissimilarities) blocks by ``edges`` into the EmpiricalVariogram."""
    k = edges.size - 1
    counts = np.zeros(k, dtype=np.int64)
    sum_diss, sum_d = np.zeros(k), np.zeros(k)
    n_sampled, total_diss = 0, 0.0
    # one BLAS thread: many (256, D) x (D, 256) products spend more time in thread
    # hand-offs than in arithmetic; faster on the shared 2-core machine (benchmarks/spatial_stats.py)
    with threadpool_limits(1, user_api="blas"):
        for d_m, diss in pairs:
            n_sampled += d_m.size
            total_diss += float(diss.sum())
            idx = np.searchsorted(edges, d_m, side="right") - 1
            inside = (idx >= 0) & (idx < k)
            idx = idx[inside]
            counts += np.bincount(idx, minlength=k)
            sum_diss += np.bincount(idx, weights=diss[inside], minlength=k)
            sum_d += np.bincount(idx, weights=d_m[inside], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma, lag_m = sum_diss / counts, sum_d / counts  # NaN for empty bins
    return EmpiricalVariogram(
        ok=True,
        dissimilarity=dissimilarity,
        bin_edges_m=edges,
        bin_centres_m=(edges[:-1] + edges[1:]) / 2,
        lag_m=lag_m,
        gamma=gamma,
        counts=counts,
        n_samples=n,
        n_pairs_used=int(counts.sum()),
        n_pairs_sampled=n_sampled,
        n_pairs_total=n * (n - 1) // 2,
        all_pairs=all_pairs,
        max_lag_m=float(edges[-1]),
        mean_dissimilarity=total_diss / max(n_sampled, 1),
        seed=seed,
    )


PAIRS_MAX = 5_000_000  # pairs variogram_pairs keeps in memory (80 MB); past that, bin as you go (empirical_variogram)


@dataclass
class VariogramPairs:
    """The examined pairs of an empirical variogram before binning (:func:`variogram_pairs`): a new bin
    count, binning or largest lag bins them again (:func:`bin_pairs`) without drawing or measuring a pair.

    distance_m, dissimilarity_values: (P,) float64, one entry per examined pair. ok=False (with
    ``reason``): no variogram exists for this input, as for :class:`EmpiricalVariogram`.
    """

    ok: bool
    reason: str = ""
    dissimilarity: str = ""
    distance_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dissimilarity_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_samples: int = 0
    all_pairs: bool = False
    seed: int = 0
    n_sampled_estimate: int = 0  # as empirical_variogram counts blocks, for the equal-count edge sample
    rng_state: dict = field(default_factory=dict)  # the seeded generator after drawing the blocks


def variogram_pairs(
    latlon: Any,
    values: Any = None,
    embeddings: Any = None,
    dissimilarity: str | None = None,
    max_pairs: int = 2_000_000,
    seed: int = 0,
    min_samples: int = MIN_SAMPLES,
    binning: str = "fixed",
) -> VariogramPairs:
    """The pairs :func:`empirical_variogram` would examine with these arguments, kept: then
    ``bin_pairs(variogram_pairs(...), bins, binning, max_lag_m)`` equals ``empirical_variogram(...)``
    (the same pairs, edges and counts; sums to the last bits). max_pairs: at most PAIRS_MAX."""
    if max_pairs is None or not 1 <= max_pairs <= PAIRS_MAX:
        raise ValueError(
            f"variogram_pairs keeps its pairs in memory: max_pairs must be 1 .. {PAIRS_MAX:,}, got {max_pairs}"
        )
    inputs = _prepare(latlon, values, embeddings, dissimilarity, binning, min_samples)
    if isinstance(inputs, EmpiricalVariogram):
        return VariogramPairs(
            ok=False, reason=inputs.reason, dissimilarity=inputs.dissimilarity, n_samples=inputs.n_samples, seed=seed
        )
    latlon, values, embeddings, dissimilarity = inputs
    n = latlon.shape[0]
    rng = np.random.default_rng(seed)
    x = unit_vectors(latlon)  # (N, 3) float64
    blocks, all_pairs = _blocks(n, max_pairs, rng)
    with threadpool_limits(1, user_api="blas"):  # as in _binned
        pairs = [_block_pairs(x, rows, cols, upper, values, embeddings, dissimilarity) for rows, cols, upper in blocks]
    return VariogramPairs(
        ok=True,
        dissimilarity=dissimilarity,
        distance_m=np.concatenate([d for d, _ in pairs]),
        dissimilarity_values=np.concatenate([v for _, v in pairs]),
        n_samples=n,
        all_pairs=all_pairs,
        seed=seed,
        n_sampled_estimate=sum(r.size * c.size for r, c, _ in blocks),
        rng_state=rng.bit_generator.state,
    )


def bin_pairs(
    pairs: VariogramPairs, bins: Any = 20, binning: str = "fixed", max_lag_m: float | None = None
) -> EmpiricalVariogram:
    """Bin :func:`variogram_pairs`' pairs into an empirical variogram (``bins``, ``binning`` and ``max_lag_m``
    as in :func:`empirical_variogram`)."""
    if binning not in BINNINGS:
        raise ValueError(f"unknown binning {binning!r}; choose one of {BINNINGS}")
    if not pairs.ok:
        return _no_variogram(pairs.reason, pairs.dissimilarity, pairs.n_samples, pairs.seed)
    rng = np.random.default_rng()
    rng.bit_generator.state = pairs.rng_state
    edges = _edges(bins, binning, max_lag_m, lambda: [pairs.distance_m], pairs.n_sampled_estimate, rng)
    if isinstance(edges, str):
        return _no_variogram(edges, pairs.dissimilarity, pairs.n_samples, pairs.seed)
    return _binned(
        edges,
        [(pairs.distance_m, pairs.dissimilarity_values)],
        pairs.dissimilarity,
        pairs.n_samples,
        pairs.all_pairs,
        pairs.seed,
    )


def _edges(bins, binning, max_lag_m, distances, n_sampled, rng):
    """Bin edges in metres (K + 1,), or a reason string when no lag exists.

    distances: a callable giving an iterable of the examined pairs' distances (m), block by block;
    n_sampled: about how many there are (sets the share kept to place equal-count edges)."""
    if not np.isscalar(bins):
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or edges[0] != 0 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins given as edges must be an increasing 1-D array of metres starting at 0")
        return edges
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if max_lag_m is not None and not (math.isfinite(max_lag_m) and max_lag_m > 0):
        raise ValueError(f"max_lag_m must be a positive number of metres, got {max_lag_m}")
    need_sample = binning == "equal_count"
    frac = min(1.0, EDGE_SAMPLE / max(n_sampled, 1))
    max_d, kept = 0.0, []
    if max_lag_m is None or need_sample:
        for d_m in distances():
            max_d = max(max_d, float(d_m.max(initial=0.0)))
            if need_sample:
                kept.append(d_m if frac >= 1 else d_m[rng.random(d_m.size) < frac])
    lag = float(max_lag_m) if max_lag_m is not None else max_d / 2
    if lag <= 0:
        return "all examined pairs are at distance 0: there are no lags"
    if binning == "fixed":
        return np.linspace(0.0, lag, int(bins) + 1)
    d = np.concatenate(kept)
    d = d[d < lag]
    if d.size == 0:
        return f"no pair closer than max_lag_m={lag:.1f} m"
    inner = np.quantile(d, np.arange(1, int(bins)) / int(bins))
    return np.unique(np.concatenate([[0.0], inner[(inner > 0) & (inner < lag)], [lag]]))
