"""Predictions tables from any model: reading them, recognising their columns, checking them.

One in-memory schema, a pandas DataFrame with one row per photo::

    id (str), lat, lon (float64 degrees, the truth), pred_lat, pred_lon (float64 degrees; NaN in both
    where the model gave no prediction: an abstention)
    optional: image (str, relative to an images root), city, country, region, sub_region, split (str),
    confidence (float), topk_lat, topk_lon, topk_prob (lists of k floats per row, best first)

Column names that published tables already use are recognised without a mapping (PREDICTION_PAIRS,
TRUTH_PAIRS, OPTIONAL_NAMES): OSV-5M's ``latitude, longitude, pred_latitude, pred_longitude``,
``true_lat, true_lon, pred_lat, pred_lon``, ``gt_lat, gt_long, predicted_lat, predicted_long``; top-k
as list columns (``topk_lat, topk_lon, topk_prob``) or as ``pred_lat_1 … pred_lat_k`` with
``pred_lon_i`` and ``prob_i``. A *wide* table holds one prediction pair per model,
``pred_lat_<model>, pred_lon_<model>`` (a bare ``pred_lat, pred_lon`` pair beside them is the model
named BARE_MODEL); :func:`prediction_models` lists them and :func:`resolve_columns` picks one.
Anything else is mapped by hand: ``columns={schema name: file column}``, as ``read_table`` does.

An empty prediction cell is an abstention and is kept; a prediction that is present but malformed
(latitude 200, a word) is an error. Every error is a :class:`PredictionsError` naming the problem,
how many rows have it and the first one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from swclip.data.images import resolve_image_path

REQUIRED = ("id", "lat", "lon", "pred_lat", "pred_lon")
OPTIONAL_NAMES = {  # schema name -> column names recognised, first found wins
    "image": ("image", "image_path", "path", "file"),
    "city": ("city",),
    "country": ("country",),
    "region": ("region",),
    "sub_region": ("sub_region", "sub-region", "area"),
    "split": ("split",),
    "confidence": ("confidence", "conf", "score_confidence"),
}
TOPK = ("topk_lat", "topk_lon", "topk_prob")
SCHEMA = REQUIRED + tuple(OPTIONAL_NAMES) + TOPK
ID_NAMES = ("id", "image_id", "img_id")
TRUTH_PAIRS = (("lat", "lon"), ("latitude", "longitude"), ("true_lat", "true_lon"), ("gt_lat", "gt_long"))
PREDICTION_PAIRS = (
    ("pred_lat", "pred_lon"),
    ("pred_latitude", "pred_longitude"),
    ("predicted_lat", "predicted_long"),
    ("predicted_lat", "predicted_lon"),
)
BARE_MODEL = "model"  # the name of a wide table's unsuffixed prediction pair
# Suffixes that name a unit, not a model: OSV-5M's table also carries pred_lat_radians.
UNIT_SUFFIXES = ("radians", "rad", "deg", "degrees")
TOPK_PROB_STEM = "prob"
FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}


class PredictionsError(ValueError):
    """A predictions table that cannot be imported: a missing column, malformed or duplicate rows, missing images."""


def table_format(path) -> str:
    """'csv', 'parquet' or 'jsonl' from the file name; PredictionsError for anything else."""
    name = Path(path).name.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    if name.endswith(".json"):
        return "jsonl"
    raise PredictionsError(f"{path}: unknown predictions format; expected .csv, .parquet or .jsonl (JSON Lines)")


def read_predictions_file(path) -> pd.DataFrame:
    """A predictions file as read, every cell kept: CSV (cells as text, empty cells NaN), Parquet or JSON Lines."""
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=True)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as e:
        raise PredictionsError(f"{path}: not a readable {fmt} file: {e}") from None


def _pair_stems(pairs) -> list[tuple[str, str]]:
    return list(dict.fromkeys(pairs))


def prediction_models(columns) -> dict[str, tuple[str, str]]:
    """{model name: (latitude column, longitude column)} of every prediction pair in ``columns``.

    Bare pairs (PREDICTION_PAIRS) are the model BARE_MODEL; ``<lat stem>_<suffix>`` with the matching
    ``<lon stem>_<suffix>`` is the model ``suffix`` (numeric suffixes are top-k ranks, unit suffixes
    such as ``radians`` are not models).
    """
    cols = set(map(str, columns))
    out: dict[str, tuple[str, str]] = {}
    for lat, lon in _pair_stems(PREDICTION_PAIRS):
        if lat in cols and lon in cols and BARE_MODEL not in out:
            out[BARE_MODEL] = (lat, lon)
    for lat, lon in _pair_stems(PREDICTION_PAIRS):
        for c in sorted(cols):
            m = re.fullmatch(re.escape(lat) + r"_(.+)", c)
            if not m:
                continue
            suffix = m.group(1)
            if suffix.isdigit() or suffix.lower() in UNIT_SUFFIXES or f"{lon}_{suffix}" not in cols:
                continue
            if suffix in out:
                raise PredictionsError(
                    f"two prediction pairs are both named {suffix!r} ({out[suffix]} and {(c, f'{lon}_{suffix}')}); "
                    "pick one with columns pred_lat=COL pred_lon=COL"
                )
            out[suffix] = (c, f"{lon}_{suffix}")
    return out


def _topk_suffix_columns(cols: set, lat: str, lon: str) -> dict | None:
    """``<lat>_1..k``, ``<lon>_1..k``, ``prob_1..k`` as {topk_*: [columns]}, or None when absent."""
    k = 0
    while f"{lat}_{k + 1}" in cols and f"{lon}_{k + 1}" in cols:
        k += 1
    if k == 0:
        return None
    ranks = range(1, k + 1)
    out = {"topk_lat": [f"{lat}_{i}" for i in ranks], "topk_lon": [f"{lon}_{i}" for i in ranks]}
    if all(f"{TOPK_PROB_STEM}_{i}" in cols for i in ranks):
        out["topk_prob"] = [f"{TOPK_PROB_STEM}_{i}" for i in ranks]
    return out


def resolve_columns(columns, mapping: Mapping[str, str] | None = None, model: str | None = None) -> dict:
    """The file column of each schema name: {schema name: column (str), or a list of k columns for top-k}.

    columns: the file's column names. mapping: {schema name: file column} given by hand; it wins over
    recognition. model: which prediction pair of a wide table (see :func:`prediction_models`); needed
    only when the table holds several and ``mapping`` names none.
    PredictionsError names missing columns (with the ones found), unknown schema names and ambiguous
    wide tables (with their models).
    """
    cols = [str(c) for c in columns]
    found = set(cols)
    given = dict(mapping or {})
    unknown = sorted(set(given) - set(SCHEMA))
    if unknown:
        raise PredictionsError(f"columns: unknown schema name(s) {unknown}; the schema is {list(SCHEMA)}")
    absent = {k: v for k, v in given.items() if isinstance(v, str) and v not in found}
    if absent:
        raise PredictionsError(
            f"columns: {', '.join(f'{k}={v!r}' for k, v in absent.items())} not in the table; it has {cols}"
        )
    out: dict = {}
    out["id"] = given.get("id") or next((c for c in ID_NAMES if c in found), None)
    if "lat" in given or "lon" in given:
        out["lat"], out["lon"] = given.get("lat"), given.get("lon")
    else:
        out["lat"], out["lon"] = next(((a, b) for a, b in TRUTH_PAIRS if a in found and b in found), (None, None))
    chosen = None
    if "pred_lat" in given or "pred_lon" in given:
        out["pred_lat"], out["pred_lon"] = given.get("pred_lat"), given.get("pred_lon")
    else:
        models = prediction_models(cols)
        if len(models) == 1:
            chosen = next(iter(models))
        elif len(models) > 1:
            if model not in models:
                raise PredictionsError(
                    f"the table holds predictions of {len(models)} models {list(models)}"
                    f"{f' and none is named {model!r}' if model else ''}; import one per run: name it with "
                    "model= (CLI: --model), or leave --model out to import them all"
                )
            chosen = model
        out["pred_lat"], out["pred_lon"] = models[chosen] if chosen is not None else (None, None)
    missing = [k for k in REQUIRED if not out.get(k)]
    if missing:
        looked = {
            "id": ID_NAMES,
            "lat": [a for a, _ in TRUTH_PAIRS],
            "lon": [b for _, b in TRUTH_PAIRS],
            "pred_lat": [a for a, _ in PREDICTION_PAIRS],
            "pred_lon": [b for _, b in PREDICTION_PAIRS],
        }
        raise PredictionsError(
            "missing column(s) "
            + ", ".join(f"{k!r} (looked for {', '.join(dict.fromkeys(looked[k]))})" for k in missing)
            + f"; the table has {cols}. Map them with columns (CLI: --columns {missing[0]}=COLUMN)"
        )
    used = {out[k] for k in REQUIRED}
    for name, names in OPTIONAL_NAMES.items():
        col = given.get(name) or next((c for c in names if c in found and c not in used), None)
        if col:
            out[name] = col
    if any(k in given for k in TOPK):
        out.update({k: given[k] for k in TOPK if k in given})
    elif all(k in found for k in TOPK[:2]):
        out.update({k: k for k in TOPK if k in found})
    elif chosen in (None, BARE_MODEL):  # a wide table's per-model top-k is not a convention we know
        out.update(_topk_suffix_columns(found, out["pred_lat"], out["pred_lon"]) or {})
    return out


def _first(mask: np.ndarray, ids: pd.Series, raw_rows: pd.DataFrame | None = None) -> str:
    i = int(np.flatnonzero(mask)[0])
    shown = f"row {i}, id {ids.iloc[i]!r}"
    if raw_rows is not None:
        shown += f": {raw_rows.iloc[i].to_dict()}"
    return f"{int(mask.sum()):,} row(s); first: {shown}"


def _numbers(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of cells present but not a number) of one column."""
    empty = raw.isna() | (raw.astype(str).str.strip() == "")
    values = pd.to_numeric(raw.where(~empty), errors="coerce").to_numpy(np.float64)
    return values, (~empty.to_numpy()) & np.isnan(values)


