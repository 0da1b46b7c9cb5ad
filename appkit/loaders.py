"""Cached readers of one runs root: each goes through ``swclip.runs`` / ``swclip.catalog`` and keeps
every path inside the root (``swclip.io.resolve_inside``). Cache keys carry the run's manifest stamp, so a
rewritten run is read again."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from swclip import catalog, runs
from swclip.analysis.countries import country_accuracy
from swclip.analysis.metrics import extent_m, rva_summary, summarize, threshold_label
from swclip.data import ImageError, exif_gps, open_image, read_table
from swclip.io import RunError
from swclip.retrieval.search import SearchIndex
from swclip.runs import load_predictor
from swclip.viz import maps, scale
from swclip.viz.spatial_bins import h3_bins

APP_DIR = Path(__file__).resolve().parents[1]
ALL_CITIES = "All cities"


ENV_DATA_ROOT = "SWCLIP_DATA_ROOT"
NO_IMAGES = "The run's images are not under the data root (`--data-root`, else the runs directory)"


def default_data_root() -> str | None:
    """--data-root (after ``--`` on the streamlit command line), else $SWCLIP_DATA_ROOT, else None: the one
    trusted folder for images and sample tables (without one, the runs directory is)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-root")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.data_root or os.environ.get(ENV_DATA_ROOT) or None


def _trusted(runs_root: str) -> str:
    """The folder images and sample tables are read from (swclip.catalog.trusted_root)."""
    return str(catalog.trusted_root(runs_root, default_data_root()))


def open_run(runs_root: str, run_id: str) -> runs.Run:
    """The run ``run_id`` under ``runs_root`` (swclip.runs.Run.open: manifest only, path kept inside the root)."""
    return runs.Run.open(run_id, runs_root=runs_root)


@st.cache_data(show_spinner=False, ttl=10)
def discover(runs_root: str) -> tuple[list, list]:
    """(runs, broken) under the root; re-listed every 10 s so new runs appear."""
    return catalog.discover_runs(runs_root)


def _run(runs_root: str, run_id: str) -> runs.RunInfo | None:
    return next((r for r in discover(runs_root)[0] if r.run_id == run_id), None)


@st.cache_data(show_spinner=False)
def world(runs_root: str, run_id: str, stamp: float) -> dict | None:
    """The demo world.json of a run (None for real data)."""
    run = _run(runs_root, run_id)
    return catalog.read_world(catalog.find_world(run, runs_root)) if run else None


@st.cache_data(show_spinner=False)
def streets(runs_root: str, run_id: str, stamp: float) -> dict:
    """{city: street polylines} of a demo run's world ({} for real data)."""
    run = _run(runs_root, run_id)
    return catalog.read_streets(catalog.find_world(run, runs_root)) if run else {}


@st.cache_resource(show_spinner="Reading predictions…", max_entries=8)
def _loaded(runs_root: str, run_id: str, stamp: float) -> tuple:
    """(usable predictions, problems) of a run, read once per run identity and shared, never copied.

    Only the scalar columns are read (:func:`topk` reads the top-k lists on demand); the index is the
    row number in predictions.parquet and so in embeddings.npy. Problems (NaN coordinates, duplicate
    ids, an embeddings row count that disagrees) come from ``catalog.check_predictions``.
    """
    run = open_run(runs_root, run_id)
    df = run.predictions(scalar_only=True)
    try:
        n_emb = int(run.embeddings(mmap=True).shape[0])
    except RunError:
        n_emb = None
    return catalog.check_predictions(df, n_emb, run_id)


def predictions(runs_root: str, run_id: str, stamp: float) -> pd.DataFrame:
    """predictions.parquet of a run: one row per usable evaluation sample, index = its row in embeddings.npy.

    Shared between reruns and sessions (210,000 rows are not copied per call): treat it as read-only.
    """
    return _loaded(runs_root, run_id, stamp)[0]


