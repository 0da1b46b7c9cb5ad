"""Statistics of an experiment over seeds: the spread across seeds, and a paired block bootstrap.

The block bootstrap answers "how much of a difference between two configs on
the test set could be luck of which places were held out?". Test rows come in
spatial blocks (``swclip.data.spatial_split``'s ``block``), and rows of one
block are correlated, so whole blocks are resampled with replacement. The two
configs are paired twice: on the same resampled rows, and seed by seed (seed k
of config B against seed k of config A). Each resample's statistic is the mean
over seeds of the per-seed statistic, so the interval is about the test
places; the spread across seeds is reported beside it.

A resample is a vector of block counts c (each block drawn c_b times), so a row
of block b carries weight c_b: statistics are weighted, which equals (exactly,
medians included) evaluating the statistic on the concatenated resampled rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from swclip.analysis.metrics import summarize
from swclip.loss_names import SWCLIP, SWCLIP_NC


def weighted_median(values: np.ndarray, weights: np.ndarray, chunk: int = 256) -> np.ndarray:
    """np.median of each seed's values repeated by integer weights, without repeating them.

    values: (S, N); weights: (R, N) non-negative integers, each row with a positive total.
    -> (R, S): entry (r, s) is the median of the multiset where values[s, i] appears
    weights[r, i] times (the mean of the two middle elements for an even total, as np.median).
    """
    v = np.sort(np.atleast_2d(values), axis=1)  # (S, N)
    order = np.argsort(np.atleast_2d(values), axis=1)  # (S, N)
    out = np.empty((weights.shape[0], v.shape[0]))
    for start in range(0, weights.shape[0], chunk):
        w = weights[start : start + chunk][:, order]  # (r, S, N) weights in each seed's sorted order
        cum = np.cumsum(w, axis=-1)  # (r, S, N)
        total = cum[..., -1:]  # (r, S, 1)
        # the k-th element (0-based) of the expanded sorted multiset is the first i with cum[i] > k
        lo = (cum <= (total - 1) // 2).sum(-1)  # (r, S)
        hi = (cum <= total // 2).sum(-1)
        seeds = np.arange(v.shape[0])[None, :]
        out[start : start + chunk] = (v[seeds, lo] + v[seeds, hi]) / 2.0
    return out


def _weighted_mean(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x: (S, N), weights: (R, N) -> (R, S)."""
    return (weights @ x.T) / weights.sum(1, keepdims=True)


# statistic name -> f(errors (S, N) metres, weights (R, N)) -> (R, S)
STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "median_m": weighted_median,
    "mean_m": _weighted_mean,
    "acc@100m": lambda e, w: _weighted_mean((e <= 100.0).astype(np.float64), w),
    "acc@250m": lambda e, w: _weighted_mean((e <= 250.0).astype(np.float64), w),
    "acc@500m": lambda e, w: _weighted_mean((e <= 500.0).astype(np.float64), w),
    "acc@1km": lambda e, w: _weighted_mean((e <= 1000.0).astype(np.float64), w),
}


def block_counts(n_blocks: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_blocks) how often each block is drawn when n_blocks blocks are drawn with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_blocks, size=(n_boot, n_blocks))  # (R, B) block indices
    return np.stack([np.bincount(d, minlength=n_blocks) for d in draws])


