"""The shared frame of every page: runs directory, sidebar (runs, city, σ), demo banner.

Every page starts with ``view = frame.ensure_frame()``, so a page works the same
under ``st.navigation`` in app.py (which draws the frame first, :func:`run_routed`),
opened on its own, and under AppTest."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st

from appkit.loaders import (
    ALL_CITIES,
    APP_DIR,
    country_outlines,
    default_data_root,
    discover,
    nearby_places,
    predictions,
    run_problems,
    run_scale,
    streets,
)
from appkit.urlstate import begin_run, prune_url, url_widget
from swclip.geo import haversine_m
from swclip.io import RunError
from swclip.runs import KIND_IMPORTED, RunInfo
from swclip.viz import maps, scale

ENV_RUNS_DIR = "SWCLIP_RUNS_DIR"
STATIC_DIR = APP_DIR / "static"
_VIEW = "_view"
_ROUTED = "_frame_drawn_by_app"

MIN_CITY_DEFAULT = 10  # median samples per city from which the sidebar opens on one city rather than all
SIGMA_CHOICES_M = scale.SIGMA_CHOICES_M  # 10 m to 2,000 km, log scale


def default_runs_dir() -> str:
    """--runs-dir (after ``--`` on the streamlit command line), else $SWCLIP_RUNS_DIR, else runs/."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs-dir")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.runs_dir or os.environ.get(ENV_RUNS_DIR) or "runs"


@st.cache_resource(show_spinner=False)
def install_static() -> str | None:
    """Copy Leaflet into ./static once per server process (served at /app/static/leaflet); None if it cannot."""
    try:
        return str(maps.install_leaflet(STATIC_DIR))
    except OSError as e:  # a read-only install: `make run` stages it beforehand
        print(f"warning: cannot stage Leaflet into {STATIC_DIR}: {e}; folium maps need it there", file=sys.stderr)
        return None


@dataclass
class View:
    """What the sidebar selected: shared by every page."""

    runs_root: str
    available: list = field(default_factory=list)
    selected: list = field(default_factory=list)
    city: str | None = None
    sigma_m: float = 100.0
    scale: scale.Scale | None = None  # of the main run's samples in the chosen city (all of them: All cities)

    @property
    def run(self) -> RunInfo | None:
        return self.selected[0] if self.selected else None

    @property
    def is_demo(self) -> bool:
        return bool(self.selected) and all(r.is_demo for r in self.selected)

    def city_or_none(self) -> str | None:
        return None if self.city in (None, ALL_CITIES) else self.city


