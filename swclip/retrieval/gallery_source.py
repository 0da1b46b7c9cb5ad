"""Which places a location gallery holds: the gallery split's locations, or GeoCLIP's 100K coordinates.

    latlon, city = gallery_places("split", model, train_rows)   # the training locations (the default)
    latlon, city = gallery_places("geoclip100k", model)         # GeoCLIP's world-scale GPS gallery
    gallery = Gallery.from_locations(model, latlon, city=city)    # encoded by the run's own location tower

- ``split``: the locations of the gallery split's rows (the training rows unless told
  otherwise). A text tower reads each row's city name.
- ``geoclip100k``: the 100,000 coordinates GeoCLIP ships as its GPS gallery
  (``geoclip/model/gps_gallery/coordinates_100K.csv`` in the geoclip wheel, read as numbers
  by ``swclip.method.geoclip_wheel.geoclip_gallery_latlon``; nothing is unpickled), for
  world-scale prediction (OSV-5M). They carry no city names, so a text tower's ``{in_city}``
  stays empty. 5,877 of the rows repeat an earlier row exactly; like every location gallery
  (``Gallery.from_locations``) the gallery keeps each place once: 94,123 places, in the
  CSV's order.

The run's own location tower encodes either set, so the gallery always matches the run's
weights. ``swclip evaluate --gallery geoclip100k`` (or ``data.gallery: geoclip100k`` in a
training config with ``evaluate: true``) stores it as the run's gallery.npz, which
``swclip predict`` and the app's Predict page then search. :func:`gallery_record` is what
manifest.json and metrics.json say about it.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np

from swclip.method.geoclip_wheel import GALLERY_FILE, geoclip_gallery_latlon

GALLERY_SOURCES = ("split", "geoclip100k")


def check_gallery_source(source: str, key: str = "gallery") -> str:
    """``source`` if it is one of GALLERY_SOURCES, else ValueError naming ``key`` and the choices."""
    if source not in GALLERY_SOURCES:
        raise ValueError(
            f"{key} {source!r} unknown; choose split (the gallery split's locations, the default) "
            "or geoclip100k (GeoCLIP's 100K coordinates, world scale)"
        )
    return source


def gallery_places(source: str, model=None, table=None) -> tuple[np.ndarray, list | None]:
    """(latlon (N, 2) float64 degrees, city: N names or None) of a location gallery, before encoding.

    split: ``table``'s lat, lon (and its city column when ``model`` has a text tower);
    geoclip100k: GeoCLIP's CSV, no city names (FileNotFoundError naming the fix when the geoclip
    wheel is not installed).
    """
    if check_gallery_source(source) == "geoclip100k":
        return geoclip_gallery_latlon(), None
    if table is None:
        raise ValueError("gallery 'split' needs the gallery split's rows (table=)")
    text = getattr(getattr(model, "config", None), "location_tower", "gps") == "text"
    city = table["city"].astype(str).tolist() if text and "city" in table else None
    return table[["lat", "lon"]].to_numpy(np.float64), city


def gallery_record(source: str, n_gallery: int, split: str | None = None) -> dict:
    """What manifest.json ("gallery") and metrics.json ("gallery_source") record about a location gallery.

    split: the gallery split (source "split"); geoclip100k records the wheel's file and version.
    """
    record = {"source": check_gallery_source(source), "n_gallery": int(n_gallery)}
    if source == "split":
        record["split"] = split
    else:
        record["file"] = GALLERY_FILE
        record["geoclip_version"] = importlib.metadata.version("geoclip")
    return record


def stored_gallery_source(manifest: dict) -> str:
    """Source of a run's gallery.npz as its manifest records it ("split" for runs evaluated before the record)."""
    return (manifest.get("gallery") or {}).get("source", "split")
