"""Scale-aware views: the run's extent, the defaults it sets, H3 hexagons at any scale, world-sized charts."""

import json

import numpy as np
import pandas as pd
import pytest

from swclip.analysis.metrics import extent_m, summarize
from swclip.geo import destination, haversine_m, local_metres_to_degrees
from swclip.viz import figures, scale
from swclip.viz.spatial_bins import H3_EDGE_M, h3_bins, h3_resolution


def test_extent_by_hand():
    a = np.array([[51.5, -0.1]])
    two = np.concatenate([a, destination(a, 90.0, 10_000.0)])
    assert extent_m(two) == pytest.approx(10_000.0, rel=1e-9)
    assert extent_m(a) == 0.0
    # 99 % quantile of pair distances: one stray point among 300 does not set the extent
    rng = np.random.default_rng(0)
    city = local_metres_to_degrees(rng.uniform(-1000, 1000, (300, 2)), (51.5, -0.1))
    city[0] = (40.7, -74.0)  # New York
    assert extent_m(city) < 3000
    world = np.stack([rng.uniform(-60, 70, 500), rng.uniform(-180, 180, 500)], 1)
    assert extent_m(world) > 15_000_000


def test_extent_is_a_quantile_of_all_pair_distances():
    rng = np.random.default_rng(1)
    ll = np.stack([rng.uniform(40, 50, 60), rng.uniform(0, 10, 60)], 1)
    d = [haversine_m(ll[i : i + 1], ll[j : j + 1])[0] for i in range(60) for j in range(i + 1, 60)]
    assert extent_m(ll, quantile=0.9) == pytest.approx(np.quantile(d, 0.9), rel=1e-12)


def test_ladder_and_sigma_choices():
    assert scale.ladder(7, 600) == (10, 20, 50, 100, 200, 500)
    assert scale.ladder(1, 10, (1, 2.5, 5)) == (1, 2.5, 5, 10)
    s = scale.SIGMA_CHOICES_M
    assert s[0] == 10 and s[-1] == 2_000_000 and list(s) == sorted(set(s))
    assert {50, 150, 400, 20_000} <= set(s)  # the demo's σ and a country-scale run's
    assert scale.nearest(s, 21_000) == 20_000


@pytest.mark.parametrize("extent, kind", [(2_500.0, "street"), (530_000.0, "region"), (18_000_000.0, "world")])
def test_scale_defaults_follow_the_extent(extent, kind):
    sc = scale.scale_for(extent)
    assert sc.kind == kind and sc.world == (kind == "world")
    assert sc.hex_default_m in sc.hex_choices_m and all(extent / 1000 <= e <= extent / 4 for e in sc.hex_choices_m)
    assert 20 <= extent / sc.hex_default_m <= 200  # tens of hexagons across the run
    assert sc.lag_default_m in sc.lag_choices_m and extent / 4 <= sc.lag_default_m <= extent
    assert (
        sc.error_stops_m[0] == 0
        and sc.error_stops_m[-1] == scale.MAX_ERROR_M
        and list(sc.error_stops_m) == sorted(sc.error_stops_m)
    )


def test_fmt_m():
    assert [scale.fmt_m(v) for v in (0.5, 150, 1500, 12_000, 119_034, 2_000_000, float("nan"))] == [
        "0.5 m",
        "150 m",
        "1.5 km",
        "12 km",
        "119 km",
        "2,000 km",
        "—",
    ]


@pytest.mark.parametrize(
    "extent, kind, unit, labels",
    [
        (3_000.0, "street", "m", ["acc@25m", "acc@50m", "acc@100m", "acc@250m", "acc@500m", "acc@1km"]),
        (
            320_000.0,
            "region",
            "km",
            ["acc@1km", "acc@5km", "acc@10km", "acc@25km", "acc@50km", "acc@100km", "acc@200km"],
        ),
        (12_000_000.0, "world", "km", ["acc@1km", "acc@25km", "acc@200km", "acc@750km", "acc@2500km"]),
    ],
)
def test_three_scales_set_thresholds_units_and_ranges(extent, kind, unit, labels):
    """Street/city, region/country and world: thresholds, unit, error filter, lags and zoom follow the extent."""
    sc = scale.scale_for(extent)
    assert (sc.kind, sc.unit, list(sc.accuracy_keys)) == (kind, unit, labels)
    assert set(sc.headline_thresholds_m) <= set(sc.thresholds_m) | {750_000, 2_500_000}
    # the error filter stops at ten times the extent (then "no limit"), not at half the Earth
    assert sc.error_stops_m[-2] <= max(10 * extent, 10_000.0) and scale.fmt_stop(sc.error_stops_m[-1]) == "no limit"
    assert sc.lag_default_m == scale.nearest(sc.lag_choices_m, extent / 2)  # one lag rule: half the extent
    assert sc.unit in sc.describe() or unit == "m"
    assert sc.label in sc.describe()
    # a map of the whole extent: zoom in for a street, out for the world
    assert {"street": 12 <= sc.map_zoom <= 16, "region": 5 <= sc.map_zoom <= 9, "world": 1 <= sc.map_zoom <= 3}[kind]
    # every label is a key summarize() writes, so every page can read it from metrics.json
    assert set(labels) <= set(summarize(np.array([10.0, 2e6])))


