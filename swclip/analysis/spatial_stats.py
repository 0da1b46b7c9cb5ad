"""Spatial autocorrelation of per-sample values, and how well an embedding space keeps geography.

    morans_i               global Moran's I with a seeded permutation p-value
    local_morans_i         LISA: local Moran's I_i, conditional-permutation p-values, HH/LL/HL/LH clusters
    neighbourhood_overlap  overlap@k of embedding and geographic neighbours, and the distance to the former
    spatial_weights        the row-standardised geodesic kNN or distance-band weights they share

The statistics follow PySAL's ``esda`` (Moran, Moran_Local), and the tests hold
them to it on the same points and weights. They are computed here rather than
through esda because the weights must be geodesic and built from a KD-tree
(never n × n), the permutations are vectorised and seeded with a local
generator, and esda's LISA spends many seconds compiling numba (docs/benchmarks.md)
on its first call, which an app page cannot afford.

Geographic neighbours come from a KD-tree on unit vectors: the chord
|x_i − x_j| grows with the great-circle distance, so its k nearest are the
geodesic k nearest, anywhere on the globe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from swclip.geo import check_latlon, haversine_m, m_to_chord, to_numpy, unit_vectors

PERMUTATION_CHUNK = 128  # permutations per vectorised batch: (128, N) float64 is 10 MB at N = 10k
LISA_ROW_CHUNK = 256  # rows per batch of conditional permutations: (256, P, k) gathers
QUADRANTS = ("HH", "LH", "LL", "HL")  # esda's q = 1, 2, 3, 4


def _knn_without_self(idx: np.ndarray, k: int) -> np.ndarray:
    """(N, k+1) neighbour lists from a search that includes each query -> (N, k) without it.

    A sample is not always its own first hit (an exact duplicate may tie), so
    drop it wherever it appears, or the last hit if it does not appear.
    """
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(1), -1] = True
    is_self[np.cumsum(is_self, 1) > 1] = False  # a row listing itself twice cannot happen, but keep k exact
    return idx[~is_self].reshape(n, k)


def _place_codes(place: Any, n: int) -> np.ndarray | None:
    """(N,) int codes of place ids (None stays None: every sample its own place)."""
    if place is None:
        return None
    place = np.asarray(place).reshape(-1)
    if place.shape[0] != n:
        raise ValueError(f"place has {place.shape[0]} entries for {n} samples: one place id per sample")
    return np.unique(place.astype(str), return_inverse=True)[1].reshape(-1)


def place_means(values: Any, latlon: Any, place: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One value and one spot per place: (values (G,) the mean of each place's photos, latlon (G, 2) its first
    photo's coordinates, inverse (N,) the place of each photo), places in order of their ids."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    latlon = np.asarray(latlon, dtype=np.float64)
    codes = _place_codes(place, len(values))
    _, first = np.unique(codes, return_index=True)
    means = np.bincount(codes, weights=values) / np.bincount(codes)
    return means, latlon[first], codes


def _knn_other_places(idx: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """(N, K) neighbour lists (nearest first, self included) -> (N, k): the first k in another place than the row's.

    K must be at least k + the largest place's size, so that k remain."""
    other = codes[idx] != codes[:, None]  # (N, K)
    if (other.sum(1) < k).any():
        raise ValueError(f"too few neighbours in other places searched for k = {k}")
    pos = np.argsort(~other, axis=1, kind="stable")[:, :k]  # the first k other-place columns, in order
    return np.take_along_axis(idx, pos, axis=1)


def geographic_knn(latlon: np.ndarray, k: int, place: Any = None) -> np.ndarray:
    """Indices (N, k) of each sample's k nearest other samples by great-circle distance (KD-tree).

    place: (N,) place ids: neighbours are then samples of *other* places (the headings of one panorama are
    one observation, not neighbours of each other)."""
    from scipy.spatial import cKDTree

    x = unit_vectors(latlon)
    codes = _place_codes(place, len(x))
    if codes is None:
        _, idx = cKDTree(x).query(x, k=k + 1)
        return _knn_without_self(np.asarray(idx).reshape(len(x), k + 1), k)
    extra = int(np.bincount(codes).max())
    if len(x) - extra < k:
        raise ValueError(f"k = {k} neighbours in other places, but only {len(x) - extra} samples lie in other places")
    _, idx = cKDTree(x).query(x, k=min(k + extra, len(x)))
    return _knn_other_places(np.asarray(idx).reshape(len(x), -1), codes, k)


