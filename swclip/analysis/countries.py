"""Country accuracy by point-in-polygon: the true country of the true coordinates.

OSV-5M scores a prediction's country through reverse_geocoder: the country of the nearest GeoNames
populated place (``swclip.analysis.metrics.admin_accuracy``). Near a border that is often the
neighbouring country's town, so a run whose every photo lies in one country can score 0.85. Here a point's
country is the Natural Earth 1:110m outline it falls in (``assets/ne_110m_countries.geojson``, shipped
with the repository); a point outside every outline (a coast the 1:110m outlines cut off) takes the
nearest outline within SNAP_M, else it has no country and the row is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from swclip.geo import EARTH_RADIUS_M, check_latlon

OUTLINES_PATH = Path(__file__).resolve().parents[2] / "assets" / "ne_110m_countries.geojson"
SNAP_M = 25_000.0  # a point outside every outline takes the nearest one within this distance (about, in degrees)
CONVENTION_POLYGON = (
    "point-in-polygon: the Natural Earth 1:110m outline each point lies in "
    f"(outside every outline: the nearest within {SNAP_M / 1000:g} km)"
)
CONVENTION_OSV5M = "reverse_geocoder: the country of the nearest GeoNames populated place (OSV-5M's convention)"

_CACHE: dict = {}


def load_outlines(path: Path | str = OUTLINES_PATH) -> tuple[shapely.STRtree, np.ndarray]:
    """(an STRtree over the countries' polygons, (P,) the country key of each polygon); read once per path.

    The key is the ISO A3 code, or the name where Natural Earth has none ('-99': France, Norway, Kosovo…).
    """
    path = Path(path)
    if path not in _CACHE:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the Natural Earth country outlines are missing (assets/ in the repo)")
        features = json.loads(path.read_text())["features"]
        geoms, keys = [], []
        for f in features:
            props = f.get("properties") or {}
            key = props.get("iso_a3") if props.get("iso_a3") not in (None, "", "-99") else props.get("name", "")
            shape = shapely.geometry.shape(f["geometry"])
            for part in getattr(shape, "geoms", [shape]):  # one entry per polygon: the tree indexes parts
                geoms.append(part)
                keys.append(str(key))
        _CACHE[path] = (shapely.STRtree(geoms), np.array(keys, dtype=object))
    return _CACHE[path]


def country_of(latlon: Any, path: Path | str = OUTLINES_PATH, snap_m: float = SNAP_M) -> np.ndarray:
    """The country key of each point by point-in-polygon. (N, 2) degrees -> (N,) str ('' where none)."""
    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    tree, keys = load_outlines(path)
    out = np.full(len(ll), "", dtype=object)
    if not len(ll):
        return out
    lon = (ll[:, 1] + 180.0) % 360.0 - 180.0  # outlines span -180 … 180
    points = shapely.points(lon, ll[:, 0])
    point_i, poly_i = tree.query(points, predicate="within")  # (2, hits): each point's polygon
    out[point_i] = keys[poly_i]
    missing = np.flatnonzero(out == "")
    if len(missing) and snap_m > 0:
        max_deg = np.rad2deg(snap_m / EARTH_RADIUS_M)  # degrees of arc: exact north-south, generous east-west
        point_j, poly_j = tree.query_nearest(points[missing], max_distance=max_deg, all_matches=False)
        out[missing[point_j]] = keys[poly_j]
    return out


def country_accuracy(pred_latlon: Any, true_latlon: Any, path: Path | str = OUTLINES_PATH) -> dict:
    """Share of predictions in the true point's country, both by point-in-polygon (:func:`country_of`).

    pred_latlon, true_latlon: (N, 2) degrees. A row whose true point has no country (at sea, beyond
    SNAP_M of every outline) is skipped. Returns {"acc_country": fraction or NaN, "n_country": rows
    scored, "skipped_country": rows skipped, "convention": CONVENTION_POLYGON}.
    """
    pred, true = np.asarray(pred_latlon, dtype=np.float64), np.asarray(true_latlon, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred_latlon {pred.shape} and true_latlon {true.shape} must have the same shape")
    both = country_of(np.concatenate([pred, true]), path)
    p, t = both[: len(pred)], both[len(pred) :]
    has = t != ""
    return {
        "acc_country": float((p[has] == t[has]).mean()) if has.any() else float("nan"),
        "n_country": int(has.sum()),
        "skipped_country": int((~has).sum()),
        "convention": CONVENTION_POLYGON,
    }
