"""Evaluate a trained run on held-out samples and write the artefacts the app reads.

    evaluate_run("runs/demo/swclip-s50")                    # data and split from the run's manifest
    evaluate_run("copied/run", table="/data/x.csv", root="/data")   # a run trained elsewhere

What it does:
    gallery      the training locations (gallery_source="split", the default) or GeoCLIP's 100K
                 coordinates ("geoclip100k", world scale; swclip.retrieval.gallery_source), duplicates
                 removed, encoded by the location tower (swclip.retrieval.gallery.Gallery.from_locations)
                 -> gallery.npz; its source goes into metrics.json ("gallery_source") and
                 manifest.json ("gallery")
    embeddings   every eval image through model.preprocess_val and the image tower -> embeddings.npy (N, D)
    predictions  faiss top-k over the gallery (swclip.retrieval.predictor.Predictor): top-1 is the prediction
                 (pred_lat, pred_lon, error_m); the knn-kde estimate is kept beside it
                 (kde_lat, kde_lon, kde_error_m, radius_m) -> predictions.parquet
    image gallery  every training image through the image tower -> image_gallery.npz
                 (ids = image paths): the "Revisiting IM2GPS" kNN baseline, whose knn-kde
                 errors go into metrics.json as "image_knn", and the app's nearest
                 training images
    metrics      swclip.analysis.metrics.summarize (metre and km thresholds, overall and per city),
                 recall@1/5/10, the knn-kde summary -> metrics.json, and a summary in manifest.json

recall@k is image → location retrieval inside the eval set: each eval image
ranks the eval set's distinct locations; a hit is its own location among the
first k. (The gallery holds training locations only, so a held-out place is
never in it: the metre errors measure localisation, recall@k measures
retrieval.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from swclip import runs
from swclip.analysis.metrics import SUMMARY_KEYS, errors_m, recall_at_k, scale_metrics, summarize, summarize_places
from swclip.data import ImageDataset
from swclip.geo import PLACE_TOLERANCE_M, place_ids
from swclip.retrieval.gallery import Gallery
from swclip.retrieval.gallery_source import gallery_places, gallery_record, stored_gallery_source
from swclip.retrieval.predictor import Predictor
from swclip.retrieval.search import SearchIndex
from swclip.runs import RESERVED_KEYS, load_run, save_run
from swclip.training.checkpoint import load_checkpoint
from swclip.training.distributed import pick_device
from swclip.training.loop import read_source

RECALL_KS = (1, 5, 10)


def _split_rows(table, split: str | None):
    if split and "split" in table.columns:
        rows = table[table["split"] == split].reset_index(drop=True)
        if len(rows) == 0:
            raise ValueError(f"no rows with split == {split!r} (splits present: {sorted(table['split'].unique())})")
        return rows
    if split and split != "train":
        raise ValueError(
            f"the table has no 'split' column, so split {split!r} cannot be selected; "
            "make one with swclip.data.spatial_split"
        )
    return table


def _world():
    """(rank, world_size) of the torch.distributed group this process is in; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def encode_images(model, table, root, batch_size: int = 256, num_workers: int = 0, progress: bool = False):
    """Every image of ``table`` through model.preprocess_val and the image tower. -> (N, D) float32, L2-normalised.

    Under torchrun (an initialised process group) the work is sharded: torch's
    DistributedSampler (no shuffle) gives rank r rows r, r+W, r+2W, ... (the last ones
    repeated to equal shares), each rank encodes its share on its device, and the shares
    are all-gathered and put back in table order. Rank 0 gets the (N, D) array; the
    other ranks get None.
    """
    rank, world = _world()
    ds = ImageDataset(table, root, transform=model.preprocess_val)
    sampler = (
        DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False, drop_last=False) if world > 1 else None
    )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=model.device.type == "cuda",
    )
    out = []
    it = loader
    if progress and rank == 0:
        from tqdm import tqdm

        it = tqdm(loader, desc="encoding images", leave=False)
    with torch.inference_mode():
        for batch in it:
            out.append(model.encode_image(batch["image"]))  # (b, D) float32 on the device
    local = torch.cat(out) if out else torch.empty(0, model.embed_dim, device=model.device)
    if world == 1:
        return local.cpu().numpy().astype(np.float32)
    parts = [torch.empty_like(local) for _ in range(world)]  # equal shares: the sampler pads
    dist.all_gather(parts, local.contiguous())
    if rank != 0:
        return None
    full = torch.empty(len(parts[0]) * world, local.shape[1], dtype=local.dtype)
    for r, part in enumerate(parts):
        full[r::world] = part.cpu()  # rank r held rows r, r+W, ...
    return full[: len(ds)].numpy().astype(np.float32)


