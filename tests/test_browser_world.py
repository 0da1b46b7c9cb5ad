"""The Error map of a world-scale run in a real browser (Debian chromium via Playwright), "All cities".

Same set-up as tests/test_browser.py (its server helpers), on tests/world_fixture.py's runs: the page
must render without a Streamlit exception, and deck.gl must paint the world map (hexagons and points),
which AppTest cannot see.
"""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _no_exception, _settle, serve
from tests.world_fixture import N_EVAL, cached_world

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.xdist_group(name="app"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)",
    ),
]


@pytest.fixture(scope="module")
def world_server(request):
    cache = Path(request.config.cache.mkdir("swclip_world_fixture"))
    yield from serve(cached_world(cache), cache / "streamlit-world.log", health_s=60.0)


def test_error_map_draws_the_world(world_server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SWCLIP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            page.goto(f"{world_server}/error_map?run=osv5m-swclip&city=All+cities")
            page.wait_for_selector('h1:has-text("Error map")', timeout=120_000)
            _settle(page, timeout_ms=180_000)
            _no_exception(page, "error map, all cities")
            page.wait_for_selector(f"text=/{N_EVAL:,} of {N_EVAL:,} evaluation samples/", timeout=30_000)
            canvas = page.wait_for_selector(
                '[data-testid="stDeckGlJsonChart"] canvas', timeout=180_000
            )  # slow on a shared 2-core machine
            canvas.scroll_into_view_if_needed()
            page.wait_for_timeout(1500)  # deck.gl paints a frame after the canvas exists
            png = canvas.screenshot()
            page.screenshot(path=str(shots / "error_map_world.png"))
            px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
            # Painted, not blank: viridis dots and hexagons give many distinct colours over the world.
            assert len(np.unique(px // 8, axis=0)) > 20, "the deck canvas is (nearly) one colour: the map did not draw"
            assert "city=All+cities" in page.url  # the view stayed on every city
        finally:
            browser.close()
