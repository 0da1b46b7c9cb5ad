"""swclip.analysis.spatial_stats against PySAL (esda + libpysal weights) and brute-force references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.analysis.spatial_stats import QUADRANTS, local_morans_i, morans_i, neighbourhood_overlap, spatial_weights
from swclip.geo import local_metres_to_degrees, pairwise_haversine_m, unit_vectors

libpysal = pytest.importorskip("libpysal")
esda = pytest.importorskip("esda")

ORIGIN = (48.85, 2.35)
R_KM = 6371.0088


def _field(seed, n=600, noise=1.0, side_m=5000.0):
    """Points in a city and a smooth signal (sum of random waves, ~1 km scale) plus white noise."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * side_m
    freq = rng.normal(0, 2 * np.pi / 2000.0, size=(12, 2))
    signal = np.cos(xy @ freq.T + rng.uniform(0, 2 * np.pi, 12)).sum(1) / math.sqrt(6)
    return local_metres_to_degrees(xy, ORIGIN), signal + noise * rng.standard_normal(n)


def _pysal_knn(latlon, k):
    w = libpysal.weights.KNN.from_array(latlon[:, ::-1], k=k, distance_metric="arc", radius=R_KM)
    w.transform = "r"
    return w


def _pysal_band(latlon, band_m):
    """Distance-band weights built by brute force (haversine matrix), handed to libpysal."""
    d = pairwise_haversine_m(latlon)
    np.fill_diagonal(d, np.inf)
    neighbours = {i: list(np.flatnonzero(d[i] <= band_m)) for i in range(len(d))}
    w = libpysal.weights.W(neighbours, silence_warnings=True)
    w.transform = "r"
    return w


def _p_noise(p, permutations=999):
    """A generous bound on the difference of two independent permutation p-values."""
    return 4 * math.sqrt(2 * max(p, 0.01) * (1 - p) / permutations) + 2 / (permutations + 1)


# --------------------------------------------------------------------------- weights


def test_knn_weights_match_libpysal_arc_knn():
    latlon, _ = _field(0, n=300)
    w, islands = spatial_weights(latlon, k=6)
    ref = _pysal_knn(latlon, 6)
    assert islands == 0
    np.testing.assert_allclose(w.toarray(), ref.sparse.toarray(), atol=1e-15)


def test_band_weights_match_brute_force():
    latlon, _ = _field(1, n=300)
    w, islands = spatial_weights(latlon, k=None, band_m=400.0)
    ref = _pysal_band(latlon, 400.0)
    np.testing.assert_allclose(w.toarray(), ref.sparse.toarray(), atol=1e-15)
    assert islands == sum(1 for v in ref.neighbors.values() if not v)


# --------------------------------------------------------------------------- global Moran's I


@pytest.mark.parametrize("noise", [0.3, 4.0])  # strong structure (p at its floor) and weak (p mid-range)
def test_morans_i_matches_esda_knn(noise):
    latlon, y = _field(2, noise=noise)
    ours = morans_i(y, latlon, k=8, permutations=999, seed=0)
    np.random.seed(0)
    ref = esda.Moran(y, _pysal_knn(latlon, 8), permutations=999)
    assert ours.ok
    assert ours.I == pytest.approx(ref.I, abs=1e-6)
    assert ours.expected_I == pytest.approx(ref.EI, abs=1e-12)
    assert ours.variance_norm == pytest.approx(ref.VI_norm, rel=1e-6)
    assert ours.z_norm == pytest.approx(ref.z_norm, rel=1e-6)
    assert ours.p_norm == pytest.approx(ref.p_norm, rel=1e-6, abs=1e-12)
    assert abs(ours.p_value - ref.p_sim) <= _p_noise(ref.p_sim)
    # z_sim divides by the permutations' sd, itself ~2 % noisy at 999 permutations
    assert ours.z_sim == pytest.approx(ref.z_sim, rel=0.1, abs=0.35)


