"""The sample table and its readers: generic CSV/Parquet, OSV-5M, a folder of EXIF-tagged photos.

One in-memory schema, a pandas DataFrame::

    id (str), image (str: path relative to the dataset root, or a shard key),
    lat, lon (float64 degrees), city (str)
    optional: country, split, heading (degrees from north), captured_at,
    place_id (str: photos of one place share it; derived when absent, see :func:`with_place_ids`)

Every reader validates (``swclip.data.validate``) and by default raises
``DataValidationError`` with the full report; ``drop_invalid=True`` drops the
flagged rows and keeps the report in ``table.attrs["validation"]``. The dataset
root is kept in ``table.attrs["root"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from swclip.data.validate import OPTIONAL, REQUIRED, apply_report, validate
from swclip.geo import PLACE_TOLERANCE_M, place_ids

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Schema dtypes: id/image/city as str (NaN city kept so validation sees it), lat/lon/heading float64.

    Unparseable coordinates become NaN here and are reported by validation, not dropped.
    """
    out = df.copy()
    out["id"] = out["id"].astype(str)
    out["image"] = out["image"].astype(str)
    out["city"] = out["city"].where(out["city"].isna(), out["city"].astype(str))
    if "place_id" in out.columns:
        out["place_id"] = out["place_id"].where(out["place_id"].isna(), out["place_id"].astype(str))
    for c in ("lat", "lon", "heading"):
        if c in out.columns:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
    cols = [c for c in REQUIRED + OPTIONAL if c in out.columns] + [
        c for c in out.columns if c not in REQUIRED + OPTIONAL
    ]
    return out[cols]


def with_place_ids(df: pd.DataFrame, tolerance_m: float = PLACE_TOLERANCE_M) -> pd.DataFrame:
    """The table with a ``place_id`` for every row: the given one where the column has it, else derived from
    the coordinates rounded to ``tolerance_m`` (``swclip.geo.place_ids``). The tolerance used is kept in
    ``attrs["place_tolerance_m"]`` (None when every id was given)."""
    given = df["place_id"].notna().to_numpy() if "place_id" in df.columns else np.zeros(len(df), dtype=bool)
    out = df.copy()
    if given.all() and len(df):
        out.attrs["place_tolerance_m"] = None
        return out
    derived = place_ids(df[["lat", "lon"]].to_numpy(np.float64), tolerance_m)
    out["place_id"] = np.where(given, out["place_id"] if "place_id" in out.columns else "", derived).astype(object)
    out.attrs["place_tolerance_m"] = float(tolerance_m)
    return out


def _finish(
    df, root, drop_invalid, min_city_samples, check_images, source, place_tolerance_m=PLACE_TOLERANCE_M
) -> pd.DataFrame:
    report = validate(df, root, min_city_samples=min_city_samples, check_images=check_images, source=source)
    out = with_place_ids(apply_report(df, report, drop_invalid), place_tolerance_m)
    out.attrs["root"] = str(Path(root).resolve()) if root is not None else None
    return out


class EmptyTableError(ValueError):
    """A sample table file with no rows: empty (0 bytes, no header) or a header alone."""


def _read_any(path: Path) -> pd.DataFrame:
    """A table file as read (CSV / TSV as strings); EmptyTableError naming the file when it holds no rows."""
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such table file")
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            raw = pd.read_parquet(path)
        elif name.endswith((".tsv", ".tsv.gz")):
            raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=True)
        elif name.endswith((".csv", ".csv.gz")):
            raw = pd.read_csv(path, dtype=str, keep_default_na=True)
        else:
            raise ValueError(f"{path}: unknown table format; expected .csv, .csv.gz, .tsv or .parquet")
    except pd.errors.EmptyDataError:
        raise EmptyTableError(f"{path}: empty table file (no header, no rows)") from None
    if len(raw) == 0:
        raise EmptyTableError(f"{path}: the table has a header ({', '.join(map(str, raw.columns))}) but no rows")
    return raw