@st.cache_data(show_spinner=False, max_entries=32)
def id_errors(runs_root: str, run_id: str, stamp: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids (N,), error_m (N,) metres, NaN for an abstention) of every row of predictions.parquet, abstentions
    included (the Runs page's leaderboard scores them); None without a readable table."""
    run = _run(runs_root, run_id)
    if run is None or not (run.path / runs.ARTEFACTS["predictions"]).is_file():
        return None
    try:
        df = runs.read_predictions(run.path, scalar_only=True)
    except RunError:
        return None
    if not {"id", "error_m"} <= set(df.columns) or df["id"].duplicated().any():
        return None
    return df["id"].astype(str).to_numpy(), df["error_m"].to_numpy(np.float64)


def run_problems(runs_root: str, run_id: str, stamp: float) -> list:
    """Sentences naming what is wrong with a run's predictions / embeddings (empty when nothing is)."""
    try:
        return _loaded(runs_root, run_id, stamp)[1]
    except RunError as e:
        return [str(e)]


@st.cache_resource(show_spinner=False, max_entries=8)
def topk(runs_root: str, run_id: str, stamp: float) -> tuple | None:
    """(latlon (N, K, 2), prob (N, K)) of a run's top-k candidates, row-aligned with predictions.parquet;
    None without them."""
    return open_run(runs_root, run_id).topk()


@st.cache_resource(show_spinner=False, max_entries=32)
def city_predictions(runs_root: str, run_id: str, stamp: float, city: str | None) -> pd.DataFrame:
    """The rows of one city (all rows for None / 'All cities'), index reset; shared, treat as read-only."""
    df = predictions(runs_root, run_id, stamp)
    if city in (None, ALL_CITIES) or "city" not in df:
        return df.reset_index(drop=True)
    return df[df["city"] == city].reset_index(drop=True)


@st.cache_data(show_spinner=False)
def run_scale(runs_root: str, run_id: str, stamp: float, city: str | None) -> scale.Scale:
    """View defaults from the spread of one city's samples (or of all of them)."""
    df = predictions(runs_root, run_id, stamp)
    if city not in (None, ALL_CITIES) and "city" in df:
        df = df[df["city"] == city]
    return scale.scale_for(extent_m(df[["lat", "lon"]].to_numpy(np.float64)))


@st.cache_data(show_spinner=False)
def nearby_places(latlon_key: tuple) -> pd.DataFrame:
    return maps.nearby_places(np.asarray(latlon_key, dtype=np.float64).reshape(-1, 2))


@st.cache_resource(show_spinner=False)
def country_outlines() -> dict | None:
    """Natural Earth 110m country outlines shipped in assets/ (None if the file is missing); one shared
    object, read-only (swclip.viz.maps encodes it to JSON once, by identity)."""

    try:
        return json.loads((APP_DIR / "assets" / "ne_110m_countries.geojson").read_text())
    except (OSError, ValueError):
        return None


@st.cache_data(show_spinner=False)
def train_log(runs_root: str, run_id: str, stamp: float) -> pd.DataFrame | None:
    """train_log.csv of a run, or None."""
    try:
        return open_run(runs_root, run_id).train_log()
    except RunError:
        return None


@st.cache_resource(show_spinner=False, max_entries=8)
def embeddings(runs_root: str, run_id: str, stamp: float) -> np.ndarray | None:
    """embeddings.npy of a run, memory-mapped as stored (float16 or float32, (N, D)), row-aligned with
    predictions.parquet; None when absent or when its row count disagrees (the sidebar says so).

    Index it with ``predictions(...).index`` rows and convert what you take: ``emb[rows].astype(np.float32)``.
    """
    run = open_run(runs_root, run_id)
    try:
        emb = run.embeddings(mmap=True)
        n = run.n_predictions()
    except RunError:
        return None
    return emb if emb.shape[0] == n else None


@st.cache_resource(show_spinner="Indexing the training images…", max_entries=8)
def image_neighbours(runs_root: str, run_id: str, stamp: float):
    """(Gallery of training images, its SearchIndex) from image_gallery.npz, built once; None when absent."""

    run = open_run(runs_root, run_id)
    if not run.has("image_gallery"):
        return None
    try:
        gallery = run.gallery("image_gallery")
    except ValueError:  # RunError included
        return None
    return gallery, SearchIndex(gallery.embeddings, kind="flat")


def city_rows(runs_root: str, run: runs.RunInfo, city: str | None) -> np.ndarray:
    """Row numbers of one city's usable samples in predictions.parquet, and so in embeddings.npy
    (``predictions(...).loc[rows]``)."""
    df = predictions(runs_root, run.run_id, run.stamp)
    if city in (None, ALL_CITIES):
        return df.index.to_numpy()
    return df.index.to_numpy()[df["city"].astype(str).to_numpy() == city]


def image_root(runs_root: str, run_id: str, stamp: float) -> str | None:
    """The folder the run's image paths are relative to, inside the data root (else the runs directory)."""
    return _image_root(runs_root, default_data_root(), run_id, stamp)


@st.cache_data(show_spinner=False)
def _image_root(runs_root: str, data_root: str | None, run_id: str, stamp: float) -> str | None:
    run = _run(runs_root, run_id)
    p = catalog.image_root(run, runs_root, data_root) if run else None
    return str(p) if p else None


def thumbnail(runs_root: str, img_root: str | None, rel: str, size_px: int = 128) -> np.ndarray | None:
    """A sample image as an (H, W, 3) uint8 thumbnail, or None when missing, unreadable or outside the data root."""
    return _thumbnail(_trusted(runs_root), img_root, rel, size_px)


@st.cache_data(show_spinner=False, max_entries=4000)
def _thumbnail(trusted_root: str, img_root: str | None, rel: str, size_px: int) -> np.ndarray | None:
    path = catalog.image_path(Path(img_root) if img_root else None, rel, trusted_root)
    if path is None:
        return None
    try:
        img = open_image(path)
    except ImageError:
        return None
    img = img.resize(
        (size_px, size_px * img.height // max(img.width, 1)), resample=0
    )  # nearest: tiny renders stay crisp
    return np.asarray(img)


def sample_table(runs_root: str, run_id: str, stamp: float) -> pd.DataFrame | None:
    """The run's training/evaluation sample table (id, image, lat, lon, city[, split]); None if not here."""
    return _sample_table(runs_root, default_data_root(), run_id, stamp)


@st.cache_data(show_spinner="Reading the sample table…")
def _sample_table(runs_root: str, data_root: str | None, run_id: str, stamp: float) -> pd.DataFrame | None:
    run = _run(runs_root, run_id)
    path = catalog.table_path(run, runs_root, data_root) if run else None
    if path is None:
        return None
    try:
        return read_table(path, path.parent, check_images=False)
    except ValueError:
        return None


@st.cache_resource(show_spinner="Loading the model and building its search index…", max_entries=8)
def predictor(runs_root: str, run_id: str, stamp: float):
    """(swclip.runs.load_predictor's Predictor, None), or (None, why) when the run cannot predict
    (no weights, no gallery…)."""

    try:
        return load_predictor(run_id, runs_root=runs_root), None
    except (ValueError, OSError, KeyError) as e:  # RunError is a ValueError
        return None, str(e)


def exif_latlon(data: bytes) -> tuple | None:
    """(lat, lon) from a photo's EXIF GPS block, or None; never raises on odd files."""

    try:
        gps = exif_gps(io.BytesIO(data))
    except Exception:  # Pillow raises many types on odd EXIF; a missing GPS block is not an error
        return None
    lat, lon = gps.get("lat"), gps.get("lon")
    if lat is None or lon is None or not (np.isfinite(lat) and np.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return None
    return float(lat), float(lon)


def sample_image_path(runs_root: str, img_root: str | None, rel: str) -> Path | None:
    """An evaluation sample's image file, only if it lies inside the data root (else the runs directory)."""
    return catalog.image_path(Path(img_root) if img_root else None, rel, _trusted(runs_root))


# ----------------------------------------------------------------- world-scale views


@st.cache_data(show_spinner="Binning errors into hexagons…", max_entries=32)
def error_hexes(
    runs_root: str, run_id: str, stamp: float, city: str | None, lo_m: float, hi_m: float, edge_m: float
) -> dict:
    """H3 cells (edge nearest ``edge_m``) of median error and count over one city's (or every) sample
    with lo ≤ error ≤ hi."""
    df = city_predictions(runs_root, run_id, stamp, city)
    err = df["error_m"].to_numpy(np.float64)
    keep = (err >= lo_m) & (err <= hi_m)
    return h3_bins(df[["lat", "lon"]].to_numpy(np.float64)[keep], err[keep], edge_m)


@st.cache_data(show_spinner=False, max_entries=16)
def accuracy_table(runs_root: str, run_id: str, stamp: float, by: str, thresholds_m: tuple) -> pd.DataFrame:
    """One row for all samples, then one per value of ``by`` ("city" or "country"): n, median, mean (metres),
    accuracy at ``thresholds_m`` (the view's scale, ``Scale.thresholds_m``)."""
    df = predictions(runs_root, run_id, stamp)
    summary = summarize(df["error_m"].to_numpy(), df[by].astype(str).to_numpy() if by in df else None)
    rows = [{by: "all", **summary}] + [{by: c, **v} for c, v in summary.get("per_city", {}).items()]
    acc = [threshold_label(t) for t in thresholds_m]
    return pd.DataFrame(rows)[[by, "n", "median_m", "mean_m", *acc]]


@st.cache_data(show_spinner="Countries by point-in-polygon…", max_entries=16)
def polygon_countries(runs_root: str, run_id: str, stamp: float) -> dict:
    """Country accuracy by point-in-polygon (swclip.analysis.countries): metrics.json's when evaluation wrote it,
    else computed here from the predictions. Adds "source"."""
    run = _run(runs_root, run_id)
    stored = catalog.read_metrics(run).get("countries") if run else None
    if isinstance(stored, dict) and "acc_country" in stored:
        return {**stored, "source": "from metrics.json"}
    df = predictions(runs_root, run_id, stamp)
    out = country_accuracy(df[["pred_lat", "pred_lon"]].to_numpy(np.float64), df[["lat", "lon"]].to_numpy(np.float64))
    return {**out, "source": "computed here (metrics.json has none)"}


@st.cache_data(show_spinner="Recall vs Area…", max_entries=32)
def rva(runs_root: str, run_id: str, stamp: float, city: str | None, max_queries: int = 1000) -> dict | None:
    """A run's Recall-vs-Area curve: metrics.json's (all cities) when evaluation wrote one, else computed here
    from the top-k on at most ``max_queries`` of the city's queries. None without top-k or a knn-kde bandwidth."""
    run = _run(runs_root, run_id)
    if run is None:
        return None
    if city in (None, ALL_CITIES):
        stored = catalog.read_metrics(run).get("rva")
        if isinstance(stored, dict) and {"areas_km2", "kde_bandwidth_m"} <= stored.keys():
            return {**stored, "source": "metrics.json"}
    kde_bandwidth_m = run.manifest.get("kde_bandwidth_m") or catalog.read_metrics(run).get("kde_bandwidth_m")
    tk = topk(runs_root, run_id, stamp)
    if tk is None or not kde_bandwidth_m:
        return None
    df = predictions(runs_root, run_id, stamp)
    rows = (
        df.index.to_numpy()
        if city in (None, ALL_CITIES)
        else df.index.to_numpy()[df["city"].astype(str).to_numpy() == city]
    )
    if len(rows) == 0:
        return None
    out = rva_summary(
        tk[0][rows],
        tk[1][rows],
        df.loc[rows, ["lat", "lon"]].to_numpy(np.float64),
        float(kde_bandwidth_m),
        max_queries=max_queries,
    )
    return {**out, "source": "computed here"}
