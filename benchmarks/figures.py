"""The Soft labels page's redraw when σ moves: targets and the four figures, at batch sizes B.

    .venv/bin/python -m benchmarks.figures [--batch 64 256 1024] [--repeats 8]

Times, per σ change: the Hilbert order of the batch, Q = soft_targets at the new σ, the
one-hot matrix, the effective positives, and the four plotly figures serialised to JSON
(what Streamlit sends to the browser). Prints medians and writes
benchmarks/results/figures-<machine>.json. This was a timed test once (goal ~0.3 s at
B = 256); speed lives here now, never in a test.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from swclip.benchmark import interleaved_times, machine, write_result
from swclip.geo import local_metres_to_degrees
from swclip.method.soft_labels import effective_positives, soft_targets
from swclip.viz import figures
from swclip.viz.spatial_bins import hilbert_order

ORIGIN = (51.5072, -0.1276)


def redraw(latlon: np.ndarray, sigma_m: float) -> None:
    ll = latlon[hilbert_order(latlon)]
    q = soft_targets(ll, sigma_m)
    onehot = soft_targets(ll, 0.0, "onehot")
    for fig in (figures.target_heatmap(q, "Q"), figures.target_heatmap(onehot, "1", zmax=1.0),
                figures.kernel_curve(sigma_m, "gaussian"), figures.effective_positives_figure(effective_positives(q), len(ll))):
        fig.to_json()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256, 1024], help="batch sizes B")
    p.add_argument("--repeats", type=int, default=8, help="timed redraws per B (σ cycles through 50/80/120 m)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    pool = local_metres_to_degrees(rng.uniform(-2000, 2000, (max(args.batch) * 2, 2)), ORIGIN)  # a 4 km city
    figures.target_heatmap(np.eye(4), "warm-up")  # plotly's first figure pays its imports
    rows = []
    for b in args.batch:
        sigmas = iter(np.resize([50.0, 80.0, 120.0], args.repeats + 1))
        ll = pool[rng.choice(len(pool), b, replace=False)]
        t = interleaved_times({"redraw": lambda: redraw(ll, float(next(sigmas)))}, args.repeats, warmup=1)["redraw"]
        rows.append({"batch": b, **t})
    load = os.getloadavg()[0]
    print(f"{'B':>6} {'median ms':>10} {'min ms':>8}   (1-min load {load:.1f})")
    for r in rows:
        print(f"{r['batch']:>6} {1000 * r['median_s']:>10.1f} {1000 * r['min_s']:>8.1f}")
    if not args.no_write:
        path = write_result("figures", {"what": "soft-label redraw per σ change", "load_avg_1min": load, "rows": rows})
        print(f"wrote {path}  ({machine()['cpu_cores']} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
