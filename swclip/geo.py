"""Geodesy on the sphere: distances, bearings, local metres, equal-earth.

Conventions (docs/method.md): coordinates are ``latlon`` arrays of shape (N, 2),
float64 degrees, ordered (lat, lon). Distances are metres. The Earth is a sphere
of mean radius ``EARTH_RADIUS_M``; against the WGS84 ellipsoid that is within
about 0.5 % (tested against pyproj's geodesics).

Every distance function accepts numpy or torch and returns the same kind.
The trigonometry runs in float64, so points a metre apart are still a metre
apart; torch results come back in float64 unless ``dtype`` asks otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius R1


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(a: Any, dtype) -> np.ndarray:
    """A numpy array of ``dtype`` from a numpy array, a list or a torch tensor (any device; bf16 goes via float32)."""
    if type(a).__module__.startswith("torch"):
        a = a.detach().to("cpu")
        a = (a.float() if a.dtype.itemsize < 4 and a.is_floating_point() else a).numpy()  # bf16 has no numpy dtype
    return np.asarray(a, dtype=dtype)


def check_latlon(latlon: Any, name: str = "latlon") -> None:
    """Raise ValueError unless ``latlon`` is a finite (N, 2) array of valid degrees.

    Latitude must lie in [-90, 90] and longitude in [-180, 360]. The message
    names the first offending row, so a swapped (lon, lat) column order shows up
    as "latitude 151.2 out of range" rather than as a wrong distance.
    """
    if _is_torch(latlon):
        arr = latlon.detach().to("cpu", dtype=_torch().float64).numpy()
    else:
        arr = np.asarray(latlon, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) as (lat, lon) degrees, got {tuple(arr.shape)}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} has {int(bad.sum())} row(s) with NaN or inf; first is row {i}: {arr[i].tolist()}")
    lat_bad = np.abs(arr[:, 0]) > 90.0
    if lat_bad.any():
        i = int(np.flatnonzero(lat_bad)[0])
        raise ValueError(
            f"{name} has {int(lat_bad.sum())} latitude(s) outside [-90, 90]; first is row {i}: "
            f"{arr[i].tolist()} (are the columns in (lon, lat) order?)"
        )
    lon_bad = (arr[:, 1] < -180.0) | (arr[:, 1] > 360.0)
    if lon_bad.any():
        i = int(np.flatnonzero(lon_bad)[0])
        raise ValueError(
            f"{name} has {int(lon_bad.sum())} longitude(s) outside [-180, 360]; first is row {i}: {arr[i].tolist()}"
        )


def _torch():
    import torch

    return torch


def _as_float64(latlon: Any):
    if _is_torch(latlon):
        return latlon.to(_torch().float64)
    return np.asarray(latlon, dtype=np.float64)


def _lib(x: Any):
    return _torch() if _is_torch(x) else np


def haversine_m(a: Any, b: Any, check: bool = True):
    """Great-circle distance between rows of ``a`` and ``b``.

    a, b: (N, 2) latlon degrees (or broadcastable, e.g. (N, 2) against (1, 2)).
    Returns (N,) metres, float64; numpy in, numpy out; torch in, torch out.
    """
    if check:
        check_latlon(np.atleast_2d(a) if not _is_torch(a) else a.reshape(-1, 2), "a")
        check_latlon(np.atleast_2d(b) if not _is_torch(b) else b.reshape(-1, 2), "b")
    xp = _lib(a)
    a = _as_float64(a)
    b = _as_float64(b) if not _is_torch(a) else _torch().as_tensor(b, dtype=_torch().float64, device=a.device)
    if a.shape[-1] != 2 or b.shape[-1] != 2:
        raise ValueError(f"haversine_m needs (..., 2) inputs, got {tuple(a.shape)} and {tuple(b.shape)}")
    lat1, lat2 = xp.deg2rad(a[..., 0]), xp.deg2rad(b[..., 0])
    dlon = xp.deg2rad(b[..., 1] - a[..., 1])
    # The atan2 (Vincenty, sphere) form of the haversine distance: the same
    # great circle, but well conditioned both at 1 m and at the antipodes,
    # where asin(sqrt(h)) loses about 0.2 m.
    s1, c1, s2, c2 = xp.sin(lat1), xp.cos(lat1), xp.sin(lat2), xp.cos(lat2)
    cdl = xp.cos(dlon)
    y = xp.sqrt((c2 * xp.sin(dlon)) ** 2 + (c1 * s2 - s1 * c2 * cdl) ** 2)
    x = s1 * s2 + c1 * c2 * cdl
    return EARTH_RADIUS_M * xp.arctan2(y, x)


def unit_vectors(latlon: Any):
    """Points on the unit sphere. (N, 2) degrees -> (N, 3), float64, same library."""
    xp = _lib(latlon)
    ll = _as_float64(latlon)
    lat, lon = xp.deg2rad(ll[:, 0]), xp.deg2rad(ll[:, 1])
    return xp.stack([xp.cos(lat) * xp.cos(lon), xp.cos(lat) * xp.sin(lon), xp.sin(lat)], -1)


def chord_to_m(chord: Any):
    """Straight-line chord between unit vectors -> great-circle metres, 2R·asin(c/2).

    Any shape; numpy or torch. The inverse of :func:`m_to_chord`. KD-trees and
    faiss search unit vectors by chord; this turns their answers into metres.
    """
    if _is_torch(chord):
        return 2.0 * EARTH_RADIUS_M * _torch().asin(_torch().clamp(chord * 0.5, 0.0, 1.0))
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.clip(np.asarray(chord, dtype=np.float64) * 0.5, 0.0, 1.0))


def m_to_chord(distance_m: float) -> float:
    """Great-circle metres -> the chord between unit vectors (capped at the antipodes' 2)."""
    return 2.0 * math.sin(min(distance_m / (2.0 * EARTH_RADIUS_M), math.pi / 2))


def latlon_from_vectors(xyz: np.ndarray) -> np.ndarray:
    """(..., 3) vectors of any non-zero length -> (..., 2) latlon degrees, lon in [-180, 180]."""
    xyz = np.asarray(xyz, dtype=np.float64)
    xyz = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)
    lat = np.degrees(np.arcsin(np.clip(xyz[..., 2], -1.0, 1.0)))
    return np.stack([lat, np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0]))], -1)


