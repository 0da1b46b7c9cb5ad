"""Gallery, faiss search, knn-kde and the predictor, against brute force and naive loops."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from swclip.io import RunError
from swclip.method.model import DEMO_CONFIG, SWCLIP
from swclip.retrieval.gallery import Gallery
from swclip.retrieval.kde import kde_density, knn_kde, weighted_radius_m
from swclip.retrieval.predictor import Predictor
from swclip.retrieval.search import SearchIndex

R = 6_371_008.8


def naive_haversine_m(a, b):
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * R * math.asin(math.sqrt(min(1.0, h)))


def naive_density(p, cands, w, h):
    return sum(wj * math.exp(-0.5 * (naive_haversine_m(p, c) / h) ** 2) for c, wj in zip(cands, w))


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n, d, seed=0, clusters=50):
    """Clustered unit vectors (cities with spread inside them)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return _unit(centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, d)))


@pytest.fixture(scope="module")
def model():
    return SWCLIP(DEMO_CONFIG).eval()


# ---------------------------------------------------------------------------------------- knn-kde


def test_knn_kde_across_the_antimeridian():
    cands = np.array([[10.0, 179.999], [10.0, -179.999], [10.001, 179.9995], [9.999, -179.9995]])
    lat, lon = knn_kde(cands, np.ones(4), kde_bandwidth_m=500.0)
    assert abs(lon) > 179.99  # averaging raw longitudes would give ~0
    assert abs(lat - 10.0) < 0.001
    assert naive_haversine_m((lat, lon), (10.0, 180.0)) < 100.0


def test_knn_kde_near_the_pole():
    cands = np.array([[89.999, 0.0], [89.999, 90.0], [89.999, 180.0], [89.999, -90.0]])
    lat, _ = knn_kde(cands, np.ones(4), kde_bandwidth_m=1000.0)
    assert lat > 89.9999


def test_knn_kde_finds_the_density_mode():
    rng = np.random.default_rng(1)
    cands = np.column_stack([48.85 + rng.normal(0, 0.002, 12), 2.35 + rng.normal(0, 0.003, 12)])
    cands = np.vstack([cands, [[48.90, 2.40], [48.80, 2.30]]])  # two outliers
    w = rng.uniform(0.2, 1.0, len(cands))
    h = 150.0
    lat, lon = knn_kde(cands, w, h)
    best = naive_density((lat, lon), cands, w, h)
    # the mode beats every candidate and every point of a fine grid around the cluster (naive loop)
    assert all(best >= naive_density(c, cands, w, h) - 1e-9 for c in cands)
    grid = [(48.85 + i * 1e-4, 2.35 + j * 1.5e-4) for i in range(-40, 41, 4) for j in range(-40, 41, 4)]
    assert best >= max(naive_density(g, cands, w, h) for g in grid) - 1e-6
    np.testing.assert_allclose(kde_density(np.array([[lat, lon]]), cands, w, h), [best], rtol=1e-9)


@given(st.floats(-60, 60), st.floats(-180, 180), st.floats(-180, 180), st.integers(0, 10_000))
def test_knn_kde_is_equivariant_under_longitude_shifts(lat0, lon0, shift, seed):
    """Rotating every candidate about the polar axis rotates the estimate the same way."""
    rng = np.random.default_rng(seed)
    cands = np.column_stack([lat0 + rng.normal(0, 0.01, 8), lon0 + rng.normal(0, 0.01, 8)])
    cands[:, 1] = (cands[:, 1] + 180) % 360 - 180
    w = rng.uniform(0.1, 1, 8)
    lat_a, lon_a = knn_kde(cands, w, 800.0)
    shifted = cands.copy()
    shifted[:, 1] = (shifted[:, 1] + shift + 180) % 360 - 180
    lat_b, lon_b = knn_kde(shifted, w, 800.0)
    assert naive_haversine_m((lat_b, lon_b), (lat_a, lon_a + shift)) < 0.05  # metres


def test_knn_kde_rejects_bad_input():
    with pytest.raises(ValueError, match="weights"):
        knn_kde(np.zeros((3, 2)), np.zeros(3), 10.0)
    with pytest.raises(ValueError, match="kde_bandwidth_m"):
        knn_kde(np.zeros((3, 2)), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="latitude"):
        knn_kde(np.array([[2.0, 95.0]])[:, ::-1], np.ones(1), 10.0)


