"""Procedural street networks and street-view sample points along them.

Everything is in a city's local frame: (east, north) metres about its centre,
inside the square ``[-extent_m/2, extent_m/2]²``. Three kinds of network:

- ``grid``: straight parallel streets in two directions, rotated;
- ``radial``: spokes from the centre and concentric ring roads;
- ``organic``: a grid whose streets wander (a few smooth sinusoids), with uneven
  spacing and a couple of diagonal through-roads.

shapely does the clipping, the lengths and the interpolation along lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

NETWORK_TYPES = ("grid", "radial", "organic")


@dataclass(frozen=True)
class StreetParams:
    """The shape of one city's network (recorded in world.json)."""

    network: str  # one of NETWORK_TYPES
    extent_m: float  # side of the square city, metres
    spacing_m: float  # street spacing (grid, organic) or ring spacing (radial), metres
    angle_deg: float  # grid rotation, degrees anticlockwise from east
    n_spokes: int = 12  # radial only
    wobble_m: float = 0.0  # organic only: amplitude of the streets' meander


def _parallel_lines(half: float, spacing: float, angle_rad: float, offsets: np.ndarray, rng, wobble: float) -> list:
    """Lines perpendicular-offset by ``offsets`` along direction ``angle_rad``, long enough to cover the square."""
    d = np.array([np.cos(angle_rad), np.sin(angle_rad)])
    n = np.array([-d[1], d[0]])
    t = np.linspace(-1.5 * half, 1.5 * half, 160)  # (T,) along-line metres
    lines = []
    for off in offsets:
        pts = t[:, None] * d + off * n  # (T, 2)
        if wobble > 0:
            # a few smooth sinusoids across the line: meandering streets
            k = rng.uniform(1.0 / 1500.0, 1.0 / 400.0, size=3) * 2 * np.pi
            a = rng.normal(0.0, wobble / np.sqrt(3), size=3)
            p = rng.uniform(0, 2 * np.pi, size=3)
            pts = pts + (a[None, :] * np.sin(t[:, None] * k[None, :] + p[None, :])).sum(1)[:, None] * n
        lines.append(shapely.LineString(pts))
    return lines


def make_streets(params: StreetParams, seed: int) -> list[shapely.LineString]:
    """The city's streets as shapely LineStrings in local metres, clipped to the square."""
    rng = np.random.default_rng(seed)
    half = params.extent_m / 2.0
    a = np.deg2rad(params.angle_deg)
    lines: list = []
    if params.network in ("grid", "organic"):
        wobble = params.wobble_m if params.network == "organic" else 0.0
        for ang in (a, a + np.pi / 2):
            n_lines = int(np.ceil(1.5 * params.extent_m / params.spacing_m))
            offsets = (np.arange(n_lines) - (n_lines - 1) / 2) * params.spacing_m
            if params.network == "organic":
                offsets = offsets + rng.uniform(-0.3, 0.3, size=n_lines) * params.spacing_m
            lines += _parallel_lines(half, params.spacing_m, ang, offsets, rng, wobble)
        if params.network == "organic":  # two diagonal through-roads
            lines += _parallel_lines(
                half, params.spacing_m, a + np.pi / 4, rng.uniform(-half / 2, half / 2, 1), rng, wobble
            )
            lines += _parallel_lines(
                half, params.spacing_m, a - np.pi / 4, rng.uniform(-half / 2, half / 2, 1), rng, wobble
            )
    elif params.network == "radial":
        r_max = half * np.sqrt(2)
        for k in range(params.n_spokes):
            th = a + 2 * np.pi * k / params.n_spokes
            lines.append(shapely.LineString([(0.0, 0.0), (r_max * np.cos(th), r_max * np.sin(th))]))
        th = np.linspace(0, 2 * np.pi, 181)
        for r in np.arange(params.spacing_m, r_max, params.spacing_m):
            lines.append(shapely.LineString(np.stack([r * np.cos(th), r * np.sin(th)], 1)))
    else:
        raise ValueError(f"unknown network type {params.network!r}; expected one of {NETWORK_TYPES}")
    box = shapely.box(-half, -half, half, half)
    out = []
    for line in lines:
        clipped = shapely.intersection(line, box)
        for part in getattr(clipped, "geoms", [clipped]):
            if isinstance(part, shapely.LineString) and part.length > 1.0:
                out.append(part)
    return out


def sample_along(streets: list, n: int, seed: int, jitter_m: float = 2.0) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` street-view capture points spread evenly along the whole network.

    Returns (xy_m (n, 2) local metres, heading_deg (n,) clockwise from north, the
    along-street spacing in metres). The camera looks along the street, either way.
    """
    rng = np.random.default_rng(seed)
    lengths = shapely.length(np.asarray(streets, dtype=object))  # (L,)
    total = float(lengths.sum())
    spacing = total / n
    s = (np.arange(n) + rng.uniform(0, 1)) * spacing  # (n,) along the concatenated network
    ends = np.cumsum(lengths)
    which = np.minimum(np.searchsorted(ends, s, side="right"), len(streets) - 1)
    along = np.clip(s - (ends[which] - lengths[which]), 0.0, lengths[which])
    geoms = np.asarray(streets, dtype=object)[which]
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(geoms, np.maximum(along - 1.0, 0.0)))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(geoms, np.minimum(along + 1.0, lengths[which])))
    xy = shapely.get_coordinates(shapely.line_interpolate_point(geoms, along))  # (n, 2)
    tangent = p1 - p0
    heading = np.rad2deg(np.arctan2(tangent[:, 0], tangent[:, 1])) % 360.0  # clockwise from north
    heading = (heading + 180.0 * rng.integers(0, 2, size=n)) % 360.0
    xy = xy + rng.normal(0.0, jitter_m, size=xy.shape)  # GPS noise and lane position
    return xy, heading, spacing
