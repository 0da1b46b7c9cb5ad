"""Places, not only photos: place ids, whole places in the split, the cluster bootstrap, neighbours in other
places, same-place pairs never negative, metrics per place. Each against a naive reference."""

import numpy as np
import pandas as pd
import pytest
import torch

from swclip.analysis.compare import BOOT_BLOCK, PairedBootstrap, PlacePairedBootstrap, statistics_at
from swclip.analysis.metrics import summarize, summarize_places
from swclip.analysis.spatial_stats import geographic_knn, local_morans_i, morans_i, neighbourhood_overlap
from swclip.data import read_table, spatial_split
from swclip.geo import destination, haversine_m, place_ids
from swclip.method.semivariogram_loss import negative_weights


def _places(n_places, sizes, seed=0, jitter_m=0.3):
    """(latlon (N, 2), place (N,) str): n_places spots within ~5 km, each with sizes[p] photos jittered < jitter_m."""
    rng = np.random.default_rng(seed)
    spots = destination(
        np.tile([[51.5, -0.1]], (n_places, 1)), rng.uniform(0, 360, n_places), rng.uniform(0, 5000, n_places)
    )
    rep = np.repeat(np.arange(n_places), sizes)
    ll = destination(spots[rep], rng.uniform(0, 360, len(rep)), rng.uniform(0, jitter_m, len(rep)))
    return ll, np.array([f"p{p}" for p in rep])


def test_place_ids_round_coordinates_to_the_tolerance():
    a = np.array([[48.8566, 2.3522]])
    near = destination(a, 45.0, 0.05)  # 5 cm away: the same 1 m cell unless on an edge
    far = destination(a, 90.0, 3.0)  # 3 m east
    ids = place_ids(np.concatenate([a, a, near, far]))
    assert ids[0] == ids[1] and ids[0] != ids[3]
    # a cell is about tolerance_m on each side: ids differ only where the coordinates differ by more
    rng = np.random.default_rng(0)
    ll = destination(np.tile(a, (500, 1)), rng.uniform(0, 360, 500), rng.uniform(0, 50, 500))
    for tol in (1.0, 10.0):
        ids = place_ids(ll, tol)
        for pid in np.unique(ids):
            members = ll[ids == pid]
            d = haversine_m(np.repeat(members[:1], len(members), 0), members)
            assert d.max() <= tol * 1.5  # within one cell (its diagonal)
    with pytest.raises(ValueError, match="tolerance_m"):
        place_ids(a, 0.0)


def test_read_table_keeps_given_place_ids_and_derives_missing_ones(tmp_path):
    ll, place = _places(5, 4)
    df = pd.DataFrame({"id": range(20), "image": [f"{i}.png" for i in range(20)], "lat": ll[:, 0], "lon": ll[:, 1]})
    df["city"] = "X"
    df.to_csv(tmp_path / "derived.csv", index=False)
    got = read_table(tmp_path / "derived.csv", check_images=False)
    assert got.attrs["place_tolerance_m"] == 1.0
    assert list(got["place_id"]) == list(place_ids(ll))
    df.assign(place_id=place).to_csv(tmp_path / "given.csv", index=False)
    got = read_table(tmp_path / "given.csv", check_images=False)
    assert list(got["place_id"]) == list(place) and got.attrs["place_tolerance_m"] is None
    got = read_table(tmp_path / "derived.csv", check_images=False, place_tolerance_m=1000.0)
    assert got["place_id"].nunique() < 20  # a 1 km tolerance merges places


