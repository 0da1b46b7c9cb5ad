"""knn-kde (Vo et al. 2017) and the probability helpers of prediction.

The estimate is the mode of a Gaussian kernel density over the candidates'
positions, weighted by their probabilities, found on the sphere (unit
vectors), so candidates on both sides of the antimeridian average to the right
place. ``radius_m`` is the probability-weighted mean geodesic distance of the
candidates from the estimate.
"""

from __future__ import annotations

import numpy as np

from swclip.geo import check_latlon, chord_to_m, haversine_m, latlon_from_vectors, unit_vectors

# ------------------------------------------------------------------------------------------- knn-kde


def kde_density(at_latlon, latlon_candidates, weights, kde_bandwidth_m: float) -> np.ndarray:
    """Σ_j w_j exp(−d(at, c_j)² / 2h²) at each row of ``at_latlon`` (M, 2) -> (M,). d geodesic metres."""
    at, c = np.asarray(at_latlon, np.float64), np.asarray(latlon_candidates, np.float64)
    d = haversine_m(at[:, None, :], c[None, :, :], check=False)  # (M, K)
    return (np.exp(-0.5 * (d / kde_bandwidth_m) ** 2) * np.asarray(weights, np.float64)[None, :]).sum(1)


def knn_kde(
    latlon_candidates, weights, kde_bandwidth_m: float, iters: int = 30, tol_m: float = 0.01
) -> tuple[float, float]:
    """Mode of the weighted Gaussian kernel density over the candidates (Vo et al. 2017), geodesically.

    latlon_candidates: (K, 2) degrees; weights: (K,) >= 0 (e.g. probabilities); kde_bandwidth_m: the
    kernel's σ in metres. Starts at the densest candidate and runs mean-shift on the unit sphere
    (weighted mean of unit vectors, renormalised), so it never averages raw lat/lon and works across
    the antimeridian and near the poles. Returns (lat, lon) degrees, lon in [-180, 180].
    """
    c = np.asarray(latlon_candidates, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    check_latlon(c, "latlon_candidates")
    if w.shape != (len(c),):
        raise ValueError(f"weights must be (K,) = ({len(c)},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    if not kde_bandwidth_m > 0:
        raise ValueError(f"kde_bandwidth_m must be > 0, got {kde_bandwidth_m}")
    xyz = unit_vectors(c)  # (K, 3)
    density = kde_density(c, c, w, kde_bandwidth_m)
    x = xyz[int(np.argmax(density))]
    for _ in range(iters):
        d = chord_to_m(np.linalg.norm(xyz - x, axis=1))  # (K,)
        k = w * np.exp(-0.5 * (d / kde_bandwidth_m) ** 2)
        if k.sum() <= 0:  # every candidate far beyond the bandwidth of x: stay on the densest candidate
            break
        new = (k[:, None] * xyz).sum(0)
        new /= np.linalg.norm(new)
        step_m = float(chord_to_m(np.linalg.norm(new - x)))
        x = new
        if step_m < tol_m:
            break
    lat, lon = latlon_from_vectors(x)
    return float(lat), float(lon)


def weighted_radius_m(center_latlon, latlon_candidates, weights) -> float:
    """Σ w_j d(center, c_j) / Σ w_j in metres: the probability-weighted spread about ``center``."""
    c = np.asarray(latlon_candidates, np.float64)
    w = np.asarray(weights, np.float64)
    d = haversine_m(np.broadcast_to(np.asarray(center_latlon, np.float64), c.shape), c, check=False)
    return float((w * d).sum() / w.sum())


def softmax_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def median_spacing_m(latlon: np.ndarray, sample: int = 10_000, seed: int = 0) -> float:
    """Median distance from a gallery point to its nearest other point (metres), from a sample."""
    from scipy.spatial import cKDTree

    xyz = unit_vectors(np.asarray(latlon, np.float64))
    if len(xyz) < 2:
        return 0.0
    tree = cKDTree(xyz)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(xyz), min(sample, len(xyz)), replace=False)
    chord, _ = tree.query(xyz[idx], k=2)
    return float(np.median(chord_to_m(chord[:, 1])))
