import math

import numpy as np
import pytest
import torch
from geopy.distance import great_circle
from hypothesis import given
from hypothesis import strategies as st
from pyproj import Geod, Proj

from swclip import geo
from tests.reference import haversine_loop_m

SPHERE = Geod(a=geo.EARTH_RADIUS_M, b=geo.EARTH_RADIUS_M)
WGS84 = Geod(ellps="WGS84")
lat_st = st.floats(-89.9, 89.9)
lon_st = st.floats(-180, 180)


def random_latlon(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-89, 89, n), rng.uniform(-180, 180, n)], 1)


def test_haversine_matches_geopy_great_circle():
    a, b = random_latlon(200, 1), random_latlon(200, 2)
    ours = geo.haversine_m(a, b)
    ref = np.array([great_circle(p, q, radius=geo.EARTH_RADIUS_M / 1000).m for p, q in zip(a, b)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-6)


def test_haversine_within_sphere_ellipsoid_difference_of_wgs84():
    a, b = random_latlon(200, 3), random_latlon(200, 4)
    _, _, ref = WGS84.inv(a[:, 1], a[:, 0], b[:, 1], b[:, 0])
    np.testing.assert_allclose(geo.haversine_m(a, b), ref, rtol=0.0056)  # sphere vs ellipsoid is < 0.56 %


def test_metre_scale_accuracy():
    # points 1 m, 3 m and 5 m apart, placed by the spherical geodesic of pyproj
    lat0, lon0 = np.full(3, 51.50721), np.full(3, -0.12758)
    lon1, lat1, _ = SPHERE.fwd(lon0, lat0, [37.0, 120.0, 300.0], [1.0, 3.0, 5.0])
    d = geo.haversine_m(np.stack([lat0, lon0], 1), np.stack([lat1, lon1], 1))
    np.testing.assert_allclose(d, [1.0, 3.0, 5.0], atol=1e-6)


def test_torch_in_torch_out_numpy_in_numpy_out():
    a, b = random_latlon(5, 5), random_latlon(5, 6)
    out_np = geo.haversine_m(a, b)
    out_t = geo.haversine_m(torch.tensor(a), torch.tensor(b))
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    assert out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-12)


