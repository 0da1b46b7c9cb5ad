"""How far a run's evaluation samples spread, and the view defaults that follow (swclip.viz.scale).

Three scales, chosen from the extent (the 99 % quantile of pair distances, ``swclip.analysis.metrics.extent_m``):

- **street/city** (up to STREET_MAX_M, 30 km): the SW-CLIP paper's runs, one city at a time; metres,
  accuracy at 25 m … 1 km;
- **region/country** (up to REGION_MAX_M, 2,500 km): one region or country; kilometres, accuracy at
  1 … 200 km;
- **world** (wider): OSV-5M's; kilometres, accuracy at 1 … 2,500 km and the admin levels.

Every length the app offers — accuracy thresholds, the σ slider, hexagon size, variogram lags, the error
filter, map zoom — is chosen from the scale, so the same pages serve a street, a country and the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from swclip.analysis.metrics import ADMIN_MIN_EXTENT_M as WORLD_EXTENT_M
from swclip.analysis.metrics import THRESHOLDS_KM, THRESHOLDS_M, THRESHOLDS_REGION_KM, threshold_label
from swclip.analysis.variogram import max_lag_rule_m
from swclip.viz.spatial_bins import H3_EDGE_M

POINTS_MAX = 100_000  # above this many samples the Error map draws hexagons only
MAX_ERROR_M = 20_037_509  # half the Earth's circumference: no error is larger
# σ choices in metres: about 10 per decade of round numbers from 10 m to 2,000 km.
SIGMA_CHOICES_M = tuple(
    int(m * 10**e) for e in range(1, 7) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8) if 10 <= m * 10**e <= 2_000_000
)


STREET_MAX_M = 30_000.0  # up to this extent: street/city scale (a metropolis fits)
REGION_MAX_M = 2_500_000.0  # up to this: region/country scale (a large country fits); wider: world
SCALES = ("street", "region", "world")
SCALE_LABELS = {"street": "street/city", "region": "region/country", "world": "world"}


def fmt_m(m: float) -> str:
    """A length for people: '0.5 m', '150 m', '2.5 km', '119 km', '2,000 km' ('—' for NaN or None)."""
    if m is None or not math.isfinite(float(m)):
        return "—"
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


def scale_kind(extent: float) -> str:
    """'street', 'region' or 'world' for a run spanning ``extent`` metres."""
    return "street" if extent <= STREET_MAX_M else "region" if extent <= REGION_MAX_M else "world"


@dataclass(frozen=True)
class Scale:
    """View defaults for a run of a given extent (metres throughout)."""

    extent_m: float
    kind: str  # one of SCALES
    thresholds_m: tuple  # the accuracy thresholds every page reports at this scale
    unit: str  # "m" or "km": the unit distances print in
    map_zoom: int  # a single-point map's zoom (Leaflet/Web Mercator levels)
    hex_choices_m: tuple  # hexagon (H3 cell) edge lengths on offer
    hex_default_m: float
    lag_choices_m: tuple  # largest variogram lag on offer
    lag_default_m: float
    bins_default: int
    error_stops_m: tuple  # the error filter's stops, 0 first; the last means "and beyond"

    @property
    def world(self) -> bool:
        """World scale: OSV-5M's km thresholds and admin levels."""
        return self.kind == "world"

    @property
    def headline_thresholds_m(self) -> tuple:
        """The few thresholds a summary table shows (Runs, Compare): 100 m, 500 m, 1 km in a city;
        1, 25, 200 km in a region; 25, 200, 750, 2,500 km over the world."""
        return {
            "street": (100, 500, 1000),
            "region": (1000, 25_000, 200_000),
            "world": (25_000, 200_000, 750_000, 2_500_000),
        }[self.kind]

    @property
    def label(self) -> str:
        return SCALE_LABELS[self.kind]

    @property
    def accuracy_keys(self) -> tuple:
        """metrics.json keys of this scale's accuracies: 'acc@25m' … or 'acc@1km' …"""
        return tuple(threshold_label(t) for t in self.thresholds_m)

    def in_unit(self, values_m):
        """Lengths in metres -> in this scale's unit (m or km): a number, array or pandas object alike."""
        return values_m / 1000.0 if self.unit == "km" else values_m

    @property
    def number_format(self) -> str:
        """printf format of a length in this scale's unit: whole metres, or km with one decimal."""
        return "%.1f" if self.unit == "km" else "%.0f"

    def describe(self) -> str:
        """One line for the sidebar: 'Scale: region/country (samples span 310 km; accuracy at 1–200 km)'."""
        lo, hi = self.thresholds_m[0], self.thresholds_m[-1]
        return f"Scale: **{self.label}** (samples span {fmt_m(self.extent_m)}; accuracy at {fmt_m(lo)} – {fmt_m(hi)})"


def scale_for(extent: float) -> Scale:
    """Sensible lengths for a run spanning ``extent`` metres (see :func:`extent_m`)."""
    ext = max(float(extent), 100.0)
    edges = sorted(e for e in H3_EDGE_M if ext / 1000 <= e <= ext / 4) or [
        min(H3_EDGE_M, key=lambda e: abs(e - ext / 60))
    ]
    lags = ladder(ext / 20, max(ext, 1000.0))
    kind = scale_kind(ext)
    thresholds_m = {
        "street": THRESHOLDS_M,
        "region": tuple(t * 1000 for t in THRESHOLDS_REGION_KM),
        "world": tuple(t * 1000 for t in THRESHOLDS_KM),
    }[kind]
    # The error filter runs to ten times the extent (the last stop: "and beyond"); never past half the Earth.
    top = min(max(10.0 * ext, 10_000.0), 10_000_000.0)
    return Scale(
        extent_m=float(extent),
        kind=kind,
        thresholds_m=thresholds_m,
        unit="m" if kind == "street" else "km",
        # Web Mercator: 256 px per tile at zoom 0 over 40,075 km; the extent fills about 600 px
        map_zoom=int(min(max(math.log2(600 * 40_075_000 / 256 / max(ext, 500.0)), 1), 16)),
        hex_choices_m=tuple(edges),
        hex_default_m=nearest(edges, ext / 60),
        lag_choices_m=lags,
        lag_default_m=nearest(lags, max_lag_rule_m(ext)),
        bins_default=30 if ext > WORLD_EXTENT_M else 15,
        error_stops_m=(0,) + ladder(max(10.0, ext / 10_000), top, (1, 2.5, 5)) + (MAX_ERROR_M,),
    )


def fmt_stop(m: float) -> str:
    """An error-filter stop: fmt_m, and 'no limit' for the last one (MAX_ERROR_M)."""
    return "no limit" if m >= MAX_ERROR_M else fmt_m(m)
