"""What the app knows about a runs directory, without Streamlit.

The app reads run directories (docs/method.md, "The run directory") under one
root, and nothing outside it: every path that comes from a manifest, a
predictions table or the URL goes through ``swclip.io.resolve_inside``, which
refuses ``../`` escapes, absolute paths elsewhere and symlinks that leave the root.

- :func:`discover_runs` lists runs (``swclip.runs.list_runs``), newest first,
  says which belong to the demo bundle, and keeps broken ones apart with
  their error.
- :func:`find_world` finds the synthetic world a demo run was trained on, so
  the maps can draw its streets and the semivariogram page its true ranges.
- :func:`check_predictions` says what is wrong with a run's predictions
  (coordinates, errors, duplicate ids, embeddings row count) and keeps the
  rows the pages can use, with their row numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from swclip import runs
from swclip.geo import place_ids
from swclip.io import RunError, resolve_inside
from swclip.runs import RunInfo

WORLD = "world.json"
MAX_DEPTH = 3


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def discover_runs(runs_root: Path | str) -> tuple[list[RunInfo], list[tuple[str, str]]]:
    """Runs under ``runs_root`` (folders holding manifest.json, depth ≤ 3), newest first.

    Returns (runs, broken): broken runs as (run_id, error) so the app can say
    what is wrong with them instead of hiding them; a run without
    predictions.parquet (trained, not yet evaluated) counts as broken. A run whose predictions or
    metrics record other weights than its own (``swclip.runs.stale_artefacts``) is listed with
    ``stale`` saying so, after every fresh run, so the app never opens it as the main run by default.
    A run is marked demo when its manifest says so (``demo: true``) or when a folder between it and the
    root holds the procedural world's world.json.
    """
    root = Path(runs_root)
    if not root.is_dir():
        return [], []
    root_r = root.resolve()
    found, broken = [], []
    for info in runs.list_runs(root_r, max_depth=MAX_DEPTH):
        if info.run_id == ".":
            continue  # the root itself is not a run of this root
        if info.error or not isinstance(info.manifest, dict):
            broken.append((info.run_id, info.error or "manifest.json is not a JSON object"))
            continue
        if not (Path(info.path) / runs.ARTEFACTS["predictions"]).is_file():
            broken.append(
                (
                    Path(info.run_id).as_posix(),
                    f"not evaluated yet: no predictions.parquet (run: python train/evaluate.py {info.path})",
                )
            )
            continue
        run = RunInfo(Path(info.run_id).as_posix(), Path(info.path), info.manifest)
        try:
            run.stale = runs.stale_artefacts(info.path, info.manifest)
        except RunError:
            pass  # a corrupt artefact: the pages say what is wrong with it when they read it
        run.is_demo = looks_demo(run, root_r)
        found.append(run)
    found.sort(key=lambda r: (r.stale is not None, -r.stamp, r.run_id))  # a stale run is never the first
    return found, broken


def looks_demo(run: RunInfo, root: Path) -> bool:
    """A run of the procedural demo world: its manifest says ``demo: true``, or the world's world.json is found.

    ``data.synthetic`` (random tensors, for benchmarks and smoke tests) is not the demo world and does not count.
    """
    if run.manifest.get("demo") is True:
        return True
    if run.kind == runs.KIND_IMPORTED:  # real photos: an imported run is never the procedural world
        return False
    return find_world(run, root) is not None


def find_world(run: RunInfo, runs_root: Path | str) -> Path | None:
    """world.json of the procedural world this run used, searched from the run up to the root (None for an
    imported run: its photos are real, even inside the demo bundle)."""
    root = Path(runs_root).resolve()
    if run.kind == runs.KIND_IMPORTED:
        return None
    data = run.manifest.get("data")
    if isinstance(data, dict) and data.get("root"):
        try:
            cand = (
                resolve_inside(root, run.path / str(data["root"]) / WORLD)
                if not Path(str(data["root"])).is_absolute()
                else resolve_inside(root, Path(str(data["root"])) / WORLD)
            )
            if cand.is_file():
                return cand
        except RunError:
            pass  # a data root outside the runs directory is never read
    here = run.path.resolve()
    while True:
        for cand in (here / WORLD, here / "world" / WORLD):
            if cand.is_file():
                return resolve_inside(root, cand)
        if here == root or root not in here.parents:
            return None
        here = here.parent


def read_world(path: Path | None) -> dict | None:
    """world.json as a dict, or None when absent or unreadable."""
    return _read_json(path) if path is not None else None


def world_city(world: dict | None, city: str | None) -> dict | None:
    """The world.json entry of one city (a dict), whether cities are a list or a mapping."""
    if not world or not city:
        return None
    cities = world.get("cities")
    if isinstance(cities, dict):
        entry = cities.get(city)
        return entry if isinstance(entry, dict) else None
    if isinstance(cities, list):
        for entry in cities:
            if isinstance(entry, dict) and entry.get("name") == city:
                return entry
    return None


def read_streets(world_path: Path | None) -> dict[str, list[np.ndarray]]:
    """{city: street polylines as (M, 2) latlon} from the streets.geojson beside world.json."""
    if world_path is None:
        return {}
    geo = _read_json(Path(world_path).parent / "streets.geojson")
    out: dict[str, list[np.ndarray]] = {}
    for feat in (geo or {}).get("features", []):
        try:
            city = str(feat["properties"]["city"])
            coords = np.asarray(feat["geometry"]["coordinates"], dtype=np.float64)[:, ::-1]  # [lon, lat] -> latlon
        except (KeyError, TypeError, ValueError, IndexError):
            continue
        if coords.ndim == 2 and len(coords) >= 2 and np.isfinite(coords).all():
            out.setdefault(city, []).append(coords)
    return out


def city_true_ranges(world: dict | None, city: str | None) -> dict[str, float]:
    """{field name: true practical range in metres} for a demo city (empty when unknown)."""
    entry = world_city(world, city)
    if not entry:
        return {}
    fields = entry.get("fields") or []
    out = {}
    items = fields.items() if isinstance(fields, dict) else ((f.get("name"), f) for f in fields if isinstance(f, dict))
    for name, f in items:
        r = f.get("range_m") if isinstance(f, dict) else f
        if isinstance(r, (int, float)):
            out[str(name)] = float(r)
    return out


def read_metrics(run: RunInfo) -> dict:
    """metrics.json of a run, else the manifest's metrics summary, else {}."""
    try:
        m = runs.read_metrics(run.path)
    except RunError:
        m = None
    if not isinstance(m, dict):
        m = run.manifest.get("metrics") if isinstance(run.manifest.get("metrics"), dict) else {}
    return m


