"""swclip.analysis.compare: paired bootstrap against scipy.stats.bootstrap, joins and manifest diffs."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from swclip.analysis.compare import STATISTICS, manifest_diff, paired_bootstrap, paired_errors


def test_paired_bootstrap_matches_scipy_percentile_intervals():
    rng = np.random.default_rng(0)
    a = rng.lognormal(5.0, 1.0, 400)
    b = a * rng.lognormal(-0.2, 0.3, 400)  # B is better on the same samples
    ours = paired_bootstrap(
        a, b, {"median_m": STATISTICS["median_m"], "acc@100m": STATISTICS["acc@100m"]}, n_boot=4000, seed=1
    ).set_index("statistic")

    def diff_median(x, y, axis=-1):
        return np.median(y, axis=axis) - np.median(x, axis=axis)

    ref = stats.bootstrap(
        (a, b), diff_median, paired=True, n_resamples=4000, method="percentile", confidence_level=0.95, random_state=2
    )
    lo, hi = ref.confidence_interval
    scale = hi - lo
    assert abs(ours.loc["median_m", "diff_lo"] - lo) < 0.1 * scale
    assert abs(ours.loc["median_m", "diff_hi"] - hi) < 0.1 * scale
    assert ours.loc["median_m", "diff"] == pytest.approx(np.median(b) - np.median(a))
    assert ours.loc["median_m", "diff_hi"] < 0  # the improvement is clear

    ref_a = stats.bootstrap(
        (a,), lambda x, axis=-1: np.mean(x <= 100, axis=axis), n_resamples=4000, method="percentile", random_state=3
    )
    lo, hi = ref_a.confidence_interval
    assert abs(ours.loc["acc@100m", "a_lo"] - lo) < 0.02 and abs(ours.loc["acc@100m", "a_hi"] - hi) < 0.02


def test_paired_bootstrap_of_identical_runs_has_a_zero_difference():
    e = np.random.default_rng(1).lognormal(4, 1, 50)
    out = paired_bootstrap(e, e, n_boot=200)
    assert (out["diff"] == 0).all() and (out["diff_lo"] == 0).all() and (out["diff_hi"] == 0).all()
    assert (out["a_lo"] <= out["a"]).all() and (out["a"] <= out["a_hi"]).all()


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap([1.0], [1.0])
    with pytest.raises(ValueError, match="error_b_m has 1 non-finite"):
        paired_bootstrap([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])


def test_paired_errors_joins_on_id():
    a = pd.DataFrame(
        {"id": ["x", "y", "z"], "lat": [1.0, 2, 3], "lon": [1.0, 2, 3], "error_m": [10.0, 20, 30], "city": ["c"] * 3}
    )
    b = pd.DataFrame({"id": ["z", "x", "w"], "lat": [3.0, 1, 9], "lon": [3.0, 1, 9], "error_m": [3.0, 1, 9]})
    j = paired_errors(a, b).set_index("id")
    assert sorted(j.index) == ["x", "z"]
    assert j.loc["z", "error_a_m"] == 30 and j.loc["z", "error_b_m"] == 3
    with pytest.raises(ValueError, match="share no evaluation sample"):
        paired_errors(a, b.assign(id=["p", "q", "r"]))
    with pytest.raises(ValueError, match="lack column"):
        paired_errors(a.drop(columns="error_m"), b)


def test_manifest_diff_lists_only_changed_keys():
    a = {"loss": {"name": "clip", "sigma_m": 150}, "seed": 0, "created_utc": "t1", "model": {"arch": "tiny"}}
    b = {
        "loss": {"name": "swclip", "sigma_m": 150},
        "seed": 0,
        "created_utc": "t2",
        "model": {"arch": "tiny"},
        "nc_weight": 0.5,
    }
    d = manifest_diff(a, b)
    assert d.to_dict("records") == [
        {"key": "loss.name", "a": "clip", "b": "swclip"},
        {"key": "nc_weight", "a": "(absent)", "b": "0.5"},
    ]


@pytest.mark.parametrize(
    "statistic, lo, hi, expected",
    [
        ("median_m", -30.0, -5.0, "B better"),  # errors: the whole interval below 0
        ("median_m", 5.0, 30.0, "B worse"),
        ("median_m", -5.0, 30.0, "no clear difference"),
        ("acc@100m", 0.01, 0.2, "B better"),  # accuracies: the whole interval above 0
        ("acc@100m", -0.2, -0.01, "B worse"),
        ("acc@100m", -0.01, 0.2, "no clear difference"),
        ("mean_m", 0.0, 0.0, "no clear difference"),  # touching 0 is not clear
    ],
)
def test_verdict_reads_the_interval_by_the_statistic_direction(statistic, lo, hi, expected):
    from swclip.analysis.compare import verdict

    assert verdict(statistic, lo, hi) == expected


def test_verdicts_on_a_bootstrap_table_agree_with_the_data():
    from swclip.analysis.compare import verdict, verdicts

    rng = np.random.default_rng(1)
    ea = rng.lognormal(5, 1, 400)
    table = paired_bootstrap(ea, ea * 0.5, n_boot=300, seed=0)  # B halves every error: better on every statistic
    v = verdicts(table)
    assert (v == "B better").all(), table.assign(v=v)
    assert list(v) == [verdict(r.statistic, r.diff_lo, r.diff_hi) for r in table.itertuples()]
    with pytest.raises(ValueError, match="reversed"):
        verdict("median_m", 1.0, -1.0)


def _naive_resample_statistics(ea, eb, idx):
    """Reference: each resample's statistics from a plain loop over the resampled values (np.median / mean)."""
    order = np.argsort(ea, kind="stable")  # PairedBootstrap's indices point into the samples sorted by A's error
    out = np.empty((len(idx), len(STATISTICS), 3))
    for i, row in enumerate(idx):
        ra, rb = ea[order[row]], eb[order[row]]
        for s, thr in enumerate([None, None, 100.0, 500.0, 1000.0]):
            if s == 0:
                out[i, s, :2] = np.median(ra), np.median(rb)
            elif s == 1:
                out[i, s, :2] = ra.sum() / ra.size, rb.sum() / rb.size
            else:
                out[i, s, :2] = np.count_nonzero(ra <= thr) / ra.size, np.count_nonzero(rb <= thr) / rb.size
    out[:, :, 2] = out[:, :, 1] - out[:, :, 0]
    return out