def test_spatial_split_keeps_places_whole():
    # 200 places of 4 photos spread over 3 m, and 2 m blocks: the grid cuts through places
    ll, place = _places(200, 4, jitter_m=3.0)
    table = pd.DataFrame({"lat": ll[:, 0], "lon": ll[:, 1], "city": "X", "place_id": place})
    for seed in range(3):
        out = spatial_split(table, test_frac=0.3, block_m=2.0, buffer_m=0.0, seed=seed, block_column=True)
        assert (out.groupby("place_id")["split"].nunique() == 1).all()
        assert (out.groupby("place_id")["block"].nunique() == 1).all()
        assert 0.1 < (out["split"] == "test").mean() < 0.5
        buffered = spatial_split(table, test_frac=0.3, block_m=500.0, buffer_m=200.0, seed=seed)
        assert (buffered.groupby("place_id")["split"].nunique() == 1).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_place_bootstrap_matches_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, 40)  # 1 to 5 photos per place
    n = int(sizes.sum())
    place = np.repeat([f"p{i}" for i in range(40)], sizes)
    ea = np.repeat(rng.gamma(2.0, 300.0, 40), sizes) * rng.uniform(0.8, 1.2, n)
    eb = ea * rng.uniform(0.5, 1.5, n)
    stats = {**statistics_at((100.0, 500.0)), "p90": statistics_at(())["median_m"].__class__("quantile", 0.9)}
    stats["max"] = lambda e: np.max(e, axis=-1)  # a callable: the naive path inside
    bs = PlacePairedBootstrap(ea, eb, place, stats, seed=seed)
    fast = bs.draws(2 * BOOT_BLOCK)
    for block in (0, 1):
        rng_b = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
        drawn = bs.place_draws(rng_b, BOOT_BLOCK)
        # the naive loop, spelled out: every photo of every drawn place, the statistic of those errors
        members = {p: np.flatnonzero(np.unique(place, return_inverse=True)[1] == p) for p in range(40)}
        for r in (0, 17, 99):
            rows = np.concatenate([members[g] for g in drawn[r]])
            for s, fn in enumerate(stats.values()):
                want_a, want_b = float(fn(ea[rows])), float(fn(eb[rows]))
                got = fast[block * BOOT_BLOCK + r, s]
                assert got[0] == pytest.approx(want_a, rel=1e-12) and got[1] == pytest.approx(want_b, rel=1e-12)
                assert got[2] == pytest.approx(want_b - want_a, rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(fast[block * BOOT_BLOCK : (block + 1) * BOOT_BLOCK], bs.resample_places(drawn))
    # the same resample i whatever n_boot is asked
    np.testing.assert_array_equal(
        PlacePairedBootstrap(ea, eb, place, stats, seed=seed).draws(BOOT_BLOCK), fast[:BOOT_BLOCK]
    )


def test_place_bootstrap_is_wider_than_resampling_photos():
    """Four identical photos per place are one observation: the photo bootstrap's interval is about half as wide."""
    rng = np.random.default_rng(3)
    ea, eb = rng.gamma(2.0, 300.0, 100), rng.gamma(2.0, 320.0, 100)
    place = np.repeat(np.arange(100), 4)
    photos = PairedBootstrap(np.repeat(ea, 4), np.repeat(eb, 4), seed=0).table(1000).set_index("statistic")
    places = PlacePairedBootstrap(np.repeat(ea, 4), np.repeat(eb, 4), place, seed=0).table(1000).set_index("statistic")
    once = PairedBootstrap(ea, eb, seed=0).table(1000).set_index("statistic")
    width = lambda t: (t["diff_hi"] - t["diff_lo"])["mean_m"]  # noqa: E731
    assert width(places) == pytest.approx(width(once), rel=0.2)  # places: as if each place were one sample
    assert width(photos) < 0.65 * width(places)  # photos: too narrow by about √4
    with pytest.raises(ValueError, match="2 places"):
        PlacePairedBootstrap([1.0, 2.0], [1.0, 2.0], ["a", "a"])


def _naive_other_place_knn(ll, place, k):
    out = []
    for i in range(len(ll)):
        d = haversine_m(np.repeat(ll[i : i + 1], len(ll), 0), ll)
        d[place == place[i]] = np.inf
        out.append(np.argsort(d, kind="stable")[:k])
    return np.array(out)


def test_neighbours_are_other_places_against_a_naive_search():
    ll, place = _places(60, np.random.default_rng(1).integers(1, 5, 60), seed=1)
    k = 6
    got = geographic_knn(ll, k, place)
    want = _naive_other_place_knn(ll, place, k)
    np.testing.assert_array_equal(np.sort(got, 1), np.sort(want, 1))
    assert not (place[got] == place[:, None]).any()
    # overlap@k: embedding neighbours in other places too
    emb = np.random.default_rng(2).standard_normal((len(ll), 8)).astype(np.float32)
    ov = neighbourhood_overlap(emb, ll, k, place=place)
    assert not (place[ov.embedding_knn] == place[:, None]).any()
    np.testing.assert_array_equal(np.sort(ov.geo_knn, 1), np.sort(want, 1))


def test_morans_i_with_places_against_a_naive_loop_and_not_inflated_by_headings():
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 6, 80)
    ll, place = _places(80, sizes, seed=4)
    per_place = rng.standard_normal(80)
    values = np.repeat(per_place, sizes) + 0.1 * rng.standard_normal(len(place))  # one place's photos alike
    k = 5
    # the naive reference: each place once (mean of its photos, at its first photo), its k nearest places
    names = sorted(set(place))
    g_val = np.array([values[place == p].mean() for p in names])
    g_ll = np.array([ll[np.flatnonzero(place == p)[0]] for p in names])
    nb = _naive_other_place_knn(g_ll, np.array(names), k)
    z = g_val - g_val.mean()
    want = sum(z[i] * z[j] / k for i in range(len(z)) for j in nb[i]) / float(z @ z)  # S0 = G, row-standardised
    got = morans_i(values, ll, k=k, permutations=199, seed=0, place=place)
    assert got.n == 80 and got.I == pytest.approx(want, rel=1e-9)
    assert got.p_value > 0.05  # no structure between places
    inflated = morans_i(values, ll, k=3, permutations=199, seed=0)  # neighbours = the other photos of one place
    assert inflated.I > 0.5 and inflated.p_value < 0.05
    lisa = local_morans_i(values, ll, k=k, permutations=99, seed=0, place=place)
    assert len(lisa.labels) == len(values)
    for p in names[:10]:  # every photo of a place carries the place's label
        assert len(set(lisa.labels[place == p])) == 1


