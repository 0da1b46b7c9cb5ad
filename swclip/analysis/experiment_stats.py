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

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from swclip.analysis.metrics import summarize
from swclip.loss_names import SHUFFLED, SMOOTH, SWCLIP, SWCLIP_NC


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
    out = []
    for name, fn in dict(statistics or STATISTICS).items():
        sa, sb = fn(ea, weights).mean(1), fn(eb, weights).mean(1)  # (R,) mean over seeds
        row = _interval(name, fn(ea, full).mean(), fn(eb, full).mean(), sa, sb, ci)
        out.append(dict(row, n_seeds=int(ea.shape[0]), n_blocks=int(len(labels)), n_boot=int(n_boot)))
    return out


def _interval(name: str, a: float, b: float, sa: np.ndarray, sb: np.ndarray, ci: float) -> dict:
    """The point values a, b, b − a and the two-sided ``ci`` percentile bounds of the resampled sa, sb (R,)."""
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    (a_lo, b_lo, d_lo), (a_hi, b_hi, d_hi) = np.percentile(np.stack([sa, sb, sb - sa], 1), q, axis=0)
    a, b = float(a), float(b)
    return dict(
        statistic=name, a=a, a_lo=a_lo, a_hi=a_hi, b=b, b_lo=b_lo, b_hi=b_hi, diff=b - a, diff_lo=d_lo, diff_hi=d_hi
    )


@functools.lru_cache(maxsize=16)
def two_level_draws(n_seeds: int, city_blocks: tuple, n_boot: int, seed: int = 0) -> tuple:
    """The two-level bootstrap's draws, in a fixed order a plain loop can repeat.

    rng = np.random.default_rng(seed); ``rng.integers(0, n_seeds, (n_boot, n_seeds))``: the seeds of each
    resample, with replacement; then for each city c in turn ``rng.integers(0, n_c, (n_boot, n_c))`` with
    n_c = city_blocks[c]: that city's blocks of each resample, with replacement.
    -> (seeds (R, S) seed indices, counts (R, sum(city_blocks)) how often each block is drawn, the blocks
    numbered city by city), both read-only (cached: every config of an experiment shares them).
    """
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, (n_boot, n_seeds))  # (R, S)
    parts = []
    for n in city_blocks:
        drawn = rng.integers(0, n, (n_boot, n))  # (R, n_c) block indices within the city
        flat = drawn + (np.arange(n_boot) * n)[:, None]  # unique per (resample, block)
        parts.append(np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n))
    counts = np.concatenate(parts, axis=1)  # (R, B)
    seeds.flags.writeable = counts.flags.writeable = False
    return seeds, counts


