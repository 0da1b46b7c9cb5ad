"""Display helpers that arrange points in space: Hilbert order and hexagonal bins.

Both work in local metres about the points' centre (``swclip.geo``'s
equirectangular frame), which is exact enough over a city's few kilometres.

- :func:`hilbert_order` sorts points along a Hilbert curve, so that rows and
  columns of a (B, B) matrix sit next to their geographic neighbours and the
  soft-label matrix shows blocks instead of noise.
- :func:`hex_bins` groups points into pointy-top hexagons of a given
  circumradius and summarises a value per hexagon (the median error map).
- :func:`h3_bins` does the same with Uber's H3 cells, which tile the whole
  sphere: the maps of runs wider than a city (countries, the world).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from swclip.geo import check_latlon, degrees_to_local_metres, local_metres_to_degrees


def hilbert_index(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Distance along the Hilbert curve of cells (x, y) on a 2^order × 2^order grid.

    x, y: (N,) integers in [0, 2^order). Returns (N,) int64 in [0, 4^order).
    The classic iterative xy2d: at each scale pick the quadrant, then rotate
    the frame so that the sub-curve starts where the parent entered.
    """
    n = 1 << order
    x = np.asarray(x, dtype=np.int64).copy()
    y = np.asarray(y, dtype=np.int64).copy()
    if x.shape != y.shape:
        raise ValueError(f"x {x.shape} and y {y.shape} must have the same shape")
    if ((x < 0) | (x >= n) | (y < 0) | (y >= n)).any():
        raise ValueError(f"cell coordinates must lie in [0, {n}) for order {order}")
    d = np.zeros_like(x)
    s = n >> 1
    while s > 0:
        rx = ((x & s) > 0).astype(np.int64)
        ry = ((y & s) > 0).astype(np.int64)
        d += s * s * ((3 * rx) ^ ry)
        flip = (ry == 0) & (rx == 1)
        x = np.where(flip, n - 1 - x, x)
        y = np.where(flip, n - 1 - y, y)
        swap = ry == 0
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return d


def hilbert_order(latlon: Any, order: int = 10) -> np.ndarray:
    """Permutation that sorts points along a Hilbert curve over their bounding square.

    latlon: (N, 2) degrees. Returns (N,) int64 indices; ties (same cell) keep
    their input order. ``order`` 10 gives 1024 cells a side, a few metres per
    cell for a city.
    """
    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64)
    if len(ll) == 0:
        return np.zeros(0, dtype=np.int64)
    xy = degrees_to_local_metres(ll, (float(ll[:, 0].mean()), float(ll[:, 1].mean())))  # (N, 2) metres
    lo = xy.min(0)
    span = float((xy.max(0) - lo).max()) or 1.0
    n = 1 << order
    cells = np.minimum(((xy - lo) / span * n).astype(np.int64), n - 1)
    return np.argsort(hilbert_index(cells[:, 0], cells[:, 1], order), kind="stable")


_SQRT3 = math.sqrt(3.0)


def _hex_round(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round fractional axial coordinates to the containing hexagon (cube rounding)."""
    s = -q - r
    rq, rr, rs = np.round(q), np.round(r), np.round(s)
    dq, dr, ds = np.abs(rq - q), np.abs(rr - r), np.abs(rs - s)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    rq = np.where(fix_q, -rr - rs, rq)
    rr = np.where(fix_r, -rq - rs, rr)
    return rq.astype(np.int64), rr.astype(np.int64)


def hex_centres_m(q: np.ndarray, r: np.ndarray, radius_m: float) -> np.ndarray:
    """Centres (east, north) in metres of pointy-top hexagons at axial (q, r). -> (N, 2)."""
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    return np.stack([radius_m * _SQRT3 * (q + r / 2.0), radius_m * 1.5 * r], -1)


def _bin_input(latlon: Any, values: Any, size_m: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) float64 latlon and (N,) float64 values, checked; ValueError naming the problem."""
    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64).ravel()
    if vals.shape[0] != ll.shape[0]:
        raise ValueError(f"values has {vals.shape[0]} entries for {ll.shape[0]} points")
    if not (math.isfinite(size_m) and size_m > 0):
        raise ValueError(f"{name} must be a positive number of metres, got {size_m!r}")
    return ll, vals


