"""Another model's predictions become a run the app opens (`swclip import`).

    runs/<name>/
      manifest.json        kind "imported", model (its name), source (file, sha256, format, rows), columns
                           (the file column of each schema name), data.root (images), metrics summary
      predictions.parquet  id, city, lat, lon, pred_lat, pred_lon (NaN: abstention), error_m, [image,
                           country, region, sub_region, split, confidence, topk_lat, topk_lon, topk_prob]
      metrics.json         swclip.analysis.metrics on it: errors, accuracy at metre and km thresholds,
                           GeoScore, coverage; OSV-5M's admin table beyond 50 km; Recall-vs-Area with top-k
      embeddings.npy       when given: (N, D), row-aligned with predictions

The columns are recognised by swclip.data.predictions. The run is written into a temporary folder
beside its destination and renamed at the end, so a failed import leaves nothing; an existing run is
replaced only with ``force``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from swclip.analysis.metrics import (
    ADMIN_MIN_EXTENT_M,
    SUMMARY_KEYS,
    errors_m,
    extent_m,
    osv5m_metrics,
    rva_summary,
    summarize_answered,
)
from swclip.data.predictions import (
    PredictionsError,
    normalise_predictions,
    prediction_models,
    read_predictions_file,
    resolve_columns,
    table_format,
)
from swclip.io import sha256_file
from swclip.retrieval.kde import median_spacing_m
from swclip.runs import MANIFEST, save_imported_run

COVERAGE_KEYS = ("n_rows", "n_abstained", "coverage", "geoscore_answered")


def import_metrics(df: pd.DataFrame) -> dict:
    """metrics.json of an imported run from its predictions (the schema of swclip.data.predictions plus error_m).

    summarize_answered overall and per city (coverage beside every statistic, GeoScore 0 for an
    abstention); OSV-5M's admin-level table over the answered rows when the truths spread over more
    than ADMIN_MIN_EXTENT_M; Recall-vs-Area when top-k probabilities exist, with the knn-kde bandwidth
    the median spacing of the candidates.
    """
    err = df["error_m"].to_numpy(np.float64)
    city = df["city"].to_numpy() if "city" in df else None
    metrics = summarize_answered(err, city)
    answered = ~np.isnan(err)
    true = df[["lat", "lon"]].to_numpy(np.float64)
    pred = df[["pred_lat", "pred_lon"]].to_numpy(np.float64)
    metrics["extent_m"] = extent_m(true)
    if answered.any() and metrics["extent_m"] > ADMIN_MIN_EXTENT_M:
        metrics["osv5m"] = {
            **osv5m_metrics(pred[answered], true[answered], parity="osv5m"),
            "n_rows": int(len(df)),
            "coverage": float(answered.mean()),
        }
    if "topk_prob" in df and answered.any():
        cand = np.stack([np.stack(df["topk_lat"].to_numpy()), np.stack(df["topk_lon"].to_numpy())], -1)[answered]
        prob = np.stack(df["topk_prob"].to_numpy())[answered]
        spacing_m = median_spacing_m(np.unique(cand.reshape(-1, 2), axis=0))
        if spacing_m > 0:
            metrics["rva"] = {**rva_summary(cand, prob, true[answered], spacing_m), "coverage": float(answered.mean())}
            metrics["kde_bandwidth_m"] = spacing_m
            metrics["top_k"] = int(cand.shape[1])
    return metrics


def _images_record(images_root, run_dir: Path) -> str | None:
    """data.root for the manifest: relative to the run folder when the images sit beside its parent
    (a bundle that moves keeps working), else absolute."""
    if images_root is None:
        return None
    root = Path(images_root).resolve()
    parent = run_dir.resolve().parent
    if root == parent or parent in root.parents:
        return os.path.relpath(root, run_dir.resolve())
    return str(root)


def embeddings_in_table_order(embeddings: np.ndarray, embedding_ids: Sequence[str], table_ids) -> np.ndarray:
    """(N, D) embeddings listed in ``embedding_ids`` order -> the same rows in ``table_ids`` order.

    PredictionsError names the count and the first id when the two lists do not hold the same ids once each.
    """
    ids = pd.Index(np.asarray(embedding_ids).astype(str))
    table = pd.Index(np.asarray(table_ids).astype(str))
    if len(ids) != len(embeddings):
        raise PredictionsError(f"{len(ids)} embedding ids for {len(embeddings)} embedding rows: one id per row")
    if ids.has_duplicates:
        dup = ids[ids.duplicated()]
        raise PredictionsError(f"{len(dup)} embedding id(s) repeat, first {dup[0]!r}")
    missing = table.difference(ids, sort=False)
    if len(missing):
        raise PredictionsError(f"{len(missing)} table id(s) have no embedding, first {missing[0]!r}")
    extra = ids.difference(table, sort=False)
    if len(extra):
        raise PredictionsError(f"{len(extra)} embedding id(s) are not in the table, first {extra[0]!r}")
    return embeddings[ids.get_indexer(table)]


def import_predictions(
    table: pd.DataFrame,
    out_dir,
    *,
    model: str,
    source: dict,
    columns: Mapping[str, str] | None = None,
    embeddings: np.ndarray | None = None,
    embedding_ids: Sequence[str] | None = None,
    images_root=None,
    force: bool = False,
) -> Path:
    """Write one imported run from a predictions table; -> the run directory.

    table: one row per photo, columns recognised by swclip.data.predictions.resolve_columns (or named by
    ``columns``, {schema name: table column}). model: the model's name; in a wide table it also picks
    the prediction pair (``pred_lat_<model>``). source: where the table came from, kept in the manifest
    ({"path", "sha256", "format", ...}; the sha256 of an existing "path" is computed when absent).
    embeddings: (N, D) image embeddings (Neighbourhoods, embedding semivariogram), in table order, or in
    the order of ``embedding_ids`` (N ids, each id of the table once), which puts them in table order.
    images_root: the folder the image column is relative to; every image must exist under it.
    force: replace an existing run at ``out_dir``. PredictionsError names what is wrong with the
    table; FileExistsError when the run exists and ``force`` is not set. Nothing is written on error.
    """
    out_dir = Path(out_dir)
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model must be the non-empty name of the model that made the predictions")
    if (out_dir / MANIFEST).exists() or (out_dir.exists() and any(out_dir.iterdir())):
        if not force:
            raise FileExistsError(f"{out_dir} already exists; pass force=True (CLI: --force) to replace it")
    mapping = resolve_columns(table.columns, columns, model)
    df = normalise_predictions(table, mapping, images_root)
    if embedding_ids is not None:
        if embeddings is None:
            raise PredictionsError("embedding ids go with embeddings (CLI: --embedding-ids with --embeddings)")
        embeddings = embeddings_in_table_order(np.asarray(embeddings), embedding_ids, df["id"])
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(df):
            raise PredictionsError(
                f"embeddings must be (N, D) with one row per table row (N = {len(df)}); got shape {embeddings.shape}"
            )
        if not np.isfinite(embeddings).all():
            raise PredictionsError("embeddings hold NaN or infinite values")
    answered = df[["pred_lat", "pred_lon"]].notna().all(axis=1).to_numpy()
    err = np.full(len(df), np.nan)
    if answered.any():
        err[answered] = errors_m(df.loc[answered, ["pred_lat", "pred_lon"]], df.loc[answered, ["lat", "lon"]])
    df.insert(df.columns.get_loc("pred_lon") + 1, "error_m", err)
    if "city" not in df:
        df.insert(1, "city", "")
    metrics = import_metrics(df)
    source = dict(source)
    path = source.get("path")
    if path and "sha256" not in source and Path(path).is_file():
        source["sha256"] = sha256_file(path)
    source.setdefault("rows", int(len(df)))
    manifest = {
        "model": model,
        "source": source,
        "columns": mapping,
        "data": {"root": _images_record(images_root, out_dir)} if images_root is not None else {},
        "metrics": {k: metrics[k] for k in (*SUMMARY_KEYS, *COVERAGE_KEYS) if k in metrics},
    }
    artefacts = {"predictions": df, "metrics": metrics}
    if embeddings is not None:
        artefacts["embeddings"] = embeddings
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_imported_run(tmp, manifest, artefacts)
        if out_dir.exists():  # force: the old run goes aside first, so a failed rename loses nothing
            old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def import_file(
    path,
    out_dir,
    *,
    model: str | None = None,
    columns: Mapping[str, str] | None = None,
    embeddings=None,
    embedding_ids=None,
    images_root=None,
    force: bool = False,
) -> list[Path]:
    """`swclip import`: a CSV, Parquet or JSON Lines file of predictions -> its run(s).

    One run at ``out_dir`` for a table with one prediction pair (named ``model``, else out_dir's name).
    A wide table (several ``pred_lat_<model>`` pairs) gives one run per model at ``out_dir/<model>``,
    or only the one ``model`` names. embeddings: a .npy file (read with allow_pickle=False), rows in
    table order, or in the order of ``embedding_ids``: a text file with one id per line.
    images_root: default the table's folder when the table has an image column.
    """
    path = Path(path)
    table = read_predictions_file(path)
    source = {"path": str(path.resolve()), "sha256": sha256_file(path), "format": table_format(path)}
    emb = None
    if embeddings is not None:
        try:
            emb = np.load(embeddings, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise PredictionsError(f"{embeddings}: not a plain .npy array (pickled files are refused): {e}") from None
    ids = None
    if embedding_ids is not None:
        ids = [line.strip() for line in Path(embedding_ids).read_text().splitlines() if line.strip()]
    out_dir = Path(out_dir)
    models = prediction_models(table.columns) if not (columns and "pred_lat" in columns) else {}
    if images_root is None and resolve_columns(table.columns, columns, model or next(iter(models), None)).get("image"):
        images_root = path.parent
    if len(models) > 1 and model is None:
        targets = [(name, out_dir / name) for name in models]
        clash = [str(d) for _, d in targets if d.exists() and not force]
        if clash:
            raise FileExistsError(f"{', '.join(clash)} already exist(s); pass --force to replace")
        if emb is not None:
            raise PredictionsError("--embeddings belong to one model: name it with --model when importing a wide table")
        for name, _ in targets:  # every model's rows checked before the first run is written
            normalise_predictions(table, resolve_columns(table.columns, columns, name), images_root)
        return [
            import_predictions(
                table, d, model=name, source=source, columns=columns, images_root=images_root, force=force
            )
            for name, d in targets
        ]
    return [
        import_predictions(
            table,
            out_dir,
            model=model or out_dir.name,
            source=source,
            columns=columns,
            embeddings=emb,
            embedding_ids=ids,
            images_root=images_root,
            force=force,
        )
    ]
