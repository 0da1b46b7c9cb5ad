"""The Streamlit app under AppTest, on a fixture run built by the real code (tests/app_fixture.py).

AppTest runs the script in this process, so it sees exceptions, widgets and
the URL; it cannot tell whether a map draws (tests/test_browser.py looks).
"""

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from streamlit.testing.v1 import AppTest

from swclip import catalog, runs
from swclip.io import resolve_inside
from tests.app_fixture import fixture_runs

pytestmark = [pytest.mark.xdist_group(name="app"), pytest.mark.slow]

APP = str(Path(__file__).resolve().parents[1] / "app.py")
_SESSION_RUNS_DIR = os.environ.get("SWCLIP_RUNS_DIR")  # what the machine set, if anything
PAGES = [
    "pages/overview.py",
    "pages/experiments.py",
    "pages/predict.py",
    "pages/error_map.py",
    "pages/semivariogram.py",
    "pages/soft_labels.py",
    "pages/negatives.py",
    "pages/neighbourhoods.py",
    "pages/compare.py",
    "pages/failures.py",
]


@pytest.fixture(scope="module")
def runs_root(request):
    return fixture_runs(Path(request.config.cache.mkdir("swclip_app_fixture")))


_env = {}


@pytest.fixture(autouse=True)
def _scoped_environment(monkeypatch):
    """new_app's SWCLIP_RUNS_DIR goes through monkeypatch: undone after each test, never leaked."""
    _env["monkeypatch"] = monkeypatch
    yield
    _env.clear()


def new_app(root) -> AppTest:
    _env["monkeypatch"].setenv("SWCLIP_RUNS_DIR", str(root))  # the app reads it on every run
    return AppTest.from_file(APP, default_timeout=120)


def errors_of(at):
    return [e.value for e in at.exception]


def text_of(at) -> str:
    return "\n".join(str(m.value) for m in at.markdown) + "\n".join(str(c.value) for c in at.caption)


def test_every_page_renders_on_the_fixture_run(runs_root):
    at = new_app(runs_root)
    at.run()
    assert not errors_of(at)
    assert at.title[0].value == "Runs"
    assert any("Demo world" in str(i.value) for i in at.info), "the demo banner says what the data is"
    for page in PAGES[1:]:
        at.switch_page(page)
        at.run()
        assert not errors_of(at), f"{page}: {errors_of(at)}"
        assert at.title, f"{page} drew no title"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_on_its_own(runs_root, page, monkeypatch):
    """A page opened without app.py's st.navigation draws the same frame itself (sidebar, demo banner)."""
    monkeypatch.setenv("SWCLIP_RUNS_DIR", str(runs_root))
    at = AppTest.from_file(str(Path(APP).parent / page), default_timeout=120)
    at.run()
    assert not errors_of(at), f"{page}: {errors_of(at)}"
    assert at.title, f"{page} drew no title"
    assert at.sidebar.multiselect, f"{page} drew no run picker: the frame is missing"
    assert any("Demo world" in str(i.value) for i in at.info), f"{page}: no demo banner"


def test_url_state_survives_page_switches_and_reproduces_the_view(runs_root):
    at = new_app(runs_root)
    at.run()
    at.selectbox(key="url:city").set_value("Manchester")
    at.select_slider(key="url:sigma").set_value(400)
    at.run()
    assert at.query_params["city"] == "Manchester" and at.query_params["sigma"] == "400"
    at.switch_page("pages/soft_labels.py")
    at.run()
    assert not errors_of(at)
    assert at.query_params["city"] == "Manchester" and at.query_params["sigma"] == "400"
    assert "**Manchester**" in text_of(at) and "σ = 400 m" in text_of(at)
    kept = dict(at.query_params)

    # A fresh session opened on that link shows the same view.
    fresh = new_app(runs_root)
    fresh.query_params.update(kept)
    fresh.run()
    assert fresh.selectbox(key="url:city").value == "Manchester"
    assert fresh.select_slider(key="url:sigma").value == 400


def test_soft_labels_follow_the_controls(runs_root):
    at = new_app(runs_root)
    at.run()
    at.switch_page("pages/soft_labels.py")
    at.run()
    at.slider(key="url:batch").set_value(40)
    at.radio(key="url:kernel").set_value("exponential")
    at.run()
    assert not errors_of(at)
    md = text_of(at)
    assert "B = 40" in md and "kernel `exponential`" in md
    assert at.query_params["batch"] == "40" and at.query_params["kernel"] == "exponential"
    at.radio(key="url:kernel").set_value("onehot")
    at.run()
    assert "median effective positives per row **1.00**" in text_of(at)  # one-hot: exactly one positive per row


