"""The app on a regional run (tests/regional_fixture.py: ~280 km across, 100 places × 4 photos): every page on
the region/country scale, in km, with places."""

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from swclip.analysis.compare import PlacePairedBootstrap, statistics_at
from tests.regional_fixture import HEADINGS, N_PLACES, cached_regional
from tests.test_app import _env, _scoped_environment, errors_of, text_of  # noqa: F401 (the autouse fixture)

pytestmark = [pytest.mark.xdist_group(name="app"), pytest.mark.slow]

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = [
    "predict",
    "error_map",
    "semivariogram",
    "soft_labels",
    "negatives",
    "neighbourhoods",
    "compare",
    "failures",
]
METRE_ACCURACY = re.compile(r"^acc@\d+(\.\d+)?m$")  # acc@100m: a street-scale column


@pytest.fixture(scope="module")
def region(request):
    return cached_regional(Path(request.config.cache.mkdir("swclip_regional_fixture")))


def new_app(root, **params) -> AppTest:
    _env["monkeypatch"].setenv("SWCLIP_RUNS_DIR", str(root))
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params.update({"run": "regional-swclip,regional-clip", **params})
    return at


def km(text: str) -> float:
    """'80 km' / '950 m' -> metres."""
    value, unit = text.replace(",", "").split()
    return float(value) * (1000.0 if unit == "km" else 1.0)


def columns_of(at) -> list:
    return [c for d in at.dataframe for c in d.value.columns]


def test_every_page_on_the_region_scale_in_km(region):
    at = new_app(region)
    at.run()
    assert not errors_of(at)
    assert "Scale: **region/country**" in text_of(at)
    runs = at.dataframe[0].value
    assert {"median error (km)", "acc@1km", "acc@25km", "acc@200km", "places"} <= set(runs.columns)
    assert set(runs["places"]) == {N_PLACES}
    for page in PAGES:
        at.switch_page(f"pages/{page}.py")
        at.run()
        assert not errors_of(at), f"{page}: {errors_of(at)}"
        bad = [c for c in columns_of(at) if METRE_ACCURACY.match(str(c))]
        assert not bad, f"{page} shows street-scale accuracy columns {bad}"
        metres = [c for c in columns_of(at) if str(c).endswith("(m)")]
        assert not metres, f"{page} shows lengths in metres at the region scale: {metres}"
        # no raw metre counts of regional distances: '119034' would print as '119 km'
        assert not re.search(r"\b\d{5,} ?m\b", text_of(at)), f"{page}: a distance in raw metres"


def test_error_map_follows_the_region_scale(region):
    at = new_app(region)
    at.run()
    at.switch_page("pages/error_map.py")
    at.run()
    stops = at.select_slider(key="url:err").options
    assert stops[-1] == "no limit" and stops[-2].endswith("km")
    assert km(stops[-2]) <= 10 * 300_000  # the filter ends near the region's size, not at 20,038 km
    acc = [c for c in at.dataframe[-1].value.columns if str(c).startswith("acc@")]
    assert acc == ["acc@1km", "acc@5km", "acc@10km", "acc@25km", "acc@50km", "acc@100km", "acc@200km"]
    assert "median error (km)" in at.dataframe[-1].value.columns
    assert re.search(r"median error \d+ km", text_of(at))
    # admin accuracy by two stated conventions: point-in-polygon (every place is in France) and OSV-5M's
    assert "Point-in-polygon" in text_of(at) and "Nearest place" in text_of(at)
    admin = next(d.value for d in at.dataframe if "convention" in d.value.columns).set_index("convention")
    assert admin.loc["point-in-polygon", "accuracy"] == 1.0


def test_per_city_and_global_variograms_agree_and_a_short_lag_reaches_no_range(region):
    at = new_app(region)
    at.run()
    at.switch_page("pages/semivariogram.py")
    at.run()
    assert not errors_of(at)
    city, glob = at.dataframe[0].value, at.dataframe[1].value
    assert city["largest lag"].iloc[0] == glob["largest lag"].iloc[0]  # one lag rule
    r_city, r_glob = km(city["range"].iloc[0]), km(glob["range"].iloc[0])
    assert abs(r_city - r_glob) <= 0.25 * r_glob  # the same rows, the same lag rule
    assert 30_000 < r_city < 150_000  # the field's 95 % correlation range is about 2.45 × 25 km
    # lags up to 20 km: the variogram is still rising, so no σ is suggested
    at.select_slider(key="url:maxlag").set_value(20_000).run()
    row = at.dataframe[0].value.iloc[0]
    assert row["suggested σ, gaussian"] == "range not reached" and "range not reached" in row["note"]


def test_places_reach_compare_soft_labels_and_negatives(region):
    at = new_app(region)
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    txt = text_of(at)
    assert f"at **{N_PLACES}** places" in txt and "resamples of **places**" in txt
    # the intervals are the place bootstrap's, not the photo bootstrap's
    pa, pb = (pd.read_parquet(region / r / "predictions.parquet") for r in ("regional-swclip", "regional-clip"))
    stats = statistics_at((1000, 25_000, 200_000))
    want = PlacePairedBootstrap(pa["error_m"], pb["error_m"], pa["place_id"], stats, seed=0).table(1000)
    shown = at.dataframe[0].value.set_index("statistic")
    lo, hi = want.set_index("statistic").loc["acc@25km", ["diff_lo", "diff_hi"]]
    assert shown.loc["acc@25km", "B − A"].endswith(f"[{lo:.3f}, {hi:.3f}]")
    at.switch_page("pages/soft_labels.py")
    at.run()
    assert "per place here" in text_of(at) and "Positives per place" in text_of(at)
    at.switch_page("pages/negatives.py")
    at.run()
    assert "Same-place pairs are positives, never negatives" in text_of(at)
    n_same = int(re.search(r"never negatives: ([\d,]+) pair", text_of(at)).group(1).replace(",", ""))
    assert n_same > 0 and HEADINGS == 4


def test_predict_on_an_evaluation_photo_of_the_region(region):
    """The region's model and gallery predict an evaluation photo; the map opens at the region's zoom."""
    at = new_app(region)
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    at.multiselect(key="url:pick").set_value(["test-000-0"]).run()
    assert not errors_of(at)
    txt = text_of(at)
    assert "knn-kde estimate" in txt and re.search(r"error \*\*[\d.,]+ k?m\*\*", txt)
