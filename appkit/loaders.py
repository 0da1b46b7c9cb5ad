"""Cached readers of one runs root: each goes through ``swclip.runs`` / ``swclip.catalog`` and keeps
every path inside the root (``swclip.io.resolve_inside``). Cache keys carry the run's manifest stamp, so a
rewritten run is read again."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from swclip import catalog, runs
from swclip.data import ImageError, exif_gps, open_image, read_table
from swclip.io import RunError
from swclip.retrieval.predictor import Predictor
from swclip.retrieval.search import SearchIndex
from swclip.viz import maps

APP_DIR = Path(__file__).resolve().parents[1]
ALL_CITIES = "All cities"

def open_run(runs_root: str, run_id: str) -> runs.Run:
    """The run ``run_id`` under ``runs_root`` (swclip.runs.Run.open: manifest only, path kept inside the root)."""
    return runs.Run.open(run_id, runs_root=runs_root)


@st.cache_data(show_spinner=False, ttl=10)
def discover(runs_root: str) -> tuple[list, list]:
    """(runs, broken) under the root; re-listed every 10 s so new runs appear."""
    return catalog.discover_runs(runs_root)


def _run(runs_root: str, run_id: str) -> Optional[runs.RunInfo]:
    return next((r for r in discover(runs_root)[0] if r.run_id == run_id), None)


@st.cache_data(show_spinner=False)
def world(runs_root: str, run_id: str, stamp: float) -> Optional[dict]:
    """The demo world.json of a run (None for real data)."""
    run = _run(runs_root, run_id)
    return catalog.read_world(catalog.find_world(run, runs_root)) if run else None


@st.cache_data(show_spinner=False)
def streets(runs_root: str, run_id: str, stamp: float) -> dict:
    """{city: street polylines} of a demo run's world ({} for real data)."""
    run = _run(runs_root, run_id)
    return catalog.read_streets(catalog.find_world(run, runs_root)) if run else {}


@st.cache_data(show_spinner="Reading predictions…")
def predictions(runs_root: str, run_id: str, stamp: float) -> pd.DataFrame:
    """predictions.parquet of a run (one row per evaluation sample)."""
    return open_run(runs_root, run_id).predictions()


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


@st.cache_data(show_spinner=False)
def country_outlines() -> Optional[dict]:
    """Natural Earth 110m country outlines shipped in assets/ (None if the file is missing)."""

    try:
        return json.loads((APP_DIR / "assets" / "ne_110m_countries.geojson").read_text())
    except (OSError, ValueError):
        return None


@st.cache_data(show_spinner=False)
def train_log(runs_root: str, run_id: str, stamp: float) -> Optional[pd.DataFrame]:
    """train_log.csv of a run, or None."""
    try:
        return open_run(runs_root, run_id).train_log()
    except RunError:
        return None


@st.cache_data(show_spinner="Reading embeddings…")
def embeddings(runs_root: str, run_id: str, stamp: float) -> Optional[np.ndarray]:
    """embeddings.npy of a run as float32 (N, D), row-aligned with predictions; None when absent."""
    try:
        return np.asarray(open_run(runs_root, run_id).embeddings(mmap=False), dtype=np.float32)
    except RunError:
        return None


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


def city_rows(runs_root: str, run: runs.RunInfo, city: Optional[str]) -> np.ndarray:
    """Row indices of one city in a run's predictions (and so in its embeddings)."""
    df = predictions(runs_root, run.run_id, run.stamp)
    if city in (None, ALL_CITIES):
        return np.arange(len(df))
    return np.flatnonzero(df["city"].astype(str).to_numpy() == city)


@st.cache_data(show_spinner=False)
def image_root(runs_root: str, run_id: str, stamp: float) -> Optional[str]:
    run = _run(runs_root, run_id)
    p = catalog.image_root(run, runs_root) if run else None
    return str(p) if p else None


@st.cache_data(show_spinner=False, max_entries=4000)
def thumbnail(runs_root: str, img_root: Optional[str], rel: str, size_px: int = 128) -> Optional[np.ndarray]:
    """A sample image as an (H, W, 3) uint8 thumbnail, or None when missing or unreadable."""
    path = catalog.image_path(Path(img_root) if img_root else None, rel, runs_root)
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

    run = _run(runs_root, run_id)
    path = catalog.table_path(run, runs_root) if run else None
    if path is None:
        return None
    try:
        return read_table(path, path.parent, check_images=False)
    except ValueError:
        return None


@st.cache_resource(show_spinner="Loading the model and building its search index…", max_entries=8)
def predictor(runs_root: str, run_id: str, stamp: float):
    """(swclip.retrieval.predictor.Predictor, None), or (None, why) when the run cannot predict (no weights, no gallery…)."""

    try:
        return Predictor.from_run(run_id, runs_root=runs_root), None
    except (ValueError, OSError, KeyError) as e:  # RunError is a ValueError
        return None, str(e)


def exif_latlon(data: bytes) -> Optional[tuple]:
    """(lat, lon) from a photo's EXIF GPS block, or None; never raises on odd files."""


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
    return catalog.image_path(Path(img_root) if img_root else None, rel, runs_root)
