"""Streamlit glue shared by app.py and app_pages/: runs directory, sidebar, URL state, caches.

The library (``swclip``) never imports streamlit; this module is the one place
that adapts it to the app.

URL state: every value a link should reproduce (runs, city, σ, and each page's
own controls) is read from ``st.query_params`` the first time a session sees
it, kept in ``st.session_state`` (which survives page switches, when
Streamlit clears the query string), and written back to the URL on every run.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import streamlit as st

from swclip import appstate, maps, runs

APP_DIR = Path(__file__).resolve().parent
ENV_RUNS_DIR = "SWCLIP_RUNS_DIR"
STATIC_DIR = APP_DIR / "static"

# σ choices in metres, a round-number log scale (about 10 per decade) from 5 m to 5 km.
SIGMA_CHOICES_M = tuple(int(m * 10**e) for e in range(0, 4) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8) if 5 <= m * 10**e <= 5000)
ALL_CITIES = "All cities"

_STORE = "_url_state"
_WRITTEN = "_url_written"
_VIEW = "_view"


def default_runs_dir() -> str:
    """--runs-dir (after ``--`` on the streamlit command line), else $SWCLIP_RUNS_DIR, else runs/."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs-dir")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.runs_dir or os.environ.get(ENV_RUNS_DIR) or "runs"


# ----------------------------------------------------------------- URL state


