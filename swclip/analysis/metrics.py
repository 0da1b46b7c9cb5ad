"""Geo-localization metrics: errors, accuracy at thresholds, GeoScore, recall, and the world-scale ones.

All errors are great-circle metres (``error_m``). Street-level work reads the
metre thresholds; the field's global benchmarks (IM2GPS, OSV-5M) read the km
thresholds (street 1 km, city 25 km, region 200 km, country 750 km,
continent 2500 km). Beyond one city: OSV-5M's administrative accuracy
(:func:`admin_accuracy`, its keys from the offline reverse_geocoder: the nearest populated place), beside
countries by point-in-polygon (``swclip.analysis.countries``: the true country of the true coordinates), and
Recall-vs-Area of the knn-kde density (:func:`hdr_area_km2`, :func:`rva_curve`);
evaluation writes both through :func:`scale_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from swclip.analysis.countries import CONVENTION_OSV5M, country_accuracy
from swclip.geo import EARTH_RADIUS_M, check_latlon, chord_to_m, haversine_m, unit_vectors

THRESHOLDS_M = (25, 50, 100, 250, 500, 1000)
THRESHOLDS_KM = (1, 25, 200, 750, 2500)
THRESHOLDS_REGION_KM = (1, 5, 10, 25, 50, 100, 200)  # one region or country (swclip.viz.scale's middle scale)
GEOSCORE_MAX = 5000.0
# The headline numbers of a run: its manifest's metrics summary, `swclip evaluate`'s printout, the app's run table.
SUMMARY_KEYS = ("n", "median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "acc@1km", "recall@1", "geoscore")
GEOSCORE_SCALE_KM = 1492.7


def errors_m(pred_latlon: Any, true_latlon: Any) -> np.ndarray:
    """Per-sample great-circle error. (N, 2), (N, 2) latlon degrees -> (N,) metres."""
    pred, true = np.asarray(pred_latlon, dtype=np.float64), np.asarray(true_latlon, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred_latlon {pred.shape} and true_latlon {true.shape} must have the same shape")
    return haversine_m(pred, true)


def _check_errors(error_m: Any) -> np.ndarray:
    err = np.asarray(error_m, dtype=np.float64).ravel()
    if err.size == 0:
        raise ValueError("error_m is empty: no samples to score")
    bad = ~np.isfinite(err) | (err < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"error_m has {int(bad.sum())} NaN, infinite or negative value(s); first at index {i}: {err[i]}"
        )
    return err


def log10_error(error_m: Any) -> np.ndarray:
    """log10 of the errors in metres, floored at 1 m (errors span 1 m to 20,000 km; spatial statistics of the
    errors use this scale so that a few continental misses do not swamp the street-level structure)."""
    return np.log10(np.maximum(np.asarray(error_m, dtype=np.float64), 1.0))


def threshold_label(threshold_m: float) -> str:
    """'acc@100m' below a kilometre, 'acc@25km' from one up."""
    return f"acc@{threshold_m / 1000:g}km" if threshold_m >= 1000 else f"acc@{threshold_m:g}m"


def accuracy_at(error_m: Any, thresholds_m: Iterable[float] = THRESHOLDS_M) -> dict:
    """Share of samples with error ≤ each threshold (metres). -> {label: fraction}."""
    err = _check_errors(error_m)
    return {threshold_label(t): float(np.mean(err <= t)) for t in thresholds_m}


def geoscore(error_m: Any) -> float:
    """Mean GeoScore, 5000·exp(−d_km / 1492.7) (GeoGuessr's, as in OSV-5M). error_m: (N,) metres."""
    err = _check_errors(error_m)
    return float(np.mean(GEOSCORE_MAX * np.exp(-(err / 1000.0) / GEOSCORE_SCALE_KM)))


def _summary(err: np.ndarray) -> dict:
    out = {
        "n": int(err.size),
        "median_m": float(np.median(err)),
        "mean_m": float(np.mean(err)),
        "p90_m": float(np.percentile(err, 90)),
        "p95_m": float(np.percentile(err, 95)),
        "geoscore": geoscore(err),
    }
    out.update(accuracy_at(err, THRESHOLDS_M))
    out.update(accuracy_at(err, [t * 1000.0 for t in sorted(set(THRESHOLDS_REGION_KM) | set(THRESHOLDS_KM)) if t > 1]))
    return out


def summarize(error_m: Any, city: Sequence | None = None) -> dict:
    """Overall error summary, and per city when ``city`` (N,) is given.

    Returns {"n", "median_m", "mean_m", "p90_m", "p95_m", "geoscore",
    "acc@25m" … "acc@1km", "acc@5km" … "acc@2500km" (every scale's thresholds)[, "per_city": {city: same keys}]}.
    """
    err = _check_errors(error_m)
    out = _summary(err)
    if city is not None:
        city = np.asarray(city)
        if city.shape != err.shape:
            raise ValueError(f"city has shape {city.shape}, error_m has {err.shape}: one city per sample")
        names, inverse = np.unique(city.astype(str), return_inverse=True)  # one pass, not one comparison per city
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
        out["per_city"] = {str(c): _summary(err[order[bounds[k] : bounds[k + 1]]]) for k, c in enumerate(names)}
    return out


def summarize_answered(error_m: Any, city: Sequence | None = None) -> dict:
    """:func:`summarize` for a model that may abstain: error_m (N,) metres, NaN where it gave no prediction.

    Every statistic is over the answered rows (``n`` of them), with ``n_rows``, ``n_abstained`` and
    ``coverage`` (answered / rows) beside it, overall and per city; except ``geoscore``, which scores an
    abstention 0 (over all rows, as a game would), with ``geoscore_answered`` over the answered rows.
    A city (or the whole table) with no answered row gets n 0 and NaN statistics.
    """
    err = np.asarray(error_m, dtype=np.float64).ravel()
    if err.size == 0:
        raise ValueError("error_m is empty: no samples to score")
    answered = ~np.isnan(err)
    _check_errors(np.append(err[answered], 0.0))  # NaN marks an abstention; inf or negative is still an error

    def block(sel: np.ndarray) -> dict:
        e = err[sel & answered]
        n_rows = int(sel.sum())
        out = _summary(e) if e.size else {"n": 0, **dict.fromkeys(_summary(np.zeros(1)).keys() - {"n"}, float("nan"))}
        out["geoscore_answered"] = out["geoscore"]
        out["geoscore"] = float(out["geoscore"] * e.size / n_rows) if e.size else 0.0
        out.update(n_rows=n_rows, n_abstained=n_rows - int(e.size), coverage=float(e.size / n_rows))
        return out

    out = block(np.ones(err.size, bool))
    if city is not None:
        city = np.asarray(city).astype(str)
        if city.shape != err.shape:
            raise ValueError(f"city has shape {city.shape}, error_m has {err.shape}: one city per sample")
        out["per_city"] = {str(c): block(city == c) for c in np.unique(city)}
    return out


def leaderboard(errors_by_run: Mapping[str, tuple[Any, Any]]) -> tuple[dict, int]:
    """Several runs scored on the photos they all hold: -> ({run: summarize_answered's dict}, n shared ids).

    errors_by_run: {run name: (ids (N,), error_m (N,) metres, NaN where the model gave no prediction)}; each
    run's ids once. Every run is scored on the same ids (the intersection, in sorted order), so a model that
    abstains is not compared on easier photos: its coverage and its GeoScore (abstentions score 0) say so.
    No shared id gives ({}, 0).
    """
    shared = None
    for name, (ids, _) in errors_by_run.items():
        ids = np.asarray(ids).astype(str)
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"run {name}: ids repeat; a leaderboard needs each photo once")
        shared = ids if shared is None else np.intersect1d(shared, ids)
    if shared is None or len(shared) == 0:
        return {}, 0
    shared = np.sort(shared)
    board = {}
    for name, (ids, error_m) in errors_by_run.items():
        ids = np.asarray(ids).astype(str)
        order = np.argsort(ids)
        at = order[np.searchsorted(ids[order], shared)]  # each shared id's row in this run
        board[name] = summarize_answered(np.asarray(error_m, dtype=np.float64)[at])
    return board, int(len(shared))