@pytest.mark.parametrize("n", [2, 3, 301, 1000, 20_000])
def test_resample_statistics_match_a_naive_loop_on_the_same_indices(n):
    from swclip.analysis.compare import PairedBootstrap

    assert list(STATISTICS) == ["median_m", "mean_m", "acc@100m", "acc@500m", "acc@1km"]
    rng = np.random.default_rng(n)
    ea = np.round(rng.lognormal(5.5, 1.2, n), -1)  # rounded: ties, and errors exactly at the thresholds
    eb = np.round(ea * rng.lognormal(0, 0.6, n), -1)
    idx = rng.integers(0, n, size=(12, n), dtype=np.int32)
    idx[0] = 0  # every draw the smallest A error
    idx[1] = n - 1
    idx[2, : n // 2 + 1] = 0  # just over half the draws at one sample
    ours = PairedBootstrap(ea, eb).resample_statistics(idx)
    ref = _naive_resample_statistics(ea, eb, idx)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-9)


def test_paired_bootstrap_blocks_do_not_depend_on_the_count_asked_or_the_threads():
    from swclip.analysis.compare import BOOT_BLOCK, PairedBootstrap

    rng = np.random.default_rng(3)
    ea = rng.lognormal(6, 1, 5000)
    eb = ea * rng.lognormal(0, 0.4, 5000)
    kept = PairedBootstrap(ea, eb, seed=7)
    first = kept.draws(2 * BOOT_BLOCK)
    more = kept.draws(5 * BOOT_BLOCK)  # extends the kept resamples
    fresh = PairedBootstrap(ea, eb, seed=7).draws(5 * BOOT_BLOCK, workers=1)
    np.testing.assert_array_equal(more[: 2 * BOOT_BLOCK], first)
    np.testing.assert_array_equal(more, fresh)
    assert not np.array_equal(PairedBootstrap(ea, eb, seed=8).draws(BOOT_BLOCK), fresh[:BOOT_BLOCK])
    assert len(np.unique(more[:, 0, 0])) > 100  # the resamples differ from one another
    table = kept.table(250)
    assert table.loc[0, "diff_lo"] == np.percentile(more[:250, 0, 2], 2.5)