def url_get(key: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
    """The session's value for ``key``: from the URL the first time, then from session state."""
    store = st.session_state.setdefault(_STORE, {})
    if key not in store:
        raw = st.query_params.get(key)
        try:
            store[key] = parse(raw) if raw not in (None, "") else default
        except (TypeError, ValueError):
            store[key] = default
    return store[key]


def url_set(key: str, value: Any, fmt: Callable[[Any], str] = str) -> None:
    """Remember ``value`` for the session and put it in the URL."""
    st.session_state.setdefault(_STORE, {})[key] = value
    st.session_state.setdefault(_WRITTEN, set()).add(key)
    text = fmt(value)
    if st.query_params.get(key) != text:
        st.query_params[key] = text


def url_widget(
    widget: Callable,
    label: str,
    key: str,
    default: Any,
    parse: Callable[[str], Any] = str,
    fmt: Callable[[Any], str] = str,
    valid: Optional[Callable[[Any], bool]] = None,
    **kwargs: Any,
) -> Any:
    """A widget whose value lives in the URL under ``key``.

    ``valid`` rejects a stale or hand-edited URL value (a run that no longer
    exists, a σ off the scale) in favour of ``default``.
    """
    wkey = f"url:{key}"
    value = url_get(key, default, parse)
    if valid is not None and not valid(value):
        value = default
    if isinstance(value, tuple):
        # A range widget (select_slider, slider) is a range only when value= is a tuple;
        # value= stays equal to the widget's own state, so the widget keeps its identity.
        out = widget(label, key=wkey, value=value, **kwargs)
        url_set(key, tuple(out), fmt)
        return tuple(out)
    if wkey not in st.session_state or (valid is not None and not valid(st.session_state[wkey])):
        st.session_state[wkey] = value
    out = widget(label, key=wkey, **kwargs)
    url_set(key, out, fmt)
    return out


def begin_run() -> None:
    """Start of every script run (app.py): forget which URL keys were written."""
    st.session_state[_WRITTEN] = set()


def prune_url() -> None:
    """End of every script run: drop URL keys no widget wrote (another page's controls)."""
    written = st.session_state.get(_WRITTEN, set())
    for key in list(st.query_params.keys()):
        if key not in written:
            del st.query_params[key]


# ----------------------------------------------------------------- runs and caches


@st.cache_resource(show_spinner=False)
def install_static() -> Optional[str]:
    """Copy Leaflet into ./static once per server process (served at /app/static/leaflet); None if it cannot."""
    try:
        return str(maps.install_leaflet(STATIC_DIR))
    except OSError as e:  # a read-only install: `make run` stages it beforehand
        print(f"warning: cannot stage Leaflet into {STATIC_DIR}: {e}; folium maps need it there", file=sys.stderr)
        return None


@st.cache_data(show_spinner=False, ttl=10)
def discover(runs_root: str) -> tuple[list, list]:
    """(runs, broken) under the root; re-listed every 10 s so new runs appear."""
    return appstate.discover_runs(runs_root)


def _run(runs_root: str, run_id: str) -> Optional[appstate.RunInfo]:
    return next((r for r in discover(runs_root)[0] if r.run_id == run_id), None)


@st.cache_data(show_spinner=False)
def world(runs_root: str, run_id: str, stamp: float) -> Optional[dict]:
    """The demo world.json of a run (None for real data)."""
    run = _run(runs_root, run_id)
    return appstate.read_world(appstate.find_world(run, runs_root)) if run else None


@st.cache_data(show_spinner=False)
def streets(runs_root: str, run_id: str, stamp: float) -> dict:
    """{city: street polylines} of a demo run's world ({} for real data)."""
    run = _run(runs_root, run_id)
    return appstate.read_streets(appstate.find_world(run, runs_root)) if run else {}


@st.cache_data(show_spinner="Reading predictions…")
def predictions(runs_root: str, run_id: str, stamp: float) -> pd.DataFrame:
    """predictions.parquet of a run (one row per evaluation sample)."""
    return runs.read_predictions(appstate.inside_root(runs_root, run_id))


@st.cache_data(show_spinner=False)
def city_predictions(runs_root: str, run_id: str, stamp: float, city: Optional[str]) -> pd.DataFrame:
    """The rows of one city (all rows for None / 'All cities')."""
    df = predictions(runs_root, run_id, stamp)
    if city in (None, ALL_CITIES) or "city" not in df:
        return df
    return df[df["city"] == city].reset_index(drop=True)


@st.cache_data(show_spinner=False)
def nearby_places(latlon_key: tuple) -> pd.DataFrame:
    return maps.nearby_places(np.asarray(latlon_key, dtype=np.float64).reshape(-1, 2))


# ----------------------------------------------------------------- the view


@dataclass
class View:
    """What the sidebar selected: shared by every page."""

    runs_root: str
    available: list = field(default_factory=list)
    selected: list = field(default_factory=list)
    city: Optional[str] = None
    sigma_m: float = 100.0

    @property
    def run(self) -> Optional[appstate.RunInfo]:
        return self.selected[0] if self.selected else None

    @property
    def is_demo(self) -> bool:
        return bool(self.selected) and all(r.is_demo for r in self.selected)

    def city_or_none(self) -> Optional[str]:
        return None if self.city in (None, ALL_CITIES) else self.city


def _nearest_choice(sigma_m: float) -> int:
    return min(SIGMA_CHOICES_M, key=lambda s: abs(np.log(s) - np.log(max(sigma_m, 1e-3))))


def sidebar() -> View:
    """Draw the shared sidebar and return the selection."""
    sb = st.sidebar
    # Fixed by whoever starts the app (--runs-dir / $SWCLIP_RUNS_DIR), not by visitors: the app
    # reads nothing outside it, so it must not be a text box a visitor can point at /.
    runs_root = default_runs_dir()
    sb.caption(f"Runs directory: `{runs_root}`", help="Set with `streamlit run app.py -- --runs-dir DIR` or $SWCLIP_RUNS_DIR; the app reads nothing outside it.")
    found, broken = discover(runs_root)
    view = View(runs_root=runs_root, available=found)
    if broken:
        with sb.expander(f"{len(broken)} run(s) cannot be read"):
            for run_id, err in broken:
                st.caption(f"**{run_id}**: {err}")
    if not found:
        sb.warning(f"No runs in `{runs_root}` yet.")
        st.session_state[_VIEW] = view
        return view
    by_id = {r.run_id: r for r in found}
    ids = list(by_id)
    with sb:
        chosen = url_widget(
            st.multiselect, "Runs (the first is the main one)", "run", [ids[0]],
            parse=lambda s: [x for x in s.split(",") if x], fmt=",".join,
            valid=lambda v: isinstance(v, list) and len(v) > 0 and all(x in by_id for x in v),
            options=ids, format_func=lambda i: by_id[i].label,
        )
        if not chosen:
            st.caption("Pick at least one run; showing the newest.")
            chosen = [ids[0]]
        view.selected = [by_id[i] for i in chosen]
        try:
            df = predictions(runs_root, view.run.run_id, view.run.stamp)
        except runs.RunError as e:
            st.error(f"Cannot read the predictions of {view.run.run_id}: {e}")
            st.stop()
        cities = [ALL_CITIES] + (sorted(df["city"].astype(str).unique()) if "city" in df else [])
        view.city = url_widget(st.selectbox, "City", "city", cities[1] if len(cities) > 1 else ALL_CITIES, valid=lambda v: v in cities, options=cities)
        default_sigma = _nearest_choice(view.run.sigma_m or 100.0)
        view.sigma_m = float(
            url_widget(
                st.select_slider, "σ, kernel bandwidth (m, log scale)", "sigma", default_sigma,
                parse=lambda s: int(float(s)), valid=lambda v: v in SIGMA_CHOICES_M,
                options=SIGMA_CHOICES_M, format_func=lambda s: f"{s:g} m",
            )
        )
        manifest_popover(view)
    st.session_state[_VIEW] = view
    return view


def manifest_popover(view: View) -> None:
    """The main run's manifest summary, one click away."""
    run = view.run
    with st.popover("Manifest of the main run", width="stretch"):
        st.markdown(f"**{run.run_id}**" + ("  ·  demo world" if run.is_demo else ""))
        m = run.manifest
        summary = {k: m[k] for k in ("model", "loss", "data", "split", "seeds", "git_commit", "metrics") if k in m}
        st.json(summary or m, expanded=1)
        with st.expander("Full manifest.json"):
            st.json(m, expanded=False)


def current_view() -> View:
    """The View the frame built for this run (pages call this)."""
    return st.session_state.get(_VIEW) or View(runs_root=default_runs_dir())


def banner(view: View) -> None:
    """Say plainly when the data is the procedural demo world."""
    if view.is_demo:
        st.info(
            "**Demo world.** These runs were trained on the procedural multi-city world built by "
            "`train/build_demo.py`: synthetic street views whose appearance varies in space with known ranges, "
            "tiny models trained for minutes on a CPU. Point the app at your own runs with `--runs-dir`.",
            icon=":material/science:",
        )


def one_city(view: View, run: appstate.RunInfo, why: str) -> str:
    """The sidebar's city, or the run's first city with a caption saying so, for pages that show one city at a time.

    ``why`` completes "…: showing <city> (pick another in the sidebar)", e.g. "Variograms are per city".
    """
    cities = sorted(predictions(view.runs_root, run.run_id, run.stamp)["city"].astype(str).unique())
    city = view.city_or_none() or cities[0]
    if view.city_or_none() is None:
        st.caption(f"{why}: showing **{city}** (pick another in the sidebar).")
    return city


def require_run(view: View, what: str = "this page") -> appstate.RunInfo:
    """The main run, or a friendly empty state and stop."""
    if view.run is None:
        st.title("SW-CLIP Explorer")
        st.warning(f"No runs found in `{view.runs_root}`, so there is nothing for {what} to show yet.")
        st.markdown(
            "- `make run` builds the demo bundle (a procedural world and small CPU-trained models) "
            "into `runs/demo/` and opens the app on it.\n"
            "- Or build it yourself: `python train/build_demo.py --out runs/demo`.\n"
            "- Runs trained elsewhere: copy their run directories under one folder and start "
            "`streamlit run app.py -- --runs-dir /path/to/runs` (or set `SWCLIP_RUNS_DIR`)."
        )
        st.stop()
    return view.run


@st.cache_data(show_spinner=False)
def country_outlines() -> Optional[dict]:
    """Natural Earth 110m country outlines shipped in assets/ (None if the file is missing)."""
    import json

    try:
        return json.loads((APP_DIR / "assets" / "ne_110m_countries.geojson").read_text())
    except (OSError, ValueError):
        return None


def context_for(view: View, run: appstate.RunInfo, city: Optional[str], latlon: np.ndarray) -> dict:
    """Local map context for one city: demo streets, else nearby place names and country outlines."""
    lines = streets(view.runs_root, run.run_id, run.stamp).get(city, []) if city else []
    if lines:
        return {"streets": lines, "places": None, "outlines": None}
    if len(latlon) == 0:
        return {"streets": [], "places": None, "outlines": None}
    probe = latlon[np.linspace(0, len(latlon) - 1, min(len(latlon), 64)).astype(int)]
    return {"streets": [], "places": nearby_places(tuple(map(tuple, np.round(probe, 4)))), "outlines": country_outlines()}


@st.cache_data(show_spinner=False)
def train_log(runs_root: str, run_id: str, stamp: float) -> Optional[pd.DataFrame]:
    """train_log.csv of a run, or None."""
    try:
        return runs.read_train_log(appstate.inside_root(runs_root, run_id))
    except runs.RunError:
        return None


def city_deck(view: View, run: appstate.RunInfo, city: Optional[str], layers: list, frame_latlon: np.ndarray, tooltip: Optional[dict] = None, height_px: int = 430, width_px: int = 460):
    """A pydeck map of one city: local context (demo streets or place names) under ``layers``."""
    ctx = context_for(view, run, city, np.asarray(frame_latlon, dtype=np.float64).reshape(-1, 2))
    ctx_layers = maps.context_layers(ctx["streets"], ctx["places"], outlines=ctx["outlines"])
    return maps.deck(ctx_layers + list(layers), frame_latlon, tooltip=tooltip, height_px=height_px, width_px=width_px, paper=bool(ctx["streets"]))


@st.cache_data(show_spinner="Reading embeddings…")
def embeddings(runs_root: str, run_id: str, stamp: float) -> Optional[np.ndarray]:
    """embeddings.npy of a run as float32 (N, D), row-aligned with predictions; None when absent."""
    try:
        return np.asarray(runs.read_embeddings(appstate.inside_root(runs_root, run_id), mmap=False), dtype=np.float32)
    except runs.RunError:
        return None


@st.cache_resource(show_spinner="Indexing the training images…", max_entries=8)
def image_neighbours(runs_root: str, run_id: str, stamp: float):
    """(Gallery of training images, its SearchIndex) from image_gallery.npz, built once; None when absent."""
    from swclip.index import Gallery, SearchIndex

    path = appstate.inside_root(runs_root, run_id) / runs.ARTEFACTS["image_gallery"]
    if not path.exists():
        return None
    try:
        gallery = Gallery.load(path)
    except (runs.RunError, ValueError):
        return None
    return gallery, SearchIndex(gallery.embeddings, kind="flat")


def city_rows(runs_root: str, run: appstate.RunInfo, city: Optional[str]) -> np.ndarray:
    """Row indices of one city in a run's predictions (and so in its embeddings)."""
    df = predictions(runs_root, run.run_id, run.stamp)
    if city in (None, ALL_CITIES):
        return np.arange(len(df))
    return np.flatnonzero(df["city"].astype(str).to_numpy() == city)


@st.cache_data(show_spinner=False)
def image_root(runs_root: str, run_id: str, stamp: float) -> Optional[str]:
    run = _run(runs_root, run_id)
    p = appstate.image_root(run, runs_root) if run else None
    return str(p) if p else None


@st.cache_data(show_spinner=False, max_entries=4000)
def thumbnail(runs_root: str, img_root: Optional[str], rel: str, size_px: int = 128) -> Optional[np.ndarray]:
    """A sample image as an (H, W, 3) uint8 thumbnail, or None when missing or unreadable."""
    from swclip.data import ImageError, open_image

    path = appstate.image_path(Path(img_root) if img_root else None, rel, runs_root)
    if path is None:
        return None
    try:
        img = open_image(path)
    except ImageError:
        return None
    img = img.resize((size_px, size_px * img.height // max(img.width, 1)), resample=0)  # nearest: tiny renders stay crisp
    return np.asarray(img)


@st.cache_data(show_spinner="Reading the sample table…")
def sample_table(runs_root: str, run_id: str, stamp: float) -> Optional[pd.DataFrame]:
    """The run's training/evaluation sample table (id, image, lat, lon, city[, split]); None if not here."""
    from swclip.data import read_table

    run = _run(runs_root, run_id)
    path = appstate.table_path(run, runs_root) if run else None
    if path is None:
        return None
    try:
        return read_table(path, path.parent, check_images=False)
    except ValueError:
        return None


@st.cache_resource(show_spinner="Loading the model and building its search index…", max_entries=8)
def predictor(runs_root: str, run_id: str, stamp: float):
    """(swclip.index.Predictor, None), or (None, why) when the run cannot predict (no weights, no gallery…)."""
    from swclip.index import Predictor

    try:
        return Predictor.from_run(appstate.inside_root(runs_root, run_id), runs_root=runs_root), None
    except (runs.RunError, ValueError, OSError, KeyError) as e:
        return None, str(e)


def exif_latlon(data: bytes) -> Optional[tuple]:
    """(lat, lon) from a photo's EXIF GPS block, or None; never raises on odd files."""
    import io

    from swclip.data.table import exif_gps

    try:
        gps = exif_gps(io.BytesIO(data))
    except Exception:  # Pillow raises many types on odd EXIF; a missing GPS block is not an error
        return None
    lat, lon = gps.get("lat"), gps.get("lon")
    if lat is None or lon is None or not (np.isfinite(lat) and np.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return None
    return float(lat), float(lon)


def sample_image_path(runs_root: str, img_root: Optional[str], rel: str) -> Optional[Path]:
    """An evaluation sample's image file, only if it lies inside the runs directory."""
    return appstate.image_path(Path(img_root) if img_root else None, rel, runs_root)
