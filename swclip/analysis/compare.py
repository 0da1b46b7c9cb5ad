"""Comparing two runs on the same evaluation samples: paired bootstrap intervals and manifest diffs.

The two runs' predictions are joined on the sample ``id``, so each resample
draws the same samples for both runs (a paired bootstrap): the interval of
the difference then reflects how the runs differ on the same photos, not the
spread between photo sets.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np
import pandas as pd

# Statistics of an error vector (metres) that the comparison reports.
STATISTICS: dict[str, Callable[[np.ndarray], Any]] = {
    "median_m": lambda e: np.median(e, axis=-1),
    "mean_m": lambda e: np.mean(e, axis=-1),
    "acc@100m": lambda e: np.mean(e <= 100.0, axis=-1),
    "acc@500m": lambda e: np.mean(e <= 500.0, axis=-1),
    "acc@1km": lambda e: np.mean(e <= 1000.0, axis=-1),
}


def paired_errors(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> pd.DataFrame:
    """Inner join of two predictions tables on ``id``: id, city, lat, lon, error_a_m, error_b_m.

    Raises ValueError when the runs share no sample (different evaluation sets).
    """
    for name, df in (("first", pred_a), ("second", pred_b)):
        missing = {"id", "error_m", "lat", "lon"} - set(df.columns)
        if missing:
            raise ValueError(f"the {name} run's predictions lack column(s) {sorted(missing)}")
    a = pred_a[["id", "lat", "lon", "error_m"] + (["city"] if "city" in pred_a else [])].rename(columns={"error_m": "error_a_m"})
    b = pred_b[["id", "error_m"]].rename(columns={"error_m": "error_b_m"})
    a = a.assign(id=a["id"].astype(str))
    b = b.assign(id=b["id"].astype(str))
    joined = a.merge(b, on="id", how="inner", validate="one_to_one")
    if joined.empty:
        raise ValueError("the two runs share no evaluation sample id: they were evaluated on different sets")
    return joined.reset_index(drop=True)


def paired_bootstrap(
    error_a_m: Any,
    error_b_m: Any,
    statistics: Optional[Mapping[str, Callable]] = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile-bootstrap intervals of each statistic for run A, run B and B − A, resampling samples jointly.

    error_a_m, error_b_m: (N,) metres for the same N samples. Each statistic
    maps an (..., N) array to (...). Returns one row per statistic with
    columns a, a_lo, a_hi, b, b_lo, b_hi, diff, diff_lo, diff_hi (point
    estimates on the full sample; ``ci`` two-sided percentile bounds).
    """
    ea = np.asarray(error_a_m, dtype=np.float64).ravel()
    eb = np.asarray(error_b_m, dtype=np.float64).ravel()
    if ea.shape != eb.shape:
        raise ValueError(f"error_a_m {ea.shape} and error_b_m {eb.shape} must be paired (same samples)")
    if ea.size < 2:
        raise ValueError("need at least 2 paired samples to bootstrap")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    stats = dict(statistics or STATISTICS)
    rng = np.random.default_rng(seed)
    rows = []
    # Resample indices in chunks: (chunk, N) int64 stays small for N in the tens of thousands.
    chunk = max(1, min(n_boot, 4_000_000 // ea.size))
    draws: dict[str, list] = {k: [] for k in stats}
    done = 0
    while done < n_boot:
        m = min(chunk, n_boot - done)
        idx = rng.integers(0, ea.size, size=(m, ea.size))  # (m, N)
        ra, rb = ea[idx], eb[idx]
        for name, fn in stats.items():
            sa, sb = np.asarray(fn(ra), dtype=np.float64), np.asarray(fn(rb), dtype=np.float64)
            draws[name].append(np.stack([sa, sb, sb - sa], -1))  # (m, 3)
        done += m
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    for name, fn in stats.items():
        d = np.concatenate(draws[name])  # (n_boot, 3)
        lo, hi = np.percentile(d, q, axis=0)
        a, b = float(fn(ea)), float(fn(eb))
        rows.append({"statistic": name, "a": a, "a_lo": lo[0], "a_hi": hi[0], "b": b, "b_lo": lo[1], "b_hi": hi[1],
                     "diff": b - a, "diff_lo": lo[2], "diff_hi": hi[2]})
    return pd.DataFrame(rows)


def higher_is_better(statistic: str) -> bool:
    """Accuracies (``acc@...``) improve upwards; errors and error quantiles improve downwards."""
    return statistic.startswith("acc")


def verdict(statistic: str, diff_lo: float, diff_hi: float) -> str:
    """"B better", "B worse" or "no clear difference" from the B − A interval [diff_lo, diff_hi] of a statistic.

    Clear only when the whole interval lies on one side of 0: below 0 is better for an error, above 0 for an
    accuracy.
    """
    if diff_lo > diff_hi:
        raise ValueError(f"interval [{diff_lo}, {diff_hi}] is reversed")
    up = higher_is_better(statistic)
    if (diff_lo > 0) if up else (diff_hi < 0):
        return "B better"
    if (diff_hi < 0) if up else (diff_lo > 0):
        return "B worse"
    return "no clear difference"


def verdicts(table: pd.DataFrame) -> pd.Series:
    """:func:`verdict` for every row of a :func:`paired_bootstrap` table."""
    return pd.Series([verdict(r.statistic, r.diff_lo, r.diff_hi) for r in table.itertuples()], index=table.index,
                     name="verdict", dtype=object)


def flatten(d: Any, prefix: str = "") -> dict:
    """Nested dicts -> {"a.b.c": leaf}; lists stay leaves."""
    out = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def manifest_diff(a: Mapping, b: Mapping, ignore: tuple = ("created_utc", "weights_sha256", "run_id")) -> pd.DataFrame:
    """Keys whose values differ between two manifests: key, a, b as text ("(absent)" where missing), sorted by key."""
    fa, fb = flatten(a), flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        if key.split(".")[0] in ignore or key in ignore:
            continue
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            rows.append({"key": key, "a": "(absent)" if key not in fa else str(va), "b": "(absent)" if key not in fb else str(vb)})
    return pd.DataFrame(rows, columns=["key", "a", "b"])