def sidebar() -> View:
    """Draw the shared sidebar and return the selection."""
    sb = st.sidebar
    # Fixed by whoever starts the app (--runs-dir / $SWCLIP_RUNS_DIR), not by visitors: the app
    # reads nothing outside it, so it must not be a text box a visitor can point at /.
    runs_root = default_runs_dir()
    sb.caption(
        f"Runs directory: `{runs_root}`",
        help="Set with `streamlit run app.py -- --runs-dir DIR` or $SWCLIP_RUNS_DIR; the app reads nothing outside it.",
    )
    data_root = default_data_root()
    sb.caption(
        f"Data root: `{data_root}`" if data_root else "Data root: none (images are read from the runs directory)",
        help="Set with `streamlit run app.py -- --runs-dir R --data-root D` or $SWCLIP_DATA_ROOT: the one folder "
        "thumbnails, Failures and Predict's evaluation samples read images from (symlinks resolved).",
    )
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
            st.multiselect,
            "Runs (the first is the main one)",
            "run",
            [ids[0]],
            parse=lambda s: [x for x in s.split(",") if x],
            fmt=",".join,
            valid=lambda v: isinstance(v, list) and len(v) > 0 and all(x in by_id for x in v),
            options=ids,
            format_func=lambda i: by_id[i].label,
        )
        if not chosen:
            st.caption("Pick at least one run; showing the newest.")
            chosen = [ids[0]]
        view.selected = [by_id[i] for i in chosen]
        try:
            df = predictions(runs_root, view.run.run_id, view.run.stamp)
        except RunError as e:
            st.error(f"Cannot read the predictions of {view.run.run_id}: {e}")
            st.stop()
        cities = [ALL_CITIES] + (sorted(df["city"].astype(str).unique()) if "city" in df else [])
        # one city at a time where cities hold enough samples to show; a world sample (a few photos per
        # city, as OSV-5M's) opens on all of them
        view.city = url_widget(
            st.selectbox,
            "City",
            "city",
            cities[1] if len(cities) > 1 and not few_per_city(view, view.run) else ALL_CITIES,
            valid=lambda v: v in cities,
            options=cities,
        )
        view.scale = run_scale(runs_root, view.run.run_id, view.run.stamp, view.city)
        st.caption(
            view.scale.describe(),
            help="Street/city up to 30 km across (metres, accuracy at 25 m – 1 km); region/country up to "
            "2,500 km (km, accuracy at 1 – 200 km); world beyond (km, accuracy at 1 – 2,500 km and admin levels). "
            "Thresholds, units, sliders, map zoom and variogram lags follow it.",
        )
        # The run's own σ; a one-hot run gets a σ on the scale of its samples' spread (a twentieth of it).
        spread = view.scale.extent_m
        default_sigma = scale.nearest(SIGMA_CHOICES_M, view.run.sigma_m or max(spread / 20, 10.0))
        view.sigma_m = float(
            url_widget(
                st.select_slider,
                "σ, kernel bandwidth (log scale)",
                "sigma",
                default_sigma,
                parse=lambda s: int(float(s)),
                valid=lambda v: v in SIGMA_CHOICES_M,
                options=SIGMA_CHOICES_M,
                format_func=scale.fmt_m,
            )
        )
        for r in view.selected:
            if r.stale:  # discover_runs lists it after every fresh run, so it is only shown when picked
                st.error(f"{r.run_id}: {r.stale}", icon=":material/history:")
            for problem in run_problems(runs_root, r.run_id, r.stamp):
                st.warning(problem, icon=":material/warning:")
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


def banner(view: View) -> None:
    """Say plainly when the data is the procedural demo world."""
    if view.is_demo:
        st.info(
            "**Demo world.** These runs were trained on the procedural multi-city world built by "
            "`train/build_demo.py`: synthetic street views whose appearance varies in space with known ranges, "
            "tiny models trained for minutes on a CPU. Point the app at your own runs with `--runs-dir`.",
            icon=":material/science:",
        )


def few_per_city(view: View, run: RunInfo) -> bool:
    """Whether the run's cities hold fewer than MIN_CITY_DEFAULT samples each (median): a world sample such as
    OSV-5M's, where one city at a time shows a photo or two and pages pool every city instead."""
    df = predictions(view.runs_root, run.run_id, run.stamp)
    return "city" in df and len(df) > 0 and df["city"].astype(str).value_counts().median() < MIN_CITY_DEFAULT


def one_city(view: View, run: RunInfo, why: str) -> str:
    """The sidebar's city, or the run's first city with a caption saying so, for pages that show one city at a time.

    ``why`` completes "…: showing <city> (pick another in the sidebar)", e.g. "Variograms are per city".
    """
    cities = sorted(predictions(view.runs_root, run.run_id, run.stamp)["city"].astype(str).unique())
    city = view.city_or_none() or cities[0]
    if view.city_or_none() is None:
        st.caption(f"{why}: showing **{city}** (pick another in the sidebar).")
    return city


def imported_lacks(run: RunInfo, what: str) -> bool:
    """For an imported run (another model's predictions), say in one line what this page cannot show; -> True then.

    ``what`` completes "…: <what>", e.g. "predicting a new photo needs a trained run's model".
    """
    if run.kind != KIND_IMPORTED:
        return False
    st.info(
        f"`{run.run_id}` holds imported predictions of **{run.manifest.get('model')}**"
        + (f" (from `{Path(run.source).name}`)" if run.source else "")
        + f": {what}.",
        icon=":material/info:",
    )
    return True


def require_run(view: View, what: str = "this page") -> RunInfo:
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