def test_scale_boundaries():
    assert [scale.scale_kind(e) for e in (29_999, 30_001, 2_499_999, 2_500_001)] == [
        "street",
        "region",
        "region",
        "world",
    ]


def test_a_range_at_the_largest_lag_suggests_no_sigma():
    """A variogram still rising at its largest lag: 'range not reached', no σ; one that levels off: suggest_sigma_m."""
    from swclip.analysis.empirical_variogram import EmpiricalVariogram
    from swclip.analysis.variogram import RANGE_NOT_REACHED, fit_variogram, suggest_sigma_m, suggested_sigma_from_fit

    edges = np.linspace(0, 160_000, 17)
    lag = (edges[:-1] + edges[1:]) / 2

    def emp(gamma):
        return EmpiricalVariogram(
            ok=True,
            bin_edges_m=edges,
            bin_centres_m=lag,
            lag_m=lag,
            gamma=gamma,
            counts=np.full(16, 100),
            max_lag_m=160_000.0,
            dissimilarity="cosine",
        )

    rising = fit_variogram(emp(0.1 + 1e-6 * lag), "exponential")
    assert rising.ok and rising.range_at_bound and RANGE_NOT_REACHED in rising.warning
    assert suggested_sigma_from_fit(rising) is None
    level = fit_variogram(emp(0.1 + 0.5 * (1 - np.exp(-3 * lag / 30_000))), "exponential")
    assert level.ok and not level.range_at_bound
    assert suggested_sigma_from_fit(level) == pytest.approx(suggest_sigma_m(level.practical_range_m()))
    assert level.range_m == pytest.approx(30_000, rel=0.02)


def test_h3_bins_against_a_per_point_loop():
    import h3

    rng = np.random.default_rng(0)
    ll = np.stack([rng.uniform(-60, 70, 2000), rng.uniform(-180, 180, 2000)], 1)
    v = rng.gamma(2.0, 1000.0, 2000)
    out = h3_bins(ll, v, 500_000.0)
    res = out["res"]
    assert res == 1  # 483 km edges are nearest 500 km
    cells = [h3.latlng_to_cell(a, b, res) for a, b in ll]
    ref = pd.Series(v).groupby(cells).agg(["median", "count"])
    got = pd.DataFrame(
        {"median": out["value"], "count": out["count"]}, index=[h3.int_to_str(int(c)) for c in out["cells"]]
    )
    pd.testing.assert_frame_equal(got.sort_index(), ref.sort_index(), check_names=False, check_dtype=False)
    assert [h3.int_to_str(int(out["cells"][b])) for b in out["bin_of_point"]] == cells


def test_h3_cells_across_the_antimeridian_stay_in_one_piece():
    ll = np.array([[10.0, 179.99], [10.0, -179.99], [-16.5, 179.9]])
    out = h3_bins(ll, [1.0, 2.0, 3.0], 100_000.0)
    for ring in out["polygon_lonlat"]:
        assert np.abs(np.diff(ring[:, 0])).max() < 10  # no edge jumps 360°


def test_h3_resolution_is_the_nearest_edge():
    assert [h3_resolution(e) for e in (H3_EDGE_M[0], 150.0, 0.1)] == [0, 9, 15]
    with pytest.raises(ValueError, match="edge_m"):
        h3_bins(np.zeros((2, 2)), [1, 2], 0.0)


def test_world_sized_charts_send_few_points_and_keep_the_curve():
    rng = np.random.default_rng(0)
    e = rng.lognormal(10, 2, 210_000)
    cdf = figures.error_cdf({"run": e})
    tr = cdf.data[0]
    assert len(tr.x) <= 2000
    # every point drawn lies on the exact empirical CDF
    srt = np.sort(e)
    np.testing.assert_allclose(tr.y, np.searchsorted(srt, tr.x, side="right") / e.size)
    hist = figures.error_histogram({"run": e}, bins=40)
    assert len(hist.data[0].y) == 40 and sum(hist.data[0].y) == e.size
    assert len(json.dumps(hist.to_plotly_json(), default=str)) < 20_000


def test_rva_figure_overlays_runs():
    fig = figures.rva_figure(
        {
            "a": {"areas_km2": [1, 10, 100], "recall": [0.1, 0.5, 0.9]},
            "b": {"areas_km2": [1, 10, 100], "recall": [0.2, 0.6, 1.0]},
        }
    )
    assert [t.name for t in fig.data] == ["a", "b"] and fig.layout.xaxis.type == "log"
    np.testing.assert_allclose(fig.data[1].y, [0.2, 0.6, 1.0])
