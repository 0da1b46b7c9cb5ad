"""Geo-localization metrics: errors, accuracy at thresholds, GeoScore, recall.

All errors are great-circle metres (``error_m``). Street-level work reads the
metre thresholds; the field's global benchmarks (IM2GPS, OSV-5M) read the km
thresholds (street 1 km, city 25 km, region 200 km, country 750 km,
continent 2500 km).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np

from swclip.geo import haversine_m

THRESHOLDS_M = (25, 50, 100, 250, 500, 1000)
THRESHOLDS_KM = (1, 25, 200, 750, 2500)
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
        raise ValueError(f"error_m has {int(bad.sum())} NaN, infinite or negative value(s); first at index {i}: {err[i]}")
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
    out.update(accuracy_at(err, [t * 1000.0 for t in THRESHOLDS_KM if t > 1]))
    return out


def summarize(error_m: Any, city: Optional[Sequence] = None) -> dict:
    """Overall error summary, and per city when ``city`` (N,) is given.

    Returns {"n", "median_m", "mean_m", "p90_m", "p95_m", "geoscore",
    "acc@25m" … "acc@1km", "acc@25km" … "acc@2500km"[, "per_city": {city: same keys}]}.
    """
    err = _check_errors(error_m)
    out = _summary(err)
    if city is not None:
        city = np.asarray(city)
        if city.shape != err.shape:
            raise ValueError(f"city has shape {city.shape}, error_m has {err.shape}: one city per sample")
        out["per_city"] = {str(c): _summary(err[city == c]) for c in sorted(set(city.tolist()), key=str)}
    return out


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
        raise ValueError(f"ranked_regions must be (N, K) with N = len(true_region); got {ranked.shape} and {true.shape}")
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
    areas_km2 = np.asarray(areas_km2, dtype=np.float64)
    recall = (needed[None, :] <= areas_km2[:, None]).mean(1)
    return areas_km2, recall, needed
