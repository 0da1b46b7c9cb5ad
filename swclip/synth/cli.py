"""``swclip synth``: render the demo world into a folder."""

from __future__ import annotations

import argparse
import time


def configure(parser: argparse.ArgumentParser) -> None:
    from swclip.synth.world import CITIES

    parser.description = (
        "Render the procedural demo world: eight UK city centres with grid, radial or organic streets, "
        "street-view-like images driven by latent Gaussian random fields with known correlation ranges. "
        "Writes samples.csv + images/ (read it with swclip.data.read_table), world.json (the ground truth), "
        "streets.geojson and latent.csv."
    )
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--seed", type=int, default=0, help="world seed; the same seed gives the same images (default 0)")
    parser.add_argument("--samples-per-city", type=int, default=1500, help="capture points per city (default 1500)")
    parser.add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
    parser.add_argument("--cities", nargs="+", default=None, metavar="CITY", help=f"subset of {', '.join(CITIES)} (default: all)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    parser.add_argument("--workers", type=int, default=2, help="render processes (default 2); the images do not depend on it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing world in --out")


def run(args: argparse.Namespace) -> int:
    from swclip.synth.world import make_world

    t0 = time.perf_counter()
    world = make_world(
        args.out,
        seed=args.seed,
        cities=args.cities,
        samples_per_city=args.samples_per_city,
        image_size=args.image_size,
        image_format=args.format,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=True,
    )
    dt = time.perf_counter() - t0
    n = len(world.table)
    print(f"wrote {n} images in {len(world.meta['cities'])} cities to {world.root} in {dt:.1f} s ({n / dt:.0f} images/s)")
    return 0