def _topk_array(raw: pd.DataFrame, cols, name: str) -> np.ndarray:
    """(N, K) float64 of one top-k quantity from a list column or k scalar columns; NaN where empty."""
    if isinstance(cols, str):
        cells = raw[cols]
        lengths = {len(v) for v in cells if isinstance(v, (list, tuple, np.ndarray))}
        if len(lengths) > 1:
            raise PredictionsError(f"{name} ({cols!r}) holds lists of different lengths {sorted(lengths)}")
        k = lengths.pop() if lengths else 0
        out = np.full((len(cells), k), np.nan)
        for i, v in enumerate(cells):
            if isinstance(v, (list, tuple, np.ndarray)):
                out[i] = np.asarray(v, dtype=np.float64)
            elif not (v is None or (isinstance(v, float) and np.isnan(v))):
                raise PredictionsError(f"{name} ({cols!r}) must hold a list per row; row {i} holds {v!r}")
        return out
    parts = []
    for c in cols:
        values, bad = _numbers(raw[c])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PredictionsError(f"{name} column {c!r} holds {int(bad.sum())} non-number(s); first: row {i}")
        parts.append(values)
    return np.stack(parts, 1)


def normalise_predictions(raw: pd.DataFrame, mapping: Mapping, images_root=None) -> pd.DataFrame:
    """The schema table from a file's rows and :func:`resolve_columns`' mapping, checked.

    Abstentions (both prediction cells empty) are kept with NaN predictions. PredictionsError, with the
    count and the first row, for: true coordinates missing or out of range, a prediction present but
    not a number, out of range or half empty, duplicate ids, top-k candidates malformed, and image
    files named but missing under ``images_root`` (checked only when an images root is given; an
    empty image cell is a row without a photo).
    """
    ids = raw[mapping["id"]]
    if ids.isna().any():
        raise PredictionsError(f"empty id in {_first(ids.isna().to_numpy(), ids.astype(str))}")
    ids = ids.astype(str)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise PredictionsError(
            f"{int(ids[dup].nunique()):,} id(s) occur more than once ({_first(dup, ids)}); one row per photo"
        )
    out = pd.DataFrame({"id": ids.to_numpy()})
    shown = raw[[mapping[k] for k in REQUIRED]]
    for true_name, pred_name in (("lat", "pred_lat"), ("lon", "pred_lon")):
        for name in (true_name, pred_name):
            values, bad = _numbers(raw[mapping[name]])
            if bad.any():
                raise PredictionsError(f"{name} ({mapping[name]!r}) is not a number in {_first(bad, ids, shown)}")
            out[name] = values
    true = out[["lat", "lon"]].to_numpy()
    pred = out[["pred_lat", "pred_lon"]].to_numpy()
    for latlon, what in ((true, "true"), (pred, "predicted")):
        lat_bad = np.abs(latlon[:, 0]) > 90
        lon_bad = (latlon[:, 1] < -180) | (latlon[:, 1] > 360)
        if lat_bad.any():
            raise PredictionsError(f"{what} latitude outside [-90, 90] in {_first(lat_bad, ids, shown)}")
        if lon_bad.any():
            raise PredictionsError(f"{what} longitude outside [-180, 360] in {_first(lon_bad, ids, shown)}")
    no_truth = np.isnan(true).any(1)
    if no_truth.any():
        raise PredictionsError(f"missing true latitude/longitude in {_first(no_truth, ids, shown)}")
    half = np.isnan(pred).any(1) & ~np.isnan(pred).all(1)
    if half.any():
        raise PredictionsError(
            f"a prediction with only one of latitude/longitude in {_first(half, ids, shown)} "
            "(an abstention leaves both empty)"
        )
    answered = ~np.isnan(pred).all(1)
    for name in OPTIONAL_NAMES:
        if name not in mapping:
            continue
        col = raw[mapping[name]]
        if name == "confidence":
            values, bad = _numbers(col)
            if bad.any():
                raise PredictionsError(f"confidence ({mapping[name]!r}) is not a number in {_first(bad, ids)}")
            out[name] = values
        else:
            out[name] = col.where(col.notna(), "").astype(str).to_numpy()
    if "topk_lat" in mapping and "topk_lon" in mapping:
        tk = {k: _topk_array(raw, mapping[k], k) for k in TOPK if k in mapping}
        shapes = {k: v.shape for k, v in tk.items()}
        if len(set(shapes.values())) > 1:
            raise PredictionsError(f"top-k columns disagree on k: {shapes}")
        cand = np.stack([tk["topk_lat"], tk["topk_lon"]], -1)  # (N, K, 2)
        incomplete = answered & np.isnan(cand).any((1, 2))
        if "topk_prob" in tk:
            incomplete |= answered & np.isnan(tk["topk_prob"]).any(1)
        if incomplete.any():
            raise PredictionsError(f"top-k candidates with empty cells on an answered row in {_first(incomplete, ids)}")
        out_of_range = (np.abs(cand[..., 0]) > 90).any(1) | ((cand[..., 1] < -180) | (cand[..., 1] > 360)).any(1)
        if out_of_range.any():
            raise PredictionsError(
                f"top-k candidate outside the latitude/longitude range in {_first(out_of_range, ids)}"
            )
        if "topk_prob" in tk:
            p = tk["topk_prob"]
            bad_p = answered & ((p < 0) | ~np.isfinite(p)).any(1)
            if bad_p.any():
                raise PredictionsError(f"negative or non-finite top-k probability in {_first(bad_p, ids)}")
        for k, v in tk.items():
            out[k] = list(v)
    if "image" in out and images_root is not None:
        missing = np.zeros(len(out), bool)
        for i, rel in enumerate(out["image"]):
            if rel == "":  # an empty cell: this row has no photo
                continue
            try:
                missing[i] = not resolve_image_path(images_root, rel).is_file()
            except ValueError:  # empty, absolute or escaping paths are missing images too
                missing[i] = True
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise PredictionsError(
                f"{int(missing.sum()):,} of {len(out):,} image(s) not found under {str(images_root)!r}; "
                f"first: row {i}, id {ids.iloc[i]!r}, image {out['image'].iloc[i]!r}"
            )
    return out