def summarize_places(error_m: Any, place: Sequence) -> dict:
    """The error summary over places, each place once: :func:`summarize`'s keys of the per-place median errors.

    error_m: (N,) metres; place: (N,) place ids (several photos of one place share one). A place with four
    headings counts once, so a dataset's well-photographed places do not outweigh the rest. Adds
    "photos" (N) and "photos_per_place" (mean); "n" is the number of places.
    """
    err = _check_errors(error_m)
    place = np.asarray(place).astype(str)
    if place.shape != err.shape:
        raise ValueError(f"place has shape {place.shape}, error_m has {err.shape}: one place id per sample")
    _, inverse = np.unique(place, return_inverse=True)
    order = np.lexsort((err, inverse))  # by place, then error
    bounds = np.searchsorted(inverse[order], np.arange(inverse.max() + 2))
    medians = np.array([np.median(err[order[bounds[k] : bounds[k + 1]]]) for k in range(len(bounds) - 1)])
    return {**_summary(medians), "photos": int(err.size), "photos_per_place": float(err.size / medians.size)}


def recall_at_k(ranked_ids: Any, true_ids: Any, ks: Iterable[int] = (1, 5, 10)) -> dict:
    """Retrieval recall: share of queries whose true id is among the first k ranked ids.

    ranked_ids: (N, K) candidate ids, best first; true_ids: (N,). -> {"recall@k": fraction}.
    """
    ranked, true = np.asarray(ranked_ids), np.asarray(true_ids)
    if ranked.ndim != 2 or ranked.shape[0] != true.shape[0]:
        raise ValueError(f"ranked_ids must be (N, K) with N = len(true_ids); got {ranked.shape} and {true.shape}")
    hit = ranked == true[:, None]  # (N, K)
    out = {}
    for k in ks:
        if k > ranked.shape[1]:
            raise ValueError(f"recall@{k} needs at least {k} ranked ids per query, got {ranked.shape[1]}")
        out[f"recall@{k}"] = float(hit[:, :k].any(1).mean())
    return out


