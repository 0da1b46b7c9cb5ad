"""The app's figure and map builders, and the spatial binning they use (no Streamlit)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swclip.geo import degrees_to_local_metres, haversine_m, local_metres_to_degrees
from swclip.method.soft_labels import soft_targets
from swclip.viz import figures, maps
from swclip.viz.spatial_bins import hex_bins, hex_centres_m, hilbert_index, hilbert_order

ORIGIN = (48.8566, 2.3522)


# ----------------------------------------------------------------- Hilbert curve


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_hilbert_index_visits_every_cell_once_by_unit_steps(order):
    # The defining property of a Hilbert curve: a bijection onto 0..4^p-1 whose
    # consecutive cells are 4-neighbours. Checked on the whole grid, not on a formula.
    n = 1 << order
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = hilbert_index(x.ravel(), y.ravel(), order)
    assert sorted(d.tolist()) == list(range(n * n))
    walk = np.empty((n * n, 2), dtype=int)
    walk[d] = np.stack([x.ravel(), y.ravel()], -1)
    steps = np.abs(np.diff(walk, axis=0)).sum(1)
    assert (steps == 1).all()
    assert tuple(walk[0]) == (0, 0)


def test_hilbert_index_rejects_cells_off_the_grid():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        hilbert_index(np.array([4]), np.array([0]), 2)


def test_hilbert_order_keeps_neighbours_together():
    # Points on a 16x16 grid of 50 m cells: in Hilbert order every step is one cell,
    # where a row-major order jumps across the city at every row end.
    g = np.stack(np.meshgrid(np.arange(16), np.arange(16), indexing="ij"), -1).reshape(-1, 2) * 50.0 + 25.0
    rng = np.random.default_rng(0)
    g = g[rng.permutation(len(g))]
    ll = local_metres_to_degrees(g, ORIGIN)
    perm = hilbert_order(ll, order=4)
    assert sorted(perm.tolist()) == list(range(len(g)))
    steps_m = haversine_m(ll[perm][1:], ll[perm][:-1])
    assert steps_m.max() < 52.0
    row_major = np.lexsort((g[:, 0], g[:, 1]))
    assert haversine_m(ll[row_major][1:], ll[row_major][:-1]).max() > 700.0


def test_hilbert_order_makes_soft_targets_banded():
    # Why the page sorts: mass within 3 rows of the diagonal grows a lot.
    rng = np.random.default_rng(1)
    ll = local_metres_to_degrees(rng.uniform(-2000, 2000, (256, 2)), ORIGIN)

    def band_mass(latlon):
        q = soft_targets(latlon, 150.0)
        i, j = np.indices(q.shape)
        return q[(np.abs(i - j) <= 3) & (i != j)].sum() / (q.sum() - np.trace(q))

    assert band_mass(ll[hilbert_order(ll)]) > 2 * band_mass(ll)


# ----------------------------------------------------------------- hexagonal bins


@given(st.floats(20.0, 500.0), st.integers(0, 10_000))
def test_hex_bins_assign_each_point_to_the_nearest_centre(radius_m, seed):
    rng = np.random.default_rng(seed)
    half_m = 15 * radius_m
    xy = rng.uniform(-half_m, half_m, (300, 2))
    ll = local_metres_to_degrees(xy, ORIGIN)
    out = hex_bins(ll, rng.uniform(0, 1, 300), radius_m, origin_latlon=ORIGIN)
    centres = degrees_to_local_metres(out["centre_latlon"], ORIGIN)
    own = np.linalg.norm(xy - centres[out["bin_of_point"]], axis=1)
    # Brute force over every lattice centre within reach (a Voronoi check).
    q, r = np.meshgrid(np.arange(-30, 31), np.arange(-30, 31))
    lattice = hex_centres_m(q.ravel(), r.ravel(), radius_m)
    lattice = lattice[np.abs(lattice).max(1) < half_m + 2 * radius_m]
    best = np.sqrt(((xy[:, None, :] - lattice[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(own, best, atol=1e-6)
    assert (own <= radius_m + 1e-6).all()


def test_hex_bins_summaries_match_pandas():
    rng = np.random.default_rng(3)
    ll = local_metres_to_degrees(rng.uniform(-1500, 1500, (500, 2)), ORIGIN)
    v = rng.lognormal(4, 1, 500)
    out = hex_bins(ll, v, 200.0)
    ref = pd.Series(v).groupby(out["bin_of_point"]).agg(["median", "count"])
    np.testing.assert_allclose(out["value"], ref["median"].to_numpy())
    np.testing.assert_array_equal(out["count"], ref["count"].to_numpy())
    assert out["count"].sum() == 500
    # Vertices are the circumradius away from their centre, in (lon, lat) order.
    verts = out["polygon_lonlat"][0][:, ::-1]
    d = haversine_m(verts, np.repeat(out["centre_latlon"][:1], 6, 0))
    np.testing.assert_allclose(d, 200.0, rtol=2e-3)


def test_hex_bins_rejects_bad_input():
    ll = np.array([[10.0, 10.0], [10.001, 10.0]])
    with pytest.raises(ValueError, match="radius_m"):
        hex_bins(ll, [1, 2], 0.0)
    with pytest.raises(ValueError, match="2 points"):
        hex_bins(ll, [1, 2, 3], 50.0)


# ----------------------------------------------------------------- colours and views


def test_ramp_ends_and_clipping():
    c = maps.ramp(np.array([-5.0, 0.0, 10.0, 50.0]), 0.0, 10.0)
    assert c.dtype == np.uint8 and c.shape == (4, 3)
    np.testing.assert_array_equal(c[0], c[1])  # clipped low
    np.testing.assert_array_equal(c[2], c[3])  # clipped high
    np.testing.assert_array_equal(c[1], [68, 1, 84])  # viridis start
    np.testing.assert_array_equal(c[2], [253, 231, 37])  # viridis end
    lg = maps.ramp(np.array([10.0, 100.0, 1000.0]), 10.0, 1000.0, log=True)
    np.testing.assert_array_equal(lg[1], maps.ramp(np.array([0.5]), 0, 1)[0])  # 100 is mid-way on a log scale


def test_position_colours_follow_east_and_north():
    ll = local_metres_to_degrees(np.array([[-1000.0, 0.0], [1000.0, 0.0], [0.0, -1000.0], [0.0, 1000.0]]), ORIGIN)
    c = maps.position_colours(ll).astype(int)
    assert c[1, 0] > c[0, 0] + 150  # east is redder
    assert c[3, 1] > c[2, 1] + 150  # north is greener


@pytest.mark.parametrize("span_m", [300.0, 4000.0, 50_000.0])
def test_view_state_frames_the_points(span_m):
    ll = local_metres_to_degrees(np.array([[-span_m / 2, -span_m / 2], [span_m / 2, span_m / 2]]), ORIGIN)
    v = maps.view_state(ll, width_px=460, height_px=430)
    # Web Mercator at deck.gl's 512 px world: metres per pixel at this latitude and zoom.
    m_per_px = 2 * math.pi * 6_378_137 * math.cos(math.radians(ORIGIN[0])) / (512 * 2**v.zoom)
    assert span_m / m_per_px <= 430  # fits
    assert span_m / m_per_px > 430 / 2.5  # and is not lost in the middle
    assert abs(v.latitude - ORIGIN[0]) < 1e-3 and abs(v.longitude - ORIGIN[1]) < 1e-3


def test_decks_serialise_without_a_basemap_token():
    ll = local_metres_to_degrees(np.random.default_rng(0).uniform(-500, 500, (20, 2)), ORIGIN)
    bins = hex_bins(ll, np.arange(20.0), 150.0)
    layers = maps.context_layers(
        [ll[:5], ll[5:10]], pd.DataFrame({"name": ["A"], "lat": [ORIGIN[0]], "lon": [ORIGIN[1]]})
    )
    layers += [
        maps.scatter_layer(maps.points_frame(ll, error_m=np.arange(20.0))),
        maps.line_layer(ll[:3], ll[3:6]),
        maps.hex_layer(bins, 1, 20),
    ]
    spec = json.loads(maps.deck(layers, ll, paper=True).to_json())
    types = [layer["@@type"] for layer in spec["layers"]]
    assert types == ["PolygonLayer", "PathLayer", "TextLayer", "ScatterplotLayer", "LineLayer", "PolygonLayer"]
    assert "mapboxKey" not in spec and "mapStyle" not in spec
    assert all(
        "widthUnits" not in layer for layer in spec["layers"]
    )  # it blanks Streamlit's deck (seen in the browser)
    assert len(spec["layers"][1]["data"]) == 2


def test_compact_deck_json_is_pydecks_own_with_outlines_encoded_once():
    """The app's decks write the same JSON object as pydeck's own (indented) to_json, outlines included, and
    a GeoJSON dict shared between maps is encoded once: its second deck reuses the text (same object)."""
    import pydeck as pdk

    ll = local_metres_to_degrees(np.random.default_rng(1).uniform(-500, 500, (30, 2)), ORIGIN)
    outlines = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": f"c{i}"},
                "geometry": {"type": "Polygon", "coordinates": [[[i, 0.5], [i + 0.25, 1.0], [i, 1.5], [i, 0.5]]]},
            }
            for i in range(5)
        ],
    }
    layers = maps.context_layers(
        [], pd.DataFrame({"name": ["A"], "lat": [ORIGIN[0]], "lon": [ORIGIN[1]]}), outlines=outlines
    )
    layers += [
        maps.scatter_layer(maps.points_frame(ll, id=[f"s{i}" for i in range(30)])),
        maps.hex_layer(hex_bins(ll, np.arange(30.0), 150.0), 1, 30),
    ]
    d = maps.deck(layers, ll, tooltip={"text": "{id}"})
    assert json.loads(d.to_json()) == json.loads(pdk.Deck.to_json(d))
    assert json.loads(d.to_json())["layers"][0]["data"] == outlines
    encoded = []
    real_dumps = json.dumps

    def counting_dumps(obj, *a, **k):
        encoded.append(obj is outlines)
        return real_dumps(obj, *a, **k)

    json.dumps = counting_dumps
    try:
        again = maps.deck(maps.context_layers(outlines=outlines), ll).to_json()
    finally:
        json.dumps = real_dumps
    assert not any(encoded)  # the outlines came from the memo, not from a new encode
    assert json.loads(again)["layers"][0]["data"] == outlines


def test_nearby_places_are_offline_and_near():
    ll = np.array([[51.5072, -0.1276], [51.51, -0.12]])  # central London
    places = maps.nearby_places(ll)
    assert len(places) >= 1
    d = haversine_m(places[["lat", "lon"]].to_numpy(), np.repeat(ll[:1], len(places), 0))
    assert d.min() < 20_000


# ----------------------------------------------------------------- folium


def test_folium_map_loads_leaflet_only_from_the_given_place(tmp_path):
    folder = maps.install_leaflet(tmp_path / "static")
    assert (folder / "leaflet.js").stat().st_size > 100_000 and (folder / "leaflet.css").is_file()
    assert maps.install_leaflet(tmp_path / "static") == folder  # idempotent
    m = maps.folium_map(ORIGIN, leaflet_url="app/static/leaflet")
    maps.folium_streets(m, [np.array([ORIGIN, (ORIGIN[0] + 0.01, ORIGIN[1])])])
    html = m.get_root().render()
    scripts = [s for s in html.split('src="')[1:]]
    urls = [s.split('"')[0] for s in scripts]
    assert urls == ["/app/static/leaflet/leaflet.js"]
    assert "cdn.jsdelivr" not in html and "code.jquery" not in html and "bootstrapcdn" not in html
    assert "/app/static/leaflet/leaflet.css" in html


# ----------------------------------------------------------------- plotly charts


def test_kernel_curve_draws_the_library_kernel():
    fig = figures.kernel_curve(100.0, "exponential", max_m=400.0)
    tr = {t.name: t for t in fig.data}
    assert set(tr) == {"exponential", "gaussian"}
    d = np.asarray(tr["exponential"].x)
    np.testing.assert_allclose(np.asarray(tr["exponential"].y), np.exp(-d / 100.0))
    np.testing.assert_allclose(np.asarray(tr["gaussian"].y), np.exp(-(d**2) / (2 * 100.0**2)))


def test_target_heatmap_scale_shows_the_off_diagonal_mass():
    q = soft_targets(local_metres_to_degrees(np.array([[0, 0], [30, 0], [2000, 0]], dtype=float), ORIGIN), 50.0)
    fig = figures.target_heatmap(q, "Q")
    off = q.copy()
    np.fill_diagonal(off, 0)
    assert fig.data[0].zmax == pytest.approx(off.max(), rel=1e-6)
    assert figures.target_heatmap(np.eye(3), "one-hot", zmax=1.0).data[0].zmax == 1.0


def test_error_cdf_is_the_empirical_cdf():
    e = np.array([300.0, 10.0, 50.0, 1000.0])
    fig = figures.error_cdf({"run": e})
    tr = fig.data[0]
    np.testing.assert_allclose(tr.x, [10, 50, 300, 1000])
    np.testing.assert_allclose(tr.y, [0.25, 0.5, 0.75, 1.0])


def test_variogram_figure_marks_sigma_and_ranges():
    fig = figures.variogram_figure(
        [
            {
                "name": "run",
                "lags_m": [50, 100],
                "gamma": [0.1, 0.2],
                "fit_h_m": [0, 100],
                "fit_gamma": [0, 0.2],
                "range_m": 300,
            }
        ],
        sigma_m=80,
        suggested_sigma_m=120,
        true_ranges_m=[150, 600],
    )
    xs = sorted(s.x0 for s in fig.layout.shapes)
    assert xs == [80, 120, 150, 300, 600]
    assert len(fig.data) == 2


def test_mini_map_and_embedding_scatter_build():
    fig = figures.mini_map(
        ORIGIN,
        (ORIGIN[0] + 0.003, ORIGIN[1]),
        others_latlon=np.array([ORIGIN]),
        streets=[np.array([ORIGIN, (ORIGIN[0], ORIGIN[1] + 0.01)])],
    )
    assert fig.layout.yaxis.scaleratio == pytest.approx(1 / math.cos(math.radians(ORIGIN[0])))
    xy = np.random.default_rng(0).normal(size=(10, 2))
    fig = figures.embedding_scatter(xy, np.zeros((10, 3), np.uint8), anchor=2, highlight=[3, 4])
    assert [t.name for t in fig.data] == ["samples", "neighbours", "anchor"]


def test_soft_label_redraw_for_a_batch_of_256_shows_the_batch():
    # What the Soft labels page recomputes when σ moves, at B = 256. Its speed is measured in
    # benchmarks/figures.py (README, "The app"); here: that the figures show what was computed.
    rng = np.random.default_rng(0)
    ll_all = local_metres_to_degrees(rng.uniform(-2000, 2000, (1500, 2)), ORIGIN)
    ll = ll_all[rng.choice(1500, 256, replace=False)]
    ll = ll[hilbert_order(ll)]
    sigma = 80.0
    q = soft_targets(ll, sigma)
    # the kernel by hand: Gaussian of the great-circle distance, rows normalised
    d = haversine_m(np.repeat(ll, 256, axis=0), np.tile(ll, (256, 1))).reshape(256, 256)
    k = np.exp(-0.5 * (d / sigma) ** 2)
    np.testing.assert_allclose(q, k / k.sum(1, keepdims=True), rtol=1e-6, atol=1e-9)
    heat = figures.target_heatmap(q, "Q").data[0]
    np.testing.assert_allclose(np.asarray(heat.z), q, rtol=1e-6, atol=1e-7)  # float32 on the wire
    off = q - np.diag(np.diag(q))
    assert heat.zmax == pytest.approx(off.max(), rel=1e-6)  # the scale shows the soft structure, not the diagonal
    onehot = figures.target_heatmap(soft_targets(ll, 0.0, "onehot"), "1", zmax=1.0).data[0]
    np.testing.assert_array_equal(np.asarray(onehot.z), np.eye(256))
    bars = figures.effective_positives_figure(1.0 / (q * q).sum(1), 256).data[0]
    np.testing.assert_allclose(np.asarray(bars.y), 1.0 / (q * q).sum(1), rtol=1e-9)
    assert np.all(np.asarray(bars.y) >= 1.0 - 1e-9)
    curve = figures.kernel_curve(sigma, "gaussian").data[0]
    x, y = np.asarray(curve.x), np.asarray(curve.y)
    np.testing.assert_allclose(y, np.exp(-0.5 * (x / sigma) ** 2), rtol=1e-9)


def test_streets_near_keeps_lines_with_a_vertex_within_the_radius():
    centre = (55.95, -3.19)
    near = np.array([local_metres_to_degrees(np.array([[0.0, 1500.0], [0.0, 2500.0]]), centre)]).reshape(-1, 2)
    far = np.array([local_metres_to_degrees(np.array([[2100.0, 0.0], [3000.0, 0.0]]), centre)]).reshape(-1, 2)
    assert haversine_m(near[:1], np.array([centre])) < 2000 < haversine_m(far[:1], np.array([centre]))
    kept = maps.streets_near([near, far], centre, within_m=2000)
    assert len(kept) == 1 and np.array_equal(kept[0], near)
    assert len(maps.streets_near([near, far], centre, within_m=2200)) == 2  # both within 2.2 km
    assert maps.streets_near([], centre) == []