def paired_block_bootstrap(
    errors_a_m: Any,
    errors_b_m: Any,
    block: Any,
    statistics: Mapping[str, Callable] | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Intervals of each statistic for A, B and B − A, resampling held-out blocks, paired by seed.

    errors_a_m, errors_b_m: (S, N) metres, seed k of A in row k, paired with row k of B, over the
    same N test rows. block: (N,) the block label of each row. Returns one dict per statistic:
    statistic, a, b, diff (mean over seeds of the per-seed statistic on all rows), *_lo, *_hi
    (two-sided ``ci`` percentile bounds), n_seeds, n_blocks, n_boot.
    """
    ea = np.atleast_2d(np.asarray(errors_a_m, dtype=np.float64))
    eb = np.atleast_2d(np.asarray(errors_b_m, dtype=np.float64))
    if ea.shape != eb.shape:
        raise ValueError(f"errors_a_m {ea.shape} and errors_b_m {eb.shape} must be paired: same seeds, same rows")
    labels, block_idx = np.unique(np.asarray(block).astype(str), return_inverse=True)
    if block_idx.size != ea.shape[1]:
        raise ValueError(f"block has {block_idx.size} labels for {ea.shape[1]} rows")
    if len(labels) < 2:
        raise ValueError("a block bootstrap needs at least 2 blocks")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if not (np.isfinite(ea).all() and np.isfinite(eb).all()):
        raise ValueError("errors must be finite")
    counts = block_counts(len(labels), n_boot, seed)  # (R, B)
    weights = counts[:, block_idx].astype(np.float64)  # (R, N) each row weighted by its block's count
    full = np.ones((1, ea.shape[1]))
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    out = []
    for name, fn in dict(statistics or STATISTICS).items():
        sa, sb = fn(ea, weights).mean(1), fn(eb, weights).mean(1)  # (R,) mean over seeds
        a, b = float(fn(ea, full).mean()), float(fn(eb, full).mean())
        (a_lo, b_lo, d_lo), (a_hi, b_hi, d_hi) = np.percentile(np.stack([sa, sb, sb - sa], 1), q, axis=0)
        out.append(
            dict(
                statistic=name,
                a=a,
                a_lo=a_lo,
                a_hi=a_hi,
                b=b,
                b_lo=b_lo,
                b_hi=b_hi,
                diff=b - a,
                diff_lo=d_lo,
                diff_hi=d_hi,
                n_seeds=int(ea.shape[0]),
                n_blocks=int(len(labels)),
                n_boot=int(n_boot),
            )
        )
    return out


# --------------------------------------------------------------------------- aggregation of experiment.json

VAL_SIGMA = "swclip (val σ)"
VAL_NC = "swclip+nc (val σ, λ)"
METRICS = ("median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "recall@1")


def seed_records(exp: dict, select_metric: str | None = None) -> dict:
    """{config label: {seed: record}} of the finished runs, plus the validation-selected configs.

    VAL_SIGMA: per seed, the sweep run (kind "swclip") with the lowest validation ``select_metric``;
    VAL_NC: per seed, the NC run with the lowest one. Runs without metrics (skipped) are left out.
    """
    metric = select_metric or exp["protocol"].get("select_metric", "median_m")
    out: dict = {}
    for r in exp["runs"]:
        if "test" in r:
            out.setdefault(r["config"], {})[r["seed"]] = r
    for label, kind in ((VAL_SIGMA, SWCLIP), (VAL_NC, SWCLIP_NC)):
        by_seed: dict = {}
        for r in exp["runs"]:
            if r["kind"] == kind and "val" in r:
                best = by_seed.get(r["seed"])
                if best is None or r["val"][metric] < best["val"][metric]:
                    by_seed[r["seed"]] = r
        if by_seed:
            out[label] = by_seed
    return out


def _order(label: str) -> tuple:
    rank = {"clip": 0, VAL_SIGMA: 2, "swclip-var": 3, VAL_NC: 4, "semivariogram": 6}
    if label.startswith("swclip-s"):
        return (1, float(label[len("swclip-s") :]))
    if label.startswith("swclip-nc-l"):
        return (5, float(label[len("swclip-nc-l") :]))
    return (rank.get(label, 7), 0.0)


def summary_table(exp: dict, n_boot: int = 1000, seed: int = 0):
    """One row per config: seeds, σ (mean over seeds), val and test metrics as mean and sd across seeds,
    and the paired block bootstrap of test median error and acc@250m against CLIP (d_*, d_*_lo, d_*_hi).

    Returns a pandas DataFrame ordered CLIP, the σ sweep, the selected configs, NC, semivariogram.
    """

    recs = seed_records(exp)
    block = np.asarray(exp["test_rows"]["block"])
    clip = recs.get("clip", {})
    rows = []
    for label in sorted(recs, key=_order):
        by_seed = recs[label]
        seeds = sorted(by_seed)
        row = {"config": label, "n_seeds": len(seeds), "seeds": seeds}
        sig = [by_seed[s].get("sigma_m") for s in seeds]
        row["sigma_m"] = float(np.mean(sig)) if all(v is not None for v in sig) and sig else np.nan
        row["sigma_m_values"] = sig
        for split in ("val", "test"):
            for m in METRICS:
                vals = np.array([by_seed[s][split].get(m, np.nan) for s in seeds], dtype=np.float64)
                row[f"{split}_{m}"] = float(np.mean(vals))
                row[f"{split}_{m}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan
        common = [s for s in seeds if s in clip]
        for m in ("median_m", "acc@250m"):
            for k in ("", "_lo", "_hi"):
                row[f"d_{m}{k}"] = np.nan
        row["n_paired"] = len(common)
        if label != "clip" and common:
            ea = np.array([clip[s]["test_error_m"] for s in common])
            eb = np.array([by_seed[s]["test_error_m"] for s in common])
            stats = {m: STATISTICS[m] for m in ("median_m", "acc@250m")}
            for b in paired_block_bootstrap(ea, eb, block, stats, n_boot=n_boot, seed=seed):
                m = b["statistic"]
                row[f"d_{m}"], row[f"d_{m}_lo"], row[f"d_{m}_hi"] = b["diff"], b["diff_lo"], b["diff_hi"]
        rows.append(row)
    return pd.DataFrame(rows)


def per_city(exp: dict, metric: str = "median_m") -> pd.DataFrame:
    """Test ``metric`` per city: one row per (config, city) with mean and sd across seeds and n_seeds."""

    city = np.asarray(exp["test_rows"]["city"])
    rows = []
    for label, by_seed in seed_records(exp).items():
        per = {}
        for s, r in by_seed.items():
            for c, m in summarize(np.asarray(r["test_error_m"]), city)["per_city"].items():
                per.setdefault(c, []).append(m[metric])
        for c, vals in per.items():
            rows.append(
                dict(
                    config=label,
                    city=c,
                    mean=float(np.mean(vals)),
                    sd=float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan,
                    n_seeds=len(vals),
                )
            )
    return pd.DataFrame(rows)