def spatial_weights(latlon: Any, k: int | None = 8, band_m: float | None = None, place: Any = None):
    """Row-standardised spatial weights as a scipy CSR matrix (N, N), and the number of islands.

    k: k nearest neighbours (geodesic), each weighted 1/k. band_m: instead,
    every sample within ``band_m`` metres, weighted 1/count; a sample with none
    is an island (a zero row), as in PySAL. Give one of k or band_m.
    place: (N,) place ids: a sample's neighbours are samples of other places only.
    """
    from scipy import sparse
    from scipy.spatial import cKDTree

    latlon = to_numpy(latlon, np.float64)
    check_latlon(latlon)
    n = latlon.shape[0]
    if (k is None) == (band_m is None):
        raise ValueError("give exactly one of k (nearest neighbours) or band_m (distance band, metres)")
    if band_m is None:
        if not 1 <= int(k) < n:
            raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
        idx = geographic_knn(latlon, int(k), place)
        rows = np.repeat(np.arange(n), k)
        w = sparse.csr_matrix((np.full(n * k, 1.0 / k), (rows, idx.ravel())), shape=(n, n))
        return w, 0
    if not (math.isfinite(band_m) and band_m > 0):
        raise ValueError(f"band_m must be a positive number of metres, got {band_m}")
    x = unit_vectors(latlon)
    chord = m_to_chord(band_m)
    pairs = cKDTree(x).query_pairs(chord, output_type="ndarray")  # (P, 2), i < j
    codes = _place_codes(place, n)
    if codes is not None:
        pairs = pairs[codes[pairs[:, 0]] != codes[pairs[:, 1]]]
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    card = np.bincount(i, minlength=n)
    w = sparse.csr_matrix((1.0 / card[i], (i, j)), shape=(n, n))
    return w, int((card == 0).sum())


def _values_problem(values: np.ndarray, n_min: int) -> str:
    n = values.shape[0]
    if n < n_min:
        return f"only {n} samples; this needs at least {n_min}"
    bad = ~np.isfinite(values)
    if bad.any():
        return (
            f"values have {int(bad.sum())} NaN or inf entries, first at row {int(np.flatnonzero(bad)[0])}; "
            "drop or fill them first"
        )
    if np.all(values == values[0]):
        return "all values are identical (zero variance): autocorrelation is undefined"
    return ""


def _check_values(values: Any, latlon: Any):
    values = to_numpy(values, np.float64).reshape(-1)
    latlon = to_numpy(latlon, np.float64)
    check_latlon(latlon)
    if values.shape[0] != latlon.shape[0]:
        raise ValueError(f"values has {values.shape[0]} entries but latlon has {latlon.shape[0]} rows")
    return values, latlon


def _folded_p(sim: np.ndarray, observed, permutations: int):
    """esda's pseudo p-value: (min(#sim >= obs, #sim < obs) + 1) / (P + 1), along the last axis."""
    larger = (sim >= np.asarray(observed)[..., None]).sum(-1)
    larger = np.minimum(larger, permutations - larger)
    return (larger + 1.0) / (permutations + 1.0)