def recall_vs_area(ranked_regions: Any, true_region: Any, region_area_km2: Any, areas_km2: Any = None):
    """Recall-vs-Area curve for ranked candidate regions.

    Each query's ranked regions (N, K) are taken best first until the true
    region is covered; the area needed is the summed area of the regions taken
    (inf if the true region is not in the top K). recall(A) is the share of
    queries whose needed area is ≤ A.

    region_area_km2: (R,) area of each region id. areas_km2: the A grid
    (default: log-spaced over the observed range). Returns (areas_km2 (G,),
    recall (G,), needed_km2 (N,)).
    """
    ranked, true = np.asarray(ranked_regions), np.asarray(true_region)
    area = np.asarray(region_area_km2, dtype=np.float64)
    if ranked.ndim != 2 or ranked.shape[0] != true.shape[0]:
        raise ValueError(
            f"ranked_regions must be (N, K) with N = len(true_region); got {ranked.shape} and {true.shape}"
        )
    if (area < 0).any() or not np.isfinite(area).all():
        raise ValueError("region_area_km2 must be finite and >= 0")
    cum = np.cumsum(area[ranked], axis=1)  # (N, K)
    hit = ranked == true[:, None]
    first = np.where(hit.any(1), hit.argmax(1), -1)
    needed = np.where(first >= 0, cum[np.arange(len(true)), np.maximum(first, 0)], np.inf)
    if areas_km2 is None:
        finite = needed[np.isfinite(needed)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (1.0, 10.0)
        areas_km2 = np.geomspace(max(lo, 1e-9), max(hi, lo * 10, 1e-8), 50)
    areas_km2, recall = rva_curve(needed, areas_km2)
    return areas_km2, recall, needed


# ----------------------------------------------------------------- beyond one city

ADMIN_LEVELS = ("country", "region", "sub-region", "city")
# The GeoNames parts each level's key joins, as OSV-5M's metrics/utils.py joins them ("_"), and the part
# whose absence makes the truth's key empty at that level (OSV-5M skips rows whose true key is missing).
_ADMIN_PARTS = {
    "country": ("cc",),
    "region": ("admin1", "cc"),
    "sub-region": ("admin2", "admin1", "cc"),
    "city": ("name", "admin2", "admin1", "cc"),
}
OSV5M_EARTH_RADIUS_KM = 6371.0  # metrics/utils.py's haversine
EARTH_AREA_KM2 = 4.0 * math.pi * (EARTH_RADIUS_M / 1000.0) ** 2
# Recall-vs-Area grid: 10 per decade from 100 m² to the whole Earth, the same for every run so curves overlay.
RVA_AREAS_KM2 = np.append(10.0 ** np.arange(-4.0, 8.75, 0.1), EARTH_AREA_KM2)


def reverse_geocode(latlon: Any, mode: int | None = None) -> dict:
    """GeoNames parts of the nearest populated place, offline (reverse_geocoder). (N, 2) -> {part: (N,) str}.

    One batched query for all rows (distinct rows only). ``mode`` is reverse_geocoder's: 2 (its default,
    what OSV-5M calls) splits the KD-tree query over processes, 1 runs in this process; None: 2, except
    inside a daemonic worker process (the demo build's), which may not start processes. reverse_geocoder
    keeps one geocoder per process, so the first call's mode stays; the answers are the same in both.
    """
    import multiprocessing

    import reverse_geocoder as rg

    if mode is None:
        mode = 1 if multiprocessing.current_process().daemon else 2

    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64)
    parts = ("name", "admin1", "admin2", "cc")
    if len(ll) == 0:
        return {p: np.array([], dtype=object) for p in parts}
    uniq, inverse = np.unique(ll, axis=0, return_inverse=True)
    found = rg.search([(float(a), float(b)) for a, b in uniq], mode=mode, verbose=False)
    return {p: np.array([r.get(p, "") for r in found], dtype=object)[inverse.reshape(-1)] for p in parts}


