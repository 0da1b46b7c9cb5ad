"""swclip.analysis.failures: training samples at a prediction's top-k candidate locations."""

import numpy as np
import pandas as pd
import pytest

from swclip.analysis.failures import SampleLocator, topk_matches
from swclip.geo import local_metres_to_degrees


@pytest.fixture()
def samples():
    rng = np.random.default_rng(0)
    latlon = np.column_stack([53.48 + rng.uniform(-0.01, 0.01, 50), -2.24 + rng.uniform(-0.01, 0.01, 50)])
    latlon[7] = latlon[3]  # two photos at one spot: the first row answers
    return pd.DataFrame({"id": [f"s{i}" for i in range(50)], "lat": latlon[:, 0], "lon": latlon[:, 1]})


def test_locator_finds_the_rows_at_gallery_locations_and_only_them(samples):
    loc = SampleLocator(samples[["lat", "lon"]].to_numpy())
    ll = samples[["lat", "lon"]].to_numpy()
    query = np.vstack([ll[[10, 3, 7]], local_metres_to_degrees(np.array([[5.0, 0.0]]), tuple(ll[20]))])  # last: 5 m off
    rows = loc.find(query)
    assert rows.tolist() == [10, 3, 3, -1]
    # a float round trip (gallery.npz stores float64, the table CSV 7 decimals) still matches
    assert loc.find(np.round(ll[[12]], 7)).tolist() == [12]
    # a naive loop agrees for every sample
    for i in range(len(ll)):
        first = next(j for j in range(len(ll)) if np.allclose(ll[j], ll[i], atol=1e-9))
        assert loc.find(ll[[i]]).tolist() == [first]


def test_topk_matches_ranks_from_one_and_skips_misses(samples):
    loc = SampleLocator(samples[["lat", "lon"]].to_numpy())
    lat = [samples.lat[4], 0.0, samples.lat[9]]
    lon = [samples.lon[4], 0.0, samples.lon[9]]
    assert topk_matches(lat, lon, loc) == [(1, 4), (3, 9)]
    assert topk_matches(None, None, loc) == []
