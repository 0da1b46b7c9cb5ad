"""Spatial split: the buffer holds (brute force), determinism, nothing lost; table_hash."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swclip.data import spatial_split, table_hash
from swclip.geo import local_metres_to_degrees, pairwise_haversine_m


def _table(n_per_city=300, seed=0, extent_m=2000.0):
    rng = np.random.default_rng(seed)
    parts = []
    # "B" sits right next to "A" (60 m east of A's edge), so a per-city-only buffer would leak
    for city, origin in {"A": (53.80, -1.55), "B": (53.80, -1.55 + 2060 / 65700), "C": (51.45, -2.59)}.items():
        xy = rng.uniform(-extent_m / 2, extent_m / 2, (n_per_city, 2))
        ll = local_metres_to_degrees(xy, origin)
        parts.append(
            pd.DataFrame(
                dict(id=[f"{city}{i}" for i in range(n_per_city)], image="x.jpg", lat=ll[:, 0], lon=ll[:, 1], city=city)
            )
        )
    return pd.concat(parts, ignore_index=True)


def _min_train_test_m(t):
    tr = t.loc[t["split"] == "train", ["lat", "lon"]].to_numpy()
    te = t.loc[t["split"] == "test", ["lat", "lon"]].to_numpy()
    return pairwise_haversine_m(tr, te).min()  # brute force, all pairs


def test_buffer_holds_by_brute_force_across_cities():
    t = _table()
    for buffer_m in (0.0, 30.0, 100.0, 250.0):
        s = spatial_split(t, test_frac=0.2, block_m=300, buffer_m=buffer_m, seed=1)
        if buffer_m > 0:
            assert _min_train_test_m(s) > buffer_m
        counts = s["split"].value_counts()
        assert counts.sum() == len(t) and set(counts.index) <= {"train", "test", "buffer"}
        assert s.attrs["split"]["counts"] == {k: int(counts.get(k, 0)) for k in ("train", "test", "buffer")}
        # buffer rows are exactly the train-block rows within buffer_m of a test row
        if buffer_m > 0:
            buf = s.loc[s["split"] == "buffer", ["lat", "lon"]].to_numpy()
            te = s.loc[s["split"] == "test", ["lat", "lon"]].to_numpy()
            assert (pairwise_haversine_m(buf, te).min(1) <= buffer_m + 1e-6).all()
    s = spatial_split(t, test_frac=0.2, block_m=300, buffer_m=100, seed=1)
    for city, g in s.groupby("city"):  # every city gets test data, near the target share
        assert 0.1 < (g["split"] == "test").mean() < 0.35, city


def test_split_is_deterministic_per_seed_and_keeps_the_table():
    t = _table(seed=3)
    a = spatial_split(t, seed=7)
    b = spatial_split(t, seed=7)
    c = spatial_split(t, seed=8)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()
    pd.testing.assert_frame_equal(a.drop(columns="split"), t)
    assert "split" not in t.columns  # the input is not modified


def test_test_rows_come_in_whole_blocks():
    t = _table(n_per_city=600)
    s = spatial_split(t, block_m=400, buffer_m=0, seed=2)
    te = s.loc[s["split"] == "test", ["lat", "lon"]].to_numpy()
    tr = s.loc[s["split"] == "train", ["lat", "lon"]].to_numpy()
    # a random split would put a train point within ~30 m of most test points; blocks do not
    nearest = pairwise_haversine_m(te, tr).min(1)
    assert np.median(nearest) > 60


@given(
    n=st.integers(2, 60),
    seed=st.integers(0, 2**16),
    buffer_m=st.floats(0.0, 400.0),
    block_m=st.floats(20.0, 1000.0),
    test_frac=st.floats(0.05, 0.9),
)
def test_buffer_property(n, seed, buffer_m, block_m, test_frac):
    rng = np.random.default_rng(seed)
    ll = local_metres_to_degrees(rng.uniform(-800, 800, (n, 2)), (55.95, -3.19))
    t = pd.DataFrame(
        dict(id=[str(i) for i in range(n)], image="x", lat=ll[:, 0], lon=ll[:, 1], city=rng.choice(["E", "F"], n))
    )
    s = spatial_split(t, test_frac=test_frac, block_m=block_m, buffer_m=buffer_m, seed=seed)
    assert len(s) == n
    if ((s["split"] == "train").any() and (s["split"] == "test").any()) and buffer_m > 0:
        assert _min_train_test_m(s) > buffer_m


def test_table_hash_is_content_not_order():
    t = _table(n_per_city=20)
    h = table_hash(t)
    assert len(h) == 64
    assert table_hash(t.sample(frac=1.0, random_state=0)) == h
    assert table_hash(t.assign(extra=1)) == h  # only the schema columns count
    moved = t.copy()
    moved.loc[5, "lat"] += 1e-5
    assert table_hash(moved) != h
    renamed = t.copy()
    renamed.loc[0, "city"] = "Z"
    assert table_hash(renamed) != h


def test_table_hash_survives_a_csv_round_trip(tmp_path):
    t = _table(n_per_city=20)
    t.to_csv(tmp_path / "t.csv", index=False)
    assert table_hash(pd.read_csv(tmp_path / "t.csv")) == table_hash(t)


def test_validation_blocks_are_held_out_like_test_and_leave_test_unchanged():
    t = _table(n_per_city=500)
    plain = spatial_split(t, test_frac=0.2, block_m=300, buffer_m=100, seed=4)
    s = spatial_split(t, test_frac=0.2, val_frac=0.2, block_m=300, buffer_m=100, seed=4, block_column=True)
    assert (s["split"] == "test").tolist() == (plain["split"] == "test").tolist()  # adding val keeps the test blocks
    tr = s.loc[s["split"] == "train", ["lat", "lon"]].to_numpy()
    for held in ("val", "test"):
        rows = s.loc[s["split"] == held, ["lat", "lon"]].to_numpy()
        assert len(rows) and pairwise_haversine_m(tr, rows).min() > 100  # brute force, all pairs
    counts = s["split"].value_counts()
    assert s.attrs["split"]["counts"] == {k: int(counts.get(k, 0)) for k in ("train", "val", "test", "buffer")}
    assert 0.1 < counts["val"] / len(s) < 0.3
    # whole blocks: every block is all-val, all-test, or neither
    kinds = s.groupby("block")["split"].agg(lambda x: frozenset(x) & {"val", "test"})
    assert all(len(k) <= 1 for k in kinds)
    assert s.loc[s["split"] == "test", "block"].str.split(":").str[0].isin(["A", "B", "C"]).all()
    assert "block" not in plain.columns
    with pytest.raises(ValueError, match="val_frac"):
        spatial_split(t, test_frac=0.5, val_frac=0.5)