def overall_metrics(metrics: dict) -> dict:
    """The overall block of a metrics dict, whether nested under 'overall' or at the top."""
    inner = metrics.get("overall")
    if isinstance(inner, dict):
        return inner
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def trusted_root(runs_root: Path | str, data_root: Path | str | None = None) -> Path:
    """The one folder the app reads images and sample tables from: the data root when one is given
    (``--data-root``), else the runs directory."""
    return Path(data_root or runs_root).resolve()


def _data_candidates(run: RunInfo, key: str, data_root: Path | str | None) -> list[Path]:
    """Where the manifest's ``data.<key>`` may be here: as written (absolute, or relative to where training
    ran), relative to the run folder, and relative to the data root."""
    data = run.manifest.get("data")
    if not (isinstance(data, dict) and data.get(key)):
        return []
    given = Path(str(data[key]))
    if given.is_absolute():
        return [given]
    return [Path.cwd() / given, run.path / given] + ([Path(data_root) / given] if data_root else [])


def image_root(run: RunInfo, runs_root: Path | str, data_root: Path | str | None = None) -> Path | None:
    """The folder a run's image paths are relative to, if it lies inside the trusted root (:func:`trusted_root`).

    Tried in order: the manifest's ``data.root`` (:func:`_data_candidates`), the folder of the demo world
    found by :func:`find_world`, and the data root itself. Symlinks are resolved, so a folder reached
    through a link that leaves the trusted root is not used. Runs trained elsewhere and opened without a
    data root usually have none of these here; the app then shows no thumbnails and says so.
    """
    cands = _data_candidates(run, "root", data_root)
    world = find_world(run, Path(runs_root).resolve())
    if world is not None:
        cands.append(world.parent)
    if data_root:
        cands.append(Path(data_root))
    return _first_inside(trusted_root(runs_root, data_root), cands, Path.is_dir)


def _first_inside(root, candidates, exists) -> Path | None:
    """The first candidate path that lies inside ``root`` and passes ``exists`` (Path.is_dir / is_file)."""
    for cand in candidates:
        try:
            p = resolve_inside(root, cand)
        except RunError:
            continue
        if exists(p):
            return p
    return None


def image_path(img_root: Path | None, rel: str, root: Path | str) -> Path | None:
    """A sample's image file under ``img_root``, refused (None) if it leaves ``root`` (the trusted root,
    symlinks resolved) or is absent."""
    if img_root is None or not isinstance(rel, str) or not rel:
        return None
    try:
        p = resolve_inside(root, Path(img_root) / rel, "image path", "data root")
    except RunError:
        return None
    return p if p.is_file() else None