def test_weighted_radius_against_naive_loop():
    c = np.array([[0.0, 179.9], [0.0, -179.9], [1.0, 180.0]])
    w = np.array([0.5, 0.3, 0.2])
    expected = sum(wj * naive_haversine_m((0.0, 180.0), cj) for cj, wj in zip(c, w)) / w.sum()
    assert math.isclose(weighted_radius_m((0.0, 180.0), c, w), expected, rel_tol=1e-9)


# ------------------------------------------------------------------------------------------ search


def test_flat_search_equals_brute_force():
    x, q = _clustered(3000, 32, 0), _clustered(40, 32, 1)
    scores, idx = SearchIndex(x, kind="flat").search(q, 10)
    sims = q @ x.T
    np.testing.assert_array_equal(idx[:, 0], sims.argmax(1))
    np.testing.assert_allclose(scores, -np.sort(-sims, axis=1)[:, :10], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_at_10(kind, model):
    """On what a gallery really holds: location-tower embeddings of street-level points in five cities."""
    centres = np.array([[51.5, -0.12], [48.85, 2.35], [40.7, -74.0], [-33.9, 151.2], [35.7, 139.7]])

    def points(n, seed):
        rng = np.random.default_rng(seed)
        return centres[rng.integers(0, 5, n)] + rng.uniform(-0.02, 0.02, (n, 2))

    with torch.no_grad():
        x, q = model.encode_location(points(20_000, 0)).numpy(), model.encode_location(points(300, 1)).numpy()
    _, exact = SearchIndex(x, kind="flat").search(q, 10)
    _, approx = SearchIndex(x, kind=kind).search(q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95, f"{kind} recall@10 = {recall:.3f}"


def test_flat_search_over_a_memory_map_equals_faiss_index_flat(tmp_path):
    """The flat kind searches the caller's array in place (a float32 memory map stays one, nothing copied)
    and answers as faiss's own IndexFlatIP does, for one query and for a batch."""
    import faiss

    x, q = _clustered(5000, 48, 0), _clustered(37, 48, 1)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    index = SearchIndex(mapped, kind="flat")
    assert np.shares_memory(index._flat, mapped)  # no copy of the gallery
    ref = faiss.IndexFlatIP(48)
    ref.add(x)
    for queries in (q[:1], q):
        scores, idx = index.search(queries, 7)
        ref_scores, ref_idx = ref.search(queries, 7)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)


def test_search_rejects_wrong_dimension():
    with pytest.raises(ValueError, match=r"\(Q, 16\)"):
        SearchIndex(_clustered(100, 16)).search(_clustered(2, 8), 3)


# ----------------------------------------------------------------------------------------- gallery


def test_gallery_from_locations_dedups_and_encodes_once(model, monkeypatch):
    latlon = np.array([[51.5, -0.12], [51.501, -0.12], [51.5, -0.12], [51.502, -0.121]])
    with torch.no_grad():
        expected = model.encode_location(latlon[[0, 1, 3]]).numpy()
    encoded = []  # every row that reaches the location tower (the real one runs)
    real = model.encode_location

    def counting(ll, *args, **kwargs):
        encoded.extend(map(tuple, np.asarray(ll)))
        return real(ll, *args, **kwargs)

    monkeypatch.setattr(model, "encode_location", counting)
    g = Gallery.from_locations(model, latlon, batch_size=2)  # two chunks
    np.testing.assert_array_equal(g.latlon, latlon[[0, 1, 3]])
    np.testing.assert_allclose(g.embeddings, expected, atol=1e-6)  # chunking changes the last bits
    # each distinct location went through the tower exactly once; the duplicate never did
    assert sorted(encoded) == sorted(map(tuple, latlon[[0, 1, 3]]))
    # and predicting with the gallery encodes images only: the locations are not encoded again
    Predictor(model, g).predict(_images(2), top_k=2, progress=False)
    assert len(encoded) == 3


def test_gallery_load_memory_maps_the_embeddings(tmp_path):
    """Gallery.load maps the embeddings out of the .npz (no read of the whole array), with the same values,
    ids and locations as reading it whole; a compressed .npz (not mappable) is read whole instead."""
    rng = np.random.default_rng(0)
    g = Gallery(
        rng.uniform(-60, 60, (300, 2)), _clustered(300, 24), kind="image", ids=[f"im/{i}.jpg" for i in range(300)]
    )
    path = g.save(tmp_path / "g.npz")
    mapped, whole = Gallery.load(path), Gallery.load(path, mmap=False)
    assert isinstance(mapped.embeddings.base, np.memmap) or isinstance(mapped.embeddings, np.memmap)
    assert not mapped.embeddings.flags.writeable and whole.embeddings.flags.writeable
    np.testing.assert_array_equal(mapped.embeddings, g.embeddings)
    np.testing.assert_array_equal(mapped.embeddings, whole.embeddings)
    np.testing.assert_array_equal(mapped.latlon, g.latlon)
    assert mapped.ids.tolist() == g.ids.tolist() and mapped.kind == "image"
    np.savez_compressed(tmp_path / "c.npz", latlon=g.latlon, embeddings=g.embeddings, kind=np.array("image"))
    packed = Gallery.load(tmp_path / "c.npz")
    assert not isinstance(packed.embeddings, np.memmap) and packed.embeddings.flags.writeable
    np.testing.assert_array_equal(packed.embeddings, g.embeddings)
    # a member cut short: the map would run past it (into the zip's directory), so the load names the problem
    cut = tmp_path / "cut.npz"
    np.savez(cut, latlon=g.latlon[:10], embeddings=g.embeddings[:10])
    raw = bytearray(cut.read_bytes())
    shape_at = raw.index(b"(10, 24)", raw.index(b"embeddings.npy"))
    raw[shape_at : shape_at + 8] = b"(99, 24)"  # the header now promises more rows than the member holds
    cut.write_bytes(bytes(raw))
    with pytest.raises(RunError, match="shorter than its header"):
        Gallery.load(cut)


@pytest.mark.parametrize("where", [0, 70, 299])
def test_gallery_check_finds_bad_rows_in_any_chunk(monkeypatch, where):
    """The finite / unit-norm check runs in chunks: a NaN row or an unnormalised row in any chunk fails it."""
    import swclip.retrieval.gallery as gallery_mod

    monkeypatch.setattr(gallery_mod, "CHECK_ROWS", 64)
    latlon = np.zeros((300, 2))
    bad = _clustered(300, 8)
    bad[where, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        Gallery(latlon, bad)
    long = _clustered(300, 8)
    long[where] *= 1.01
    with pytest.raises(ValueError, match=r"L2-normalised; norms range 1\.0000\.\.1\.0100"):
        Gallery(latlon, long)
    huge = _clustered(300, 8)
    huge[where] = 1e30  # finite, but its squared norm overflows float32: still a norm error, not "NaN or inf"
    with pytest.raises(ValueError, match="L2-normalised"):
        Gallery(latlon, huge)
    Gallery(latlon, _clustered(300, 8))  # and good rows pass


def test_gallery_save_load_and_corruption(model, tmp_path):
    g = Gallery(np.array([[1.0, 2.0], [3.0, 4.0]]), _unit(np.eye(2, 8)), kind="image", ids=["a.jpg", "b.jpg"])
    path = g.save(tmp_path / "gallery.npz")
    back = Gallery.load(path)
    assert back.kind == "image" and back.ids.tolist() == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(back.embeddings, g.embeddings)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RunError, match="not a readable gallery"):
        Gallery.load(path)
    np.savez(tmp_path / "x.npz", latlon=np.zeros((2, 2)))
    with pytest.raises(RunError, match="lacks"):
        Gallery.load(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="L2-normalised"):
        Gallery(np.zeros((2, 2)), np.ones((2, 8)))


# --------------------------------------------------------------------------------------- predictor


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_predictor_matches_brute_force_softmax(model):
    rng = np.random.default_rng(3)
    latlon = np.column_stack([51.5 + rng.uniform(0, 0.03, 300), -0.12 + rng.uniform(0, 0.04, 300)])
    g = Gallery.from_locations(model, latlon)
    p = Predictor(model, g, kde_bandwidth_m=200.0, batch_size=4)
    ims = _images(7)
    preds = p.predict(ims, top_k=5, progress=False)
    with torch.no_grad():
        q = model.encode_image(torch.stack([model.preprocess_val(im) for im in ims])).numpy()
        scale = float(model.scale())
    for pred, qi in zip(preds, q):
        sims = g.embeddings @ qi
        top = np.argsort(-sims)[:5]
        np.testing.assert_array_equal(pred.index, top)
        logits = scale * sims[top].astype(np.float64)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(pred.prob, expected, rtol=1e-5)
        assert np.all(np.diff(pred.prob) <= 1e-12) and pred.radius_m >= 0
        assert pred.latlon == tuple(latlon[top[0]])
        _assert_is_density_mode(pred.estimate, latlon[top], pred.prob, 200.0)


def _assert_is_density_mode(est, cands, w, h_m):
    """Brute force, independent of knn_kde: the weighted Gaussian density of the candidates over a
    fine grid (naive haversine). knn_kde climbs from the densest candidate, so its estimate must
    beat every candidate and be the maximum of the grid around it (the mode of its basin)."""
    best = naive_density(est, cands, w, h_m)
    assert all(best >= naive_density(c, cands, w, h_m) * (1 - 1e-9) for c in cands)
    step_deg = 2.0 / 111_000  # a 2 m grid, 121 x 121 points, +-120 m around the estimate
    lat0, lon0 = est
    coslat = math.cos(math.radians(lat0))
    grid = [(lat0 + i * step_deg, lon0 + j * step_deg / coslat) for i in range(-60, 61) for j in range(-60, 61)]
    dens = np.array([naive_density(g, cands, w, h_m) for g in grid])
    assert best >= dens.max() * (1 - 1e-9), "a grid point is denser than the estimate"
    top = grid[int(dens.argmax())]
    assert naive_haversine_m(top, est) <= 3.0  # metres: within one grid cell of the grid's mode


def test_image_gallery_mode_finds_the_training_image_itself(model):
    ims = _images(20, seed=5)
    rng = np.random.default_rng(5)
    latlon = np.column_stack([rng.uniform(-50, 50, 20), rng.uniform(-170, 170, 20)])
    emb = Predictor(model, Gallery.from_locations(model, latlon)).encode(ims, progress=False)
    g = Gallery(latlon, emb, kind="image", ids=[f"img_{i}.png" for i in range(20)])
    preds = Predictor(model, g).predict(ims[3:6], top_k=4, progress=False)
    assert [p.ids[0] for p in preds] == ["img_3.png", "img_4.png", "img_5.png"]
    assert [p.index[0] for p in preds] == [3, 4, 5]


def test_predictor_refuses_a_gallery_from_another_model(model):
    g = Gallery(np.zeros((2, 2)), _unit(np.eye(2, 16)))
    with pytest.raises(ValueError, match="different runs"):
        Predictor(model, g)


@pytest.fixture
def two_threads():
    """Two torch and two faiss threads for the test, whatever the runner pinned (pytest-xdist
    workers run on one thread, where limiting to one would be a no-op that proves nothing)."""
    import faiss

    saved = (torch.get_num_threads(), faiss.omp_get_max_threads())
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == (2, 2)
    yield
    torch.set_num_threads(saved[0])
    faiss.omp_set_num_threads(saved[1])


def test_limit_threads_restores_the_settings(two_threads):
    import faiss

    from swclip.threads import limit_threads

    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    with limit_threads(1):
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    with pytest.raises(RuntimeError):
        with limit_threads(1):
            raise RuntimeError("boom")
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before


def test_predictor_drops_the_padding_of_an_approximate_index(model):
    rng = np.random.default_rng(4)
    latlon = np.column_stack([51.5 + rng.uniform(0, 0.05, 400), -0.12 + rng.uniform(0, 0.05, 400)])
    p = Predictor(model, Gallery.from_locations(model, latlon), index_kind="ivf", kde_bandwidth_m=100.0)
    p.index.index.nprobe = 1  # one list of ~40 entries cannot fill k = 100
    [pred] = p.predict_embeddings(p.gallery.embeddings[:1], top_k=100)
    assert 0 < len(pred.index) < 100 and (pred.index >= 0).all()
    assert math.isclose(pred.prob.sum(), 1.0, rel_tol=1e-9)


def test_limit_threads_nested_and_from_threads(two_threads):
    import threading

    import faiss

    from swclip.threads import limit_threads

    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    assert before == (2, 2)
    with limit_threads(1):
        with limit_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1  # the inner block does not restore while the outer runs
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    barrier = threading.Barrier(4)
    inside = []

    def work():
        with limit_threads(1):
            barrier.wait()  # all four are inside at once here
            inside.append(faiss.omp_get_max_threads())  # process-wide setting
            barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [1, 1, 1, 1]
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