def two_level_bootstrap(
    errors_a_m: Any,
    errors_b_m: Any,
    block: Any,
    city: Any,
    statistics: Mapping[str, Callable] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Intervals of each statistic for A, B and B − A from a two-level paired bootstrap: seeds and blocks.

    Seeds and test places are crossed (every seed is scored on the same test blocks), so a resample draws
    both: S seeds with replacement (another five seeds would give other numbers), and each city's held-out
    blocks with replacement (stratified: every resample keeps each city's number of blocks), one block draw
    shared by all the drawn seeds (an easy set of places is easy for every seed). The statistic of a
    resample is the mean over its drawn seeds of the per-seed statistic on the resampled rows, B and A on
    the same seed and rows (paired twice). Drawing blocks anew for each seed would treat them as nested in
    the seeds and average their variance away: narrower than the block-only interval, wrongly. The draws
    and their RNG order are ``two_level_draws``'.

    errors_a_m, errors_b_m: (S, N) metres, seed k of A in row k paired with row k of B; block, city: (N,)
    labels (every block inside one city). Returns the dicts of ``paired_block_bootstrap`` (statistic, a, b,
    diff, *_lo, *_hi, n_seeds, n_blocks, n_boot) plus n_cities.
    """
    ea = np.atleast_2d(np.asarray(errors_a_m, dtype=np.float64))
    eb = np.atleast_2d(np.asarray(errors_b_m, dtype=np.float64))
    if ea.shape != eb.shape:
        raise ValueError(f"errors_a_m {ea.shape} and errors_b_m {eb.shape} must be paired: same seeds, same rows")
    block, city = np.asarray(block).astype(str), np.asarray(city).astype(str)
    if block.size != ea.shape[1] or city.size != ea.shape[1]:
        raise ValueError(f"block ({block.size}) and city ({city.size}) need one label per row ({ea.shape[1]})")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if not (np.isfinite(ea).all() and np.isfinite(eb).all()):
        raise ValueError("errors must be finite")
    cities = sorted(set(city))
    pairs = sorted(set(zip(city, block)))  # (city, block), blocks numbered city by city
    if len({b for _, b in pairs}) != len(pairs):
        raise ValueError("a block spans two cities: the bootstrap is stratified by city")
    if len(pairs) < 2:
        raise ValueError("a block bootstrap needs at least 2 blocks")
    number = {p: i for i, p in enumerate(pairs)}
    block_idx = np.array([number[p] for p in zip(city, block)])  # (N,)
    city_blocks = [sum(1 for c, _ in pairs if c == name) for name in cities]
    n_seeds = ea.shape[0]
    seeds, counts = two_level_draws(n_seeds, tuple(city_blocks), n_boot, seed)  # (R, S), (R, B)
    weights = counts[:, block_idx].astype(np.float64)  # (R, N) each row weighted by its block's count
    full = np.ones((1, ea.shape[1]))
    resample = np.arange(n_boot)[:, None]
    out = []
    for name, fn in dict(statistics or STATISTICS).items():
        fa, fb = fn(ea, weights), fn(eb, weights)  # (R, S): every seed on every resample's rows
        sa, sb = fa[resample, seeds].mean(1), fb[resample, seeds].mean(1)  # (R,) mean over the drawn seeds
        row = _interval(name, fn(ea, full).mean(), fn(eb, full).mean(), sa, sb, ci)
        n = dict(n_seeds=int(n_seeds), n_blocks=int(len(pairs)), n_cities=int(len(cities)), n_boot=int(n_boot))
        out.append({**row, **n})
    return out


# --------------------------------------------------------------------------- aggregation of experiment.json

# job kinds of the experiment grid beside the loss names (swclip.workflows.experiments plans them): CLIP's
# tuning runs, the exponential kernel's σ sweep, SW-CLIP at the variogram's σ (Gaussian kernel) and at the
# variogram's kernel and σ, and the long (convergence) runs
CLIP_TUNED, SWCLIP_EXP, SWCLIP_VAR, SWCLIP_VAR_KERNEL = "clip-tuned", "swclip-exp", "swclip-var", "swclip-varkernel"
CLIP_LONG, SWCLIP_LONG = "clip-long", "swclip-long"

VAL_SIGMA = "swclip (val σ)"
VAL_NC = "swclip+nc (val σ, λ)"
VAL_EXP = "swclip exponential kernel (val σ)"
VAL_CLIP = "clip tuned (val τ, lr)"
VAL_SMOOTH = "label smoothing (val σ)"
VAL_SHUFFLED = "shuffled distances (val σ)"
# the configs chosen per seed on validation: label -> the kind of the runs chosen among
SELECTED = {
    VAL_SIGMA: SWCLIP,
    VAL_NC: SWCLIP_NC,
    VAL_EXP: SWCLIP_EXP,
    VAL_CLIP: CLIP_TUNED,
    VAL_SMOOTH: SMOOTH,
    VAL_SHUFFLED: SHUFFLED,
}
# The one comparison fixed before any test number was read (pre-registered); every other is exploratory,
# with no correction for multiple comparisons.
HEADLINE = (VAL_SIGMA, "clip")
# each config's comparison: against one-hot CLIP, except the long runs (against CLIP trained as long)
BASELINE = {SWCLIP_LONG: CLIP_LONG}
# SW-CLIP against each control, each side chosen on validation with the same budget
CONTROL_COMPARISONS = ((VAL_SIGMA, VAL_CLIP), (VAL_SIGMA, VAL_SMOOTH), (VAL_SIGMA, VAL_SHUFFLED))
METRICS = ("median_m", "mean_m", "acc@100m", "acc@250m", "acc@500m", "recall@1")
DELTA_METRICS = ("median_m", "acc@250m")  # the differences with intervals
INTERVAL = (
    "95 % two-level paired bootstrap: seeds and each city's held-out test blocks resampled (crossed: one block "
    "draw for all drawn seeds); B and A on the same seeds and rows"
)
BLOCK_INTERVAL = "95 % block-only bootstrap: test blocks resampled, the seeds fixed (secondary)"


def seed_records(exp: dict, select_metric: str | None = None) -> dict:
    """{config label: {seed: record}} of the finished runs, plus the validation-selected configs.

    SELECTED: per seed, the run of that kind with the lowest validation ``select_metric`` (VAL_SIGMA
    among the Gaussian σ sweep, VAL_CLIP among CLIP's tuning runs, ...). Runs without metrics (skipped)
    are left out.
    """
    metric = select_metric or exp["protocol"].get("select_metric", "median_m")
    out: dict = {}
    for r in exp["runs"]:
        if "test" in r:
            out.setdefault(r["config"], {})[r["seed"]] = r
    for label, kind in SELECTED.items():
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
    rank = {
        "clip": 0,
        VAL_SIGMA: 2,
        SWCLIP_VAR: 3,
        VAL_NC: 4,
        "semivariogram": 6,
        VAL_EXP: 8,
        SWCLIP_VAR_KERNEL: 9,
        VAL_CLIP: 11,
        VAL_SMOOTH: 13,
        VAL_SHUFFLED: 15,
        CLIP_LONG: 17,
        SWCLIP_LONG: 18,
    }
    for prefix, group in (
        ("swclip-s", 1),
        ("swclip-nc-l", 5),
        ("swclip-exp-s", 7),
        ("smooth-s", 12),
        ("shuffled-s", 14),
    ):
        if label.startswith(prefix):
            return (group, float(label[len(prefix) :]))
    if label.startswith("clip-t"):
        return (10, label)
    return (rank.get(label, 19), 0.0)


def role(b: str, a: str) -> str:
    """ "headline (pre-registered)" for HEADLINE, "baseline" for a config against itself, else "exploratory"."""
    if (b, a) == HEADLINE:
        return "headline (pre-registered)"
    return "baseline" if b == a else "exploratory"


def _city_view(exp: dict, city: str) -> dict:
    """exp restricted to the test rows of ``city``: each run's test metrics recomputed on them, validation
    untouched (selection stays on the whole validation split)."""
    rows = np.flatnonzero(np.asarray(exp["test_rows"]["city"]) == city)
    if rows.size == 0:
        raise ValueError(f"no test row in city {city!r}")
    runs = []
    for r in exp["runs"]:
        if "test_error_m" in r:
            e = np.asarray(r["test_error_m"], dtype=np.float64)[rows]
            m = summarize(e)
            r = {**r, "test_error_m": e, "test": {k: m[k] for k in METRICS if k in m}}
        runs.append(r)
    test_rows = {k: np.asarray(v)[rows] for k, v in exp["test_rows"].items()}
    return {**exp, "runs": runs, "test_rows": test_rows}


def _delta(recs: dict, b: str, a: str, exp: dict, n_boot: int, seed: int) -> dict:
    """B − A on test over the seeds both have: the two-level interval (d_*, d_*_lo, d_*_hi) and the
    block-only one (d_*_block_lo, d_*_block_hi), for DELTA_METRICS."""
    row = {f"d_{m}{k}": np.nan for m in DELTA_METRICS for k in ("", "_lo", "_hi", "_block_lo", "_block_hi")}
    common = sorted(set(recs.get(a, {})) & set(recs.get(b, {})))
    row["n_paired"] = len(common)
    if b == a or not common:
        return row
    ea = np.array([recs[a][s]["test_error_m"] for s in common], dtype=np.float64)
    eb = np.array([recs[b][s]["test_error_m"] for s in common], dtype=np.float64)
    block, city = exp["test_rows"]["block"], exp["test_rows"]["city"]
    stats = {m: STATISTICS[m] for m in DELTA_METRICS}
    if len(set(block)) < 2:
        return row
    for r in two_level_bootstrap(ea, eb, block, city, stats, n_boot=n_boot, seed=seed):
        m = r["statistic"]
        row[f"d_{m}"], row[f"d_{m}_lo"], row[f"d_{m}_hi"] = r["diff"], r["diff_lo"], r["diff_hi"]
    for r in paired_block_bootstrap(ea, eb, block, stats, n_boot=n_boot, seed=seed):
        m = r["statistic"]
        row[f"d_{m}_block_lo"], row[f"d_{m}_block_hi"] = r["diff_lo"], r["diff_hi"]
    return row


def summary_table(exp: dict, n_boot: int = 1000, seed: int = 0, city: str | None = None):
    """One row per config: seeds, σ (mean over seeds), val and test metrics as mean and sd across seeds,
    and test median error and acc@250m against its baseline (column ``vs``: CLIP, or BASELINE's) with
    the two-level interval (d_*, d_*_lo, d_*_hi) and the block-only one (d_*_block_lo, d_*_block_hi);
    ``role``: headline (pre-registered), exploratory or baseline.

    city: only that city's test rows (test metrics and intervals; the val columns are NaN, selection stays
    on the whole validation split). Returns a pandas DataFrame ordered CLIP, the σ sweep, the selected
    configs, NC, semivariogram, the kernel-shape runs, the controls, the long runs.
    """
    if city is not None:
        exp = _city_view(exp, city)
    recs = seed_records(exp)
    rows = []
    for label in sorted(recs, key=_order):
        by_seed = recs[label]
        seeds = sorted(by_seed)
        base = BASELINE.get(label, "clip")
        row = {"config": label, "vs": base, "role": role(label, base), "n_seeds": len(seeds), "seeds": seeds}
        sig = [by_seed[s].get("sigma_m") for s in seeds]
        row["sigma_m"] = float(np.mean(sig)) if all(v is not None for v in sig) and sig else np.nan
        row["sigma_m_values"] = sig
        row["kernels"] = sorted({str(by_seed[s].get("kernel")) for s in seeds if by_seed[s].get("kernel")})
        for split in ("val", "test"):
            for m in METRICS:
                vals = np.array([by_seed[s][split].get(m, np.nan) for s in seeds], dtype=np.float64)
                if split == "val" and city is not None:
                    vals = np.full_like(vals, np.nan)
                row[f"{split}_{m}"] = float(np.mean(vals)) if vals.size else np.nan
                row[f"{split}_{m}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan
        row.update(_delta(recs, label, base, exp, n_boot, seed))
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_table(exp: dict, n_boot: int = 1000, seed: int = 0, city: str | None = None):
    """The named comparisons: HEADLINE, SW-CLIP against each control (CONTROL_COMPARISONS) and the long
    runs, those whose both sides have runs. One row each: b, a, role, n_paired, test medians of both
    (mean over the paired seeds) and the d_* columns of ``summary_table``."""
    if city is not None:
        exp = _city_view(exp, city)
    recs = seed_records(exp)
    rows = []
    for b, a in (HEADLINE, *CONTROL_COMPARISONS, (SWCLIP_LONG, CLIP_LONG)):
        if b not in recs or a not in recs:
            continue
        row = {"b": b, "a": a, "role": role(b, a)}
        common = sorted(set(recs[a]) & set(recs[b]))
        for side, label in (("b", b), ("a", a)):
            row[f"{side}_test_median_m"] = float(np.mean([recs[label][s]["test"]["median_m"] for s in common]))
        row.update(_delta(recs, b, a, exp, n_boot, seed))
        rows.append(row)
    return pd.DataFrame(rows)


def held_out_cities(exp: dict) -> list[str]:
    """The cities of the test rows, sorted."""
    return sorted(set(np.asarray(exp["test_rows"]["city"]).astype(str)))


def _records(df) -> list[dict]:
    """DataFrame rows as JSON-ready dicts: NaN as None, numpy scalars as Python numbers."""
    out = []
    for row in df.to_dict("records"):
        clean = {}
        for k, v in row.items():
            if isinstance(v, (np.floating, float)):
                v = None if not np.isfinite(v) else float(v)
            elif isinstance(v, np.integer):
                v = int(v)
            clean[k] = v
        out.append(clean)
    return out


def experiment_summary(exp: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """The tables a reader checks, for experiment.json: ``summary_table`` and ``comparisons_table``, overall
    and per city (each row with its ``city``), with what the intervals are."""
    per_city, comparisons_city = [], []
    for c in held_out_cities(exp):
        per_city += [{"city": c, **r} for r in _records(summary_table(exp, n_boot, seed, city=c))]
        comparisons_city += [{"city": c, **r} for r in _records(comparisons_table(exp, n_boot, seed, city=c))]
    return dict(
        interval=INTERVAL,
        block_interval=BLOCK_INTERVAL,
        headline=dict(b=HEADLINE[0], a=HEADLINE[1], note="pre-registered; every other comparison is exploratory"),
        n_boot=int(n_boot),
        bootstrap_seed=int(seed),
        overall=_records(summary_table(exp, n_boot, seed)),
        comparisons=_records(comparisons_table(exp, n_boot, seed)),
        per_city=per_city,
        comparisons_per_city=comparisons_city,
    )


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
