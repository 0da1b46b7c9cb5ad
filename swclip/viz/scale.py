"""How far a run's evaluation samples spread, and the view defaults that follow (swclip.viz.scale).

The SW-CLIP paper's runs are one city at a time (1–5 km across); OSV-5M's span the world. Every
length the app offers — the σ slider, hexagon size, variogram lags, the error filter — is chosen
from the run's extent, so the same pages serve a street-level city and the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from swclip.analysis.metrics import ADMIN_MIN_EXTENT_M as WORLD_EXTENT_M
from swclip.viz.spatial_bins import H3_EDGE_M

POINTS_MAX = 100_000  # above this many samples the Error map draws hexagons only
MAX_ERROR_M = 20_037_509  # half the Earth's circumference: no error is larger
# σ choices in metres: about 10 per decade of round numbers from 10 m to 2,000 km.
SIGMA_CHOICES_M = tuple(
    int(m * 10**e) for e in range(1, 7) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8) if 10 <= m * 10**e <= 2_000_000
)


def fmt_m(m: float) -> str:
    """A length for people: '0.5 m', '150 m', '2.5 km', '2,000 km'."""
    m = float(m)
    if m < 10:
        return f"{m:.2g} m"
    if m < 1000:
        return f"{m:,.0f} m"
    return f"{m / 1000:.2g} km" if m < 10_000 else f"{m / 1000:,.0f} km"


def ladder(lo: float, hi: float, steps=(1, 2, 5)) -> tuple:
    """Round numbers (1-2-5 per decade by default) in [lo, hi], ascending."""
    if not (0 < lo <= hi):
        raise ValueError(f"need 0 < lo <= hi, got {lo}, {hi}")
    out = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for s in steps:
            v = s * 10.0**e
            v = round(v, 9)
            if lo <= v <= hi:
                out.append(int(v) if float(v).is_integer() else v)
    return tuple(out)


def nearest(choices, value: float):
    """The choice nearest ``value`` on a log scale."""
    return min(choices, key=lambda c: abs(math.log(max(c, 1e-9)) - math.log(max(value, 1e-9))))


@dataclass(frozen=True)
class Scale:
    """View defaults for a run of a given extent (metres throughout)."""

    extent_m: float
    world: bool  # wider than WORLD_EXTENT_M
    hex_choices_m: tuple  # hexagon (H3 cell) edge lengths on offer
    hex_default_m: float
    lag_choices_m: tuple  # largest variogram lag on offer
    lag_default_m: float
    bins_default: int
    error_stops_m: tuple  # the error filter's stops, 0 first


def scale_for(extent: float) -> Scale:
    """Sensible lengths for a run spanning ``extent`` metres (see :func:`extent_m`)."""
    ext = max(float(extent), 100.0)
    edges = sorted(e for e in H3_EDGE_M if ext / 1000 <= e <= ext / 4) or [
        min(H3_EDGE_M, key=lambda e: abs(e - ext / 60))
    ]
    lags = ladder(ext / 20, max(ext, 1000.0))
    return Scale(
        extent_m=float(extent),
        world=ext > WORLD_EXTENT_M,
        hex_choices_m=tuple(edges),
        hex_default_m=nearest(edges, ext / 60),
        lag_choices_m=lags,
        lag_default_m=nearest(lags, ext / 2),
        bins_default=30 if ext > WORLD_EXTENT_M else 15,
        error_stops_m=(0,) + ladder(max(10.0, ext / 10_000), 10_000_000.0, (1, 2.5, 5)) + (MAX_ERROR_M,),
    )
