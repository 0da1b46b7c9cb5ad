"""From an image to places: gallery, faiss search, top-k probabilities, knn-kde.

    predictor = Predictor.from_run("runs/demo/swclip_sigma50")     # model + gallery + faiss index, built once
    [p] = predictor.predict([pil_image], top_k=5)
    p.latlon_topk (5, 2), p.prob (5,), p.estimate (lat, lon) (knn-kde), p.radius_m

A ``Gallery`` holds candidate locations (N, 2) and their L2-normalised
embeddings (N, D) float32: by default the training locations with duplicates
removed, encoded once by the location tower (kind="location"), or
training-image embeddings with their locations (kind="image", the "Revisiting
IM2GPS" kNN baseline, also the app's "nearest training images").

Search is inner product (= cosine) with faiss: exact ``IndexFlatIP`` up to
``EXACT_MAX`` entries, IVF beyond (HNSW on request); tests/test_index.py
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

import contextlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from swclip.geo import check_latlon, chord_to_m, haversine_m, latlon_from_vectors, unit_vectors

EXACT_MAX = 1_000_000
SMALL_BATCH = 16  # up to this many queries search on one thread (see SearchIndex.search)
GALLERY_KINDS = ("location", "image")


# ------------------------------------------------------------------------------------------ gallery


@dataclass
class Gallery:
    """Candidates for search. latlon: (N, 2) float64 degrees; embeddings: (N, D) float32, L2-normalised;
    kind: "location" or "image"; ids: optional (N,) str (e.g. training-image ids or paths)."""

    latlon: np.ndarray
    embeddings: np.ndarray
    kind: str = "location"
    ids: Optional[np.ndarray] = None

    def __post_init__(self):
        self.latlon = np.ascontiguousarray(self.latlon, dtype=np.float64)
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        check_latlon(self.latlon, "gallery latlon")
        if self.kind not in GALLERY_KINDS:
            raise ValueError(f"gallery kind must be one of {GALLERY_KINDS}, got {self.kind!r}")
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.latlon):
            raise ValueError(f"gallery embeddings must be (N, D) with N = {len(self.latlon)} locations, "
                             f"got {self.embeddings.shape}")
        if len(self.latlon) == 0:
            raise ValueError("gallery is empty")
        if not np.isfinite(self.embeddings).all():
            raise ValueError("gallery embeddings contain NaN or inf")
        norms = np.linalg.norm(self.embeddings, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            raise ValueError(f"gallery embeddings must be L2-normalised; norms range {norms.min():.4f}..{norms.max():.4f}")
        if self.ids is not None:
            self.ids = np.asarray(self.ids).astype(str)
            if self.ids.shape != (len(self.latlon),):
                raise ValueError(f"gallery ids must be (N,) = ({len(self.latlon)},), got {self.ids.shape}")

    def __len__(self) -> int:
        return len(self.latlon)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @classmethod
    def from_locations(cls, model, latlon, city: Optional[Sequence[str]] = None, dedup: bool = True,
                       batch_size: int = 4096, progress: bool = False) -> "Gallery":
        """Encode candidate locations with ``model.encode_location``, once.

        latlon: (N, 2) degrees; city: N names (read by a text tower's template; kept per row).
        dedup: drop exact duplicate coordinates (rounded to 1e-7°, about 1 cm), keeping the first.
        """
        latlon = np.asarray(latlon, dtype=np.float64)
        check_latlon(latlon, "gallery latlon")
        city = None if city is None else np.asarray(city).astype(str)
        if dedup:
            _, first = np.unique(np.round(latlon, 7), axis=0, return_index=True)
            keep = np.sort(first)
            latlon = latlon[keep]
            city = None if city is None else city[keep]
        chunks = []
        from tqdm.auto import tqdm

        starts = range(0, len(latlon), batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc="encoding gallery", disable=not progress or len(starts) < 2):
                c = None if city is None else list(city[s:s + batch_size])
                chunks.append(model.encode_location(latlon[s:s + batch_size], c).cpu().numpy())
        return cls(latlon, np.concatenate(chunks), "location", ids=city)

    def save(self, path) -> Path:
        """gallery.npz, atomically (latlon, embeddings, kind, ids); no pickled objects."""
        from swclip.runs import atomic_write

        arrays = {"latlon": self.latlon, "embeddings": self.embeddings, "kind": np.array(self.kind)}
        if self.ids is not None:
            arrays["ids"] = self.ids
        path = Path(path)

        def write(tmp: Path):
            with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
                np.savez(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "Gallery":
        """Inverse of :meth:`save`; ValueError naming the problem for a corrupt or malformed file."""
        from swclip.runs import RunError

        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # OSError, ValueError (pickled arrays), zipfile.BadZipFile, EOFError ...
            raise RunError(f"{path} is not a readable gallery .npz (corrupt, truncated or pickled): {e}") from None
        missing = [k for k in ("latlon", "embeddings") if k not in data]
        if missing:
            raise RunError(f"{path} lacks array(s) {missing}; has {sorted(data)}")
        try:
            return cls(data["latlon"], data["embeddings"], str(data.get("kind", "location")), data.get("ids"))
        except ValueError as e:
            raise RunError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------- faiss index


_threads_lock = threading.Lock()
_threads_depth = 0
_threads_saved: tuple[int, int] = (0, 0)


@contextlib.contextmanager
def limit_threads(n: Optional[int]):
    """Run the block with at most ``n`` torch intra-op and faiss OpenMP threads (None: unchanged).

    One photo's encode and search are tiny; waking a thread team costs more than the work, and
    on a loaded machine far more. Measured on the 2-core dev machine under load: the demo
    model's single-image encode took 0.9 ms on 1 thread against 10-400 ms on 2, and a
    single-query flat search over 20k x 64 took 0.1 ms against 25 ms. The settings are
    process-wide: overlapping blocks (app sessions in threads) share one saved state, restored
    when the last block leaves.
    """
    global _threads_depth, _threads_saved
    if n is None:
        yield
        return
    import faiss

    with _threads_lock:
        if _threads_depth == 0:
            _threads_saved = (torch.get_num_threads(), faiss.omp_get_max_threads())
        _threads_depth += 1
        torch.set_num_threads(max(1, min(n, _threads_saved[0])))
        faiss.omp_set_num_threads(max(1, min(n, _threads_saved[1])))
    try:
        yield
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0:
                torch.set_num_threads(_threads_saved[0])
                faiss.omp_set_num_threads(_threads_saved[1])


class SearchIndex:
    """Inner-product search over (N, D) float32 L2-normalised vectors.

    kind: "auto" (flat up to EXACT_MAX, IVF beyond), "flat" (exact), "ivf" or "hnsw" (approximate).
    nprobe (IVF) and ef_search (HNSW) trade speed for recall; the defaults reach recall@10 >= 0.95
    in tests/test_index.py. seed: seeds IVF's k-means. small_batch_threads: OpenMP threads for up
    to SMALL_BATCH queries (None: leave faiss's setting), see :func:`limit_threads`.
    """

    def __init__(self, embeddings: np.ndarray, kind: str = "auto", nlist: Optional[int] = None,
                 nprobe: Optional[int] = None, hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                 seed: int = 0, small_batch_threads: Optional[int] = 1):
        import faiss

        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"index needs a non-empty (N, D) array, got {x.shape}")
        n, d = x.shape
        if kind == "auto":
            kind = "flat" if n <= EXACT_MAX else "ivf"
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            # √N lists keeps k-means cheap on a CPU (1M points: 1,000 lists, trained on 64k samples)
            nlist = nlist or max(1, min(int(math.sqrt(n)), n // 39))  # faiss wants >= 39 points per list
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            rng = np.random.default_rng(seed)
            train = x if n <= 64 * nlist else x[rng.choice(n, 64 * nlist, replace=False)]
            index.train(train)
            index.nprobe = nprobe or max(1, min(nlist, nlist // 16 + 8))
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction, index.hnsw.efSearch = ef_construction, ef_search
        else:
            raise ValueError(f"index kind must be auto, flat, ivf or hnsw, got {kind!r}")
        index.add(x)
        self.index, self.kind, self.ntotal, self.dim = index, kind, n, d
        self.small_batch_threads = small_batch_threads

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries: (Q, D) -> (scores (Q, k) float32 cosine, indices (Q, k) int64), best first."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (Q, {self.dim}), got {q.shape}")
        k = min(int(k), self.ntotal)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with limit_threads(self.small_batch_threads if len(q) <= SMALL_BATCH else None):
            return self.index.search(q, k)


# ------------------------------------------------------------------------------------------- knn-kde


def kde_density(at_latlon, latlon_candidates, weights, bandwidth_m: float) -> np.ndarray:
    """Σ_j w_j exp(−d(at, c_j)² / 2h²) at each row of ``at_latlon`` (M, 2) -> (M,). d geodesic metres."""
    at, c = np.asarray(at_latlon, np.float64), np.asarray(latlon_candidates, np.float64)
    d = haversine_m(at[:, None, :], c[None, :, :], check=False)  # (M, K)
    return (np.exp(-0.5 * (d / bandwidth_m) ** 2) * np.asarray(weights, np.float64)[None, :]).sum(1)


def knn_kde(latlon_candidates, weights, bandwidth_m: float, iters: int = 30, tol_m: float = 0.01) -> tuple[float, float]:
    """Mode of the weighted Gaussian kernel density over the candidates (Vo et al. 2017), geodesically.

    latlon_candidates: (K, 2) degrees; weights: (K,) >= 0 (e.g. probabilities); bandwidth_m: the
    kernel's σ in metres. Starts at the densest candidate and runs mean-shift on the unit sphere
    (weighted mean of unit vectors, renormalised), so it never averages raw lat/lon and works across
    the antimeridian and near the poles. Returns (lat, lon) degrees, lon in [-180, 180].
    """
    c = np.asarray(latlon_candidates, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    check_latlon(c, "latlon_candidates")
    if w.shape != (len(c),):
        raise ValueError(f"weights must be (K,) = ({len(c)},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    if not bandwidth_m > 0:
        raise ValueError(f"bandwidth_m must be > 0, got {bandwidth_m}")
    xyz = unit_vectors(c)  # (K, 3)
    density = kde_density(c, c, w, bandwidth_m)
    x = xyz[int(np.argmax(density))]
    for _ in range(iters):
        d = chord_to_m(np.linalg.norm(xyz - x, axis=1))  # (K,)
        k = w * np.exp(-0.5 * (d / bandwidth_m) ** 2)
        if k.sum() <= 0:  # every candidate far beyond the bandwidth of x: stay on the densest candidate
            break
        new = (k[:, None] * xyz).sum(0)
        new /= np.linalg.norm(new)
        step_m = float(chord_to_m(np.linalg.norm(new - x)))
        x = new
        if step_m < tol_m:
            break
    lat, lon = latlon_from_vectors(x)
    return float(lat), float(lon)


def weighted_radius_m(center_latlon, latlon_candidates, weights) -> float:
    """Σ w_j d(center, c_j) / Σ w_j in metres: the probability-weighted spread about ``center``."""
    c = np.asarray(latlon_candidates, np.float64)
    w = np.asarray(weights, np.float64)
    d = haversine_m(np.broadcast_to(np.asarray(center_latlon, np.float64), c.shape), c, check=False)
    return float((w * d).sum() / w.sum())


def softmax_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def median_spacing_m(latlon: np.ndarray, sample: int = 10_000, seed: int = 0) -> float:
    """Median distance from a gallery point to its nearest other point (metres), from a sample."""
    from scipy.spatial import cKDTree

    xyz = unit_vectors(np.asarray(latlon, np.float64))
    if len(xyz) < 2:
        return 0.0
    tree = cKDTree(xyz)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(xyz), min(sample, len(xyz)), replace=False)
    chord, _ = tree.query(xyz[idx], k=2)
    return float(np.median(chord_to_m(chord[:, 1])))


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
    ids: Optional[np.ndarray] = None

    @property
    def latlon(self) -> tuple[float, float]:
        return float(self.latlon_topk[0, 0]), float(self.latlon_topk[0, 1])

    def as_rows(self) -> list[dict]:
        """[{rank, lat, lon, prob, score}] for tables."""
        return [{"rank": r + 1, "lat": float(ll[0]), "lon": float(ll[1]), "prob": float(p), "score": float(s)}
                for r, (ll, p, s) in enumerate(zip(self.latlon_topk, self.prob, self.score))]


class Predictor:
    """Model + gallery + faiss index, built once; queries never re-encode the gallery.

    bandwidth_m: knn-kde kernel σ in metres; None takes 4 × the gallery's median nearest-neighbour
    spacing (street level: tens of metres; a global gallery: kilometres). index_kind: see SearchIndex.
    small_batch_threads: CPU threads for batches of up to SMALL_BATCH images (see limit_threads).
    Puts ``model`` in eval mode; a training loop that evaluates mid-run must call ``train()`` again.
    """

    def __init__(self, model, gallery: Gallery, bandwidth_m: Optional[float] = None, index_kind: str = "auto",
                 batch_size: int = 64, small_batch_threads: Optional[int] = 1):
        if gallery.dim != model.embed_dim:
            raise ValueError(f"gallery embeddings are {gallery.dim}-d but the model embeds to {model.embed_dim}-d: "
                             "gallery and model come from different runs")
        self.model = model.eval()
        self.gallery = gallery
        self.index = SearchIndex(gallery.embeddings, kind=index_kind, small_batch_threads=small_batch_threads)
        self.small_batch_threads = small_batch_threads
        spacing = median_spacing_m(gallery.latlon)
        self.bandwidth_m = float(bandwidth_m) if bandwidth_m else max(4.0 * spacing, 1.0)
        self.batch_size = int(batch_size)
        with torch.no_grad():
            self.logit_scale = float(model.scale())

    @classmethod
    def from_run(cls, run_dir, runs_root=None, gallery: str = "gallery", device: str = "cpu", **kwargs) -> "Predictor":
        """Load a run (swclip.runs.load_run) and its gallery.npz (or gallery="image_gallery").

        The knn-kde bandwidth comes from ``kwargs``, else the manifest's ``kde_bandwidth_m``, else the gallery.
        """
        from swclip.runs import load_run

        run = load_run(run_dir, runs_root=runs_root, device=device)
        kwargs.setdefault("bandwidth_m", run.manifest.get("kde_bandwidth_m"))
        predictor = cls(run.model, run.gallery(gallery), **kwargs)
        predictor.run = run
        return predictor

    def _encode_batch(self, images: Sequence) -> np.ndarray:
        batch = torch.stack([self.model.preprocess_val(im) for im in images])  # (B, 3, H, W)
        small = len(images) <= SMALL_BATCH and self.model.device.type == "cpu"
        with torch.inference_mode(), limit_threads(self.small_batch_threads if small else None):
            return self.model.encode_image(batch).cpu().numpy()  # (B, D)

    def encode(self, images: Sequence, progress: bool = True) -> np.ndarray:
        """PIL images -> (N, D) float32 L2-normalised embeddings, in batches with a progress bar."""
        from tqdm.auto import tqdm

        starts = range(0, len(images), self.batch_size)
        out = [self._encode_batch(images[s:s + self.batch_size])
               for s in tqdm(starts, desc="encoding images", disable=not progress or len(starts) < 2)]
        return np.concatenate(out) if out else np.zeros((0, self.gallery.dim), np.float32)

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
            est = knn_kde(ll, p, self.bandwidth_m)
            out.append(Prediction(ll, p, s, i, est, weighted_radius_m(est, ll, p),
                                  None if self.gallery.ids is None else self.gallery.ids[i]))
        return out

    def predict(self, images: Sequence, top_k: int = 5, progress: bool = True) -> list[Prediction]:
        """list of PIL images (decode with swclip.data.open_image) -> list of Prediction, one per image.

        Streams: each batch is preprocessed, encoded and searched before the next is touched.
        """
        from tqdm.auto import tqdm

        images = list(images)
        starts = range(0, len(images), self.batch_size)
        out: list[Prediction] = []
        for s in tqdm(starts, desc="predicting", disable=not progress or len(starts) < 2):
            out += self.predict_embeddings(self._encode_batch(images[s:s + self.batch_size]), top_k)
        return out


# ------------------------------------------------------------------------------------ `swclip predict`


def configure(parser) -> None:
    """Arguments of ``swclip predict``."""
    parser.description = ("Predict where street-view photos were taken with a trained run: the top-k gallery "
                          "places with probabilities, the knn-kde estimate and a confidence radius.")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--run", required=True, help="run directory (holds manifest.json, model.safetensors, gallery.npz)")
    parser.add_argument("--runs-root", default=None, help="refuse a --run outside this folder")
    parser.add_argument("--top-k", type=int, default=5, help="places to list per image (default 5)")
    parser.add_argument("--gallery", choices=["gallery", "image_gallery"], default="gallery",
                        help="search candidate locations (default) or training images (kNN baseline)")
    parser.add_argument("--bandwidth-m", type=float, default=None, help="knn-kde kernel σ in metres (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")


def run(args) -> int:
    """``swclip predict``: load the run once, then stream the images through it."""
    import json

    from swclip.data import open_image

    predictor = Predictor.from_run(args.run, runs_root=args.runs_root, gallery=args.gallery,
                                   bandwidth_m=args.bandwidth_m)
    images = [open_image(path) for path in args.images]
    for path, pred in zip(args.images, predictor.predict(images, top_k=args.top_k, progress=len(images) > 1)):
        if args.json:
            print(json.dumps({"image": path, "estimate": list(pred.estimate), "radius_m": pred.radius_m,
                              "top_k": pred.as_rows()}))
            continue
        print(f"{path}: knn-kde estimate {pred.estimate[0]:.6f}, {pred.estimate[1]:.6f} (± {pred.radius_m:,.0f} m)")
        for row in pred.as_rows():
            print(f"  {row['rank']:>2}. {row['lat']:.6f}, {row['lon']:.6f}   p={row['prob']:.3f}   cos={row['score']:.3f}")
    return 0
