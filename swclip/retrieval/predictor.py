"""From an image to places: gallery, faiss search, top-k probabilities, knn-kde.

    predictor = load_predictor("runs/demo/swclip_sigma50")   # swclip.runs: model + gallery + faiss index, built once
    [p] = predictor.predict([pil_image], top_k=5)
    p.latlon_topk (5, 2), p.prob (5,), p.estimate (lat, lon) (knn-kde), p.radius_m

A ``Gallery`` holds candidate locations (N, 2) and their L2-normalised
embeddings (N, D) float32: by default the training locations with duplicates
removed, encoded once by the location tower (kind="location"), or
training-image embeddings with their locations (kind="image", the "Revisiting
IM2GPS" kNN baseline, also the app's "nearest training images").

Search is inner product (= cosine) with faiss: exact ``IndexFlatIP`` up to
``EXACT_MAX`` entries, IVF beyond (HNSW on request); tests/test_retrieval.py
measures the approximate indexes' recall@10 against exact search.

Probabilities: softmax of logit_scale · cos over the k retrieved candidates
(the rest of the gallery counts as zero mass). The knn-kde estimate (Vo et al.
2017) is the mode of a Gaussian kernel density over the candidates' positions,
weighted by those probabilities, found on the sphere (unit vectors), so
candidates on both sides of the antimeridian average to the right place.
``radius_m`` is the probability-weighted mean geodesic distance of the
candidates from the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from swclip.retrieval.gallery import Gallery
from swclip.retrieval.kde import knn_kde, median_spacing_m, softmax_np, weighted_radius_m
from swclip.retrieval.search import SMALL_BATCH, SearchIndex
from swclip.threads import limit_threads

# ---------------------------------------------------------------------------------------- prediction


@dataclass
class Prediction:
    """One image's answer.

    latlon_topk: (k, 2) candidates, best first; prob: (k,) softmax over them; score: (k,) cosine;
    index: (k,) gallery rows; ids: (k,) gallery ids or None; estimate: (lat, lon) knn-kde;
    radius_m: probability-weighted mean distance of the candidates from the estimate.
    ``latlon`` is the top-1 candidate (retrieval prediction).
    """

    latlon_topk: np.ndarray
    prob: np.ndarray
    score: np.ndarray
    index: np.ndarray
    estimate: tuple[float, float]
    radius_m: float
    ids: np.ndarray | None = None

    @property
    def latlon(self) -> tuple[float, float]:
        return float(self.latlon_topk[0, 0]), float(self.latlon_topk[0, 1])

    def as_rows(self) -> list[dict]:
        """[{rank, lat, lon, prob, score}] for tables."""
        return [
            {"rank": r + 1, "lat": float(ll[0]), "lon": float(ll[1]), "prob": float(p), "score": float(s)}
            for r, (ll, p, s) in enumerate(zip(self.latlon_topk, self.prob, self.score))
        ]


class Predictor:
    """Model + gallery + faiss index, built once; queries never re-encode the gallery.

    kde_bandwidth_m: knn-kde kernel σ in metres; None takes 4 × the gallery's median nearest-neighbour
    spacing (street level: tens of metres; a global gallery: kilometres). index_kind: see SearchIndex.
    small_batch_threads: CPU threads for batches of up to SMALL_BATCH images (see limit_threads).
    Puts ``model`` in eval mode; a training loop that evaluates mid-run must call ``train()`` again.
    """

    def __init__(
        self,
        model,
        gallery: Gallery,
        kde_bandwidth_m: float | None = None,
        index_kind: str = "auto",
        batch_size: int = 64,
        small_batch_threads: int | None = 1,
    ):
        if gallery.dim != model.embed_dim:
            raise ValueError(
                f"gallery embeddings are {gallery.dim}-d but the model embeds to {model.embed_dim}-d: "
                "gallery and model come from different runs"
            )
        self.model = model.eval()
        self.gallery = gallery
        self.index = SearchIndex(gallery.embeddings, kind=index_kind, small_batch_threads=small_batch_threads)
        self.small_batch_threads = small_batch_threads
        # the gallery's spacing only when no bandwidth is given: a 1M-entry KD-tree takes seconds
        self.kde_bandwidth_m = (
            float(kde_bandwidth_m) if kde_bandwidth_m else max(4.0 * median_spacing_m(gallery.latlon), 1.0)
        )
        self.batch_size = int(batch_size)
        with torch.no_grad():
            self.logit_scale = float(model.scale())

    def _encode_batch(self, images: Sequence) -> np.ndarray:
        batch = torch.stack([self.model.preprocess_val(im) for im in images])  # (B, 3, H, W)
        small = len(images) <= SMALL_BATCH and self.model.device.type == "cpu"
        with torch.inference_mode(), limit_threads(self.small_batch_threads if small else None):
            return self.model.encode_image(batch).cpu().numpy()  # (B, D)

    def encode(self, images: Sequence, progress: bool = True) -> np.ndarray:
        """PIL images -> (N, D) float32 L2-normalised embeddings, in batches with a progress bar."""

        starts = range(0, len(images), self.batch_size)
        out = [
            self._encode_batch(images[s : s + self.batch_size])
            for s in tqdm(starts, desc="encoding images", disable=not progress or len(starts) < 2)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.gallery.dim), np.float32)

    @property
    def input_px(self) -> int:
        """The side, in pixels, of the square the model's preprocess resizes a photo to."""
        size = self.model.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def predict_embeddings(self, embeddings: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """(Q, D) L2-normalised image embeddings -> Q predictions (search, softmax, knn-kde, radius)."""
        scores, idx = self.index.search(embeddings, top_k)
        probs = softmax_np(self.logit_scale * scores.astype(np.float64))
        out = []
        for s, i, p in zip(scores, idx, probs):
            if (i < 0).any():  # an approximate index can return fewer than k hits (faiss pads with -1)
                keep = i >= 0
                if not keep.any():
                    raise RuntimeError("the search returned no candidates; raise the index's nprobe / ef_search")
                s, i = s[keep], i[keep]
                p = softmax_np(self.logit_scale * s.astype(np.float64))
            ll = self.gallery.latlon[i]
            est = knn_kde(ll, p, self.kde_bandwidth_m)
            out.append(
                Prediction(
                    ll,
                    p,
                    s,
                    i,
                    est,
                    weighted_radius_m(est, ll, p),
                    None if self.gallery.ids is None else self.gallery.ids[i],
                )
            )
        return out

    def predict(self, images: Sequence, top_k: int = 5, progress: bool = True) -> list[Prediction]:
        """list of PIL images (decode with swclip.data.open_image) -> list of Prediction, one per image.

        Streams: each batch is preprocessed, encoded and searched before the next is touched.
        """

        images = list(images)
        starts = range(0, len(images), self.batch_size)
        out: list[Prediction] = []
        for s in tqdm(starts, desc="predicting", disable=not progress or len(starts) < 2):
            out += self.predict_embeddings(self._encode_batch(images[s : s + self.batch_size]), top_k)
        return out