def test_a_control_two_pages_share_keeps_its_value_across_the_switch(runs_root):
    """Soft labels and Negatives both have "batch", with other bounds (so other widget identities)."""
    at = new_app(runs_root)
    at.query_params.update({"city": "London"})
    at.run()
    at.switch_page("pages/soft_labels.py")
    at.run()
    at.slider(key="url:batch").set_value(20)
    at.run()
    at.switch_page("pages/negatives.py")
    at.run()
    assert not errors_of(at)
    assert at.slider(key="url:batch").value == 20 and at.query_params["batch"] == "20"
    assert "B = 20" in text_of(at)


def test_hand_edited_url_falls_back_to_valid_choices(runs_root):
    at = new_app(runs_root)
    at.query_params.update({"run": "../../etc", "city": "Atlantis", "sigma": "-3", "batch": "999999"})
    at.run()
    assert not errors_of(at)
    assert all(r in {"demo/clip", "demo/swclip-s50"} for r in at.multiselect(key="url:run").value)
    assert at.selectbox(key="url:city").value in ("All cities", "London", "Manchester")


def test_error_map_filters_and_other_pages_controls(runs_root):
    at = new_app(runs_root)
    at.run()
    at.switch_page("pages/error_map.py")
    at.run()
    at.select_slider(key="url:err").set_value((100, 10_000))  # a 3 km city: stops end at 30 km, then "no limit"
    at.slider(key="url:worst").set_value(5)
    at.run()
    assert not errors_of(at) and "between 100 m and 10 km" in text_of(at)
    at.switch_page("pages/neighbourhoods.py")
    at.run()
    at.radio(key="url:nrun").set_value("demo/clip")
    at.number_input(key="url:anchor").set_value(3)
    at.run()
    assert not errors_of(at) and "overlap@8" in text_of(at)
    at.switch_page("pages/failures.py")
    at.run()
    at.slider(key="url:worst").set_value(2)
    at.run()
    assert not errors_of(at) and len(at.get("download_button")) == 1
    # the nearest training images come from the run's image gallery, with their distance from the truth
    assert "Nearest training images" in text_of(at) and " away · cos " in text_of(at)


# ----------------------------------------------------------------- uploads


def _jpeg(img, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_predict_survives_hostile_uploads_and_reads_exif_gps(runs_root):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.GPSInfo] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 30.0)}
    good_jpeg = _jpeg(rgb, exif=exif)
    bomb = _png(Image.new("1", (9000, 9000)))  # 81 Mpx, a few kB: refused before decoding
    files = [
        ("notes.txt", b"this is not an image", "text/plain"),
        ("empty.jpg", b"", "image/jpeg"),
        ("cut.jpg", good_jpeg[: len(good_jpeg) // 2], "image/jpeg"),
        ("bomb.png", bomb, "image/png"),
        ("gps.jpg", good_jpeg, "image/jpeg"),
        ("cmyk.jpg", _jpeg(rgb.convert("CMYK")), "image/jpeg"),
        ("wide.png", _png(Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16))), "image/png"),
        ("alpha.png", _png(rgb.convert("RGBA")), "image/png"),
        ("tiny.png", _png(Image.new("RGB", (1, 1), (90, 90, 90))), "image/png"),  # predicted, with a warning
    ]
    at = new_app(runs_root)
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    at.file_uploader(key="uploads").set_value(files)
    at.run()
    assert not errors_of(at)
    errs = "\n".join(e.value for e in at.error)
    for name in ("notes.txt", "empty.jpg", "cut.jpg", "bomb.png"):
        assert name in errs, f"{name} should get its own message:\n{errs}"
    assert len(at.error) == 4
    table = at.dataframe[-1].value
    assert list(table["photo"]) == ["gps.jpg", "cmyk.jpg", "wide.png", "alpha.png", "tiny.png"]
    tiny = [w.value for w in at.warning if "tiny.png" in str(w.value)]
    assert len(tiny) == 1 and "1×1 px" in tiny[0] and "unreliable" in tiny[0], [w.value for w in at.warning]
    assert not any("gps.jpg" in str(w.value) for w in at.warning)  # 48 x 64 px is enough for a 32 px model
    gps = table.set_index("photo").loc["gps.jpg"]
    assert gps["truth_from"] == "EXIF GPS"
    assert gps["true_lat"] == pytest.approx(51.5) and gps["true_lon"] == pytest.approx(-(7.5 / 60))
    assert np.isfinite(gps["error_m"]) and np.isfinite(
        gps["kde_error_m"]
    )  # top-1 and knn-kde, named as in predictions.parquet
    assert len(at.get("download_button")) == 2  # CSV and GeoJSON

    # The app keeps working in this session after the bad files.
    at.file_uploader(key="uploads").set_value(None)
    at.multiselect(key="url:pick").set_value(at.multiselect(key="url:pick").options[:2])
    at.run()
    assert not errors_of(at) and not at.error
    assert "evaluation label" in text_of(at)


# ----------------------------------------------------------------- empty state and paths


def test_empty_runs_directory_gets_a_friendly_message(tmp_path):
    at = new_app(tmp_path)
    at.run()
    assert not errors_of(at)
    assert any("make run" in str(m.value) for m in at.markdown)
    for page in PAGES[1:]:
        at.switch_page(page)
        at.run()
        assert not errors_of(at), page
        assert at.warning, f"{page} should explain there are no runs"


