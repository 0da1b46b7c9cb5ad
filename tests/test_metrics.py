import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swclip.analysis import metrics
from tests.reference import haversine_loop_m


def test_errors_m_against_loop():
    rng = np.random.default_rng(0)
    pred = np.stack([rng.uniform(-80, 80, 50), rng.uniform(-180, 180, 50)], 1)
    true = np.stack([rng.uniform(-80, 80, 50), rng.uniform(-180, 180, 50)], 1)
    ref = [haversine_loop_m(*p, *t) for p, t in zip(pred, true)]
    np.testing.assert_allclose(metrics.errors_m(pred, true), ref, rtol=1e-9)


def test_geoscore_known_values():
    assert metrics.geoscore([0.0]) == pytest.approx(5000.0)
    assert metrics.geoscore([1492.7e3]) == pytest.approx(5000.0 / math.e)
    assert metrics.geoscore([0.0, 1492.7e3]) == pytest.approx((5000.0 + 5000.0 / math.e) / 2)


@given(st.lists(st.floats(0, 3e6), min_size=1, max_size=60))
def test_accuracy_at_matches_a_count(errors):
    got = metrics.accuracy_at(errors, [25, 100, 1000, 25_000])
    for t, label in zip([25, 100, 1000, 25_000], ["acc@25m", "acc@100m", "acc@1km", "acc@25km"]):
        assert got[label] == pytest.approx(sum(e <= t for e in errors) / len(errors))


def test_summarize_overall_and_per_city_against_pandas():
    rng = np.random.default_rng(1)
    err = rng.gamma(2.0, 200.0, 300)
    city = rng.choice(["Leeds", "Bristol", "Glasgow"], 300)
    out = metrics.summarize(err, city)
    frame = pd.DataFrame({"e": err, "c": city})
    assert out["median_m"] == pytest.approx(frame.e.median())
    assert out["mean_m"] == pytest.approx(frame.e.mean())
    assert out["p90_m"] == pytest.approx(frame.e.quantile(0.9))
    for name, g in frame.groupby("c"):
        assert out["per_city"][name]["median_m"] == pytest.approx(g.e.median())
        assert out["per_city"][name]["n"] == len(g)
        assert out["per_city"][name]["acc@100m"] == pytest.approx((g.e <= 100).mean())
    for key in [
        "acc@25m",
        "acc@50m",
        "acc@250m",
        "acc@500m",
        "acc@1km",
        "acc@200km",
        "acc@2500km",
        "p95_m",
        "geoscore",
    ]:
        assert key in out


def test_recall_at_k_against_loop():
    rng = np.random.default_rng(2)
    ranked = np.array([rng.permutation(20)[:10] for _ in range(40)])
    true = rng.integers(0, 20, 40)
    got = metrics.recall_at_k(ranked, true, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert got[f"recall@{k}"] == pytest.approx(np.mean([t in list(r[:k]) for r, t in zip(ranked, true)]))


def test_recall_vs_area_against_loop():
    area = np.array([1.0, 2.0, 5.0, 10.0])
    ranked = np.array([[0, 1, 2], [2, 3, 0], [3, 2, 1]])
    true = np.array([1, 0, 0])  # needs 1+2=3, 5+10+1=16, not in top 3 -> inf
    grid, recall, needed = metrics.recall_vs_area(ranked, true, area, areas_km2=[2.0, 3.0, 16.0, 100.0])
    np.testing.assert_array_equal(needed, [3.0, 16.0, np.inf])
    np.testing.assert_allclose(recall, [0.0, 1 / 3, 2 / 3, 2 / 3])
    assert (np.diff(metrics.recall_vs_area(ranked, true, area)[1]) >= 0).all()  # a curve never falls


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [-3.0], []])
def test_bad_errors_are_refused(bad):
    with pytest.raises(ValueError, match="error_m"):
        metrics.summarize(bad)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="city"):
        metrics.summarize([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="shape"):
        metrics.errors_m(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="recall@10"):
        metrics.recall_at_k(np.zeros((2, 5)), np.zeros(2), ks=(10,))
