"""Baselines on a sample table: GeoCLIP's predictions over its 100K-place gallery.

    predictions, embeddings = geoclip_predictions(table, image_root, weights="open_clip_model.safetensors")
    # predictions: id, lat, lon, pred_lat, pred_lon, pred_lat_1..k, pred_lon_1..k, prob_1..k, image (, city ...)
    # embeddings: (N, 512) float32, GeoCLIP's L2-normalised image features, in table order

``swclip baseline geoclip`` hands both to ``swclip.workflows.importer.import_predictions``, which
writes the run. The gallery is GeoCLIP's ``coordinates_100K.csv`` with each place kept once
(94,123 places; ``Gallery.from_locations``), encoded by GeoCLIP's location encoder. A place's
logit is GeoCLIP's, so the ranking is GeoCLIP's with its repeated coordinates dropped; the
probabilities are the softmax over those places (they sum to 1 over the gallery).
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from swclip.method.geoclip_image import GeoCLIPImage, softmax_topk
from swclip.method.geoclip_wheel import geoclip_gallery_latlon
from swclip.retrieval.gallery import Gallery
from swclip.retrieval.gallery_source import gallery_record
from swclip.training.distributed import pick_device
from swclip.training.evaluation import encode_images

CARRIED = ("image", "city", "country", "split")  # sample-table columns copied to the predictions when present
TOPK_ROWS = 256  # images per (rows, gallery) logit block: 256 × 94,123 float32 ≈ 96 MB


def geoclip_gallery(model: GeoCLIPImage, progress: bool = False) -> Gallery:
    """GeoCLIP's 100K coordinates, each place once (94,123), encoded by ``model``'s location encoder."""
    return Gallery.from_locations(model, geoclip_gallery_latlon(), progress=progress)


def geoclip_predictions(
    table: pd.DataFrame,
    image_root,
    weights=None,
    top_k: int = 5,
    batch_size: int = 32,
    device: str = "auto",
    num_workers: int = 0,
    model: GeoCLIPImage | None = None,
    gallery: Gallery | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """GeoCLIP on every image of ``table``. -> (predictions, embeddings (N, 512) float32).

    table: a sample table (id, image, lat, lon; city, country, split carried over when present);
    image_root: the folder its image paths are relative to. weights: OpenAI's ViT-L/14 in open_clip's
    format (None: looked up in the Hugging Face cache; see ``swclip.method.geoclip_image``).
    model, gallery: a built GeoCLIPImage and its :func:`geoclip_gallery`, to reuse them (else built here).
    predictions: one row per table row, in table order: id, lat, lon (truth, degrees), pred_lat,
    pred_lon (the top-1 place), pred_lat_i, pred_lon_i, prob_i for i = 1..top_k (best first),
    then the carried columns. ``predictions.attrs["source"]``: the weights file, the wheel's
    version and the gallery (``gallery_record``).
    """
    missing = [c for c in ("id", "image", "lat", "lon") if c not in table.columns]
    if missing:
        raise ValueError(f"GeoCLIP needs a sample table with {missing}; the table has {list(table.columns)}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    dev = pick_device(device)
    model = (model if model is not None else GeoCLIPImage(weights)).to(dev).eval()
    gallery = gallery if gallery is not None else geoclip_gallery(model, progress=progress)
    embeddings = encode_images(model, table, image_root, batch_size, num_workers, progress)  # (N, 512)

    places = torch.from_numpy(gallery.embeddings).to(dev)  # (G, 512)
    prob = np.zeros((len(table), top_k), np.float64)
    index = np.zeros((len(table), top_k), np.int64)
    starts = range(0, len(table), TOPK_ROWS)
    with torch.inference_mode():
        for s in tqdm(starts, desc="GeoCLIP top-k", disable=not progress or len(starts) < 2):
            rows = torch.from_numpy(embeddings[s : s + TOPK_ROWS]).to(dev)
            p, i = softmax_topk(rows, places, model.scale(), top_k)  # (b, k)
            prob[s : s + len(rows)], index[s : s + len(rows)] = p.cpu().numpy(), i.cpu().numpy()

    latlon = gallery.latlon[index]  # (N, k, 2)
    out = {
        "id": table["id"].astype(str).to_numpy(),
        "lat": table["lat"].to_numpy(np.float64),
        "lon": table["lon"].to_numpy(np.float64),
        "pred_lat": latlon[:, 0, 0],
        "pred_lon": latlon[:, 0, 1],
    }
    for j in range(top_k):
        out[f"pred_lat_{j + 1}"] = latlon[:, j, 0]
        out[f"pred_lon_{j + 1}"] = latlon[:, j, 1]
        out[f"prob_{j + 1}"] = prob[:, j]
    for c in CARRIED:
        if c in table.columns:
            out[c] = table[c].to_numpy()
    predictions = pd.DataFrame(out)
    predictions.attrs["source"] = {
        "model": "GeoCLIP",
        "geoclip_version": importlib.metadata.version("geoclip"),
        "image_tower": "open_clip ViT-L-14 (QuickGELU)",
        "image_weights": None if model.weights_path is None else str(model.weights_path),
        "gallery": gallery_record("geoclip100k", len(gallery)),
        "top_k": int(top_k),
    }
    return predictions, embeddings