def test_pairwise_matches_double_loop():
    a, b = random_latlon(7, 7), random_latlon(5, 8)
    ref = np.array([[haversine_loop_m(*p, *q) for q in b] for p in a])
    np.testing.assert_allclose(geo.pairwise_haversine_m(a, b), ref, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(
        geo.pairwise_haversine_m(torch.tensor(a), torch.tensor(b)).numpy(), ref, rtol=1e-9, atol=1e-5
    )
    self_d = geo.pairwise_haversine_m(a)
    assert self_d.shape == (7, 7) and np.allclose(np.diag(self_d), 0)


def test_pairwise_float32_torch_keeps_centimetres_in_a_city():
    rng = np.random.default_rng(9)
    ll = np.stack([55.95 + rng.uniform(0, 0.04, 300), -3.19 + rng.uniform(0, 0.06, 300)], 1)
    ll[1] = ll[0] + [1e-5, 0]  # ~1.1 m apart
    d32 = geo.pairwise_haversine_m(torch.tensor(ll), dtype=torch.float32)
    assert d32.dtype == torch.float32
    ref = geo.pairwise_haversine_m(ll)
    np.testing.assert_allclose(d32.double().numpy(), ref, atol=0.01)
    assert (torch.diagonal(d32) == 0).all()  # identical points are exactly 0 apart


@given(lat_st, lon_st)
def test_antipodes_are_pi_r_apart(lat, lon):
    anti = [-lat, lon + 180.0]
    d = geo.haversine_m(np.array([[lat, lon]]), np.array([anti]))
    assert d[0] == pytest.approx(math.pi * geo.EARTH_RADIUS_M, rel=1e-9)


@given(lat_st, lon_st, lat_st, lon_st)
def test_pairwise_float32_error_bound_anywhere(lat1, lon1, lat2, lon2):
    """The float32 (loss-path) distances: about a metre up to a quarter of the globe; near the
    antipodes asin(c/2) is ill-conditioned (c -> 2), but still within 1e-3 relative."""
    ll = np.array([[lat1, lon1], [lat2, lon2]])
    d32 = geo.pairwise_haversine_m(torch.tensor(ll), dtype=torch.float32)[0, 1].item()
    ref = haversine_loop_m(lat1, lon1, lat2, lon2)
    if ref <= 10_000e3:
        assert abs(d32 - ref) < 2.0 + 1e-6 * ref
    else:
        assert abs(d32 - ref) < 1e-3 * ref


def test_bearing_and_destination_match_pyproj_sphere():
    a, b = random_latlon(100, 10), random_latlon(100, 11)
    az, _, dist = SPHERE.inv(a[:, 1], a[:, 0], b[:, 1], b[:, 0])
    np.testing.assert_allclose(geo.initial_bearing_deg(a, b), az % 360.0, atol=1e-6)
    dest = geo.destination(a, az, dist)
    np.testing.assert_allclose(geo.haversine_m(dest, b), 0.0, atol=1e-3)
    dest_t = geo.destination(torch.tensor(a), torch.tensor(az), torch.tensor(dist))
    np.testing.assert_allclose(dest_t.numpy(), dest, atol=1e-9)


@given(lat_st, lon_st, st.floats(0, 359.9), st.floats(0.5, 20_000.0))
def test_destination_is_at_the_asked_distance(lat, lon, bearing, dist_m):
    p = np.array([[lat, lon]])
    q = geo.destination(p, bearing, dist_m)
    assert geo.haversine_m(p, q)[0] == pytest.approx(dist_m, abs=1e-6, rel=1e-9)


def test_local_metres_roundtrip_and_against_azimuthal_equidistant():
    origin = (53.4808, -2.2426)
    rng = np.random.default_rng(12)
    xy = rng.uniform(-3000, 3000, (200, 2))
    ll = geo.local_metres_to_degrees(xy, origin)
    np.testing.assert_allclose(geo.degrees_to_local_metres(ll, origin), xy, atol=1e-6)
    aeqd = Proj(proj="aeqd", lat_0=origin[0], lon_0=origin[1], R=geo.EARTH_RADIUS_M)
    ref = np.stack(aeqd(ll[:, 1], ll[:, 0]), 1)
    # the docstring's promise: equirectangular within 0.1 % of the offset over a city
    err = np.linalg.norm(ref - xy, axis=1) / np.linalg.norm(xy, axis=1)
    assert err.max() < 1e-3


def test_equal_earth_matches_pyproj():
    ll = random_latlon(300, 13)
    ee = Proj(f"+proj=eqearth +R={geo.EARTH_RADIUS_M}")
    ref = np.stack(ee(ll[:, 1], ll[:, 0]), 1)
    np.testing.assert_allclose(geo.equal_earth(ll), ref, rtol=1e-9, atol=1e-3)
    np.testing.assert_allclose(geo.equal_earth(torch.tensor(ll)).numpy(), ref, rtol=1e-9, atol=1e-3)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([[np.nan, 0.0]], "NaN"),
        ([[151.2, -33.9]], r"\(lon, lat\)"),
        ([[10.0, 400.0]], "longitude"),
        ([[1.0, 2.0, 3.0]], "shape"),
    ],
)
def test_bad_coordinates_are_refused_with_a_clear_message(bad, match):
    with pytest.raises(ValueError, match=match):
        geo.haversine_m(np.array(bad), np.array(bad))
    with pytest.raises(ValueError, match=match):
        geo.pairwise_haversine_m(np.array(bad))


def test_torch_pairwise_distance_is_differentiable():
    ll = torch.tensor([[51.5, -0.12], [51.51, -0.11], [51.52, -0.13]], dtype=torch.float64, requires_grad=True)
    d = geo.pairwise_haversine_m(ll, dtype=torch.float64)
    d[0, 1].backward()
    # moving point 1 north-east increases its distance from point 0: positive gradients
    assert ll.grad[1, 0] > 0 and ll.grad[1, 1] > 0
    assert torch.isfinite(ll.grad[[0, 1]]).all()


def test_chord_conversions_and_vectors_back_to_latlon():
    a, b = random_latlon(50, 14), random_latlon(50, 15)
    chord = np.linalg.norm(geo.unit_vectors(a) - geo.unit_vectors(b), axis=1)
    ref = [haversine_loop_m(*p, *q) for p, q in zip(a, b)]
    np.testing.assert_allclose(geo.chord_to_m(chord), ref, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(geo.chord_to_m(torch.tensor(chord)).numpy(), ref, rtol=1e-9, atol=1e-6)
    for d_m in (1.0, 1234.5, 5e6, math.pi * geo.EARTH_RADIUS_M):
        assert geo.chord_to_m(geo.m_to_chord(d_m)) == pytest.approx(d_m, rel=1e-9)
    back = geo.latlon_from_vectors(3.0 * geo.unit_vectors(a))  # any length
    np.testing.assert_allclose(geo.haversine_m(back, a), 0.0, atol=1e-6)
