"""Comparing two runs on the same evaluation samples: paired bootstrap intervals and manifest diffs.

The two runs' predictions are joined on the sample ``id``, so each resample
draws the same samples for both runs (a paired bootstrap): the interval of
the difference then reflects how the runs differ on the same photos, not the
spread between photo sets.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from swclip.analysis.metrics import threshold_label

BOOT_BLOCK = 100  # resamples per seed stream: block i depends on (seed, i) only, so 500 resamples extend 200
CHUNK_ELEMENTS = (
    1 << 22
)  # resampled indices held at once for a callable statistic (int64: 32 MB, and twice that in values)
MEAN_GROUP = 256  # positions per run in a mean's resample (one random byte picks within a run)
WINDOW_SD = 8.0  # half-width, in standard deviations, of the rank window searched for a resample's quantile


@dataclass(frozen=True)
class ErrorStatistic:
    """A statistic of an error vector (metres) that :class:`PairedBootstrap` computes from ranks.

    kind: "quantile" (``value`` = q in [0, 1], numpy's default linear interpolation), "mean", or
    "share_at_most" (``value`` = a threshold in metres: the share of errors <= it). Called on an
    (..., N) array it returns (...), as ``np.quantile`` / ``np.mean`` do along the last axis.
    """

    kind: str
    value: float = 0.0

    def __post_init__(self):
        if self.kind not in ("quantile", "mean", "share_at_most"):
            raise ValueError(f"unknown statistic kind {self.kind!r}; choose 'quantile', 'mean' or 'share_at_most'")
        if self.kind == "quantile" and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"a quantile must be in [0, 1], got {self.value}")

    def __call__(self, e: Any) -> Any:
        e = np.asarray(e, dtype=np.float64)
        if self.kind == "quantile":
            return np.quantile(e, self.value, axis=-1)
        if self.kind == "mean":
            return np.mean(e, axis=-1)
        return np.mean(e <= self.value, axis=-1)


# Statistics of an error vector (metres) that the comparison reports.
STATISTICS: dict[str, ErrorStatistic] = {
    "median_m": ErrorStatistic("quantile", 0.5),
    "mean_m": ErrorStatistic("mean"),
    "acc@100m": ErrorStatistic("share_at_most", 100.0),
    "acc@500m": ErrorStatistic("share_at_most", 500.0),
    "acc@1km": ErrorStatistic("share_at_most", 1000.0),
}


def statistics_at(thresholds_m: Any) -> dict[str, ErrorStatistic]:
    """median, mean and the accuracy at each of ``thresholds_m`` (metres): a scale's comparison
    (``swclip.viz.scale.Scale.compare_thresholds_m``). Keys as metrics.json's ('acc@25km')."""
    from_keys = {threshold_label(t): ErrorStatistic("share_at_most", float(t)) for t in thresholds_m}
    return {"median_m": STATISTICS["median_m"], "mean_m": STATISTICS["mean_m"], **from_keys}


def paired_errors(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> pd.DataFrame:
    """Inner join of two predictions tables on ``id``: id, city, place_id (when A has them), lat, lon,
    error_a_m, error_b_m.

    Raises ValueError when the runs share no sample (different evaluation sets).
    """
    for name, df in (("first", pred_a), ("second", pred_b)):
        missing = {"id", "error_m", "lat", "lon"} - set(df.columns)
        if missing:
            raise ValueError(f"the {name} run's predictions lack column(s) {sorted(missing)}")
    extra = [c for c in ("city", "place_id") if c in pred_a]
    a = pred_a[["id", "lat", "lon", "error_m", *extra]].rename(columns={"error_m": "error_a_m"})
    b = pred_b[["id", "error_m"]].rename(columns={"error_m": "error_b_m"})
    a = a.assign(id=a["id"].astype(str))
    b = b.assign(id=b["id"].astype(str))
    joined = a.merge(b, on="id", how="inner", validate="one_to_one")
    if joined.empty:
        raise ValueError("the two runs share no evaluation sample id: they were evaluated on different sets")
    return joined.reset_index(drop=True)


def _quantile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """numpy's linear quantile q of n sorted values: (lower rank, upper rank, weight of the upper)."""
    pos = q * (n - 1)
    k0 = int(math.floor(pos))
    return k0, min(k0 + 1, n - 1), pos - k0


def _lerp(lo_v: np.ndarray, hi_v: np.ndarray, gamma: float) -> np.ndarray:
    """lo_v + gamma (hi_v - lo_v), from the nearer end, as numpy's quantile computes it."""
    diff = hi_v - lo_v
    return hi_v - diff * (1 - gamma) if gamma >= 0.5 else lo_v + diff * gamma


def shares_any_id(ids_a: Any, ids_b: Any) -> bool:
    """Whether two id columns (any dtype, compared as text, as :func:`paired_errors` joins them) have an id in
    common: one hashed pass in pyarrow (about 0.05 s for 210,000 ids; two Python sets took a second)."""
    a, b = (pa.array(pd.Series(np.asarray(x, dtype=object)).astype(str)) for x in (ids_a, ids_b))
    return bool(len(a) and len(b) and pc.any(pc.is_in(a, value_set=b)).as_py())


class _RankCells:
    """The samples grouped so that a resample's quantiles and shares follow from how many draws fall in each group.

    Positions are the samples in A's error order (position = A's rank); B's rank of each is ``rank_b``.
    A share needs only the number of draws below one rank (a "break"); a quantile, the draws below its
    window and the draws on each rank inside the window. So every sample whose A-rank lies in an A window
    or whose B-rank lies in a B window is a group of its own, and the others are grouped by (A interval,
    B interval) between the breaks: a resample's counts over the groups are one multinomial draw (N
    draws, probability = group size / N) instead of N indices. A resample whose order statistic leaves
    its window (about 1e-15 at WINDOW_SD = 8) has its draws placed on the samples of each group
    (uniformly, as a resample would), once per resample, and is read whole: the result stays exact.
    """

    def __init__(
        self,
        sorted_a: np.ndarray,
        sorted_b: np.ndarray,
        rank_b: np.ndarray,
        order_b: np.ndarray,
        stats: list,
        window_sd: float,
    ):
        n = self.n = len(rank_b)
        self.order_b = order_b
        self.sorted = (sorted_a, sorted_b)
        half = int(window_sd * math.sqrt(n) / 2) + 16  # the k-th of N uniform ranks has sd <= sqrt(N) / 2
        breaks, plans = ([set(), set()], [[], []])
        for s, fn in stats:
            for col in (0, 1):
                if fn.kind == "share_at_most":
                    cut = int(
                        np.searchsorted(self.sorted[col], fn.value, side="right")
                    )  # ranks below have error <= value
                    breaks[col].add(cut)
                    plans[col].append((s, "share", cut))
                else:
                    k0, k1, gamma = _quantile_ranks(n, fn.value)
                    lo, hi = max(0, k0 - half), min(n, k1 + half + 1)
                    breaks[col].update((lo, hi))
                    plans[col].append((s, "quantile", (k0, k1, gamma, lo, hi)))
        self.breaks = [np.array(sorted(b), dtype=np.intp) for b in breaks]
        windows = [np.arange(p[2][3], p[2][4]) for p in plans[0] if p[1] == "quantile"]
        windows += [order_b[p[2][3] : p[2][4]] for p in plans[1] if p[1] == "quantile"]
        fine = np.unique(np.concatenate(windows)) if windows else np.empty(0, dtype=np.intp)
        is_fine = np.zeros(n, dtype=bool)
        is_fine[fine] = True
        pos = np.flatnonzero(~is_fine)
        nb = len(self.breaks[1]) + 1
        ia = np.searchsorted(self.breaks[0], pos, side="right")  # A interval: ranks in [breaks[i-1], breaks[i])
        ib = np.searchsorted(self.breaks[1], rank_b[pos], side="right")
        keys, inverse, sizes = np.unique(ia * nb + ib, return_inverse=True, return_counts=True)
        self.n_cells, self.fine = len(keys), fine
        self.probs = np.concatenate([sizes, np.ones(len(fine))]) / n
        # below[col][c, j]: every rank of group c lies below break j of that run
        # (an interval i lies below break j iff i <= j)
        fine_ranks = (fine, rank_b[fine])
        self.below = [
            np.vstack(
                [(cell_i[:, None] <= np.arange(len(br))[None, :]), fine_ranks[col][:, None] < br[None, :]]
            ).astype(np.float64)
            for col, (cell_i, br) in enumerate(((keys // nb, self.breaks[0]), (keys % nb, self.breaks[1])))
        ]
        self.plans = plans
        # group of each rank inside a window, in rank order (window ranks are all single-sample groups)
        self._window_groups = {}
        for col in (0, 1):
            for s, kind, arg in plans[col]:
                if kind == "quantile":
                    lo, hi = arg[3], arg[4]
                    positions = np.arange(lo, hi) if col == 0 else order_b[lo:hi]
                    self._window_groups[col, s] = self.n_cells + np.searchsorted(fine, positions)
        self._cell_positions = pos[np.argsort(inverse, kind="stable")]  # the groups' samples, group by group
        self._cell_start = np.cumsum(sizes) - sizes
        self._cell_sizes = sizes

    def draw(self, rng: np.random.Generator, m: int) -> dict:
        """{(statistic index, run 0/1): (m,) values} for m resamples."""
        return self.read(rng.multinomial(self.n, self.probs, size=m), rng)

    def group_counts(self, per_sample: np.ndarray) -> np.ndarray:
        """(m, groups) draws per group from (m, N) draws per sample (positions in A's order)."""
        cells = (
            np.add.reduceat(per_sample[:, self._cell_positions], self._cell_start, axis=1)
            if self.n_cells
            else np.empty((len(per_sample), 0), np.int64)
        )
        return np.concatenate([cells, per_sample[:, self.fine]], axis=1)

    def read(self, counts: np.ndarray, rng: np.random.Generator, per_sample: np.ndarray | None = None) -> dict:
        """{(statistic index, run 0/1): (m,) values} of resamples with ``counts`` (m, groups) draws per group.

        per_sample: (m, N) the resamples' draws per sample, when known (tests): read instead of placing the
        draws of a resample whose order statistic left its window.
        """
        m = len(counts)
        out, outside = {}, np.zeros(m, dtype=bool)
        for col in (0, 1):
            below = counts.astype(np.float64) @ self.below[col]  # (m, breaks): draws below each break (exact integers)
            for s, kind, arg in self.plans[col]:
                if kind == "share":
                    out[s, col] = below[:, int(np.searchsorted(self.breaks[col], arg))] / self.n
                    continue
                k0, k1, gamma, lo, hi = arg
                under = below[:, int(np.searchsorted(self.breaks[col], lo))].astype(np.int64)
                cum = np.cumsum(counts[:, self._window_groups[col, s]], axis=1)  # (m, window): draws on ranks <= lo + p
                r0 = lo + np.add.reduce(cum <= (k0 - under)[:, None], axis=1, dtype=np.int64)
                r1 = lo + np.add.reduce(cum <= (k1 - under)[:, None], axis=1, dtype=np.int64)
                outside |= (under > k0) | (under + cum[:, -1] <= k1)
                out[s, col] = _lerp(
                    self.sorted[col][np.minimum(r0, self.n - 1)], self.sorted[col][np.minimum(r1, self.n - 1)], gamma
                )
        for r in np.flatnonzero(
            outside
        ):  # rare: place this resample's draws on the samples, read every quantile from them
            per = self._placed(counts[r], rng) if per_sample is None else per_sample[r]  # (N,) draws on each position
            for col in (0, 1):
                cum = np.cumsum(per if col == 0 else per[self.order_b])
                for s, kind, arg in self.plans[col]:
                    if kind == "quantile":
                        k0, k1, gamma = arg[:3]
                        r0, r1 = np.searchsorted(cum, [k0, k1], side="right")
                        out[s, col][r] = _lerp(self.sorted[col][r0], self.sorted[col][r1], gamma)
        return out

    def _placed(self, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N,) draws per sample: each group's draws spread uniformly (with replacement) over its samples."""
        per = np.zeros(self.n, dtype=np.int64)
        per[self.fine] = counts[self.n_cells :]
        cell = np.repeat(np.arange(self.n_cells), counts[: self.n_cells])
        where = self._cell_start[cell] + rng.integers(0, self._cell_sizes[cell])
        np.add.at(per, self._cell_positions[where], 1)
        return per


class PairedBootstrap:
    """Percentile-bootstrap intervals of two runs' paired errors, for run A, run B and B − A; resamples kept.

    error_a_m, error_b_m: (N,) metres for the same N samples. statistics: name -> :class:`ErrorStatistic`
    (drawn as below) or any callable mapping an (..., N) array to (...) (called on N resampled errors
    per resample: slower). The app keeps one per pair of
    runs (thread-safe), so asking for more resamples only draws the new ones.

    Resample i for a seed is the same whatever ``n_boot`` is asked: resamples are drawn in blocks of
    BOOT_BLOCK from ``SeedSequence(seed, spawn_key=(block,))``, blocks in parallel threads (numpy
    releases the GIL in the draws, gathers and reductions). The samples are put in the order of A's
    errors, so a sample's position is its A rank and an order statistic of the resampled positions is
    A's resampled quantile. Quantiles and shares (:class:`ErrorStatistic`) need only how many draws fall
    below a few ranks and on the ranks near each quantile: they are read from one multinomial draw of
    counts over groups of samples (:class:`_RankCells`: exact, without drawing N indices). Means and
    callables draw N indices per resample (a mean gathers both errors of each drawn pair at once).
    :meth:`resample_statistics` reads any statistic from given index resamples (the tests' reference).
    window_sd: the half-width of a quantile's window of ranks, in standard deviations (tests shrink it).
    """

    def __init__(
        self,
        error_a_m: Any,
        error_b_m: Any,
        statistics: Mapping[str, Callable] | None = None,
        seed: int = 0,
        window_sd: float = WINDOW_SD,
    ):
        ea = np.asarray(error_a_m, dtype=np.float64).ravel()
        eb = np.asarray(error_b_m, dtype=np.float64).ravel()
        if ea.shape != eb.shape:
            raise ValueError(f"error_a_m {ea.shape} and error_b_m {eb.shape} must be paired (same samples)")
        if ea.size < 2:
            raise ValueError("need at least 2 paired samples to bootstrap")
        for name, e in (("error_a_m", ea), ("error_b_m", eb)):
            if not np.isfinite(e).all():
                raise ValueError(f"{name} has {int((~np.isfinite(e)).sum()):,} non-finite value(s): ranks need numbers")
        if ea.size > np.iinfo(np.int32).max:
            raise ValueError(f"{ea.size:,} pairs: at most {np.iinfo(np.int32).max:,} (B's ranks are int32)")
        self.n, self.seed = int(ea.size), int(seed)
        self.statistics = dict(statistics or STATISTICS)
        self._ea, self._eb = ea, eb
        order_a = np.argsort(ea, kind="stable")
        self._sorted_a, self._b_by_a = ea[order_a], eb[order_a]  # both runs' errors in the order of A's
        order_b = np.argsort(self._b_by_a, kind="stable")
        self._sorted_b = self._b_by_a[order_b]
        self._rank_b = np.empty(self.n, dtype=np.int32)  # B's rank of the sample at each position of A's order
        self._rank_b[order_b] = np.arange(self.n, dtype=np.int32)
        # (A, B) of each position side by side as one complex128: one random gather fetches both errors of a pair
        self._pair_by_a = np.stack([self._sorted_a, self._b_by_a], axis=1).view(np.complex128).ravel()
        rank_stats = [
            (s, fn)
            for s, fn in enumerate(self.statistics.values())
            if isinstance(fn, ErrorStatistic) and fn.kind != "mean"
        ]
        self._cells = (
            _RankCells(self._sorted_a, self._sorted_b, self._rank_b, order_b, rank_stats, window_sd)
            if rank_stats
            else None
        )
        self._means = [
            s for s, fn in enumerate(self.statistics.values()) if isinstance(fn, ErrorStatistic) and fn.kind == "mean"
        ]
        self._by_index = [
            s for s, fn in enumerate(self.statistics.values()) if not isinstance(fn, ErrorStatistic)
        ]  # callables
        self._blocks: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def draws(self, n_boot: int, workers: int | None = None) -> np.ndarray:
        """(n_boot, S, 3) the statistics of each resample (S in the order of ``statistics``): A, B, B − A.

        workers: threads for the blocks not drawn yet (default: one per core, at most one per block).
        """
        if int(n_boot) < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        n_blocks = -(-int(n_boot) // BOOT_BLOCK)
        need = [i for i in range(n_blocks) if i not in self._blocks]
        if need:
            workers = max(1, min(len(need), workers or os.cpu_count() or 1))
            if workers == 1:
                done = [self._block(i) for i in need]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    done = list(pool.map(self._block, need))
            with self._lock:
                self._blocks.update(zip(need, done))
        return np.concatenate([self._blocks[i] for i in range(n_blocks)])[: int(n_boot)]

    def table(self, n_boot: int = 2000, ci: float = 0.95, workers: int | None = None) -> pd.DataFrame:
        """One row per statistic: a, a_lo, a_hi, b, b_lo, b_hi, diff, diff_lo, diff_hi (point estimates on
        the full sample; ``ci`` two-sided percentile bounds over ``n_boot`` resamples)."""
        if not 0 < ci < 1:
            raise ValueError(f"ci must be in (0, 1), got {ci}")
        lo, hi = np.percentile(
            self.draws(n_boot, workers), [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100], axis=0
        )  # (S, 3) each
        rows = []
        for s, (name, fn) in enumerate(self.statistics.items()):
            a, b = float(fn(self._ea)), float(fn(self._eb))
            rows.append(
                {
                    "statistic": name,
                    "a": a,
                    "a_lo": lo[s, 0],
                    "a_hi": hi[s, 0],
                    "b": b,
                    "b_lo": lo[s, 1],
                    "b_hi": hi[s, 1],
                    "diff": b - a,
                    "diff_lo": lo[s, 2],
                    "diff_hi": hi[s, 2],
                }
            )
        return pd.DataFrame(rows)

    def resample_statistics(self, idx: np.ndarray, which: list | None = None) -> np.ndarray:
        """(m, S, 3) the statistics of the resamples ``idx`` (m, N) int, indices into the samples sorted by A's
        error, each statistic called on the resampled errors (callables are drawn so; for any statistic it is
        the slow reference). which: the statistics to compute (indices; default all; the others stay NaN)."""
        idx = np.ascontiguousarray(idx, dtype=np.intp)
        if idx.ndim != 2 or idx.shape[1] != self.n:
            raise ValueError(f"idx must be (m, {self.n}), got {idx.shape}")
        out = np.full((len(idx), len(self.statistics), 3), np.nan)
        ra, rb = np.take(self._sorted_a, idx), np.take(self._b_by_a, idx)
        for s, fn in enumerate(self.statistics.values()):
            if which is None or s in which:
                out[:, s, 0], out[:, s, 1] = fn(ra), fn(rb)
        out[:, :, 2] = out[:, :, 1] - out[:, :, 0]
        return out

    def _block(self, block: int) -> np.ndarray:
        """(BOOT_BLOCK, S, 3) of block ``block``, from its own seed stream: quantiles and shares from group counts
        (:class:`_RankCells`), then means from :meth:`mean_positions`, then callables from N indices per resample,
        CHUNK_ELEMENTS at a time.
        Each statistic's A, B and B − A come from one resample; different statistics may come from different ones
        (each interval is read on its own)."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(block,)))
        out = np.empty((BOOT_BLOCK, len(self.statistics), 3))
        if self._cells is not None:
            for (s, col), v in self._cells.draw(rng, BOOT_BLOCK).items():
                out[:, s, col] = v
        if self._means:
            means = self.resample_means(self.mean_positions(rng, BOOT_BLOCK))
            for s in self._means:
                out[:, s, :2] = means
        if self._by_index:
            rows = max(1, CHUNK_ELEMENTS // self.n)
            for start in range(0, BOOT_BLOCK, rows):
                idx = rng.integers(0, self.n, size=(min(rows, BOOT_BLOCK - start), self.n), dtype=np.intp)
                out[start : start + len(idx), self._by_index] = self.resample_statistics(idx, self._by_index)[
                    :, self._by_index
                ]
        out[:, :, 2] = out[:, :, 1] - out[:, :, 0]
        return out

    def resample_means(self, resamples) -> np.ndarray:
        """(m, 2) A's and B's mean error of each resample, given as (N,) positions in A's order (m of them)."""
        sums = np.array([self._pair_by_a[pos].sum() for pos in resamples])  # complex: A's sum + i B's sum
        return np.stack([sums.real, sums.imag], axis=1) / self.n

    def mean_positions(self, rng: np.random.Generator, m: int):
        """Yield m resamples, each as (N,) positions (in A's order) drawn uniformly with replacement, grouped.

        The positions are cut into runs of MEAN_GROUP (a power of two; the last run shorter): one multinomial
        draw says how many of the N draws fall in each run, and a random byte picks the position inside a full
        run (exactly uniform), so each resample is uniform over the samples but its gathers walk memory in
        order: a random gather of N pairs from a 3.4 MB table waits on memory (5-16 ns a pair here).
        """
        n = self.n
        full = n // MEAN_GROUP
        sizes = np.full(full + (n % MEAN_GROUP > 0), MEAN_GROUP, dtype=np.int64)
        sizes[full:] = n - full * MEAN_GROUP
        starts = np.arange(len(sizes), dtype=np.intp) * MEAN_GROUP
        for counts in rng.multinomial(n, sizes / n, size=m):
            in_full = int(counts[:full].sum())
            pos = np.repeat(starts[:full], counts[:full])
            pos += np.frombuffer(rng.bytes(in_full), dtype=np.uint8)  # MEAN_GROUP = 256: one byte per draw
            if len(sizes) > full:
                pos = np.concatenate([pos, starts[full] + rng.integers(0, sizes[full], size=counts[full])])
            yield pos


class PlacePairedBootstrap(PairedBootstrap):
    """:class:`PairedBootstrap` over places: a cluster bootstrap that resamples places, keeping each whole.

    Several photos of one place (the headings of a panorama, a sequence) are not independent samples:
    resampling photos treats them as if they were and gives intervals that are too narrow. Here a resample
    draws G places with replacement (G = the number of places) and takes every photo of each drawn place,
    as often as the place was drawn; a statistic is then the statistic of those photos' errors.

    error_a_m, error_b_m: (N,) metres; place: (N,) any hashable ids. Statistics are :class:`ErrorStatistic`
    (computed exactly from the resample's per-photo weights, the number of times its place was drawn:
    a weighted share, a weighted mean, and numpy's linear quantile of the photos repeated that often)
    or callables (called on the repeated photos' errors: slower). Seeding, blocks and :meth:`table` as in
    :class:`PairedBootstrap`; :meth:`place_draws` gives a block's drawn places, and
    :meth:`resample_places` is the naive reference the tests hold the fast path to.
    """

    def __init__(
        self,
        error_a_m: Any,
        error_b_m: Any,
        place: Any,
        statistics: Mapping[str, Callable] | None = None,
        seed: int = 0,
    ):
        ea = np.asarray(error_a_m, dtype=np.float64).ravel()
        eb = np.asarray(error_b_m, dtype=np.float64).ravel()
        place = np.asarray(place).ravel()
        if ea.shape != eb.shape or place.shape != ea.shape:
            raise ValueError(
                f"error_a_m {ea.shape}, error_b_m {eb.shape} and place {place.shape} must describe the same samples"
            )
        for name, e in (("error_a_m", ea), ("error_b_m", eb)):
            if not np.isfinite(e).all():
                raise ValueError(f"{name} has {int((~np.isfinite(e)).sum()):,} non-finite value(s)")
        _, self._place_of = np.unique(place.astype(str), return_inverse=True)  # (N,) place index per photo
        self.n_places = int(self._place_of.max()) + 1 if ea.size else 0
        if self.n_places < 2:
            raise ValueError(f"need at least 2 places to bootstrap places, got {self.n_places}")
        self.n, self.seed = int(ea.size), int(seed)
        self.statistics = dict(statistics or STATISTICS)
        self._ea, self._eb = ea, eb
        self._order = [np.argsort(e, kind="stable") for e in (ea, eb)]  # each run's photos by error
        self._sorted = [e[o] for e, o in zip((ea, eb), self._order)]
        self._blocks = {}
        self._lock = threading.Lock()

    def place_draws(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """(m, G) place indices drawn uniformly with replacement: m resamples of G places."""
        return rng.integers(0, self.n_places, size=(m, self.n_places))

    def resample_places(self, drawn: np.ndarray) -> np.ndarray:
        """(m, S, 3) the statistics of resamples given as drawn places (m, G), the naive way: concatenate every
        photo of each drawn place and call each statistic on the errors."""
        members = [np.flatnonzero(self._place_of == g) for g in range(self.n_places)]
        out = np.full((len(drawn), len(self.statistics), 3), np.nan)
        for r, places in enumerate(drawn):
            rows = np.concatenate([members[g] for g in places])
            for s, fn in enumerate(self.statistics.values()):
                out[r, s, 0], out[r, s, 1] = fn(self._ea[rows]), fn(self._eb[rows])
        out[:, :, 2] = out[:, :, 1] - out[:, :, 0]
        return out

    def _weighted(self, fn: ErrorStatistic, col: int, weight: np.ndarray) -> np.ndarray:
        """(m,) ``fn`` of run ``col``'s errors with each photo repeated ``weight`` (m, N) times."""
        e = self._ea if col == 0 else self._eb
        total = weight.sum(1)  # (m,) photos in each resample
        if fn.kind == "mean":
            return (weight @ e) / total
        if fn.kind == "share_at_most":
            return (weight @ (e <= fn.value)) / total
        cum = np.cumsum(weight[:, self._order[col]], axis=1)  # (m, N) photos at or below each sorted error
        pos = fn.value * (total - 1)
        k0 = np.floor(pos).astype(np.int64)
        k1 = np.minimum(k0 + 1, total - 1)
        # the k-th (0-based) of the repeated sorted errors is the first sorted error whose cumulative count exceeds k
        r0 = np.array([np.searchsorted(c, k, side="right") for c, k in zip(cum, k0)])
        r1 = np.array([np.searchsorted(c, k, side="right") for c, k in zip(cum, k1)])
        lo_v, hi_v, gamma = self._sorted[col][r0], self._sorted[col][r1], pos - k0
        diff = hi_v - lo_v
        return np.where(gamma >= 0.5, hi_v - diff * (1 - gamma), lo_v + diff * gamma)  # numpy's lerp

    def _block(self, block: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(block,)))
        drawn = self.place_draws(rng, BOOT_BLOCK)  # (m, G)
        counts = np.stack([np.bincount(d, minlength=self.n_places) for d in drawn])  # (m, G) draws of each place
        weight = counts[:, self._place_of].astype(np.float64)  # (m, N) copies of each photo
        out = np.empty((BOOT_BLOCK, len(self.statistics), 3))
        slow = []
        for s, fn in enumerate(self.statistics.values()):
            if isinstance(fn, ErrorStatistic):
                out[:, s, 0], out[:, s, 1] = self._weighted(fn, 0, weight), self._weighted(fn, 1, weight)
            else:
                slow.append(s)
        if slow:
            ref = self.resample_places(drawn)
            out[:, slow, :2] = ref[:, slow, :2]
        out[:, :, 2] = out[:, :, 1] - out[:, :, 0]
        return out


def paired_bootstrap(
    error_a_m: Any,
    error_b_m: Any,
    statistics: Mapping[str, Callable] | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile-bootstrap intervals of each statistic for run A, run B and B − A, resampling samples jointly.

    error_a_m, error_b_m: (N,) metres for the same N samples. Each statistic
    maps an (..., N) array to (...). Returns one row per statistic with
    columns a, a_lo, a_hi, b, b_lo, b_hi, diff, diff_lo, diff_hi (point
    estimates on the full sample; ``ci`` two-sided percentile bounds).
    :class:`PairedBootstrap` draws the resamples; keep one to extend them.
    """
    return PairedBootstrap(error_a_m, error_b_m, statistics, seed).table(n_boot, ci)


def higher_is_better(statistic: str) -> bool:
    """Accuracies (``acc@...``) improve upwards; errors and error quantiles improve downwards."""
    return statistic.startswith("acc")


def verdict(statistic: str, diff_lo: float, diff_hi: float) -> str:
    """ "B better", "B worse" or "no clear difference" from the B − A interval [diff_lo, diff_hi] of a statistic.

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
    return pd.Series(
        [verdict(r.statistic, r.diff_lo, r.diff_hi) for r in table.itertuples()],
        index=table.index,
        name="verdict",
        dtype=object,
    )


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
            rows.append(
                {
                    "key": key,
                    "a": "(absent)" if key not in fa else str(va),
                    "b": "(absent)" if key not in fb else str(vb),
                }
            )
    return pd.DataFrame(rows, columns=["key", "a", "b"])