def admin_keys(parts: dict) -> dict:
    """OSV-5M's keys from reverse_geocode's parts: {level: (N,) str}, e.g. city = name_admin2_admin1_cc."""
    out = {}
    for level, names in _ADMIN_PARTS.items():
        cols = [np.asarray(parts[n], dtype=object).astype(str) for n in names]
        key = cols[0]
        for c in cols[1:]:
            key = np.char.add(np.char.add(key, "_"), c)
        out[level] = key
    return out


def admin_hits(pred_latlon: Any, true_latlon: Any, mode: int | None = None) -> dict:
    """Per-row admin-level hits as OSV-5M keys them. (N, 2), (N, 2) degrees ->
    {level: (N,) bool, the predicted key equals the true key; "has_<level>": (N,) bool, the true place has
    that level's own part (rows without it are skipped by :func:`admin_accuracy`)}."""
    pred, true = np.asarray(pred_latlon, dtype=np.float64), np.asarray(true_latlon, dtype=np.float64)
    n = len(pred)
    parts = reverse_geocode(np.concatenate([pred, true]), mode=mode)
    keys = admin_keys(parts)
    out = {}
    for level, names in _ADMIN_PARTS.items():
        out[level] = keys[level][:n] == keys[level][n:]
        out[f"has_{level}"] = np.asarray(parts[names[0]][n:], dtype=object).astype(str) != ""
    return out