def test_nothing_is_read_outside_the_runs_directory(runs_root, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(runs_root / "demo" / "clip", root / "stolen", ignore=shutil.ignore_patterns("checkpoints"))
    man = json.loads((root / "stolen" / "manifest.json").read_text())
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "samples.csv").write_text("id,image,lat,lon,city\na,x.jpg,1,1,X\n")
    man["data"] = {"root": "../../secret", "table": "../../secret/samples.csv"}
    man.pop("demo", None)  # pose as a run on real data
    (root / "stolen" / "manifest.json").write_text(json.dumps(man))
    found, broken = catalog.discover_runs(root)
    run = found[0]
    assert catalog.image_root(run, root) is None
    assert catalog.table_path(run, root) is None
    assert catalog.image_path(root / "stolen", "../../secret/samples.csv", root) is None
    with pytest.raises(runs.RunError, match="escapes"):
        resolve_inside(root, "../secret/samples.csv")
    (root / "link").symlink_to(secret)
    with pytest.raises(runs.RunError):
        resolve_inside(root, "link/samples.csv")
    # And the app shows the run without thumbnails rather than failing.
    at = new_app(root)
    at.run()
    at.switch_page("pages/failures.py")
    at.run()
    assert not errors_of(at)
    assert any("not under the data root" in str(i.value) for i in at.info)
    # Without a demo world, the maps fall back to place names and country outlines.
    at.switch_page("pages/error_map.py")
    at.run()
    assert not errors_of(at)
    assert not any("Demo world" in str(i.value) for i in at.info)


def test_a_data_root_outside_the_runs_folder_and_a_stale_run(runs_root, tmp_path):
    """Images read from --data-root ($SWCLIP_DATA_ROOT); a run retrained over its evaluation is marked and
    never opened by default."""
    data = tmp_path / "data" / "world"
    shutil.copytree(runs_root / "demo" / "world", data)
    root = tmp_path / "runs"
    for name in ("clip", "swclip-s50"):
        shutil.copytree(runs_root / "demo" / name, root / name, ignore=shutil.ignore_patterns("checkpoints"))
    for name in ("model.safetensors", "manifest.json"):  # new weights over clip's old artefacts: the newest run
        shutil.copy(root / "swclip-s50" / name, root / "clip" / name)
    at = new_app(root)
    at.run()
    assert not errors_of(at)
    assert at.sidebar.multiselect[0].value == ["swclip-s50"], "a stale run must never be the default main run"
    at.sidebar.multiselect[0].set_value(["clip"])
    at.run()
    assert any("came from other weights" in str(e.value) for e in at.error)
    # without a data root the moved images are out of reach; with one, the Failures page reads them
    at.sidebar.multiselect[0].set_value(["swclip-s50"])
    at.switch_page("pages/failures.py")
    at.run()
    assert any("not under the data root" in str(i.value) for i in at.info)
    _env["monkeypatch"].setenv("SWCLIP_DATA_ROOT", str(data))
    at = new_app(root)
    at.switch_page("pages/failures.py")
    at.run()
    assert not errors_of(at)
    assert not any("not under the data root" in str(i.value) for i in at.info)
    assert at.get("image"), "no thumbnails from the data root"


def test_broken_runs_are_listed_with_their_problem(runs_root, tmp_path):
    root = tmp_path / "runs"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "manifest.json").write_text("{not json")
    shutil.copytree(runs_root / "demo" / "clip", root / "good", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(
        runs_root / "demo" / "clip",
        root / "unevaluated",
        ignore=shutil.ignore_patterns("checkpoints", "predictions.parquet"),
    )
    shutil.copytree(runs_root / "demo" / "clip", root / "corrupt", ignore=shutil.ignore_patterns("checkpoints"))
    (root / "corrupt" / "predictions.parquet").write_bytes(b"PAR1 truncated")
    found, broken = catalog.discover_runs(root)
    assert sorted(r.run_id for r in found) == ["corrupt", "good"]
    problems = dict(broken)
    assert "JSON" in problems["bad"] and "not evaluated yet" in problems["unevaluated"]
    # A corrupt table is a message in the sidebar, not a crash.
    at = new_app(root)
    at.query_params["run"] = "corrupt"
    at.run()
    assert not errors_of(at)
    assert any("Cannot read the predictions of corrupt" in e.value for e in at.sidebar.error)
    at = new_app(root)
    at.run()
    assert not errors_of(at)
    assert any("cannot be read" in e.label for e in at.sidebar.expander)


def test_runs_dir_setting_does_not_leak_between_tests():
    # runs after tests that called new_app (file order; the module runs on one xdist worker):
    # the variable is the one the session began with
    assert os.environ.get("SWCLIP_RUNS_DIR") == _SESSION_RUNS_DIR
