#!/usr/bin/env python
"""Evaluate a trained run and write the artefacts the app reads.

    python train/evaluate.py runs/demo/swclip-s50
    python train/evaluate.py copied/run --table /data/cities/samples.csv --root /data/cities   # trained elsewhere
    python train/evaluate.py runs/x --checkpoint runs/x/checkpoints/step_00004000             # an earlier checkpoint

Writes into the run directory: predictions.parquet (id, city, lat, lon,
pred_lat, pred_lon, error_m, knn-kde estimate, top-k, image), embeddings.npy,
gallery.npz, metrics.json (overall and per city, metre and km thresholds,
recall@k), and a metrics summary in manifest.json. See swclip/evaluation.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="run directory (holds manifest.json and model.safetensors)")
    p.add_argument("--table", help="sample table (default: the one named in the manifest)")
    p.add_argument("--root", help="image root (default: the manifest's, else the table's folder)")
    p.add_argument("--split", help="rows to evaluate (default: the manifest's eval split, else 'test')")
    p.add_argument("--gallery-split", help="rows whose locations form the gallery (default: 'train')")
    p.add_argument("--checkpoint", help="evaluate this checkpoints/step_* folder's weights (they become the run's weights)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from swclip.evaluation import evaluate_run

    metrics = evaluate_run(args.run_dir, table=args.table, root=args.root, split=args.split, train_split=args.gallery_split,
                           top_k=args.top_k, batch_size=args.batch_size, num_workers=args.num_workers,
                           device=args.device, progress=not args.quiet, checkpoint=args.checkpoint)
    keys = ("n", "median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "recall@1")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
