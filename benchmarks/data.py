"""Demo-world rendering speed and loader throughput (decode + transform, per core).

    .venv/bin/python -m benchmarks.data [--samples-per-city 1500] [--loader-images 600] [--repeats 3]

1. Rendering: ``make_world`` at the default demo size (8 cities × samples, 64 px,
   JPEG) with 1 and 2 worker processes: seconds and images/s.
2. Loader: ``ImageDataset`` items per second in one process with one torch
   thread (one core), for the demo's 64 px JPEGs through open_clip's 64 px and
   224 px eval transforms, and for 640×480 street-view-sized JPEGs through the
   224 px transform. Measured interleaved, so load drifts hit all alike.

3. Structure: in every city of the default world, the mean distance between
   images' pixel features (8×8 thumbnails) for pairs in distance bins, relative
   to pairs beyond 1,600 m: the rendered world's variogram, in pixels.

Writes benchmarks/results/data-<machine>.json (with the load average, since the
machine is shared) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _photos(root: Path, n: int, size=(640, 480), seed: int = 0) -> list[str]:
    """Street-view-sized JPEGs: smooth blobs plus noise, so the JPEG is as heavy as a photo's."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rel = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)).resize(
            size, Image.BICUBIC
        )
        arr = np.asarray(base.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64) + rng.normal(
            0, 8, (size[1], size[0], 3)
        )
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / "photos" / f"{i}.jpg", quality=90)
        rel.append(f"photos/{i}.jpg")
    return rel


BINS_M = (0, 100, 200, 400, 800, 1600)


def structure(world) -> dict:
    """Per city: mean pixel-feature distance per distance bin, over the mean beyond the last bin edge."""
    from PIL import Image

    from swclip.geo import pairwise_haversine_m

    out = {}
    for city, sub in world.table.groupby("city", sort=False):
        x = np.stack(
            [np.asarray(Image.open(world.root / p).reduce(8), dtype=np.float64).ravel() / 255 for p in sub["image"]]
        )
        gram = x @ x.T
        sq = np.diag(gram)
        iu = np.triu_indices(len(sub), 1)
        f = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * gram, 0))[iu]
        d = pairwise_haversine_m(sub[["lat", "lon"]].to_numpy())[iu]
        far = f[d > BINS_M[-1]].mean()
        edges = list(BINS_M) + [np.inf]
        out[city] = {
            f"{lo}-{hi} m": float(f[(d >= lo) & (d < hi)].mean() / far) for lo, hi in zip(edges[:-1], edges[1:])
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples-per-city", type=int, default=1500)
    parser.add_argument("--loader-images", type=int, default=600, help="images per loader measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import open_clip
    import pandas as pd
    import torch

    from swclip.data import ImageDataset
    from swclip.synth import make_world
    from swclip.workflows.benchmark import interleaved_times, write_result

    result: dict = {"render": {}, "loader": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for workers in (1, 2):
            t0 = time.perf_counter()
            world = make_world(tmp / f"w{workers}", seed=0, samples_per_city=args.samples_per_city, workers=workers)
            dt = time.perf_counter() - t0
            n = len(world.table)
            result["render"][f"workers={workers}"] = {
                "images": n,
                "image_size": 64,
                "seconds": dt,
                "images_per_s": n / dt,
            }
            print(
                f"render 8 cities × {args.samples_per_city} at 64 px, {workers} worker(s): "
                f"{dt:.1f} s, {n / dt:.0f} images/s"
            )

        result["structure"] = structure(world)
        for city, row in result["structure"].items():
            print(f"pixel distance / far-pair distance, {city}: " + ", ".join(f"{k}: {v:.2f}" for k, v in row.items()))

        torch.set_num_threads(1)  # per core
        demo = world.table.sample(n=min(args.loader_images, len(world.table)), random_state=0)
        photos = pd.DataFrame(dict(image=_photos(tmp, args.loader_images // 4), lat=51.5, lon=-0.1))
        cases = {
            "demo 64px jpg -> open_clip 64": (demo, world.root, 64),
            "demo 64px jpg -> open_clip 224": (demo, world.root, 224),
            "640x480 jpg -> open_clip 224": (photos, tmp, 224),
        }
        sets = {
            name: ImageDataset(t, root, open_clip.image_transform(size, is_train=False))
            for name, (t, root, size) in cases.items()
        }

        def loop(ds):
            return lambda: [ds[i] for i in range(len(ds))]

        timing = interleaved_times({name: loop(ds) for name, ds in sets.items()}, repeats=args.repeats)
        for name, ds in sets.items():
            per_s = len(ds) / timing[name]["median_s"]
            result["loader"][name] = {"images": len(ds), **timing[name], "images_per_s_per_core": per_s}
            print(f"loader {name}: {per_s:.0f} images/s per core")
    result["load_average_1_5_15"] = list(os.getloadavg())
    path = write_result("data", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
