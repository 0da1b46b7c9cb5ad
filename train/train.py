#!/usr/bin/env python
"""Train SW-CLIP (or one-hot CLIP, SW-CLIP+NC, semivariogram-weighted CLIP) from a YAML config.

    python train/train.py --config train/configs/demo_swclip.yaml loss.sigma_m=50 steps=300
    torchrun --nproc_per_node 8 train/train.py --config train/configs/vitb32_swclip.yaml data.table=my.csv

Overrides are ``section.key=value`` (values read as YAML). The resolved config
is saved as ``<out_dir>/<run_id>/config.yaml``; ``--resume auto`` continues
from the run's newest checkpoint (or starts fresh when there is none).
See swclip/training.py for what is written and how.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (train/configs/*.yaml)")
    p.add_argument("--resume", help="checkpoint folder, run folder, or 'auto' (the run's newest checkpoint, if any)")
    p.add_argument("--evaluate", action="store_true", help="evaluate the final model on data.eval_split (train/evaluate.py)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. loss.name=swclip loss.sigma_m=50")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from swclip.train_utils import load_config
    from swclip.training import train

    cfg = load_config(args.config, args.overrides)
    run_dir = train(cfg, resume=args.resume)
    if (args.evaluate or cfg.evaluate) and int(os.environ.get("RANK", "0")) == 0:
        from swclip.evaluation import evaluate_run

        evaluate_run(run_dir)
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