def table_path(run: RunInfo, runs_root: Path | str, data_root: Path | str | None = None) -> Path | None:
    """The run's sample table (manifest ``data.table``), if it is a file inside the trusted root
    (:func:`trusted_root`)."""
    data = run.manifest.get("data")
    if not (isinstance(data, dict) and data.get("table")):
        return None
    cands = _data_candidates(run, "table", data_root)
    world = find_world(run, Path(runs_root).resolve())
    if world is not None:
        cands.append(world.parent / Path(str(data["table"])).name)  # the bundle moved: same name beside world.json
    if data_root:
        cands.append(Path(data_root) / Path(str(data["table"])).name)
    return _first_inside(trusted_root(runs_root, data_root), cands, Path.is_file)


# ----------------------------------------------------------------- bad input at scale

COORD_COLUMNS = ("lat", "lon", "pred_lat", "pred_lon")
REQUIRED_COLUMNS = ("id", *COORD_COLUMNS, "error_m")


def check_predictions(df, n_embeddings: int | None = None, run_id: str = "run"):
    """What is wrong with a run's predictions table, and the rows the pages can still use.

    df: predictions.parquet as read (one row per evaluation sample, its index the row number, which
    is also the row of embeddings.npy); n_embeddings: rows of embeddings.npy (None when absent).
    Returns (usable rows, problems): rows with missing or out-of-range coordinates, or a missing or
    negative error_m, are left out (the index keeps the original row numbers, so embeddings stay
    aligned), and so are abstentions (a valid truth, no prediction: a model that declined), said once
    with the coverage; every other row stays. A table without ``place_id`` gets one derived from the coordinates
    (``swclip.geo.place_ids``, 1 m). Each problem is one sentence naming the run, what is wrong, how
    many rows and the first one, and what the app does about it. Never drops a row without one.
    Raises RunError when a required column is missing (nothing can be shown).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise RunError(f"{run_id}: predictions.parquet lacks column(s) {missing}; it has {list(df.columns)}")
    problems = []
    n = len(df)
    lat = df[["lat", "pred_lat"]].to_numpy(np.float64)
    lon = df[["lon", "pred_lon"]].to_numpy(np.float64)
    bad_coord = ~(
        np.isfinite(lat).all(1)
        & np.isfinite(lon).all(1)
        & (np.abs(lat) <= 90).all(1)
        & (lon >= -180).all(1)
        & (lon <= 360).all(1)
    )
    # An abstention (imported runs: the model gave no prediction) has a valid truth and no prediction at all.
    abstained = (
        np.isnan(lat[:, 1])
        & np.isnan(lon[:, 1])
        & np.isfinite(lat[:, 0])
        & np.isfinite(lon[:, 0])
        & (np.abs(lat[:, 0]) <= 90)
        & (lon[:, 0] >= -180)
        & (lon[:, 0] <= 360)
    )
    bad_coord &= ~abstained
    err = df["error_m"].to_numpy(np.float64)
    bad_err = ~bad_coord & ~abstained & ~(np.isfinite(err) & (err >= 0))
    ids = df["id"].astype(str)
    if abstained.any():
        problems.append(
            f"{run_id}: the model gave no prediction for {int(abstained.sum()):,} of {n:,} row(s) "
            f"(coverage {1 - abstained.mean():.1%}); maps and error statistics show the answered rows, "
            "GeoScore counts an abstention as 0"
        )
    for mask, what in (
        (bad_coord, "missing or out-of-range coordinates (lat, lon, pred_lat, pred_lon)"),
        (bad_err, "a missing or negative error_m"),
    ):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            problems.append(
                f"{run_id}: {int(mask.sum()):,} of {n:,} prediction row(s) have {what} "
                f"(first: row {i}, id {ids.iloc[i]!r}); "
                "they are left out of every page"
            )
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        problems.append(
            f"{run_id}: {int(ids[dup].nunique()):,} id(s) occur more than once "
            f"({int(dup.sum()):,} rows; e.g. {first!r} × {int((ids == first).sum())}); "
            "every row is kept, but Compare, which pairs runs by id, cannot use this run"
        )
    if n_embeddings is not None and n_embeddings != n:
        problems.append(
            f"{run_id}: embeddings.npy has {n_embeddings:,} rows for {n:,} predictions, "
            "so they cannot be matched row by row; "
            "pages that need embeddings skip this run"
        )
    keep = ~(bad_coord | bad_err | abstained)
    df = df if keep.all() else df[keep]
    if "place_id" not in df.columns:  # runs evaluated without places: photos at one spot (1 m) are one place
        df = df.assign(place_id=place_ids(df[["lat", "lon"]].to_numpy(np.float64)))
    return df, problems
