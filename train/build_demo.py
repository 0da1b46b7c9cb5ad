#!/usr/bin/env python
"""Build the demo bundle the app opens by default: a synthetic world and small CPU-trained runs.

    python train/build_demo.py --out runs/demo            # what `make run` calls when runs/demo/.complete is absent

Steps, each skipped when its output is already there:
  1. render the demo world (swclip.synth.make_world)      -> <out>/world/
  2. spatial split: held-out blocks with a buffer          -> <out>/world/split.csv
  3. train one-hot CLIP, SW-CLIP at several σ, SW-CLIP+NC  -> <out>/<run_id>/   (train/configs/demo_*.yaml)
  4. evaluate each run on the held-out blocks              -> predictions.parquet, metrics.json, ...
  5. the results table                                     -> <out>/results.json, <out>/results.md
and last <out>/.complete. A run folder counts as built when its own .complete exists.
Budget: under 8 minutes on a 2-core CPU, no GPU, no network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="bundle folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="world, split and training seed")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default: the demo configs')")
    p.add_argument("--models", nargs="+", default=None, help="run ids to build (default: all of DEMO_MODELS)")
    p.add_argument("--samples-per-city", type=int, default=None, help="world size per city (default: swclip.demo_bundle's)")
    p.add_argument("--cities", nargs="+", default=None, help="world cities (default: swclip.demo_bundle's)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the runs even where they are complete (the world is kept)")
    p.add_argument("--workers", type=int, default=None, help="runs trained at once, one torch thread each (default: min(2, CPUs))")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every run, e.g. batch_size=128")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from swclip.demo_bundle import build_demo

    build_demo(args.out, seed=args.seed, steps=args.steps, models=args.models, samples_per_city=args.samples_per_city,
               cities=args.cities, rebuild=args.rebuild, progress=not args.quiet, workers=args.workers,
               extra_overrides=tuple(args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