def pairwise_haversine_m(a: Any, b: Any = None, dtype: Any = None, check: bool = True):
    """All-pairs great-circle distances.

    a: (N, 2), b: (M, 2) latlon degrees; ``b=None`` compares ``a`` with itself.
    Returns (N, M) metres. numpy: always float64. torch: float64 by default, or
    ``dtype`` (e.g. ``torch.float32``) for the loss path.

    The distance is 2R·asin(|x_i − x_j| / 2), with x the unit vectors. For torch
    with a float32 ``dtype``, the unit vectors are built in float64, centred on
    their mean (distances are translation-invariant) and only then cast, so the
    float32 chord keeps sub-millimetre precision inside a city and about 1 m up
    to 10,000 km; towards the antipodes asin(c/2) is ill-conditioned and the
    error grows to ~1e-4 of the distance (kilometres, where every soft-label
    kernel is 0 anyway). No (N, M) float64 matrix is ever allocated.
    """
    if check:
        check_latlon(a, "a")
        if b is not None:
            check_latlon(b, "b")
    if _is_torch(a):
        torch = _torch()
        out_dtype = dtype or torch.float64
        xa = unit_vectors(a)  # (N, 3) float64
        xb = xa if b is None else unit_vectors(torch.as_tensor(b, device=a.device))
        centre = torch.cat([xa, xb]).mean(0, keepdim=True)
        xa, xb = (xa - centre).to(out_dtype), (xb - centre).to(out_dtype)
        # direct differences: the |x|²+|y|²−2x·y shortcut cancels catastrophically
        chord = torch.cdist(xa, xb, compute_mode="donot_use_mm_for_euclid_dist")  # (N, M)
        if chord.requires_grad:  # differentiable distances (e.g. a regression loss): no in-place ops
            return chord_to_m(chord)
        return chord.mul_(0.5).clamp_(max=1.0).asin_().mul_(2.0 * EARTH_RADIUS_M)  # in place: no (N, M) temporaries
    a64 = np.asarray(a, dtype=np.float64)
    b64 = a64 if b is None else np.asarray(b, dtype=np.float64)
    return haversine_m(a64[:, None, :], b64[None, :, :], check=False)


def initial_bearing_deg(a: Any, b: Any):
    """Initial bearing (forward azimuth) from a to b, degrees clockwise from north in [0, 360).

    a, b: (N, 2) latlon degrees. Returns (N,) float64 (numpy or torch, like ``a``).
    """
    xp = _lib(a)
    a, b = _as_float64(a), _as_float64(b)
    lat1, lat2 = xp.deg2rad(a[..., 0]), xp.deg2rad(b[..., 0])
    dlon = xp.deg2rad(b[..., 1] - a[..., 1])
    y = xp.sin(dlon) * xp.cos(lat2)
    x = xp.cos(lat1) * xp.sin(lat2) - xp.sin(lat1) * xp.cos(lat2) * xp.cos(dlon)
    return xp.rad2deg(xp.arctan2(y, x)) % 360.0


def destination(latlon: Any, bearing_deg: Any, distance_m: Any):
    """Point reached from ``latlon`` along a great circle.

    latlon: (N, 2) degrees; bearing_deg: (N,) or scalar, clockwise from north;
    distance_m: (N,) or scalar metres. Returns (N, 2) latlon, longitude wrapped
    to [-180, 180).
    """
    xp = _lib(latlon)
    ll = _as_float64(latlon)
    lat1, lon1 = xp.deg2rad(ll[..., 0]), xp.deg2rad(ll[..., 1])
    if xp is np:
        theta = np.deg2rad(np.asarray(bearing_deg, dtype=np.float64))
        delta = np.asarray(distance_m, dtype=np.float64) / EARTH_RADIUS_M
    else:
        theta = xp.deg2rad(xp.as_tensor(bearing_deg, dtype=xp.float64, device=ll.device))
        delta = xp.as_tensor(distance_m, dtype=xp.float64, device=ll.device) / EARTH_RADIUS_M
    lat2 = xp.arcsin(xp.sin(lat1) * xp.cos(delta) + xp.cos(lat1) * xp.sin(delta) * xp.cos(theta))
    lon2 = lon1 + xp.arctan2(xp.sin(theta) * xp.sin(delta) * xp.cos(lat1), xp.cos(delta) - xp.sin(lat1) * xp.sin(lat2))
    lon2 = (xp.rad2deg(lon2) + 180.0) % 360.0 - 180.0
    return xp.stack([xp.rad2deg(lat2), lon2], -1)