@dataclass
class MoransI:
    """Global Moran's I. p_value is the permutation pseudo p-value (esda's ``p_sim``, folded, one-sided).

    expected_I = −1/(N−1); z_norm / p_norm (two-sided) assume normality (esda's
    ``z_norm``/``p_norm``); z_sim is I standardised by the permutation distribution.
    """

    ok: bool
    reason: str = ""
    I: float = float("nan")  # noqa: E741 (the statistic's name)
    expected_I: float = float("nan")
    variance_norm: float = float("nan")
    z_norm: float = float("nan")
    p_norm: float = float("nan")
    p_value: float = float("nan")
    z_sim: float = float("nan")
    permutations: int = 0
    n: int = 0
    k: int | None = None
    band_m: float | None = None
    n_islands: int = 0
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def morans_i(
    values: Any,
    latlon: Any,
    k: int | None = 8,
    permutations: int = 999,
    seed: int = 0,
    band_m: float | None = None,
    place: Any = None,
) -> MoransI:
    """Global Moran's I of ``values`` (N,) at ``latlon`` (N, 2), geodesic row-standardised weights.

        I = (N / S0) · zᵀWz / zᵀz,   z = values − mean,  S0 = Σ w_ij

    Weights: k nearest neighbours (default 8), or pass ``band_m`` (and k=None)
    for a distance band. ``permutations`` random relabellings (seeded) give
    the pseudo p-value; 0 skips them. Bad data (too few samples, NaN, zero
    variance) gives ok=False with a reason; malformed arguments raise ValueError.
    place: (N,) place ids: I is then that of the places, one value each (the mean of its photos, at its
    first photo's spot; :func:`place_means`), neighbours being other places. Several photos of one spot
    would otherwise be each other's nearest neighbours and inflate I; keeping the photos but excluding
    their own place from the neighbours instead biases I downwards (a photo's value then leaves out the
    photos most like it). ``n`` is the number of places.
    """
    values, latlon = _check_values(values, latlon)
    if place is not None:
        values, latlon, _ = place_means(values, latlon, place)
    if band_m is not None:
        k = None
    n = values.shape[0]
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0, got {permutations}")
    problem = _values_problem(values, n_min=max(3, (k or 0) + 2))
    if problem:
        return MoransI(ok=False, reason=problem, n=n, k=k, band_m=band_m, seed=seed)
    w, islands = spatial_weights(latlon, k=k, band_m=band_m)
    z = values - values.mean()
    zz = float(z @ z)
    s0 = float(w.sum())
    if s0 == 0:
        return MoransI(
            ok=False,
            reason=f"no sample has a neighbour within band_m={band_m} m",
            n=n,
            k=k,
            band_m=band_m,
            n_islands=islands,
            seed=seed,
        )
    scale = n / s0
    i_obs = scale * float(z @ (w @ z)) / zz
    # analytic moments under normality (Cliff & Ord), as esda
    wt = w.T.tocsr()
    s1 = 0.5 * float((w + wt).power(2).sum())
    s2 = float(((np.asarray(w.sum(1)).ravel() + np.asarray(w.sum(0)).ravel()) ** 2).sum())
    ei = -1.0 / (n - 1)
    vi = (n * n * s1 - n * s2 + 3 * s0 * s0) / ((n - 1) * (n + 1) * s0 * s0) - ei * ei
    from scipy import stats

    z_norm = (i_obs - ei) / math.sqrt(vi)
    p_norm = 2.0 * float(stats.norm.sf(abs(z_norm)))
    p_sim, z_sim = float("nan"), float("nan")
    if permutations:
        rng = np.random.default_rng(seed)
        sims = []
        for start in range(0, permutations, PERMUTATION_CHUNK):
            c = min(PERMUTATION_CHUNK, permutations - start)
            zp = rng.permuted(np.broadcast_to(z, (c, n)), axis=1)  # (c, N), each row its own permutation
            lag = (w @ zp.T).T  # (c, N)
            sims.append(scale * (zp * lag).sum(1) / zz)
        sim = np.concatenate(sims)
        p_sim = float(_folded_p(sim, i_obs, permutations))
        z_sim = float((i_obs - sim.mean()) / sim.std()) if sim.std() > 0 else float("nan")
    return MoransI(
        ok=True,
        I=i_obs,
        expected_I=ei,
        variance_norm=vi,
        z_norm=z_norm,
        p_norm=p_norm,
        p_value=p_sim,
        z_sim=z_sim,
        permutations=permutations,
        n=n,
        k=k,
        band_m=band_m,
        n_islands=islands,
        seed=seed,
    )


@dataclass
class LocalMoran:
    """Local Moran's I (LISA) per sample. Arrays are (N,).

    quadrant: "HH" (high value, high neighbours), "LH", "LL", "HL", from the
    standardised value and its spatial lag (esda's q = 1, 2, 3, 4).
    labels: the quadrant where p_values <= alpha, else "ns".
    p_values: conditional-permutation pseudo p-values (esda's ``p_sim``); NaN for
    islands (no neighbours) and when permutations=0.
    """

    ok: bool
    reason: str = ""
    Is: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    quadrant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U2"))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U2"))
    z: np.ndarray = field(default_factory=lambda: np.zeros(0))  # standardised values
    lag: np.ndarray = field(default_factory=lambda: np.zeros(0))  # spatial lag of z
    alpha: float = 0.05
    permutations: int = 0
    k: int | None = None
    band_m: float | None = None
    seed: int = 0

    def counts(self) -> dict:
        """Samples per label: {"HH": .., "LL": .., "HL": .., "LH": .., "ns": ..}."""
        return {lab: int((self.labels == lab).sum()) for lab in ("HH", "LL", "HL", "LH", "ns")}


