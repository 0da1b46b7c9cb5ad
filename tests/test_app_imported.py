"""Imported runs in the app (AppTest): OSV-5M's published predictions from the demo bundle, and a run imported
from a trained run's own predictions so that Compare pairs a trained run with an imported one on shared ids."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from swclip.runs import read_predictions
from swclip.workflows.importer import import_predictions
from tests.app_fixture import fixture_runs
from tests.test_app import PAGES

pytestmark = [pytest.mark.xdist_group(name="app"), pytest.mark.slow]

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PLONK, BASE = "demo/osv5m/plonk", "demo/osv5m/baseline"


@pytest.fixture(scope="module")
def runs_root(request, tmp_path_factory):
    """The app fixture's demo bundle (with its OSV-5M runs), plus mine/vlm: demo/clip's predictions, moved
    and with a third of them abstained, imported as another model's."""
    built = fixture_runs(Path(request.config.cache.mkdir("swclip_app_fixture")))
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(built / "demo", root / "demo")
    cols = ["id", "city", "lat", "lon", "pred_lat", "pred_lon"]
    df = read_predictions(root / "demo" / "clip", scalar_only=True)[cols]
    rng = np.random.default_rng(0)
    df["pred_lat"] += rng.normal(0, 0.002, len(df))
    df.loc[df.index[::3], ["pred_lat", "pred_lon"]] = np.nan
    import_predictions(df, root / "mine" / "vlm", model="a-vlm", source={"description": "test"})
    return root


def new_app(root, monkeypatch, runs) -> AppTest:
    monkeypatch.setenv("SWCLIP_RUNS_DIR", str(root))
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["run"] = ",".join(runs)
    return at


def text_of(at) -> str:
    return "\n".join(str(e.value) for kind in (at.markdown, at.caption, at.info, at.warning) for e in kind)


def test_every_page_opens_on_an_imported_run_and_says_what_it_lacks(runs_root, monkeypatch):
    at = new_app(runs_root, monkeypatch, [PLONK, BASE])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("Demo world" in str(i.value) for i in at.info), "real photos are not the procedural world"
    runs = at.dataframe[0].value
    kinds = dict(zip(runs["run"], runs["kind"]))
    assert kinds[PLONK] == "imported" and kinds["demo/clip"] == "trained"
    row = runs[runs["run"] == PLONK].iloc[0]
    assert "osv5m-plonk" in row["model / source"] and "osv5m_game_select_head.csv" in row["model / source"]
    for page in PAGES[1:]:
        at.switch_page(page)
        at.run()
        assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
        assert at.title, f"{page} drew no title"
        if page in ("pages/predict.py", "pages/neighbourhoods.py", "pages/negatives.py"):
            said = [str(i.value) for i in at.info if "imported predictions of" in str(i.value)]
            assert len(said) == 1, f"{page} must say in one line what an imported run lacks: {text_of(at)}"
        if page == "pages/failures.py":
            assert at.get("imgs") or at.get("image"), "Failures shows the run's own photos"
            assert "no training table" in text_of(at)
        if page == "pages/compare.py":
            assert "bootstrap" in text_of(at).lower()


def test_compare_pairs_a_trained_run_with_an_imported_one(runs_root, monkeypatch):
    at = new_app(runs_root, monkeypatch, ["demo/clip", "mine/vlm"])
    at.run()
    assert not at.exception
    assert any("no prediction for" in str(w.value) for w in at.sidebar.warning), "abstentions are said"
    at.switch_page("pages/compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "bootstrap" in text_of(at).lower()


def test_runs_page_ranks_the_selected_runs_on_their_shared_photos(runs_root, monkeypatch):
    """OSV-5M's model and baseline (same 50 photos) and a.vlm that abstains on a third of demo/clip's photos."""
    at = new_app(runs_root, monkeypatch, [PLONK, BASE])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Leaderboard on the 50 photos every selected run holds" in str(h.value) for h in at.subheader)
    board = at.dataframe[1].value
    assert set(board["run"]) == {PLONK, BASE} and (board["coverage"] == 1.0).all()
    assert list(board["GeoScore"]) == sorted(board["GeoScore"], reverse=True)

    at = new_app(runs_root, monkeypatch, ["demo/clip", "mine/vlm"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    board = at.dataframe[1].value.set_index("run")
    n = len(read_predictions(runs_root / "demo" / "clip", scalar_only=True))
    assert any(f"Leaderboard on the {n:,} photos" in str(h.value) for h in at.subheader)
    assert board.loc["demo/clip", "coverage"] == 1.0
    assert board.loc["mine/vlm", "coverage"] == pytest.approx(1 - len(range(0, n, 3)) / n)