def admin_accuracy(pred_latlon: Any, true_latlon: Any, mode: int | None = None) -> dict:
    """Share of predictions in the true country, region, sub-region and city, as OSV-5M scores them.

    pred_latlon, true_latlon: (N, 2) degrees. Both go through reverse_geocoder (one batched query);
    the keys are OSV-5M's: country = cc, region = admin1_cc, sub-region = admin2_admin1_cc,
    city = name_admin2_admin1_cc. A row whose true place lacks that level's own part (no admin1 for
    the region, no admin2 for the sub-region, no name for the city) has no key there and is skipped at
    that level, as OSV-5M skips its "nan" keys. Returns {"acc_country", …, "acc_city": fraction or NaN
    when every row was skipped, "n_country", … rows scored, "skipped_country", … rows skipped}.
    """
    pred, true = np.asarray(pred_latlon, dtype=np.float64), np.asarray(true_latlon, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred_latlon {pred.shape} and true_latlon {true.shape} must have the same shape")
    check_latlon(pred, "pred_latlon")
    check_latlon(true, "true_latlon")
    n = len(pred)
    hits = admin_hits(pred, true, mode=mode)
    out = {}
    for level in _ADMIN_PARTS:
        hit, has = hits[level], hits[f"has_{level}"]
        out[f"acc_{level}"] = float(hit[has].mean()) if has.any() else float("nan")
        out[f"n_{level}"] = int(has.sum())
        out[f"skipped_{level}"] = int(n - has.sum())
    return out


def distance_km(pred_latlon: Any, true_latlon: Any, parity: str | None = None) -> np.ndarray:
    """Great-circle distance in km. (N, 2), (N, 2) -> (N,).

    parity=None: swclip.geo.haversine_m (R = 6,371.0088 km). parity="osv5m": OSV-5M's haversine
    (metrics/utils.py: R = 6,371 km, 2·atan2(√a, √(1−a))), for numbers comparable with its tables.
    """
    pred, true = np.asarray(pred_latlon, dtype=np.float64), np.asarray(true_latlon, dtype=np.float64)
    if parity is None:
        return haversine_m(pred, true) / 1000.0
    if parity != "osv5m":
        raise ValueError(f"parity must be None or 'osv5m', got {parity!r}")
    check_latlon(pred, "pred_latlon")
    check_latlon(true, "true_latlon")
    p, t = np.deg2rad(pred), np.deg2rad(true)
    a = np.sin((p[:, 0] - t[:, 0]) / 2) ** 2 + np.cos(p[:, 0]) * np.cos(t[:, 0]) * np.sin((p[:, 1] - t[:, 1]) / 2) ** 2
    return OSV5M_EARTH_RADIUS_KM * 2 * np.arctan2(np.sqrt(a), np.sqrt(np.clip(1 - a, 0.0, None)))


def osv5m_metrics(pred_latlon: Any, true_latlon: Any, parity: str | None = "osv5m", mode: int | None = None) -> dict:
    """OSV-5M's world-scale table for one run: admin_accuracy plus median_km and mean_km (its haversine by default),
    and "convention": how the admin levels were decided (the nearest populated place, reverse_geocoder)."""
    d = distance_km(pred_latlon, true_latlon, parity)
    return {
        "median_km": float(np.median(d)),
        "mean_km": float(np.mean(d)),
        "distance_parity": parity or "swclip",
        "convention": CONVENTION_OSV5M,
        **admin_accuracy(pred_latlon, true_latlon, mode=mode),
    }


# ----------------------------------------------------------------- Recall vs Area


def _cap_area_km2(angle_rad: np.ndarray) -> np.ndarray:
    return 2.0 * math.pi * (EARTH_RADIUS_M / 1000.0) ** 2 * (1.0 - np.cos(angle_rad))


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between unit vectors (..., 3), well conditioned at small angles."""
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.sum(u * v, axis=-1))


def hdr_area_km2(
    topk_latlon: Any, topk_prob: Any, true_latlon: Any, kde_bandwidth_m: float, samples: int = 256, chunk: int = 256
) -> np.ndarray:
    """Area of the knn-kde density's highest-density region that just contains the truth, per query.

    The density is the one knn-kde climbs (swclip.retrieval.kde.kde_density): f(x) = Σ_j p_j exp(−d(x, c_j)² / 2h²)
    over a query's top-k candidates c_j with probabilities p_j, h = kde_bandwidth_m, d great-circle. The region
    at level λ is {x : f(x) ≥ λ}; the area needed is that of the region at λ = f(truth): the search area a
    user must cover, densest ground first, before the true spot is inside. Recall-vs-Area is then the
    share of queries whose needed area is at most A (:func:`rva_curve`).

    Computed on the sphere: {f ≥ λ} lies inside the caps of radius R_j = h·√(2 ln(K p_j / λ)) about the
    candidates (outside them every term is below λ/K); each cap is covered by a spherical Fibonacci
    lattice of ``samples`` equal-area points, and the union's area is Σ_j area_j · mean(1[f ≥ λ] / caps
    covering the point). One candidate gives exactly the cap through the truth.

    topk_latlon: (N, K, 2) degrees; topk_prob: (N, K) ≥ 0; true_latlon: (N, 2). Returns (N,) km².
    """
    cand = np.asarray(topk_latlon, dtype=np.float64)
    prob = np.asarray(topk_prob, dtype=np.float64)
    true = np.asarray(true_latlon, dtype=np.float64)
    if cand.ndim != 3 or cand.shape[2] != 2 or prob.shape != cand.shape[:2] or true.shape != (cand.shape[0], 2):
        raise ValueError(
            f"need topk_latlon (N, K, 2), topk_prob (N, K), true_latlon (N, 2); "
            f"got {cand.shape}, {prob.shape}, {true.shape}"
        )
    if not (kde_bandwidth_m > 0 and math.isfinite(kde_bandwidth_m)):
        raise ValueError(f"kde_bandwidth_m must be a positive number of metres, got {kde_bandwidth_m!r}")
    if not np.isfinite(prob).all() or (prob < 0).any():
        raise ValueError("topk_prob must be finite and >= 0")
    check_latlon(cand.reshape(-1, 2), "topk_latlon")
    check_latlon(true, "true_latlon")
    n, k = prob.shape
    h = kde_bandwidth_m / EARTH_RADIUS_M  # bandwidth as an angle
    i = np.arange(samples) + 0.5
    u = i / samples  # (S,) uniform in area over the cap
    phi = i * math.pi * (3.0 - math.sqrt(5.0))  # golden angle
    out = np.empty(n)
    with np.errstate(divide="ignore"):
        logp_all = np.log(prob)
    for s in range(0, n, chunk):
        c = unit_vectors(cand[s : s + chunk].reshape(-1, 2)).reshape(-1, k, 3)  # (Q, K, 3)
        t = unit_vectors(true[s : s + chunk])  # (Q, 3)
        logp = logp_all[s : s + chunk]  # (Q, K)
        q = len(t)
        d_t = _angle(t[:, None, :], c)  # (Q, K)
        log_lam = _logsumexp(logp - 0.5 * (d_t / h) ** 2, axis=1)  # (Q,) log f(truth)
        arg = math.log(k) + logp - log_lam[:, None]  # (Q, K)
        radius = np.where(arg > 0, h * np.sqrt(2.0 * np.maximum(arg, 0.0)), 0.0).clip(0.0, math.pi)  # (Q, K) angles
        # An orthonormal frame (e1, e2) about each candidate.
        ref = np.where(np.abs(c[..., 2:3]) < 0.9, np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
        e1 = np.cross(c, ref)
        e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
        e2 = np.cross(c, e1)
        cos_t = 1.0 - u[None, None, :] * (1.0 - np.cos(radius))[..., None]  # (Q, K, S)
        sin_t = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
        x = cos_t[..., None] * c[:, :, None, :] + sin_t[..., None] * (
            np.cos(phi)[None, None, :, None] * e1[:, :, None, :] + np.sin(phi)[None, None, :, None] * e2[:, :, None, :]
        )  # (Q, K, S, 3)
        dot = np.einsum("qksd,qjd->qksj", x, c)  # (Q, K, S, K): sample against every candidate
        # arccos loses ~1e-8 rad (0.1 m) near 0: far below any bandwidth the app offers (>= 10 m)
        d_x = np.arccos(np.clip(dot, -1.0, 1.0))
        inside = (
            _logsumexp(logp[:, None, None, :] - 0.5 * (d_x / h) ** 2, axis=3) >= log_lam[:, None, None]
        )  # (Q, K, S)
        covers = (dot >= np.cos(radius)[:, None, None, :]).sum(3)  # (Q, K, S) caps holding the sample (>= 1 in theory)
        share = (inside / np.maximum(covers, 1)).mean(2)  # (Q, K)
        out[s : s + q] = (_cap_area_km2(radius) * share * (radius > 0)).sum(1)
    return out


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def rva_curve(needed_km2: Any, areas_km2: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """recall(A) = share of queries whose needed area is ≤ A. -> (areas_km2 (G,), recall (G,));
    default grid RVA_AREAS_KM2."""
    needed = np.asarray(needed_km2, dtype=np.float64).ravel()
    if needed.size == 0 or np.isnan(needed).any():
        raise ValueError("needed_km2 must be a non-empty array without NaN (inf: never covered)")
    areas = np.asarray(RVA_AREAS_KM2 if areas_km2 is None else areas_km2, dtype=np.float64)
    return areas, np.searchsorted(np.sort(needed), areas, side="right") / needed.size


RVA_MAX_QUERIES = 20_000
ADMIN_MIN_EXTENT_M = 50_000.0  # runs wider than this get OSV-5M's admin-level table in metrics.json


def extent_m(latlon: Any, sample: int = 2000, quantile: float = 0.99, seed: int = 0) -> float:
    """How far a set of samples spreads: the ``quantile`` of great-circle distances between pairs, metres.

    latlon: (N, 2) degrees. All pairs of a seeded sample of at most ``sample`` points, so a handful of
    stray samples does not make a city look like a continent. 0 for fewer than 2 points.
    """
    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64)
    if len(ll) < 2:
        return 0.0
    if len(ll) > sample:
        ll = ll[np.random.default_rng(seed).choice(len(ll), sample, replace=False)]
    x = unit_vectors(ll)  # (n, 3)
    i, j = np.triu_indices(len(ll), 1)
    chord = np.sqrt(
        np.clip(2.0 - 2.0 * (x @ x.T)[i, j], 0.0, 4.0)
    )  # one matrix product: 10x faster than haversine per pair
    return float(np.quantile(chord_to_m(chord), quantile))


def rva_summary(
    topk_latlon: Any,
    topk_prob: Any,
    true_latlon: Any,
    kde_bandwidth_m: float,
    max_queries: int = RVA_MAX_QUERIES,
    seed: int = 0,
) -> dict:
    """Recall-vs-Area of the knn-kde density (:func:`hdr_area_km2`) on at most ``max_queries`` queries
    (a seeded sample beyond that), on the fixed grid RVA_AREAS_KM2 so runs overlay.

    Returns {"areas_km2", "recall", "median_area_km2", "n_queries", "of", "kde_bandwidth_m", "seed"}.
    """
    true = np.asarray(true_latlon, dtype=np.float64)
    n = len(true)
    rows = (
        np.arange(n) if n <= max_queries else np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))
    )
    needed = hdr_area_km2(np.asarray(topk_latlon)[rows], np.asarray(topk_prob)[rows], true[rows], kde_bandwidth_m)
    areas, recall = rva_curve(needed)
    return {
        "areas_km2": areas.tolist(),
        "recall": recall.tolist(),
        "median_area_km2": float(np.median(needed)),
        "n_queries": int(len(rows)),
        "of": int(n),
        "kde_bandwidth_m": float(kde_bandwidth_m),
        "seed": int(seed),
    }


def scale_metrics(
    pred_latlon: Any,
    true_latlon: Any,
    topk_latlon: Any,
    topk_prob: Any,
    kde_bandwidth_m: float,
    mode: int | None = None,
) -> dict:
    """What evaluation adds beyond :func:`summarize`: {"rva": rva_summary(...)} always, and, when the true
    locations spread wider than ADMIN_MIN_EXTENT_M, two country conventions side by side:
    {"osv5m": osv5m_metrics(...)} (admin-level accuracy by reverse_geocoder's nearest populated place, median /
    mean km with OSV-5M's haversine: for parity with OSV-5M's numbers) and {"countries":
    swclip.analysis.countries.country_accuracy(...)} (the true country of the true coordinates, point-in-polygon
    on Natural Earth outlines). Each records its "convention". Also {"extent_m"}."""
    spread = extent_m(true_latlon)
    out = {"extent_m": spread, "rva": rva_summary(topk_latlon, topk_prob, true_latlon, kde_bandwidth_m)}
    if spread > ADMIN_MIN_EXTENT_M:
        out["osv5m"] = osv5m_metrics(pred_latlon, true_latlon, parity="osv5m", mode=mode)
        out["countries"] = country_accuracy(pred_latlon, true_latlon)
    return out