def retrieval_recall(model, image_embeddings: np.ndarray, latlon: np.ndarray, city=None, ks=RECALL_KS) -> dict:
    """Image → location recall@k inside the eval set (see the module docstring)."""

    uniq, inverse = np.unique(np.round(latlon, 7), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    first = np.zeros(len(uniq), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(latlon))[::-1]
    with torch.inference_mode():
        loc = (
            model.encode_location(latlon[first], None if city is None else list(np.asarray(city)[first])).cpu().numpy()
        )
    k = min(max(ks), len(uniq))
    _, ranked = SearchIndex(loc, kind="flat").search(image_embeddings, k)
    return recall_at_k(ranked, inverse, [kk for kk in ks if kk <= k])


def evaluate(
    model,
    train_table,
    eval_table,
    root,
    top_k: int = 5,
    batch_size: int = 256,
    num_workers: int = 0,
    kde_bandwidth_m: float | None = None,
    progress: bool = False,
    image_gallery: bool = True,
    gallery_source: str = "split",
    scale: bool = True,
) -> dict:
    """-> {"predictions": DataFrame, "embeddings": (N, D), "gallery": Gallery, "image_gallery": Gallery | None,
    "metrics": dict}. ``image_gallery=False`` skips encoding the training images. gallery_source: the location
    gallery's places, "split" (``train_table``'s locations) or "geoclip100k" (swclip.retrieval.gallery_source).
    ``scale=False`` skips the Recall-vs-Area and admin-level metrics (``scale_metrics``: the app's, a tenth of
    a small run's CPU; the experiment grid records neither); every other metric is computed as with True.

    Under torchrun every rank calls this: the images are encoded sharded (see ``encode_images``),
    the rest runs on rank 0, and the other ranks return None.
    """
    import pandas as pd

    model.eval()
    places, place_city = gallery_places(gallery_source, model, train_table)  # first: a missing geoclip wheel fails fast
    emb = encode_images(model, eval_table, root, batch_size, num_workers, progress)
    train_emb = encode_images(model, train_table, root, batch_size, num_workers, progress) if image_gallery else None
    if _world()[0] != 0:
        return None
    text = getattr(getattr(model, "config", None), "location_tower", "gps") == "text"
    gallery = Gallery.from_locations(model, places, city=place_city, progress=progress)
    predictor = Predictor(model, gallery, kde_bandwidth_m=kde_bandwidth_m)
    preds = predictor.predict_embeddings(emb, top_k)
    true = eval_table[["lat", "lon"]].to_numpy(np.float64)
    pred = np.array([p.latlon for p in preds])
    kde = np.array([p.estimate for p in preds])
    err, kde_err = errors_m(pred, true), errors_m(kde, true)
    city = eval_table["city"].astype(str).to_numpy() if "city" in eval_table else None
    df = pd.DataFrame(
        {
            "id": eval_table["id"].astype(str).to_numpy()
            if "id" in eval_table
            else np.arange(len(eval_table)).astype(str),
            "city": city if city is not None else "",
            "lat": true[:, 0],
            "lon": true[:, 1],
            "pred_lat": pred[:, 0],
            "pred_lon": pred[:, 1],
            "error_m": err,
            "kde_lat": kde[:, 0],
            "kde_lon": kde[:, 1],
            "kde_error_m": kde_err,
            "radius_m": [p.radius_m for p in preds],
            "topk_lat": [p.latlon_topk[:, 0].tolist() for p in preds],
            "topk_lon": [p.latlon_topk[:, 1].tolist() for p in preds],
            "topk_prob": [p.prob.tolist() for p in preds],
            "topk_score": [p.score.tolist() for p in preds],
            "image": eval_table["image"].astype(str).to_numpy(),
            "place_id": eval_table["place_id"].astype(str).to_numpy() if "place_id" in eval_table else place_ids(true),
        }
    )
    metrics = summarize(err, city)
    metrics["per_place"] = summarize_places(err, df["place_id"].to_numpy())
    metrics.update(retrieval_recall(model, emb, true, city if text else None))
    metrics["knn_kde"] = summarize(kde_err)
    # Recall-vs-Area of the knn-kde density; OSV-5M's admin-level table when the samples span > 50 km
    if scale:
        metrics.update(
            scale_metrics(
                pred,
                true,
                np.stack([p.latlon_topk for p in preds]),
                np.stack([p.prob for p in preds]),
                predictor.kde_bandwidth_m,
            )
        )
    images = None
    if image_gallery:
        images = Gallery(
            train_table[["lat", "lon"]].to_numpy(np.float64),
            train_emb,
            kind="image",
            ids=train_table["image"].astype(str).to_numpy(),
            city=train_table["city"].astype(str).to_numpy() if "city" in train_table else None,
        )
        # the training images lie where the training locations do: a world gallery's bandwidth is not theirs
        image_kde_bandwidth_m = kde_bandwidth_m if gallery_source == "split" else None
        image_preds = Predictor(model, images, kde_bandwidth_m=image_kde_bandwidth_m).predict_embeddings(emb, top_k)
        metrics["image_knn"] = summarize(errors_m(np.array([p.estimate for p in image_preds]), true))
    metrics["n_gallery"] = len(gallery)
    metrics["gallery_source"] = gallery_source
    metrics["top_k"] = int(top_k)
    metrics["kde_bandwidth_m"] = predictor.kde_bandwidth_m
    return {"predictions": df, "embeddings": emb, "gallery": gallery, "image_gallery": images, "metrics": metrics}


def evaluate_run(
    run_dir,
    table: str | None = None,
    root: str | None = None,
    split: str | None = None,
    train_split: str | None = None,
    top_k: int = 5,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = False,
    checkpoint: str | None = None,
    gallery_source: str | None = None,
    data_root: str | None = None,
    drop_invalid: bool | None = None,
) -> dict | None:
    """Evaluate a run directory in place; -> metrics.

    table / root: the sample table and image root (default: the manifest's; give them for a run
    trained elsewhere). split / train_split: eval and gallery splits (default: the manifest's,
    else "test" / "train"). checkpoint: evaluate these weights (a checkpoints/step_* folder)
    instead of the run's final model.safetensors; the run's model.safetensors and manifest are then
    replaced by that checkpoint's weights, so the artefacts always match the run's weights.
    gallery_source: the location gallery's places, "split" (the train_split rows' locations) or
    "geoclip100k" (GeoCLIP's 100K coordinates); default: the manifest's data.gallery, else "split".
    The manifest's knn-kde bandwidth is reused only for a gallery of the same source (it was
    derived from that gallery's spacing); another source derives its own.
    data_root: the one trusted folder the table and image root must lie in (default: the manifest's
    data.data_root). drop_invalid: drop and count invalid rows (default: the manifest's data.drop_invalid).
    The predictions and metrics record the weights_sha256 they came from.

    device: "auto" (the local rank's GPU when there is one, else the CPU), "cpu", "cuda[:N]".
    Under torchrun (an initialised process group) the image encoding is sharded over the
    ranks, rank 0 writes the artefacts and returns the metrics, the other ranks return None.
    """

    run_dir = Path(run_dir)
    rank, world = _world()
    device = str(pick_device(device, int(os.environ.get("LOCAL_RANK", "0"))))
    if checkpoint is not None and rank == 0:
        run = load_run(run_dir, device=device)
        weights, _, meta = load_checkpoint(checkpoint)
        run.model.load_state_dict(weights)
        keep = {k: v for k, v in run.manifest.items() if k not in RESERVED_KEYS}
        save_run(run_dir, run.model, {**keep, "evaluated_checkpoint_step": meta.get("step")})
    if world > 1:
        dist.barrier()  # the checkpoint's weights are the run's before any rank loads them
    run = load_run(run_dir, device=device)
    data = run.manifest.get("data", {}) or {}
    table = table or data.get("table")
    root = root if root is not None else (data.get("root") or None)
    fmt = data.get("format", "table") if table is None or table == data.get("table") else "table"
    if fmt == "table":
        if not table:
            raise ValueError(f"{run_dir}: the manifest names no data table; pass table= (and root=)")
        if not Path(table).exists():
            raise FileNotFoundError(f"sample table {table} not found (run trained elsewhere? pass table= and root=)")
    data_root = data_root or data.get("data_root") or None
    drop_invalid = bool(data.get("drop_invalid", False)) if drop_invalid is None else drop_invalid
    tolerance_m = float(data.get("place_tolerance_m", PLACE_TOLERANCE_M))
    full = read_source(table, root, fmt, data.get("check_images", "header"), drop_invalid, data_root, tolerance_m)
    split = split or data.get("eval_split") or "test"
    train_split = train_split or data.get("train_split") or "train"
    eval_rows, train_rows = _split_rows(full, split), _split_rows(full, train_split)
    root = root or full.attrs.get("root") or str(Path(table).parent)
    gallery_source = gallery_source or data.get("gallery") or "split"
    same_gallery = stored_gallery_source(run.manifest) == gallery_source
    res = evaluate(
        run.model,
        train_rows,
        eval_rows,
        root,
        top_k,
        batch_size,
        num_workers,
        kde_bandwidth_m=run.manifest.get("kde_bandwidth_m") if same_gallery else None,
        progress=progress,
        gallery_source=gallery_source,
    )
    if res is None:  # not rank 0: its shares are with rank 0, which writes
        return None

    weights_sha256 = run.manifest.get("weights_sha256")
    runs.write_predictions(run_dir, res["predictions"], weights_sha256=weights_sha256)
    runs.write_embeddings(run_dir, res["embeddings"])
    runs.write_gallery(run_dir, res["gallery"])
    if res["image_gallery"] is not None:
        runs.write_image_gallery(run_dir, res["image_gallery"])
    metrics = {**res["metrics"], "eval_split": split, "gallery_split": train_split, "table": str(table)}
    runs.write_metrics(run_dir, metrics, weights_sha256=weights_sha256)
    run.update_manifest(
        metrics={k: metrics[k] for k in SUMMARY_KEYS if k in metrics},
        kde_bandwidth_m=metrics["kde_bandwidth_m"],
        gallery=gallery_record(gallery_source, len(res["gallery"]), train_split),
    )
    return metrics
