"""The Soft labels page's redraw when σ moves: targets and the four figures, at batch sizes B.

    .venv/bin/python -m benchmarks.figures [--batch 64 256 1024] [--repeats 8]

Times, per σ change: the Hilbert order of the batch, Q = soft_targets at the new σ, the
one-hot matrix, the effective positives, and the four plotly figures serialised to JSON
(what Streamlit sends to the browser). Prints medians and writes
benchmarks/results/figures-<machine>.json. This was a timed test once (goal ~0.3 s at
B = 256); speed lives here now, never in a test.
"""

from __future__ import annotations

import numpy as np

from swclip.geo import local_metres_to_degrees
from swclip.method.soft_labels import effective_positives, soft_targets
from swclip.viz import figures
from swclip.viz.spatial_bins import hilbert_order
from swclip.workflows.benchmark import batch_size_args, interleaved_times, report_batch_times

ORIGIN = (51.5072, -0.1276)


def redraw(latlon: np.ndarray, sigma_m: float) -> None:
    ll = latlon[hilbert_order(latlon)]
    q = soft_targets(ll, sigma_m)
    onehot = soft_targets(ll, 0.0, "onehot")
    for fig in (
        figures.target_heatmap(q, "Q"),
        figures.target_heatmap(onehot, "1", zmax=1.0),
        figures.kernel_curve(sigma_m, "gaussian"),
        figures.effective_positives_figure(effective_positives(q), len(ll)),
    ):
        fig.to_json()


def main(argv=None) -> int:
    args = batch_size_args(__doc__, [64, 256, 1024], "timed redraws per B (σ cycles through 50/80/120 m)", argv)
    rng = np.random.default_rng(0)
    pool = local_metres_to_degrees(rng.uniform(-2000, 2000, (max(args.batch) * 2, 2)), ORIGIN)  # a 4 km city
    figures.target_heatmap(np.eye(4), "warm-up")  # plotly's first figure pays its imports
    rows = []
    for b in args.batch:
        sigmas = iter(np.resize([50.0, 80.0, 120.0], args.repeats + 1))
        ll = pool[rng.choice(len(pool), b, replace=False)]
        t = interleaved_times({"redraw": lambda: redraw(ll, float(next(sigmas)))}, args.repeats, warmup=1)["redraw"]
        rows.append({"batch": b, **t})
    report_batch_times("figures", "soft-label redraw per σ change", rows, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
