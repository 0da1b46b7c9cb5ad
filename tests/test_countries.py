"""Country accuracy by point-in-polygon on the shipped Natural Earth outlines, beside OSV-5M's reverse_geocoder."""

import json

import numpy as np
import pytest
import shapely

from swclip.analysis import countries
from swclip.analysis.metrics import admin_accuracy, scale_metrics
from swclip.geo import destination


def _naive_country(lat, lon, features):
    """Loop over every feature: the one whose outline covers the point, else the nearest within SNAP_M."""
    pt = shapely.Point(lon, lat)
    shapes = [(f["properties"], shapely.geometry.shape(f["geometry"])) for f in features]
    key = lambda p: p["iso_a3"] if p.get("iso_a3") not in (None, "", "-99") else p["name"]  # noqa: E731
    for props, shape in shapes:
        if shape.covers(pt):
            return key(props)
    dist, props = min(((shape.distance(pt), props) for props, shape in shapes), key=lambda t: t[0])
    return key(props) if dist <= np.rad2deg(countries.SNAP_M / 6_371_008.8) else ""


def test_country_of_against_a_loop_over_the_outlines():
    features = json.loads(countries.OUTLINES_PATH.read_text())["features"]
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-55, 70, 150), rng.uniform(-180, 180, 150)], 1)
    got = countries.country_of(pts)
    want = [_naive_country(la, lo, features) for la, lo in pts]
    assert list(got) == want
    assert (got != "").sum() > 20  # land and sea both sampled


def test_country_of_known_places():
    places = {
        "France": (46.6, 2.4),  # France has no ISO code in Natural Earth 1:110m: its name is the key
        "DEU": (52.52, 13.40),
        "ESP": (40.42, -3.70),
        "USA": (39.0, -98.0),
        "JPN": (36.2, 138.3),
        "": (0.0, -30.0),  # mid-Atlantic
    }
    assert list(countries.country_of(np.array(list(places.values())))) == list(places)
    assert countries.country_of(np.array([[39.0, -98.0 + 360]]))[0] == "USA"  # 0–360 longitudes wrap


def test_one_country_run_scores_one_by_polygon_but_not_by_the_nearest_town():
    """The issue's run: every photo (and prediction) in one country near its borders. Point-in-polygon says
    1.0; OSV-5M's nearest populated place puts some in the neighbouring country's town."""
    tree, keys = countries.load_outlines()
    france = max((g for g, k in zip(tree.geometries, keys) if k == "France"), key=lambda g: g.area)
    rng = np.random.default_rng(1)
    cand = np.stack([rng.uniform(42.3, 51.2, 20000), rng.uniform(-4.8, 8.3, 20000)], 1)
    inside = shapely.contains_xy(france, cand[:, 1], cand[:, 0])
    depth_km = shapely.distance(france.boundary, shapely.points(cand[:, 1], cand[:, 0])) * 111.0
    band = cand[inside & (depth_km > 12) & (depth_km < 30)][:400]  # 12–30 km inside the outline
    pred = destination(band, rng.uniform(0, 360, len(band)), np.full(len(band), 3000.0))  # 3 km off
    poly = countries.country_accuracy(pred, band)
    osv = admin_accuracy(pred, band, mode=1)
    assert poly["acc_country"] == 1.0 and poly["n_country"] == len(band) and "point-in-polygon" in poly["convention"]
    assert osv["acc_country"] < 1.0  # the nearest town across the border


def test_metrics_json_states_both_conventions():
    rng = np.random.default_rng(2)
    true = destination(np.tile([[46.6, 2.4]], (60, 1)), rng.uniform(0, 360, 60), rng.uniform(0, 150_000, 60))
    pred = destination(true, rng.uniform(0, 360, 60), rng.uniform(0, 20_000, 60))
    topk, prob = pred[:, None, :], np.ones((60, 1))
    out = scale_metrics(pred, true, topk, prob, 1000.0, mode=1)
    assert out["countries"]["convention"] == countries.CONVENTION_POLYGON
    assert out["osv5m"]["convention"] == countries.CONVENTION_OSV5M and "nearest" in out["osv5m"]["convention"]
    assert out["countries"]["acc_country"] == 1.0
    json.dumps(out)  # metrics.json


def test_missing_outlines_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="outlines"):
        countries.country_of(np.array([[0.0, 0.0]]), tmp_path / "none.geojson")