def batch_slider(n_samples: int) -> int:
    """The "Batch size B" slider (URL key ``batch``): 2 to min(512, n_samples), default min(256, n_samples)."""
    max_b = int(min(512, n_samples))
    return url_widget(
        st.slider,
        "Batch size B",
        "batch",
        min(256, max_b),
        parse=int,
        valid=lambda v: isinstance(v, int) and 2 <= v <= max_b,
        min_value=2,
        max_value=max(max_b, 3),
        step=1,
    )


def context_for(view: View, run: RunInfo, city: str | None, latlon: np.ndarray) -> dict:
    """Local map context for one city: demo streets, else nearby place names and country outlines (outlines
    only when the points spread over more than a city)."""
    lines = streets(view.runs_root, run.run_id, run.stamp).get(city, []) if city else []
    if lines:
        return {"streets": lines, "places": None, "outlines": None}
    if len(latlon) == 0:
        return {"streets": [], "places": None, "outlines": None}
    corners = np.array([latlon.min(0), latlon.max(0)])
    if (
        haversine_m(corners[:1], corners[1:])[0] > scale.WORLD_EXTENT_M
    ):  # a dozen town names say nothing at country scale
        return {"streets": [], "places": None, "outlines": country_outlines()}
    probe = latlon[np.linspace(0, len(latlon) - 1, min(len(latlon), 64)).astype(int)]
    return {
        "streets": [],
        "places": nearby_places(tuple(map(tuple, np.round(probe, 4)))),
        "outlines": country_outlines(),
    }


def city_deck(
    view: View,
    run: RunInfo,
    city: str | None,
    layers: list,
    frame_latlon: np.ndarray,
    tooltip: dict | None = None,
    height_px: int = 430,
    width_px: int = 460,
):
    """A pydeck map of one city: local context (demo streets or place names) under ``layers``."""
    ctx = context_for(view, run, city, np.asarray(frame_latlon, dtype=np.float64).reshape(-1, 2))
    ctx_layers = maps.context_layers(ctx["streets"], ctx["places"], outlines=ctx["outlines"])
    return maps.deck(
        ctx_layers + list(layers),
        frame_latlon,
        tooltip=tooltip,
        height_px=height_px,
        width_px=width_px,
        paper=bool(ctx["streets"]),
    )


def draw_frame() -> View:
    """Draw the shared frame (sidebar, demo banner) for this script run; -> the sidebar's View."""
    begin_run()
    install_static()
    view = sidebar()
    banner(view)
    return view


def leave_legacy_pages_mode() -> None:
    """Rerun at once when Streamlit ran this script in its legacy ``pages/``-folder mode (multipage v1).

    Streamlit decides between v1 (a navigation built from the ``pages/`` folder, file names as titles)
    and ``st.navigation`` (v2) with one process-wide flag, ``PagesManager.uses_pages_directory``: True
    while a ``pages/`` folder sits beside app.py, False from the first ``st.navigation`` call on.
    Until then every run goes through v1. So a fresh server whose first request is a link to
    ``/error_map`` runs that page alone and stays in v1 for every session after it (file names in
    the sidebar), and AppTest, which resets the flag before each run, loses the sidebar's widget
    state on every rerun. Both were seen with Streamlit 1.67 (tests/test_browser.py and
    tests/test_app.py check them). Clearing the flag before any element is drawn and rerunning
    puts the same URL path through app.py's ``st.navigation``: v1 and v2 name a page by the same
    hash of its url path, so the rerun lands on the page that was asked for.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def ensure_frame() -> View:
    """The first call of every page: the frame's View, drawing the frame unless app.py already did this run.

    Under ``st.navigation`` app.py draws the frame before the page (:func:`run_routed`), so the sidebar's
    widgets keep one identity across page switches; a page opened on its own, or by
    ``AppTest.from_file("pages/x.py")``, draws the same frame itself.
    """
    leave_legacy_pages_mode()
    if st.session_state.get(_ROUTED):
        return st.session_state[_VIEW]
    return draw_frame()


def run_routed(page) -> None:
    """app.py: draw the frame, then run the chosen page; at the end prune the URL of other pages' keys."""
    draw_frame()
    st.session_state[_ROUTED] = True  # for this run only: a page run on its own never sees it
    try:
        page.run()
    finally:
        st.session_state.pop(_ROUTED, None)
        prune_url()
