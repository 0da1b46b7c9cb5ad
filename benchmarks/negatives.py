"""The Negatives page's update when β, margin or the variant moves: weights, shares, strongest pairs, figures.

    .venv/bin/python -m benchmarks.negatives [--batch 64 256 512] [--repeats 8]

Times, per control change on a batch of B embeddings from a 4 km city: the B × B negative
weights (swclip.analysis.negatives.batch_negatives, the loss's own negative_weights), the share
of false / hard negatives against distance, the strongest pairs of each kind, and the three
plotly figures serialised to JSON (what Streamlit sends). Variants alternate. Target: < 0.5 s at
B = 256 on the 2-core machine. Prints medians and writes benchmarks/results/negatives-<machine>.json.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from swclip.benchmark import interleaved_times, machine, write_result
from swclip.analysis.negatives import batch_negatives, share_by_distance, strongest_pairs
from swclip.analysis.variogram import VariogramFit
from swclip.geo import local_metres_to_degrees
from swclip.method.semivariogram_loss import LossVariogram
from swclip.viz import negatives as figs

ORIGIN = (51.5072, -0.1276)
# an exponential γ with a 900 m range, nugget 0.3 of a sill 0.6: about the demo world's
VARIOGRAM = LossVariogram(VariogramFit(ok=True, model="exponential", nugget=0.18, partial_sill=0.42, sill=0.6,
                                       range_m=900.0), 900.0, "practical", 0, 4096)


def update(emb: np.ndarray, latlon: np.ndarray, variant: str, beta: float) -> None:
    neg = batch_negatives(emb, latlon, VARIOGRAM, variant, beta, 0.02)
    shares = share_by_distance(neg)
    strongest_pairs(neg, "false")
    strongest_pairs(neg, "hard")
    for fig in (figs.negatives_heatmap(neg), figs.gamma_figure(neg, VARIOGRAM), figs.share_figure(shares)):
        fig.to_json()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256, 512], help="batch sizes B")
    p.add_argument("--repeats", type=int, default=8, help="timed updates per B (variant and β alternate)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for b in args.batch:
        ll = local_metres_to_degrees(rng.uniform(-2000, 2000, (b, 2)), ORIGIN)
        # embeddings that drift with place, plus noise: some pairs more alike than γ expects, near and far
        emb = np.concatenate([ll - ll.mean(0), 0.002 * rng.normal(size=(b, 30))], 1).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        settings = iter([("swclip", 1.0), ("chen2025", 1.0), ("swclip", 2.0)] * (args.repeats + 1))
        update(emb, ll, "swclip", 1.0)  # plotly's first figure pays its imports
        t = interleaved_times({"update": lambda: update(emb, ll, *next(settings))}, args.repeats, warmup=1)["update"]
        rows.append({"batch": b, **t})
    load = os.getloadavg()[0]
    print(f"{'B':>6} {'median ms':>10} {'min ms':>8}   (1-min load {load:.1f})")
    for r in rows:
        print(f"{r['batch']:>6} {1000 * r['median_s']:>10.1f} {1000 * r['min_s']:>8.1f}")
    if not args.no_write:
        path = write_result("negatives", {"what": "Negatives page update per control change", "load_avg_1min": load,
                                          "rows": rows})
        print(f"wrote {path}  ({machine()['cpu_cores']} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