def test_morans_i_matches_esda_distance_band():
    latlon, y = _field(3, noise=2.0)
    ours = morans_i(y, latlon, k=None, band_m=350.0, seed=1)
    np.random.seed(1)
    ref = esda.Moran(y, _pysal_band(latlon, 350.0), permutations=999)
    assert ours.I == pytest.approx(ref.I, abs=1e-6)
    assert ours.z_norm == pytest.approx(ref.z_norm, rel=1e-6)
    assert abs(ours.p_value - ref.p_sim) <= _p_noise(ref.p_sim)


def test_morans_i_null_p_values_are_roughly_uniform():
    latlon, _ = _field(4, n=200)
    rng = np.random.default_rng(0)
    p = np.array([morans_i(rng.standard_normal(200), latlon, permutations=199, seed=s).p_value for s in range(60)])
    # under no autocorrelation the folded pseudo p-value is ~uniform on (0, 0.5]: about 20 % below 0.1
    assert 0.05 <= (p <= 0.1).mean() <= 0.4 and p.max() <= 0.5 + 1e-9


def test_morans_i_seeded():
    latlon, y = _field(5, noise=4.0)
    a, b, c = (morans_i(y, latlon, seed=s) for s in (3, 3, 4))
    assert a.p_value == b.p_value and a.z_sim == b.z_sim and a.z_sim != c.z_sim


@settings(max_examples=25)
@given(scale=st.floats(-50, 50).filter(lambda s: abs(s) > 1e-3), shift=st.floats(-1e4, 1e4))
def test_morans_i_invariant_to_affine_rescaling(scale, shift):
    latlon, y = _field(6, n=150, noise=1.0)
    base = morans_i(y, latlon, permutations=0)
    moved = morans_i(scale * y + shift, latlon, permutations=0)
    assert moved.I == pytest.approx(base.I, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------- LISA


@pytest.mark.slow  # esda's Moran_Local compiles numba on first use (~20 s on 2 cores)
@pytest.mark.filterwarnings("ignore:The alternative hypothesis:DeprecationWarning")
def test_local_morans_i_matches_esda_moran_local():
    latlon, y = _field(7, n=500, noise=1.5)
    ours = local_morans_i(y, latlon, k=8, permutations=999, seed=0)
    ref = esda.Moran_Local(y, _pysal_knn(latlon, 8), permutations=999, seed=0)
    np.testing.assert_allclose(ours.Is, ref.Is, atol=1e-6)
    np.testing.assert_array_equal(ours.quadrant, np.array(QUADRANTS)[ref.q - 1])
    # per-sample p-values agree within permutation noise
    noise = np.array([_p_noise(p) for p in ref.p_sim])
    assert (np.abs(ours.p_values - ref.p_sim) <= noise).mean() >= 0.99
    assert np.corrcoef(ours.p_values, ref.p_sim)[0, 1] > 0.97
    sig = ref.p_sim <= 0.05
    agree = (ours.labels == np.where(sig, np.array(QUADRANTS)[ref.q - 1], "ns")).mean()
    assert agree > 0.95


def test_lisa_labels_and_counts():
    latlon, y = _field(8, n=400, noise=0.3)
    res = local_morans_i(y, latlon, alpha=0.05)
    assert res.ok and set(np.unique(res.labels)) <= {"HH", "LL", "HL", "LH", "ns"}
    sig = res.p_values <= 0.05
    np.testing.assert_array_equal(res.labels[sig], res.quadrant[sig])
    assert (res.labels[~sig] == "ns").all()
    # a smooth field is dominated by HH and LL clusters; the quadrant follows the signs
    c = res.counts()
    assert c["HH"] + c["LL"] > 5 * (c["HL"] + c["LH"]) and sum(c.values()) == 400
    hh = res.quadrant == "HH"
    assert (res.z[hh] > 0).all() and (res.lag[hh] > 0).all()


def test_band_lisa_runs_with_islands():
    latlon, y = _field(9, n=200, noise=1.0)
    latlon = np.vstack([latlon, [[ORIGIN[0] + 1.0, ORIGIN[1]]]])  # a point 111 km away: an island
    y = np.append(y, 0.5)
    res = local_morans_i(y, latlon, k=None, band_m=500.0, permutations=99)
    assert res.ok and res.Is[-1] == 0 and res.labels[-1] == "ns" and math.isnan(res.p_values[-1])
    w, islands = spatial_weights(latlon, k=None, band_m=500.0)
    no_neighbour = np.asarray(w.sum(1)).ravel() == 0
    np.testing.assert_array_equal(np.isnan(res.p_values), no_neighbour)
    assert islands == no_neighbour.sum() >= 1


# --------------------------------------------------------------------------- overlap


def _brute_overlap(emb, latlon, k):
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    d = pairwise_haversine_m(latlon)
    np.fill_diagonal(d, np.inf)
    e_idx = np.argsort(-sim, 1)[:, :k]
    g_idx = np.argsort(d, 1)[:, :k]
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(e_idx, g_idx)])
    e_dist = np.take_along_axis(d, e_idx, 1).mean(1)
    return overlap, e_dist, np.take_along_axis(d, g_idx, 1).mean(1)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_overlap_matches_brute_force(k):
    latlon, _ = _field(10, n=250)
    rng = np.random.default_rng(1)
    xy = np.c_[(latlon - latlon.mean(0)) * 50, rng.standard_normal((250, 6))]  # partly geographic embeddings
    res = neighbourhood_overlap(xy.astype(np.float32), latlon, k=k)
    overlap, e_dist, g_dist = _brute_overlap(xy.astype(np.float32).astype(np.float64), latlon, k)
    np.testing.assert_array_equal(res.overlap, overlap)
    np.testing.assert_allclose(res.embedding_neighbour_dist_m, e_dist, rtol=1e-9)
    np.testing.assert_allclose(res.geo_neighbour_dist_m, g_dist, rtol=1e-9)
    assert 0 < res.mean_overlap < 1 and res.chance_overlap == pytest.approx(k / 249)