def test_same_place_pairs_are_never_negatives():
    torch.manual_seed(0)
    b = 12
    h = torch.rand(b, b) * 5000
    h = (h + h.T) / 2
    h[:4, :4] = 0.0  # rows 0-3: four headings of one place
    h[4, 5] = h[5, 4] = 0.6  # a second place: two photos 0.6 m apart
    h.fill_diagonal_(0.0)
    cos = torch.rand(b, b) * 0.2  # everything very alike: near pairs would be false negatives
    gamma = torch.full((b, b), 0.9)
    for variant in ("swclip", "chen2025"):
        log_w, false, hard = negative_weights(variant, h.clone(), cos.clone(), gamma, 2000.0, 1.0)
        same = h <= 1.0
        assert not false[same].any() and not hard[same].any() and (log_w[same] == 0).all()
        assert false[~same & (h <= 2000.0)].any() or variant == "chen2025"
        fast = negative_weights(variant, h.clone(), cos.clone(), gamma, 2000.0, 1.0, inplace=True)
        for x, y in zip((log_w, false, hard), fast):
            assert torch.equal(x, y)


def test_summarize_places_against_pandas():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 6, 50)
    place = np.repeat([f"p{i}" for i in range(50)], sizes)
    err = rng.gamma(2.0, 400.0, len(place))
    out = summarize_places(err, place)
    med = pd.Series(err).groupby(place).median()
    want = summarize(med.to_numpy())
    assert out["n"] == 50 and out["photos"] == len(place)
    assert out["photos_per_place"] == pytest.approx(len(place) / 50)
    for key in ("median_m", "mean_m", "acc@500m", "acc@1km", "geoscore"):
        assert out[key] == pytest.approx(want[key])