def metres_per_degree(lat_deg: float) -> tuple[float, float]:
    """(metres per degree of latitude, metres per degree of longitude) at ``lat_deg``, on the sphere."""
    m_lat = math.pi * EARTH_RADIUS_M / 180.0
    return m_lat, m_lat * math.cos(math.radians(lat_deg))


def local_metres_to_degrees(xy_m: np.ndarray, origin_latlon: tuple[float, float]) -> np.ndarray:
    """Local east/north offsets to latlon, equirectangular about ``origin_latlon``.

    xy_m: (N, 2) metres (east, north). Returns (N, 2) latlon degrees. Good to
    well under 0.1 % over a city's few kilometres; use pyproj for larger areas.
    """
    xy = np.asarray(xy_m, dtype=np.float64)
    m_lat, m_lon = metres_per_degree(origin_latlon[0])
    return np.stack([origin_latlon[0] + xy[:, 1] / m_lat, origin_latlon[1] + xy[:, 0] / m_lon], -1)


def degrees_to_local_metres(latlon: np.ndarray, origin_latlon: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`local_metres_to_degrees`: (N, 2) latlon -> (N, 2) (east, north) metres."""
    ll = np.asarray(latlon, dtype=np.float64)
    m_lat, m_lon = metres_per_degree(origin_latlon[0])
    dlon = (ll[:, 1] - origin_latlon[1] + 180.0) % 360.0 - 180.0
    return np.stack([dlon * m_lon, (ll[:, 0] - origin_latlon[0]) * m_lat], -1)


# Equal Earth (Šavrič, Patterson & Jenny 2018), the projection GeoCLIP's GPS tower uses.
_EE_A1, _EE_A2, _EE_A3, _EE_A4 = 1.340264, -0.081106, 0.000893, 0.003796
_EE_M = math.sqrt(3.0) / 2.0


def equal_earth(latlon: Any, radius_m: float = EARTH_RADIUS_M):
    """Equal Earth projection. (N, 2) latlon degrees -> (N, 2) (x, y) metres.

    With ``radius_m=1`` the output is in Earth radii: x in about [-2.71, 2.71],
    y in about [-1.32, 1.32]. numpy or torch, like the input; float64.
    """
    xp = _lib(latlon)
    ll = _as_float64(latlon)
    lat, lon = xp.deg2rad(ll[..., 0]), xp.deg2rad(((ll[..., 1] + 180.0) % 360.0) - 180.0)
    theta = xp.arcsin(_EE_M * xp.sin(lat))
    t2 = theta * theta
    t6 = t2 * t2 * t2
    x = (2.0 * math.sqrt(3.0) * lon * xp.cos(theta)) / (
        3.0 * (9.0 * _EE_A4 * t6 * t2 + 7.0 * _EE_A3 * t6 + 3.0 * _EE_A2 * t2 + _EE_A1)
    )
    y = theta * (_EE_A1 + _EE_A2 * t2 + t6 * (_EE_A3 + _EE_A4 * t2))
    return xp.stack([x * radius_m, y * radius_m], -1)


PLACE_TOLERANCE_M = 1.0  # photos whose coordinates round to the same 1 m cell are one place


def place_ids(latlon: Any, tolerance_m: float = PLACE_TOLERANCE_M) -> np.ndarray:
    """A place id per photo, from its coordinates rounded to ``tolerance_m``: (N, 2) degrees -> (N,) str.

    Latitude is rounded to ``tolerance_m`` of arc, longitude to ``tolerance_m`` along that rounded
    latitude's parallel, so photos taken at one spot (the headings of one panorama) share an id like
    ``'@51.50000900,-0.12001600'``. Two photos closer than the tolerance may still fall either side of a
    cell edge; a dataset that knows its places should give a ``place_id`` column instead.
    """
    if not (math.isfinite(tolerance_m) and tolerance_m > 0):
        raise ValueError(f"tolerance_m must be a positive number of metres, got {tolerance_m!r}")
    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    step_lat = tolerance_m / (EARTH_RADIUS_M * math.pi / 180.0)  # degrees of latitude per tolerance
    lat = np.round(ll[:, 0] / step_lat) * step_lat
    step_lon = step_lat / np.maximum(np.cos(np.deg2rad(lat)), 1e-9)
    lon = np.round(ll[:, 1] / step_lon) * step_lon
    return np.char.add(np.char.add(np.char.mod("@%.8f", lat), ","), np.char.mod("%.8f", lon)).astype(object)