def local_morans_i(
    values: Any,
    latlon: Any,
    k: int | None = 8,
    permutations: int = 999,
    seed: int = 0,
    alpha: float = 0.05,
    band_m: float | None = None,
    place: Any = None,
) -> LocalMoran:
    """LISA of ``values`` (N,) at ``latlon`` (N, 2): I_i = (N−1) z_i (Wz)_i / zᵀz, z standardised.

    Conditional permutation as esda: ``permutations`` draws (seeded), each a
    random set of other samples put in i's neighbour slots, the same draws for
    every i (shifted past i). Weights as :func:`morans_i`. ``place``: computed on the places as
    :func:`morans_i` does, then each photo gets its place's numbers (arrays stay (N,)). Bad data gives
    ok=False with a reason.
    """
    values, latlon = _check_values(values, latlon)
    if place is not None:
        g_values, g_latlon, inverse = place_means(values, latlon, place)
        out = local_morans_i(g_values, g_latlon, k, permutations, seed, alpha, band_m)
        if out.ok:
            for name in ("Is", "p_values", "quadrant", "labels", "z", "lag"):
                setattr(out, name, np.asarray(getattr(out, name))[inverse])
        return out
    if band_m is not None:
        k = None
    n = values.shape[0]
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    problem = _values_problem(values, n_min=max(3, (k or 0) + 2))
    if problem:
        return LocalMoran(ok=False, reason=problem, alpha=alpha, k=k, band_m=band_m, seed=seed)
    w, _ = spatial_weights(latlon, k=k, band_m=band_m)
    z = (values - values.mean()) / values.std()
    lag = w @ z
    scaling = (n - 1) / float(z @ z)
    is_ = scaling * z * lag
    quad = np.where(z > 0, np.where(lag > 0, "HH", "HL"), np.where(lag > 0, "LH", "LL"))
    p = np.full(n, np.nan)
    if permutations:
        card = np.diff(w.indptr)
        kmax = int(card.max())
        slots = np.zeros((n, max(kmax, 1)))  # each row's weights, padded with zeros
        slot = np.arange(w.nnz) - np.repeat(w.indptr[:-1], card)  # position of each weight within its row
        slots[np.repeat(np.arange(n), card), slot] = w.data
        rng = np.random.default_rng(seed)
        ids = np.stack([rng.choice(n - 1, size=kmax, replace=False) for _ in range(permutations)])  # (P, kmax)
        p = np.empty(n)
        for start in range(0, n, LISA_ROW_CHUNK):
            rows = np.arange(start, min(start + LISA_ROW_CHUNK, n))
            rand = ids[None] + (ids[None] >= rows[:, None, None])  # (c, P, kmax), never i itself
            sim = scaling * z[rows, None] * np.einsum("cpk,ck->cp", z[rand], slots[rows])  # (c, P)
            p[rows] = _folded_p(sim, is_[rows], permutations)
        p[card == 0] = np.nan  # an island has no neighbours to be like or unlike: no test, label "ns"
    labels = np.where(p <= alpha, quad, "ns")
    return LocalMoran(
        ok=True,
        Is=is_,
        p_values=p,
        quadrant=quad,
        labels=labels,
        z=z,
        lag=np.asarray(lag),
        alpha=alpha,
        permutations=permutations,
        k=k,
        band_m=band_m,
        seed=seed,
    )


@dataclass
class NeighbourhoodOverlap:
    """Embedding neighbourhoods against geographic ones. Arrays are (N,).

    overlap: share of i's k nearest embedding neighbours (cosine) that are
    also among its k nearest geographic neighbours, in [0, 1].
    embedding_neighbour_dist_m: mean great-circle distance to the k embedding
    neighbours; geo_neighbour_dist_m the same for the k geographic ones (the
    floor it could reach). chance_overlap = k / (N − 1) is what unrelated
    embeddings score on average. embedding_knn / geo_knn: (N, k) int64 row
    indices of each sample's neighbours, nearest first (self excluded).
    """

    ok: bool
    reason: str = ""
    k: int = 0
    overlap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    embedding_neighbour_dist_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    geo_neighbour_dist_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean_overlap: float = float("nan")
    median_embedding_neighbour_dist_m: float = float("nan")
    chance_overlap: float = float("nan")
    embedding_knn: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    geo_knn: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))


