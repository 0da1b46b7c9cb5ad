"""The app in a real browser: `streamlit run` on localhost, headless Debian Chromium driven by Playwright.

Nothing downloads a browser: Playwright launches /usr/bin/chromium (`.ci/run`
installs Debian's package). Without it this test skips and says why. Every
page is opened, the σ slider moved, a photo uploaded on Predict; no
Streamlit exception box may appear, every map must have drawn (a canvas for
pydeck, Leaflet's panes for folium, served from the app's own static folder),
and a screenshot of each page is saved (to $SWCLIP_SCREENSHOTS if set, else
into the test's tmp folder).
"""

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from tests.app_fixture import fixture_runs

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# url path -> the page's h1
PAGES = {
    "": "Runs",
    "experiments": "Experiments",
    "predict": "Predict a location",
    "error_map": "Error map",
    "semivariogram": "Semivariogram",
    "soft_labels": "Soft labels",
    "negatives": "Negatives",
    "neighbourhoods": "Neighbourhoods",
    "compare": "Compare two runs",
    "failures": "Failures",
}
DECK_PAGES = {"error_map", "semivariogram", "soft_labels", "neighbourhoods", "compare"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.xdist_group(name="app"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(runs_root: Path, log_path: Path, health_s: float = 30.0):
    """`streamlit run app.py` on a free localhost port over ``runs_root``; yields its URL, stops it after."""
    port = _free_port()
    env = dict(os.environ, SWCLIP_RUNS_DIR=str(runs_root), HF_HUB_OFFLINE="1")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(int(health_s / 0.2)):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited with {proc.returncode}; see {log.name}")
                time.sleep(0.2)
        else:
            pytest.fail(f"streamlit did not become healthy within {health_s:.0f} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(request):
    cache = Path(request.config.cache.mkdir("swclip_app_fixture"))
    yield from serve(fixture_runs(cache), cache / "streamlit.log")


def _settle(page, timeout_ms=60_000):
    """Wait until the script has finished running and the page has painted."""
    page.wait_for_selector('[data-testid="stAppViewContainer"] h1', timeout=timeout_ms)
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    page.wait_for_timeout(500)


def _no_exception(page, where):
    boxes = page.query_selector_all('[data-testid="stException"]')
    assert not boxes, f"{where}: Streamlit exception: {boxes[0].inner_text()[:1500]}"


def test_every_page_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SWCLIP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo, "JPEG")
    upload = tmp_path / "street.jpg"
    upload.write_bytes(photo.getvalue())

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(
            viewport={"width": 1400, "height": int(os.environ.get("SWCLIP_SCREENSHOT_HEIGHT", "1500"))}
        )
        failed = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "/app/static/" in r.url else None)
        try:
            page.goto(f"{server}/?city=London")
            _settle(page)
            _no_exception(page, "start")
            timings = {}
            for name, title in PAGES.items():
                t_page = time.perf_counter()
                if name:  # switch pages in the browser, as a user does: the URL state must survive
                    page.locator(f'[data-testid="stSidebarNav"] a[href$="/{name}"]').click()
                    page.wait_for_selector(f'h1:has-text("{title}")', timeout=60_000)
                _settle(page)
                _no_exception(page, name or "runs")
                assert "city=London" in page.url, f"{name}: the URL lost the city: {page.url}"
                if name in DECK_PAGES:
                    deck = page.wait_for_selector('[data-testid="stDeckGlJsonChart"] canvas', timeout=30_000)
                    deck.scroll_into_view_if_needed()
                    page.wait_for_timeout(800)  # deck.gl draws a frame after the canvas exists
                if name == "soft_labels":
                    # Move the σ slider with the keyboard; the heading of the matrix must follow.
                    before = parse_qs(urlparse(page.url).query)["sigma"][0]
                    thumb = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"] input[type="range"]').first
                    thumb.focus()
                    for _ in range(3):
                        thumb.press("ArrowRight")
                    page.wait_for_function(
                        f"() => !location.search.includes('sigma={before}&') "
                        f"&& !location.search.endsWith('sigma={before}')",
                        timeout=20_000,
                    )
                    _settle(page)
                    _no_exception(page, "soft_labels after moving σ")
                    after = parse_qs(urlparse(page.url).query)["sigma"][0]
                    assert float(after) > float(before)
                    page.wait_for_selector(f"text=/σ = {after} m · kernel/", timeout=20_000)  # the matrix follows σ
                if name == "predict":
                    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(upload))
                    page.wait_for_selector("text=knn-kde estimate", timeout=60_000)
                    _settle(page)
                    _no_exception(page, "predict after upload")
                    # The folium map lives in a component iframe; Leaflet (served locally) must have drawn its panes.
                    leaflet = page.frame_locator("iframe[title*=folium]").locator(
                        ".leaflet-pane.leaflet-overlay-pane path"
                    )
                    leaflet.first.wait_for(timeout=30_000)
                    assert leaflet.count() >= 3  # confidence circle, estimate, top-k candidates
                page.screenshot(path=str(shots / f"{name or 'runs'}.png"))
                timings[name or "runs"] = round(time.perf_counter() - t_page, 1)
            print("seconds per page:", timings)
            assert not failed, f"static files failed to load: {failed}"
        finally:
            browser.close()


def test_a_link_to_a_page_as_the_first_request_opens_inside_the_frame(request, tmp_path):
    """A fresh server whose first request is ``/error_map`` must route it through app.py's st.navigation.

    With a ``pages/`` folder beside app.py, Streamlit 1.67 otherwise runs that first request in its
    legacy folder mode (the page alone, file names as the sidebar's navigation) and keeps every
    later session in it (appkit.frame.leave_legacy_pages_mode).
    """
    from playwright.sync_api import sync_playwright

    cache = Path(request.config.cache.mkdir("swclip_app_fixture"))
    server = serve(fixture_runs(cache), tmp_path / "streamlit.log")
    url = next(server)  # a server of its own: the first request must be the link
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            try:
                for path, title in (("error_map?city=London", "Error map"), ("", "Runs")):
                    page.goto(f"{url}/{path}")
                    page.wait_for_selector(f'h1:has-text("{title}")', timeout=60_000)
                    _settle(page)
                    _no_exception(page, path or "runs")
                    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
                    # st.navigation's titles, not the legacy mode's file names ("app", "error map", ...)
                    assert "Experiments" in nav and "Soft labels" in nav and "error map" not in nav, f"{path}: {nav!r}"
                    assert page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').count(), (
                        "no run picker"
                    )
            finally:
                browser.close()
    finally:
        server.close()
