"""The app on a world-scale run (tests/world_fixture.py): every page with "All cities", bad input, run loading."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from swclip import catalog, runs
from tests.test_app import _env, _scoped_environment, errors_of, text_of  # noqa: F401 (the autouse fixture)
from tests.world_fixture import N_CITIES, N_EVAL, broken_copy, cached_world

pytestmark = [pytest.mark.xdist_group(name="app"), pytest.mark.slow]

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE_DIR = "pages"
PAGES = ["overview", "predict", "error_map", "semivariogram", "soft_labels", "neighbourhoods", "compare", "failures"]


@pytest.fixture(scope="module")
def world(request):
    return cached_world(Path(request.config.cache.mkdir("swclip_world_fixture")))


def new_app(root, **params) -> AppTest:
    _env["monkeypatch"].setenv("SWCLIP_RUNS_DIR", str(root))  # the app reads it on every run
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params.update(params)
    return at


def test_every_page_shows_all_cities_of_a_world_run(world):
    at = new_app(world, run="osv5m-swclip,osv5m-clip", city="All cities")
    at.run()
    assert not errors_of(at)
    for page in PAGES[1:]:
        at.switch_page(f"{PAGE_DIR}/{page}.py")
        at.run()
        assert not errors_of(at), f"{page}: {errors_of(at)}"
        assert at.selectbox(key="url:city").value == "All cities"
    # the last page was Failures: the worst over all cities, paged
    assert f"{N_EVAL:,} samples over all cities" in text_of(at)


def test_error_map_all_cities_is_one_world_map_with_hexagons_and_tables(world):
    at = new_app(world, run="osv5m-swclip,osv5m-clip", city="All cities")
    at.run()
    at.switch_page(f"{PAGE_DIR}/error_map.py")
    at.run()
    assert not errors_of(at)
    txt = text_of(at)
    assert f"{N_EVAL:,} of {N_EVAL:,} evaluation samples" in txt
    deck = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    kinds = [layer["@@type"] for layer in deck["layers"]]
    assert "ScatterplotLayer" in kinds and "PolygonLayer" in kinds  # points (< 100k) and H3 hexagons
    hexes = next(layer for layer in deck["layers"] if layer["@@type"] == "PolygonLayer" and "count" in layer["data"][0])
    assert sum(h["count"] for h in hexes["data"]) == N_EVAL  # every sample in some hexagon
    assert deck["initialViewState"]["zoom"] < 2  # framed on the world
    # the hexagon size follows the run's extent: thousands of km across -> cells of tens to hundreds of km
    assert at.select_slider(key="url:hex").value > 20_000
    # per-city accuracy table: one row for all, one per city
    table = at.dataframe[-1].value
    assert list(table["city"])[0] == "all" and len(table) == N_CITIES + 1 and table["n"].iloc[0] == N_EVAL
    # OSV-5M's admin table and Recall vs Area come from metrics.json
    assert "Admin-level accuracy" in txt and "Point-in-polygon" in txt and "metrics.json" in txt
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert "Recall vs Area, all cities" in titles


def test_scale_aware_defaults_follow_the_run(world):
    at = new_app(world, run="osv5m-swclip", city="All cities")
    at.run()
    sigma = at.select_slider(key="url:sigma")
    assert sigma.options[0] == "10 m" and sigma.options[-1] == "2,000 km"
    assert sigma.value == 20_000  # the run's own σ (20 km) is on the scale
    at.switch_page(f"{PAGE_DIR}/semivariogram.py")
    at.run()
    assert not errors_of(at)
    assert at.select_slider(key="url:gmaxlag").value >= 1_000_000  # the global variogram reaches thousands of km
    assert "global variogram" in "\n".join(s.value for s in at.subheader)


def test_failures_all_cities_pages_through_the_worst_overall(world):
    at = new_app(world, run="osv5m-swclip", city="All cities")
    at.run()
    at.switch_page(f"{PAGE_DIR}/failures.py")
    at.run()
    at.slider(key="url:worst").set_value(4)
    at.run()
    at.number_input(key="url:fpage").set_value(2)
    at.run()
    assert not errors_of(at)
    df = runs.read_predictions(world / "osv5m-swclip")
    worst = df.sort_values("error_m", ascending=False, kind="stable")["id"].tolist()
    shown = [m.value.split("**")[1].split(" · ")[1] for m in at.markdown if m.value.startswith("**#")]
    assert shown == worst[4:8]  # page 2 of 4 per page: the 5th to 8th worst over every city


@pytest.mark.parametrize(
    "problem, says",
    [
        ("nan", "3 of 3,000 prediction row(s) have missing or out-of-range coordinates"),
        ("dup", "occur more than once"),
        ("rows", "embeddings.npy has 2,993 rows for 3,000 predictions"),
    ],
)
def test_bad_input_is_named_in_the_sidebar_and_no_page_crashes(world, tmp_path, problem, says):
    root = tmp_path / "runs"
    root.mkdir()
    broken_copy(world / "osv5m-swclip", root / f"bad-{problem}", problem)
    at = new_app(root, city="All cities")
    at.run()
    warnings = [w.value for w in at.sidebar.warning]
    assert any(f"bad-{problem}" in w and says in w for w in warnings), warnings
    # duplicate ids matter where runs are paired by id; the other two touch every page
    for page in ["compare", "failures"] if problem == "dup" else PAGES[1:]:
        at.switch_page(f"{PAGE_DIR}/{page}.py")
        at.run()
        assert not errors_of(at), f"{page} with {problem}: {errors_of(at)}"
    if problem == "nan":  # the rows left out are said, and exactly those are gone
        at.switch_page(f"{PAGE_DIR}/error_map.py")
        at.run()
        assert f"{N_EVAL - 3:,} of {N_EVAL - 3:,} evaluation samples" in text_of(at)


def test_check_predictions_by_hand():
    df = pd.DataFrame(
        {
            "id": ["a", "b", "b", "c"],
            "lat": [1.0, np.nan, 2.0, 95.0],
            "lon": [0.0, 0.0, 0.0, 0.0],
            "pred_lat": [1.0, 1.0, 2.0, 2.0],
            "pred_lon": [0.0, 0.0, 0.0, 0.0],
            "error_m": [0.0, 1.0, -1.0, 3.0],
        }
    )
    kept, problems = catalog.check_predictions(df, n_embeddings=3, run_id="r")
    assert list(kept.index) == [
        0
    ]  # NaN latitude, latitude 95 and a negative error are out; the index keeps row numbers
    assert len(problems) == 4
    assert (
        "r: 2 of 4 prediction row(s) have missing or out-of-range coordinates (lat, lon, pred_lat, pred_lon) "
        "(first: row 1, id 'b')" in problems[0]
    )
    assert "1 of 4 prediction row(s) have a missing or negative error_m (first: row 2" in problems[1]
    assert "1 id(s) occur more than once (2 rows; e.g. 'b' × 2)" in problems[2]
    assert "embeddings.npy has 3 rows for 4 predictions" in problems[3]
    with pytest.raises(runs.RunError, match="lacks column"):
        catalog.check_predictions(df.drop(columns="error_m"), run_id="r")


def test_topk_and_scalar_columns_read_back_as_written(world):
    run = world / "osv5m-swclip"
    df = pd.read_parquet(run / "predictions.parquet")
    latlon, prob = runs.read_topk(run)
    assert latlon.shape == (N_EVAL, 5, 2) and prob.shape == (N_EVAL, 5)
    for i in (0, 123, N_EVAL - 1):  # against the list cells pandas reads
        np.testing.assert_array_equal(latlon[i, :, 0], df["topk_lat"][i])
        np.testing.assert_array_equal(latlon[i, :, 1], df["topk_lon"][i])
        np.testing.assert_array_equal(prob[i], df["topk_prob"][i])
    scalar = runs.read_predictions(run, scalar_only=True)
    assert not any(c.startswith("topk_") for c in scalar.columns)
    pd.testing.assert_frame_equal(scalar, df[[c for c in df.columns if not c.startswith("topk_")]])
    assert runs.predictions_rows(run) == N_EVAL
