"""The Negatives page's update when β, margin or the variant moves: weights, shares, strongest pairs, figures.

    .venv/bin/python -m benchmarks.negatives [--batch 64 256 512] [--repeats 8]

Times, per control change on a batch of B embeddings from a 4 km city: the B × B negative
weights (swclip.method.negatives.batch_negatives, the loss's own negative_weights), the share
of false / hard negatives against distance, the strongest pairs of each kind, and the three
plotly figures serialised to JSON (what Streamlit sends). Variants alternate. Target: < 0.5 s at
B = 256 on the 2-core machine. Prints medians and writes benchmarks/results/negatives-<machine>.json.
"""

from __future__ import annotations

import numpy as np

from swclip.analysis.variogram import VariogramFit
from swclip.geo import local_metres_to_degrees
from swclip.method.negatives import batch_negatives, share_by_distance, strongest_pairs
from swclip.method.semivariogram_loss import LossVariogram
from swclip.viz import negatives as figs
from swclip.workflows.benchmark import batch_size_args, interleaved_times, report_batch_times

ORIGIN = (51.5072, -0.1276)
# an exponential γ with a 900 m range, nugget 0.3 of a sill 0.6: about the demo world's
VARIOGRAM = LossVariogram(
    VariogramFit(ok=True, model="exponential", nugget=0.18, partial_sill=0.42, sill=0.6, range_m=900.0),
    900.0,
    "practical",
    0,
    4096,
)


def update(emb: np.ndarray, latlon: np.ndarray, variant: str, beta: float) -> None:
    neg = batch_negatives(emb, latlon, VARIOGRAM, variant, beta, 0.02)
    shares = share_by_distance(neg)
    strongest_pairs(neg, "false")
    strongest_pairs(neg, "hard")
    for fig in (figs.negatives_heatmap(neg), figs.gamma_figure(neg, VARIOGRAM), figs.share_figure(shares)):
        fig.to_json()


def main(argv=None) -> int:
    args = batch_size_args(__doc__, [64, 256, 512], "timed updates per B (variant and β alternate)", argv)
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
    report_batch_times("negatives", "Negatives page update per control change", rows, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