def read_table(
    path,
    root=None,
    columns: dict[str, str] | None = None,
    drop_invalid: bool = False,
    min_city_samples: int = 1,
    check_images: str | bool = "header",
    city: str | None = None,
    place_tolerance_m: float = PLACE_TOLERANCE_M,
) -> pd.DataFrame:
    """Read a generic CSV/TSV/Parquet sample table.

    path: the table file. root: the folder its image paths are relative to
    (default: the table's folder).
    columns: schema name -> the file's column name, for files that name them
    differently, e.g. ``{"lat": "latitude", "lon": "longitude", "image": "path"}``.
    city: a constant city for tables without a city column.
    place_tolerance_m: rows without a place_id get one from their coordinates rounded to this many metres.
    drop_invalid, min_city_samples, check_images: see ``swclip.data.validate``.
    Returns the sample table (schema columns first, extra columns kept).
    Raises ValueError naming missing columns, DataValidationError with the report.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    raw = _read_any(path)
    mapping = {k: k for k in REQUIRED + OPTIONAL}
    unknown = set(columns or {}) - set(mapping)
    if unknown:
        raise ValueError(
            f"columns: unknown schema name(s) {sorted(unknown)}; the schema is {list(REQUIRED + OPTIONAL)}"
        )
    mapping.update(columns or {})
    if city is not None and mapping["city"] not in raw.columns:
        raw = raw.assign(**{mapping["city"]: city})
    missing = [f"{k!r} (looked for column {v!r})" for k, v in mapping.items() if k in REQUIRED and v not in raw.columns]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has {list(raw.columns)}. "
            f"Map them with columns={{schema_name: file_column}}"
        )
    renamed = raw.rename(columns={v: k for k, v in mapping.items() if v in raw.columns and v != k})
    return _finish(
        _normalise(renamed), root, drop_invalid, min_city_samples, check_images, str(path), place_tolerance_m
    )


def read_osv5m(
    root,
    split: str = "train",
    drop_invalid: bool = False,
    min_city_samples: int = 1,
    check_images: str | bool = "header",
) -> pd.DataFrame:
    """Read the OSV-5M layout: ``<root>/<split>.csv`` and images at ``<root>/images/<split>/<id>.jpg``.

    The CSV has ``id, latitude, longitude, country, region, sub-region, city, ...``.
    If the images were unzipped into sub-folders (``images/<split>/00/<id>.jpg``),
    they are found by one walk of ``images/<split>``.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"OSV-5M split must be 'train' or 'test', got {split!r}")
    csv = root / f"{split}.csv"
    raw = _read_any(csv)
    need = ["id", "latitude", "longitude", "city"]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise ValueError(f"{csv}: not an OSV-5M table, missing column(s) {missing}; it has {list(raw.columns)}")
    df = raw.rename(columns={"latitude": "lat", "longitude": "lon"})
    ids = df["id"].astype(str)
    direct = [f"images/{split}/{i}.jpg" for i in ids]
    if len(direct) and not (root / direct[0]).is_file():
        found = {}
        base = root / "images" / split
        for dirpath, _, files in os.walk(base):
            for f in files:
                stem, ext = os.path.splitext(f)
                if ext.lower() in (".jpg", ".jpeg"):
                    found.setdefault(stem, os.path.relpath(os.path.join(dirpath, f), root))
        direct = [found.get(i, d) for i, d in zip(ids, direct)]
    df["image"] = direct
    df["split"] = split
    return _finish(_normalise(df), root, drop_invalid, min_city_samples, check_images, str(csv))


def _rational(x) -> float:
    try:
        return float(x)
    except TypeError:
        return float(x[0]) / float(x[1])


def exif_gps(path) -> dict:
    """GPS and time from a photo's EXIF: dict(lat, lon, heading, captured_at); NaN/None where absent."""
    from PIL import ExifTags, Image

    out = dict(lat=np.nan, lon=np.nan, heading=np.nan, captured_at=None)
    with Image.open(path) as img:
        exif = img.getexif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    try:
        if 2 in gps and 4 in gps:
            lat = sum(_rational(v) / 60**k for k, v in enumerate(gps[2]))
            lon = sum(_rational(v) / 60**k for k, v in enumerate(gps[4]))
            out["lat"] = -lat if str(gps.get(1, "N")).upper().startswith("S") else lat
            out["lon"] = -lon if str(gps.get(3, "E")).upper().startswith("W") else lon
        if 17 in gps:
            out["heading"] = _rational(gps[17])
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        pass  # malformed GPS block: NaN coordinates, reported by validation
    taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    out["captured_at"] = str(taken) if taken else None
    return out


def read_exif_folder(
    root,
    city_from: str = "folder",
    cities: dict[str, str] | str | None = None,
    drop_invalid: bool = False,
    min_city_samples: int = 1,
    check_images: str | bool = "header",
) -> pd.DataFrame:
    """Read a folder of photos whose EXIF carries GPS (searched recursively).

    city_from:
    - "folder": the first folder under ``root`` (``root/Leeds/x.jpg`` -> Leeds);
    - "column": from ``cities``, a mapping or a CSV file with columns ``image, city``
      (image paths relative to ``root``);
    - "geocode": nearest place in reverse_geocoder's offline GeoNames table
      (cities over 1,000 people), which also fills ``country``.
    Photos without GPS keep NaN coordinates and are reported as ``bad_coords``;
    unreadable files are reported as ``unreadable_image``. id = path without suffix.
    """
    root = Path(root)
    if city_from not in ("folder", "column", "geocode"):
        raise ValueError(f"city_from must be 'folder', 'column' or 'geocode', got {city_from!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    rows = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        try:
            meta = exif_gps(p)
        except Exception:  # unreadable: validation reports it with the reason
            meta = dict(lat=np.nan, lon=np.nan, heading=np.nan, captured_at=None)
        rows.append(dict(id=os.path.splitext(rel)[0], image=rel, **meta))
    df = pd.DataFrame(rows)
    if city_from == "folder":
        df["city"] = [r.split("/")[0] if "/" in r else None for r in df["image"]]
    elif city_from == "column":
        if cities is None:
            raise ValueError("city_from='column' needs cities=: a dict image -> city or a CSV with columns image, city")
        if not isinstance(cities, dict):
            ct = _read_any(Path(cities))
            if not {"image", "city"} <= set(ct.columns):
                raise ValueError(f"{cities}: needs columns image, city; it has {list(ct.columns)}")
            cities = dict(zip(ct["image"].astype(str), ct["city"]))
        df["city"] = df["image"].map(cities)
    else:
        df["city"], df["country"] = None, None
        ok = np.isfinite(df["lat"]) & np.isfinite(df["lon"]) & (df["lat"].abs() <= 90)
        if ok.any():
            import reverse_geocoder

            hits = reverse_geocoder.search(list(zip(df.loc[ok, "lat"], df.loc[ok, "lon"])), mode=1, verbose=False)
            df.loc[ok, "city"] = [h["name"] for h in hits]
            df.loc[ok, "country"] = [h["cc"] for h in hits]
    return _finish(_normalise(df), root, drop_invalid, min_city_samples, check_images, str(root))