@pytest.mark.parametrize("window_sd", [8.0, 0.3])
def test_group_count_resamples_have_the_distribution_of_index_resamples(window_sd):
    """Quantiles and shares come from multinomial counts over groups of samples (and, for a resample whose
    order statistic leaves its window, from draws placed on the samples): over 10,000 resamples their
    distribution matches index resamples read by the naive loop. window_sd=0.3 makes about a third of the
    resamples leave the window."""
    from scipy.stats import ks_2samp

    from swclip.analysis.compare import PairedBootstrap

    n, n_boot = 2000, 10_000
    rng = np.random.default_rng(11)
    ea = np.round(rng.lognormal(6, 1.0, n), -1)
    eb = np.round(ea * rng.lognormal(-0.1, 0.5, n), -1)
    ours = PairedBootstrap(ea, eb, seed=3, window_sd=window_sd).draws(n_boot)
    ref = _naive_resample_statistics(ea, eb, rng.integers(0, n, size=(n_boot, n)))
    for s, name in enumerate(STATISTICS):
        for col, what in enumerate(("A", "B", "B - A")):
            p = ks_2samp(ours[:, s, col], ref[:, s, col]).pvalue
            assert p > 1e-4, (name, what, p)


@pytest.mark.parametrize("n, window_sd", [(3, 8.0), (301, 8.0), (20_000, 8.0), (20_000, 0.3)])
def test_group_counts_read_like_a_naive_loop_on_the_same_resamples(n, window_sd):
    """The same index resamples, turned into draws per group, give the naive loop's quantiles and shares exactly;
    window_sd=0.3 sends many resamples outside the window, read from their draws per sample."""
    from swclip.analysis.compare import PairedBootstrap

    rng = np.random.default_rng(n)
    digits = -1 if n < 1000 else 2  # many ties (and errors exactly at the thresholds) in small runs; few in large ones,
    ea = np.round(rng.lognormal(5.5, 1.2, n), digits)  # where an order statistic one rank off must show
    eb = np.round(ea * rng.lognormal(0, 0.6, n), digits)
    idx = rng.integers(0, n, size=(40, n))
    idx[0] = 0
    pb = PairedBootstrap(ea, eb, window_sd=window_sd)
    per_sample = np.stack([np.bincount(row, minlength=n) for row in idx])  # draws per position in A's order
    cells = pb._cells
    got = cells.read(cells.group_counts(per_sample), np.random.default_rng(0), per_sample=per_sample)
    ref = _naive_resample_statistics(ea, eb, idx)
    assert sorted(got) == [(s, col) for s in (0, 2, 3, 4) for col in (0, 1)]  # the mean is drawn by index
    for (s, col), values in got.items():
        np.testing.assert_allclose(
            values, ref[:, s, col], rtol=1e-12, atol=0, err_msg=f"{list(STATISTICS)[s]} run {col}"
        )


@pytest.mark.parametrize("n", [5, 256, 1000])
def test_mean_resample_positions_are_uniform_over_the_samples(n):
    """The mean's resamples draw runs of 256 positions by a multinomial, then a byte within a run: each
    resample has N positions, and over many resamples every position is drawn as often as a uniform draw
    would (chi-square)."""
    from scipy.stats import chisquare

    from swclip.analysis.compare import PairedBootstrap

    pb = PairedBootstrap(np.arange(n, dtype=float), np.arange(n, dtype=float))
    resamples = list(pb.mean_positions(np.random.default_rng(4), 4000))
    assert all(len(p) == n and p.min() >= 0 and p.max() < n for p in resamples)
    counts = np.bincount(np.concatenate(resamples), minlength=n)
    assert chisquare(counts).pvalue > 1e-4


def test_resample_means_match_a_naive_mean_of_the_same_positions():
    from swclip.analysis.compare import PairedBootstrap

    rng = np.random.default_rng(9)
    ea, eb = rng.lognormal(6, 1, 3000), rng.lognormal(6, 1, 3000)
    pb = PairedBootstrap(ea, eb)
    resamples = list(pb.mean_positions(rng, 20))
    order = np.argsort(ea, kind="stable")  # positions are in the order of A's errors
    ref = np.array([[np.mean(ea[order[p]]), np.mean(eb[order[p]])] for p in resamples])
    np.testing.assert_allclose(pb.resample_means(resamples), ref, rtol=1e-12)


def test_shares_any_id_compares_ids_as_text():
    from swclip.analysis.compare import shares_any_id

    assert shares_any_id(
        pd.Series(["a", "b", "7"]), pd.Series([9, 8, 7])
    )  # "7" and 7: one id, as paired_errors joins them
    assert not shares_any_id(pd.Series(["a", "b"]), pd.Series(["c", "d"]))
    assert shares_any_id(np.array(["x", "y"]), ["q", "y"])
    assert not shares_any_id(pd.Series([], dtype=str), pd.Series(["a"]))
    big = pd.Series([f"{i:08d}" for i in range(100_000)])
    assert shares_any_id(big, big.iloc[[-1]]) and not shares_any_id(big, pd.Series(["x"]))
