"""The regional run (tests/regional_fixture.py) on every page in a real browser (Debian chromium via Playwright).

Same set-up as tests/test_browser.py: no Streamlit exception on any page, the sidebar names the
region/country scale, distances print in km, the maps draw; a screenshot of each page is saved as
regional-<page>.png (to $SWCLIP_SCREENSHOTS if set, else into the test's tmp folder).
"""

import os
import re
from pathlib import Path

import pytest

from tests.regional_fixture import cached_regional
from tests.test_browser import (  # noqa: F401 (pytestmark: the same marks, skipped without chromium)
    CHROMIUM,
    CHROMIUM_ARGS,
    DECK_PAGES,
    PAGES,
    _no_exception,
    _settle,
    pytestmark,
    serve,
)


@pytest.fixture(scope="module")
def region_server(request):
    cache = Path(request.config.cache.mkdir("swclip_regional_fixture"))
    yield from serve(cached_regional(cache), cache / "streamlit-regional.log", health_s=60.0)


def test_every_page_of_a_regional_run_in_chromium(region_server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SWCLIP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        try:
            page.goto(f"{region_server}/?run=regional-swclip,regional-clip&city=Centre")
            _settle(page, timeout_ms=180_000)
            for name, title in PAGES.items():
                if name == "experiments":  # the demo world's experiment grid: not part of a user's run
                    continue
                if name:
                    page.locator(f'[data-testid="stSidebarNav"] a[href$="/{name}"]').click()
                    page.wait_for_selector(f'h1:has-text("{title}")', timeout=120_000)
                _settle(page, timeout_ms=180_000)
                _no_exception(page, name or "runs")
                sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
                assert "region/country" in sidebar and "km" in sidebar, f"{name}: sidebar says {sidebar[:300]!r}"
                body = page.locator('[data-testid="stMain"]').inner_text()
                assert not re.search(r"acc@\d+m\b", body), f"{name}: a street-scale accuracy"
                assert not re.search(r"\b\d{5,} ?m\b", body), f"{name}: a distance in raw metres"
                if name in DECK_PAGES:
                    deck = page.wait_for_selector('[data-testid="stDeckGlJsonChart"] canvas', timeout=60_000)
                    deck.scroll_into_view_if_needed()
                    page.wait_for_timeout(1000)  # deck.gl draws a frame after the canvas exists
                page.screenshot(path=str(shots / f"regional-{name or 'runs'}.png"), full_page=False)
        finally:
            browser.close()
