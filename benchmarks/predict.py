#!/usr/bin/env python
"""Prediction and search latency, and the towers' training-step times.

    python benchmarks/predict.py photo            # one photo: decode, preprocess, encode, search, top-5 (+ knn-kde)
    python benchmarks/predict.py search           # faiss search alone over 100k and 1M entries, D = 64 and 512
    python benchmarks/predict.py steps            # training step (fwd + bwd + AdamW, batch 256) per tiny config
    python benchmarks/predict.py all              # the three, one after the other
    python benchmarks/predict.py encode --arch ViT-B-32 --dtype bfloat16 --device cuda   # encode images/s (GPU)
    python benchmarks/predict.py photo --run runs/demo/swclip_sigma50    # a trained run and its gallery

``photo`` uses a 640×480 JPEG held in memory (a street-view photo's size) and,
without --run, the demo configuration (swclip.method.model.DEMO_CONFIG) at random
init with a gallery of --gallery-n street-level locations: latency does not
depend on what the weights learned. Stages are timed round-robin so load
drifts hit all alike; the end-to-end figure is Predictor.predict on one image.
``search`` times exact IndexFlatIP (what galleries up to 1M use) one query at
a time and in batches, and IVF at 1M (build time, latency, recall@10 against
exact), on what a location gallery holds: a random-init GPS tower's embeddings
of street-level points (--data random: i.i.d. unit vectors, IVF's worst case).
Writes benchmarks/results/predict-<machine>.json.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np

from swclip.workflows.benchmark import interleaved_times, machine, write_result


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_photo(args) -> dict:
    import torch
    from PIL import Image

    from swclip.data import open_image
    from swclip.method.model import DEMO_CONFIG, SWCLIP
    from swclip.retrieval.gallery import Gallery
    from swclip.retrieval.kde import knn_kde, softmax_np, weighted_radius_m
    from swclip.retrieval.predictor import Predictor
    from swclip.runs import load_predictor
    from swclip.threads import limit_threads

    if args.run:
        predictor = load_predictor(args.run)
        model, source = predictor.model, str(args.run)
    else:
        model = SWCLIP(DEMO_CONFIG).eval()
        rng = np.random.default_rng(0)
        latlon = np.column_stack(
            [48.85 + rng.uniform(0, 0.04, args.gallery_n), 2.33 + rng.uniform(0, 0.05, args.gallery_n)]
        )
        predictor = Predictor(model, Gallery.from_locations(model, latlon), kde_bandwidth_m=100.0)
        source = "DEMO_CONFIG, random init"
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    state = {}

    def decode():
        state["img"] = open_image(jpeg)

    def preprocess():
        state["x"] = model.preprocess_val(state["img"]).unsqueeze(0)

    def encode():  # as Predictor does it: one thread for a single image (swclip.retrieval.search.limit_threads)
        with limit_threads(1):
            state["q"] = model.encode_image(state["x"]).numpy()

    def encode_all_threads():  # torch's default thread count, for comparison
        model.encode_image(state["x"]).numpy()

    def search_top5():
        scores, idx = predictor.index.search(state["q"], 5)
        p = softmax_np(predictor.logit_scale * scores[0].astype(np.float64))
        ll = predictor.gallery.latlon[idx[0]]
        est = knn_kde(ll, p, predictor.kde_bandwidth_m)
        weighted_radius_m(est, ll, p)

    def end_to_end():
        predictor.predict([open_image(jpeg)], top_k=5, progress=False)

    with torch.no_grad():
        decode(), preprocess(), encode()
        t = interleaved_times(
            {
                "decode": decode,
                "preprocess": preprocess,
                "encode": encode,
                "encode_all_threads": encode_all_threads,
                "search_top5": search_top5,
                "end_to_end": end_to_end,
            },
            repeats=args.repeats,
            warmup=3,
        )
    ms = {k: round(v["median_s"] * 1000, 3) for k, v in t.items()}
    print(
        f"one photo ({source}, gallery {len(predictor.gallery):,}, D={model.embed_dim}): "
        + ", ".join(f"{k} {v} ms" for k, v in ms.items())
    )
    return {
        "model": source,
        "gallery_n": len(predictor.gallery),
        "embed_dim": model.embed_dim,
        "photo_px": [640, 480],
        "median_ms": ms,
        "min_ms": {k: round(v["min_s"] * 1000, 3) for k, v in t.items()},
        "goal_ms": 300,
        "meets_goal": ms["end_to_end"] < 300,
    }


def gallery_embeddings(n: int, dim: int, kind: str, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 unit vectors: "gps" = a random-init demo GPS tower's embeddings of street-level
    points in eight 4 km city boxes (what a location gallery holds: a 2-D manifold), "random" = i.i.d."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return _unit(rng.standard_normal((n, dim), dtype=np.float32))
    import dataclasses

    import torch

    from swclip.method.model import DEMO_CONFIG, SWCLIP

    model = SWCLIP(dataclasses.replace(DEMO_CONFIG, embed_dim=dim)).eval()
    centres = np.column_stack([rng.uniform(50, 56, 8), rng.uniform(-4, 1, 8)])
    latlon = centres[rng.integers(0, 8, n)] + rng.uniform(-0.018, 0.018, (n, 2))
    with torch.no_grad():
        return np.concatenate(
            [model.encode_location(latlon[s : s + 65536], check=False).numpy() for s in range(0, n, 65536)]
        )


def bench_search(args) -> dict:
    from swclip.retrieval.search import SearchIndex

    out = []
    for d in args.dims:
        for n in args.sizes:
            t0 = time.perf_counter()
            both = gallery_embeddings(n + max(args.queries, 256), d, args.data)
            x, q = both[:n], both[n:]
            print(f"{n:,} x {d} {args.data} embeddings in {time.perf_counter() - t0:.1f} s", flush=True)
            t0 = time.perf_counter()
            flat = SearchIndex(x, kind="flat")
            build_flat = time.perf_counter() - t0

            def one(i=[0]):
                flat.search(q[i[0] % args.queries : i[0] % args.queries + 1], 10)
                i[0] += 1

            timing = interleaved_times({"single": one}, repeats=args.queries, warmup=2)["single"]
            t0 = time.perf_counter()
            flat.search(q[:256], 10)
            batch_ms = (time.perf_counter() - t0) * 1000 / 256
            row = {
                "n": n,
                "dim": d,
                "memory_mb": round(x.nbytes / 2**20, 1),
                "flat_build_s": round(build_flat, 3),
                "flat_single_query_ms": round(timing["median_s"] * 1000, 3),
                "flat_batch256_per_query_ms": round(batch_ms, 3),
            }
            if n >= 1_000_000 and args.ivf:
                t0 = time.perf_counter()
                ivf = SearchIndex(x, kind="ivf")
                row["ivf_build_s"] = round(time.perf_counter() - t0, 2)
                row["ivf_nlist_nprobe"] = [ivf.index.nlist, ivf.index.nprobe]

                def one_ivf(i=[0]):
                    ivf.search(q[i[0] % args.queries : i[0] % args.queries + 1], 10)
                    i[0] += 1

                row["ivf_single_query_ms"] = round(
                    interleaved_times({"ivf": one_ivf}, repeats=args.queries, warmup=2)["ivf"]["median_s"] * 1000, 3
                )
                _, exact = flat.search(q[:100], 10)
                _, approx = ivf.search(q[:100], 10)
                row["ivf_recall@10"] = round(
                    float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])), 3
                )
                del ivf
            print(row, flush=True)
            out.append(row)
            flat = x = q = both = (
                None  # free the index and the arrays before the next size (the closures above are done)
            )
    return {"data": args.data, "rows": out, "goal_ms_per_query_1m": 50}


def bench_steps(args) -> dict:
    import dataclasses

    import torch

    from swclip.method.losses import SoftClipLoss
    from swclip.method.model import DEMO_CONFIG, SWCLIP

    b = args.batch
    configs = {
        "swclip-tiny + gps (DEMO_CONFIG)": DEMO_CONFIG,
        "swclip-tiny-rn + gps": dataclasses.replace(DEMO_CONFIG, arch="swclip-tiny-rn"),
        "swclip-tiny + text": dataclasses.replace(DEMO_CONFIG, location_tower="text"),
    }
    rng = np.random.default_rng(0)
    latlon = np.column_stack([48.85 + rng.uniform(0, 0.04, b), 2.33 + rng.uniform(0, 0.05, b)])
    images = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loss_fn = SoftClipLoss(50.0)
    steps, params = {}, {}
    for name, cfg in configs.items():
        model = SWCLIP(cfg).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def step(model=model, opt=opt):
            loss = sum(loss_fn(**model(images, latlon)).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
        params[name] = sum(p.numel() for p in model.parameters())
    t = interleaved_times(steps, repeats=args.step_repeats, warmup=2)
    base = t["swclip-tiny + gps (DEMO_CONFIG)"]["median_s"]
    rows = [
        {
            "config": k,
            "params_m": round(params[k] / 1e6, 2),
            "median_s": round(v["median_s"], 4),
            "min_s": round(v["min_s"], 4),
            "images_per_s": round(b / v["median_s"]),
            "ratio_to_demo": round(v["median_s"] / base, 2),
            "s_per_600_steps": round(600 * v["median_s"], 1),
        }
        for k, v in t.items()
    ]
    for r in rows:
        print(r, flush=True)
    return {"batch": b, "loss": "SoftClipLoss(50 m)", "rows": rows}


def bench_encode(args) -> dict:
    """Image-encode throughput of an architecture (random init, random input): images/s."""
    import dataclasses

    import torch

    from swclip.method.model import DEMO_CONFIG, SWCLIP

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = dataclasses.replace(DEMO_CONFIG, arch=args.arch, dtype=args.dtype, image_size=args.image_size)
    model = SWCLIP(cfg).to(device).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    x = torch.randn(args.encode_batch, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def encode():
        with torch.inference_mode():
            model.encode_image(x)

    t = interleaved_times({"encode": encode}, repeats=args.step_repeats, warmup=2, sync=sync)["encode"]
    row = {
        "arch": args.arch,
        "image_size": size,
        "dtype": args.dtype,
        "device": device,
        "batch": args.encode_batch,
        "median_s": round(t["median_s"], 4),
        "images_per_s": round(args.encode_batch / t["median_s"], 1),
    }
    print(row, flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="all", choices=["photo", "search", "steps", "encode", "all"])
    p.add_argument("--run", help="a run directory for 'photo' (default: the demo config at random init)")
    p.add_argument("--gallery-n", type=int, default=24_000, help="gallery size for 'photo' without --run")
    p.add_argument("--repeats", type=int, default=30, help="timed repetitions per stage for 'photo'")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="gallery sizes for 'search'")
    p.add_argument("--dims", type=int, nargs="+", default=[64, 512], help="embedding dimensions for 'search'")
    p.add_argument("--queries", type=int, default=50, help="single queries timed per gallery for 'search'")
    p.add_argument(
        "--data",
        choices=["gps", "random"],
        default="gps",
        help="search embeddings: a GPS tower's (a real gallery's shape, default) or random unit vectors",
    )
    p.add_argument("--no-ivf", dest="ivf", action="store_false", help="skip the IVF comparison at 1M")
    p.add_argument("--batch", type=int, default=256, help="batch size for 'steps'")
    p.add_argument("--step-repeats", type=int, default=8, help="timed steps per config for 'steps'")
    p.add_argument("--arch", default="swclip-tiny", help="architecture for 'encode' (e.g. ViT-B-32)")
    p.add_argument("--image-size", type=int, default=None, help="image size for 'encode' (default: the arch's)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype for 'encode'")
    p.add_argument("--device", default="auto", help="device for 'encode' (auto: cuda if available)")
    p.add_argument("--encode-batch", type=int, default=256, help="batch size for 'encode'")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    result = {}
    if args.what in ("photo", "all"):
        result["photo"] = bench_photo(args)
    if args.what in ("search", "all"):
        result["search"] = bench_search(args)
    if args.what in ("steps", "all"):
        result["steps"] = bench_steps(args)
    if args.what == "encode":
        result["encode"] = bench_encode(args)
    if not args.no_write:
        name = "predict" if args.what == "all" else f"predict-{args.what}"
        print("wrote", write_result(name, result))
    else:
        print(machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