def embedding_knn(embeddings: np.ndarray, k: int, place: Any = None) -> np.ndarray:
    """Indices (N, k) of each row's k nearest other rows by cosine similarity (exact faiss search);
    with ``place`` (N,) ids, rows of other places only."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    codes = _place_codes(place, len(x))
    if codes is None:
        _, idx = index.search(x, k + 1)
        return _knn_without_self(idx, k)
    _, idx = index.search(x, min(k + int(np.bincount(codes).max()), len(x)))
    return _knn_other_places(idx, codes, k)


def neighbourhood_overlap(
    embeddings: Any, latlon: Any, k: int = 10, knn: tuple | None = None, place: Any = None
) -> NeighbourhoodOverlap:
    """overlap@k and the geographic distance to embedding neighbours; embeddings (N, D), latlon (N, 2).

    knn: (embedding_knn, geo_knn), (N, K) each with K >= k, nearest first, from an earlier call with a
    larger k (its ``embedding_knn`` / ``geo_knn``): their first k columns are used instead of searching
    again, so a k slider costs no new search (the app's Neighbourhoods page).

    Embedding neighbours by exact inner-product search in faiss on
    L2-normalised rows, geographic ones by a KD-tree on unit vectors; memory
    O(N·k), never an N × N matrix. Bad data (N <= k, NaN or zero rows) gives
    ok=False with a reason.

    place: (N,) place ids: both neighbour lists then hold other places' samples only (the headings of one
    panorama are not each other's neighbours; without it they tie geographically and the KD-tree keeps an
    arbitrary k of them).
    """
    emb = to_numpy(embeddings, np.float32)
    latlon = to_numpy(latlon, np.float64)
    check_latlon(latlon)
    if emb.ndim != 2 or emb.shape[0] != latlon.shape[0]:
        raise ValueError(f"embeddings must be (N, D) with N = {latlon.shape[0]} rows of latlon, got {emb.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = emb.shape[0]
    reason = ""
    if n <= k:
        reason = f"only {n} samples; overlap@{k} needs more than {k}"
    elif not np.isfinite(emb).all():
        reason = f"embeddings have NaN or inf, first at row {int(np.flatnonzero(~np.isfinite(emb).all(1))[0])}"
    elif (np.linalg.norm(emb, axis=1) == 0).any():
        reason = f"embeddings row {int(np.flatnonzero(np.linalg.norm(emb, axis=1) == 0)[0])} is all zeros"
    if reason:
        return NeighbourhoodOverlap(ok=False, reason=reason, k=k)
    if knn is not None:
        e_idx, g_idx = (np.asarray(a)[:, :k] for a in knn)  # (N, k) each
        if e_idx.shape != (n, k) or g_idx.shape != (n, k):
            raise ValueError(
                f"knn must be two (N, K >= k) = ({n}, >= {k}) arrays, got {np.shape(knn[0])} and {np.shape(knn[1])}"
            )
    else:
        e_idx = embedding_knn(emb, k, place)  # (N, k)
        g_idx = geographic_knn(latlon, k, place)  # (N, k)
    overlap = (e_idx[:, :, None] == g_idx[:, None, :]).any(-1).sum(1) / k  # (N,)
    here = latlon[:, None, :]
    e_dist = haversine_m(here, latlon[e_idx], check=False).mean(1)
    g_dist = haversine_m(here, latlon[g_idx], check=False).mean(1)
    return NeighbourhoodOverlap(
        ok=True,
        k=k,
        overlap=overlap,
        embedding_neighbour_dist_m=e_dist,
        geo_neighbour_dist_m=g_dist,
        mean_overlap=float(overlap.mean()),
        median_embedding_neighbour_dist_m=float(np.median(e_dist)),
        chance_overlap=k / (n - 1),
        embedding_knn=e_idx,
        geo_knn=g_idx,
    )


def pca_2d(embeddings: Any) -> np.ndarray:
    """(N, D) -> (N, 2): the embeddings centred and projected on their two leading principal axes.

    The axes are the two leading eigenvectors of the smaller Gram matrix (D x D, or N x N when N < D), found
    alone (LAPACK's syevr with an index range): 0.03 s for 2,000 x 512 on one thread, the full SVD 0.2 s. The axes'
    signs are arbitrary; the app uses this only to lay points out.
    """
    x = to_numpy(embeddings, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"pca_2d needs (N >= 2, D) embeddings, got {x.shape}")
    from scipy.linalg import eigh

    centred = x - x.mean(0)
    n, d = centred.shape
    k = min(2, n, d)
    if d <= n:
        _, axes = eigh(centred.T @ centred, subset_by_index=[d - k, d - 1])  # (D, k), ascending eigenvalues
        xy = centred @ axes[:, ::-1]
    else:  # the projections are the left singular vectors times the singular values
        w, u = eigh(centred @ centred.T, subset_by_index=[n - k, n - 1])
        xy = u[:, ::-1] * np.sqrt(np.clip(w[::-1], 0.0, None))
    return np.pad(xy, ((0, 0), (0, 2 - k)))  # (N, 2)