def test_overlap_is_one_when_embeddings_are_the_geography():
    rng = np.random.default_rng(2)
    latlon = np.c_[np.degrees(np.arcsin(rng.uniform(-1, 1, 400))), rng.uniform(-180, 180, 400)]
    res = neighbourhood_overlap(unit_vectors(latlon).astype(np.float32), latlon, k=8)
    assert res.mean_overlap == 1.0
    np.testing.assert_allclose(res.embedding_neighbour_dist_m, res.geo_neighbour_dist_m, rtol=1e-9)


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), n=st.integers(12, 80), k=st.integers(1, 10), dim=st.integers(1, 6))
def test_overlap_in_unit_interval_and_distances_at_least_geo(seed, n, k, dim):
    rng = np.random.default_rng(seed)
    latlon = local_metres_to_degrees(rng.random((n, 2)) * 3000, ORIGIN)
    res = neighbourhood_overlap(rng.standard_normal((n, dim)).astype(np.float32) + 0.1, latlon, k=k)
    assert res.ok and ((res.overlap >= 0) & (res.overlap <= 1)).all()
    assert np.all(np.round(res.overlap * k) == res.overlap * k)  # a count out of k
    assert (res.embedding_neighbour_dist_m >= res.geo_neighbour_dist_m - 1e-6).all()


# --------------------------------------------------------------------------- bad input


def test_bad_data_gives_reasons():
    latlon, y = _field(11, n=100)
    assert "only 5 samples" in morans_i(y[:5], latlon[:5]).reason
    assert "zero variance" in morans_i(np.ones(100), latlon).reason
    res = morans_i(np.where(np.arange(100) == 3, np.nan, y), latlon)
    assert not res.ok and "row 3" in res.reason and math.isnan(res.I)
    assert "zero variance" in local_morans_i(np.ones(100), latlon).reason
    assert not morans_i(y, latlon, k=None, band_m=0.001).ok  # nobody has a neighbour
    assert "only 10 samples" in neighbourhood_overlap(np.ones((10, 3)), latlon[:10], k=10).reason
    emb = np.ones((100, 3))
    emb[4] = 0
    assert "row 4" in neighbourhood_overlap(emb, latlon, k=5).reason


