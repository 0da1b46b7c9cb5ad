"""A regional runs folder for the app's tests: one region about 300 km across, 4 photos per place.

What a user's own country-scale dataset looks like (100 places × 4 headings in central France, where
every place's true country is France), written directly and fast: small synthetic images and a sample
table, two runs on the same evaluation photos (``regional-swclip``, σ = 20 km, and ``regional-clip``,
one-hot) with predictions tens of km off, embeddings from a smooth random field (a squared-exponential
Gaussian process of length scale LENGTH_M, so the embedding variogram levels off at about 2.45 × that),
a random swclip-tiny model with a location and an image gallery, and metrics.json from the evaluation's
own metric code. Kept in pytest's cache under a hash of the code that writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.world_fixture import cached_build

REPO = Path(__file__).resolve().parents[1]
CENTRE = (46.6, 2.4)  # central France: 300 km around it stays in France
RADIUS_M = 150_000.0
N_PLACES, HEADINGS = 100, 4
N_TRAIN_PLACES = 150  # gallery places (training photos), apart from the evaluation places
CITY = "Centre"
DIM = 32
LENGTH_M = 25_000.0  # length scale of the embedding field
KDE_BANDWIDTH_M = 5_000.0
TOP_K = 5
RUNS = ("regional-swclip", "regional-clip")


def _places(rng, n):
    from swclip.geo import destination

    return destination(
        np.tile(np.array(CENTRE), (n, 1)), rng.uniform(0, 360, n), RADIUS_M * np.sqrt(rng.uniform(0, 1, n))
    )


def _field(latlon, w, b, heading_noise, rng):
    """(N, DIM) unit embeddings: a random-feature Gaussian process of the position plus per-photo noise."""
    from swclip.geo import degrees_to_local_metres

    xy = degrees_to_local_metres(latlon, CENTRE)  # (N, 2) metres
    f = np.sqrt(2.0 / DIM) * np.cos(xy @ w.T + b)  # (N, DIM)
    f += heading_noise * rng.standard_normal(f.shape) * np.sqrt(1.0 / DIM)
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def build(root: Path, seed: int = 0) -> Path:
    """Write the data folder and the two runs under ``root``; returns root."""
    import pandas as pd
    from PIL import Image

    from swclip import runs
    from swclip.analysis.metrics import scale_metrics, summarize, summarize_places
    from swclip.geo import destination, haversine_m
    from swclip.method.model import SWCLIP, ModelConfig
    from swclip.retrieval.gallery import Gallery

    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    w = rng.standard_normal((DIM, 2)) / LENGTH_M  # squared-exponential kernel of length LENGTH_M
    b = rng.uniform(0, 2 * np.pi, DIM)

    # evaluation places (4 headings each, one spot) and gallery places
    eval_places = _places(rng, N_PLACES)
    train_places = _places(rng, N_TRAIN_PLACES)
    rows = []
    for split, places in (("test", eval_places), ("train", train_places)):
        for p, (la, lo) in enumerate(places):
            for h in range(HEADINGS):
                rows.append((f"{split}-{p:03d}-{h}", split, float(la), float(lo), f"{split}-{p:03d}", 90 * h))
    table = pd.DataFrame(rows, columns=["id", "split", "lat", "lon", "place_id", "heading"])
    table["city"] = CITY
    table["image"] = [f"images/{i}.png" for i in table["id"]]
    emb_all = _field(table[["lat", "lon"]].to_numpy(), w, b, 0.6, rng)
    for i, e in zip(table["image"], emb_all):  # 16 x 16 images coloured by the embedding field
        px = np.clip(128 + 400 * np.outer(e[:16], e[16:]), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([px, px.T, np.roll(px, 3, 0)], -1)).save(data / i)
    table[["id", "image", "lat", "lon", "city", "split", "place_id", "heading"]].to_csv(
        data / "samples.csv", index=False
    )

    ev = table[table["split"] == "test"].reset_index(drop=True)
    true = ev[["lat", "lon"]].to_numpy(np.float64)
    emb = emb_all[table["split"].to_numpy() == "test"]
    tr = table[table["split"] == "train"].reset_index(drop=True)
    config = ModelConfig(arch="swclip-tiny", embed_dim=DIM, gps_scales=(1.0, 16.0, 256.0), gps_hidden=64, gps_depth=2)
    n = len(ev)
    for r, (run_id, sigma_m, spread_m) in enumerate(zip(RUNS, (20_000.0, 0.0), (15_000.0, 30_000.0))):
        run_dir = root / run_id
        far = rng.uniform(0, 1, n) < 0.1  # one in ten lands anywhere in the region
        near = destination(true, rng.uniform(0, 360, n), spread_m * rng.exponential(1.0, n))
        pred = np.where(far[:, None], _places(rng, n), near)
        topk = np.stack(
            [pred] + [destination(pred, rng.uniform(0, 360, n), 8_000 * rng.exponential(1.0, n)) for _ in range(4)], 1
        )
        prob = -np.sort(-rng.dirichlet(np.full(TOP_K, 0.7), n), 1)
        err = haversine_m(pred, true)
        df = pd.DataFrame(
            {
                "id": ev["id"],
                "city": ev["city"],
                "lat": true[:, 0],
                "lon": true[:, 1],
                "pred_lat": pred[:, 0],
                "pred_lon": pred[:, 1],
                "error_m": err,
                "kde_lat": pred[:, 0],
                "kde_lon": pred[:, 1],
                "kde_error_m": err,
                "radius_m": np.full(n, KDE_BANDWIDTH_M),
                "topk_lat": list(topk[..., 0]),
                "topk_lon": list(topk[..., 1]),
                "topk_prob": list(prob),
                "topk_score": list(prob),
                "image": ev["image"],
                "place_id": ev["place_id"],
            }
        )
        manifest = {
            "run_id": run_id,
            "sigma_m": sigma_m,
            "loss": {"name": "swclip" if sigma_m else "clip", "sigma_m": sigma_m},
            "data": {"format": "table", "root": "../data", "table": "../data/samples.csv"},
            "kde_bandwidth_m": KDE_BANDWIDTH_M,
        }
        metrics = summarize(err, df["city"].to_numpy())
        metrics["per_place"] = summarize_places(err, df["place_id"].to_numpy())
        metrics.update(scale_metrics(pred, true, topk, prob, KDE_BANDWIDTH_M, mode=1))
        metrics["kde_bandwidth_m"] = KDE_BANDWIDTH_M
        model = SWCLIP(config, load_pretrained=False)
        runs.save_run(run_dir, model, manifest, {"predictions": df, "embeddings": emb, "metrics": metrics})
        if r == 0:
            tr_ll = tr[["lat", "lon"]].to_numpy(np.float64)
            runs.write_gallery(run_dir, Gallery(tr_ll, emb_all[table["split"].to_numpy() == "train"], "location"))
            runs.write_image_gallery(
                run_dir,
                Gallery(tr_ll, emb_all[table["split"].to_numpy() == "train"], "image", ids=tr["image"].to_numpy()),
            )
        else:
            for name in ("gallery", "image_gallery"):
                (run_dir / runs.ARTEFACTS[name]).symlink_to(Path("..") / RUNS[0] / runs.ARTEFACTS[name])
    return root


def cached_regional(cache_dir: Path) -> Path:
    """:func:`build` once per version of the code that writes it (tests/world_fixture.py's cached_build)."""
    return cached_build(cache_dir, sorted((REPO / "swclip").rglob("*.py")) + [Path(__file__)], build)