def hex_bins(
    latlon: Any,
    values: Any,
    radius_m: float,
    stat: Callable[[np.ndarray], float] = np.median,
    origin_latlon: tuple[float, float] | None = None,
) -> dict:
    """Group points into pointy-top hexagons and summarise ``values`` per hexagon.

    latlon: (N, 2) degrees; values: (N,); radius_m: hexagon circumradius,
    metres. Each point goes to the hexagon whose centre is nearest (hexagons
    tile the plane as the Voronoi cells of their centres).

    Returns a dict of arrays, one row per non-empty hexagon (H rows):
    ``centre_latlon`` (H, 2), ``polygon_lonlat`` (H, 6, 2) vertices as
    (lon, lat) for deck.gl, ``value`` (H,) the statistic, ``count`` (H,), and
    ``bin_of_point`` (N,) the row each point went to.
    """
    ll, vals = _bin_input(latlon, values, radius_m, "radius_m")
    if origin_latlon is None:
        origin_latlon = (float(ll[:, 0].mean()), float(ll[:, 1].mean())) if len(ll) else (0.0, 0.0)
    xy = degrees_to_local_metres(ll, origin_latlon)  # (N, 2) metres
    q = (_SQRT3 / 3.0 * xy[:, 0] - xy[:, 1] / 3.0) / radius_m
    r = (2.0 / 3.0 * xy[:, 1]) / radius_m
    hq, hr = _hex_round(q, r)
    keys, inverse = np.unique(np.stack([hq, hr], -1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    value = np.array([stat(vals[inverse == h]) for h in range(len(keys))], dtype=np.float64)
    count = np.bincount(inverse, minlength=len(keys))
    centres_m = hex_centres_m(keys[:, 0], keys[:, 1], radius_m)  # (H, 2)
    angles = np.deg2rad(30.0 + 60.0 * np.arange(6))  # pointy-top vertices
    corners = np.stack([np.cos(angles), np.sin(angles)], -1) * radius_m  # (6, 2)
    verts_m = centres_m[:, None, :] + corners[None]  # (H, 6, 2)
    verts_ll = local_metres_to_degrees(verts_m.reshape(-1, 2), origin_latlon).reshape(-1, 6, 2)
    return {
        "centre_latlon": local_metres_to_degrees(centres_m, origin_latlon),
        "polygon_lonlat": verts_ll[..., ::-1].copy(),
        "value": value,
        "count": count,
        "bin_of_point": inverse,
    }


# H3's average hexagon edge length (= circumradius) per resolution 0..15, metres (h3.average_hexagon_edge_length).
H3_EDGE_M = (
    1281256.011,
    483056.8391,
    182512.9565,
    68979.2218,
    26071.7597,
    9854.091,
    3724.5327,
    1406.4758,
    531.414,
    200.7861,
    75.8638,
    28.6639,
    10.8302,
    4.092,
    1.5461,
    0.5842,
)


def h3_resolution(edge_m: float) -> int:
    """The H3 resolution whose average edge is nearest ``edge_m`` on a log scale."""
    return min(range(len(H3_EDGE_M)), key=lambda r: abs(math.log(H3_EDGE_M[r]) - math.log(max(edge_m, 1e-3))))


def h3_bins(latlon, values, edge_m: float, stat: str = "median") -> dict:
    """Group points into H3 cells (the resolution nearest ``edge_m``) and summarise ``values`` per cell.

    Works at any scale, across the antimeridian too (H3 tiles the sphere; a cell holding a pole spans every
    longitude and is drawn as it comes). latlon: (N, 2)
    degrees; values: (N,). Returns the dict :func:`hex_bins` returns (one row per non-empty cell):
    ``centre_latlon`` (H, 2), ``polygon_lonlat`` list of H (V, 2) (lon, lat) rings for deck.gl (V = 6,
    or 5 for H3's pentagons; longitudes unwrapped so a cell across ±180° stays one piece), ``value``
    (H,) the statistic (pandas' groupby median or mean), ``count`` (H,), ``bin_of_point`` (N,), and
    ``res``, ``cells`` (H,) H3 ids.
    """
    import pandas as pd
    from h3.api import numpy_int as h3n

    ll, vals = _bin_input(latlon, values, edge_m, "edge_m")
    if stat not in ("median", "mean"):
        raise ValueError(f"stat must be 'median' or 'mean', got {stat!r}")
    res = h3_resolution(edge_m)
    lon = (ll[:, 1] + 180.0) % 360.0 - 180.0
    cells = np.fromiter(
        (h3n.latlng_to_cell(a, b, res) for a, b in zip(ll[:, 0].tolist(), lon.tolist())), dtype=np.uint64, count=len(ll)
    )
    keys, inverse = np.unique(cells, return_inverse=True)
    inverse = inverse.ravel()
    grouped = pd.Series(vals).groupby(inverse)
    value = (grouped.median() if stat == "median" else grouped.mean()).to_numpy(np.float64)
    count = np.bincount(inverse, minlength=len(keys))
    centres = np.array([h3n.cell_to_latlng(int(c)) for c in keys], dtype=np.float64).reshape(-1, 2)
    rings = []
    for c in keys:
        b = np.asarray(h3n.cell_to_boundary(int(c)), dtype=np.float64)[:, ::-1].copy()  # (V, 2) lon, lat
        b[:, 0] = np.unwrap(b[:, 0], period=360.0)  # an edge across ±180° stays short
        rings.append(b)
    return {
        "centre_latlon": centres,
        "polygon_lonlat": rings,
        "value": value,
        "count": count,
        "bin_of_point": inverse,
        "res": res,
        "cells": keys,
    }