def test_malformed_arguments_raise():
    latlon, y = _field(12, n=50)
    with pytest.raises(ValueError, match="entries"):
        morans_i(y[:-1], latlon)
    with pytest.raises(ValueError, match="exactly one"):
        spatial_weights(latlon, k=None, band_m=None)
    with pytest.raises(ValueError, match="latitude"):
        morans_i(y, latlon[:, ::-1] * [40, 1])
    with pytest.raises(ValueError, match="alpha"):
        local_morans_i(y, latlon, alpha=2)
    with pytest.raises(ValueError, match="embeddings"):
        neighbourhood_overlap(np.ones((49, 3)), latlon)


def test_neighbourhood_overlap_returns_its_knn_indices_as_a_naive_search_finds_them():
    """The (N, k) indices the app's neighbourhood page draws are those overlap@k was computed from."""
    rng = np.random.default_rng(3)
    n, k = 60, 5
    latlon = np.column_stack([51.5 + rng.uniform(-0.02, 0.02, n), -0.1 + rng.uniform(-0.03, 0.03, n)])
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    ov = neighbourhood_overlap(emb, latlon, k)
    assert ov.embedding_knn.shape == ov.geo_knn.shape == (n, k)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = unit @ unit.T
    d = pairwise_haversine_m(latlon)
    np.fill_diagonal(cos, -np.inf)
    np.fill_diagonal(d, np.inf)
    for i in range(n):  # naive loop: sort every other sample by cosine / by distance
        assert ov.embedding_knn[i].tolist() == sorted(range(n), key=lambda j: -cos[i, j])[:k]
        assert ov.geo_knn[i].tolist() == sorted(range(n), key=lambda j: d[i, j])[:k]
        assert ov.overlap[i] == pytest.approx(len(set(ov.embedding_knn[i]) & set(ov.geo_knn[i])) / k)


def test_neighbourhood_overlap_from_a_larger_ks_neighbours_equals_a_new_search():
    """Given the kNN of an earlier call with a larger k, overlap@k is what a fresh search at k gives
    (the app's k slider reuses one search), and too few columns are refused."""
    rng = np.random.default_rng(5)
    n = 80
    latlon = np.column_stack([48.85 + rng.uniform(-0.02, 0.02, n), 2.35 + rng.uniform(-0.03, 0.03, n)])
    emb = rng.normal(size=(n, 12)).astype(np.float32)
    wide = neighbourhood_overlap(emb, latlon, 20)
    for k in (1, 4, 9, 20):
        fresh, reused = (
            neighbourhood_overlap(emb, latlon, k),
            neighbourhood_overlap(emb, latlon, k, knn=(wide.embedding_knn, wide.geo_knn)),
        )
        np.testing.assert_array_equal(reused.embedding_knn, fresh.embedding_knn)
        np.testing.assert_array_equal(reused.geo_knn, fresh.geo_knn)
        np.testing.assert_array_equal(reused.overlap, fresh.overlap)
        np.testing.assert_allclose(reused.embedding_neighbour_dist_m, fresh.embedding_neighbour_dist_m)
        assert reused.mean_overlap == fresh.mean_overlap and reused.chance_overlap == fresh.chance_overlap
    with pytest.raises(ValueError, match="K >= k"):
        neighbourhood_overlap(emb, latlon, 21, knn=(wide.embedding_knn, wide.geo_knn))


def test_pca_2d_matches_the_covariance_eigenvectors():
    from swclip.analysis.spatial_stats import pca_2d

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    xy = pca_2d(x)
    w, v = np.linalg.eigh(np.cov(x - x.mean(0), rowvar=False))
    ref = (x - x.mean(0)) @ v[:, ::-1][:, :2]  # leading two axes, largest variance first
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), atol=1e-8)  # the axes' signs are arbitrary
    wide = rng.normal(size=(5, 9)) * np.linspace(3.0, 0.1, 9)  # fewer samples than dimensions: the N x N branch
    u, sv, _ = np.linalg.svd(wide - wide.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca_2d(wide)), np.abs(u[:, :2] * sv[:2]), atol=1e-8)
    with pytest.raises(ValueError, match="N >= 2"):
        pca_2d(x[:1])
