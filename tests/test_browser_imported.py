"""Imported runs in a real browser: OSV-5M's published predictions (the demo bundle's demo/osv5m runs) on every page.

Headless Debian Chromium through Playwright, as tests/test_browser.py; no Streamlit exception box may appear,
Failures must show the run's own photos, and a screenshot of each page is saved ($SWCLIP_SCREENSHOTS, else
the test's tmp folder), prefixed "imported_".
"""

import os
from pathlib import Path

import pytest

from tests.app_fixture import fixture_runs
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, PAGES, _no_exception, _settle, serve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.xdist_group(name="app"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
RUNS = "demo/osv5m/plonk,demo/osv5m/baseline"


def test_every_page_on_imported_runs_in_chromium(request, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SWCLIP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    cache = Path(request.config.cache.mkdir("swclip_app_fixture"))
    server = serve(fixture_runs(cache), tmp_path / "streamlit.log")
    url = next(server)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            try:
                for name, title in PAGES.items():
                    page.goto(f"{url}/{name}?run={RUNS}")
                    page.wait_for_selector(f'h1:has-text("{title}")', timeout=60_000)
                    _settle(page)
                    _no_exception(page, name or "runs")
                    if name == "failures":
                        photos = page.locator('[data-testid="stImage"] img')
                        photos.first.wait_for(timeout=30_000)
                        assert photos.count() >= 1
                    if name in ("predict", "neighbourhoods", "negatives"):
                        assert page.locator("text=/holds imported predictions of/").count() == 1, name
                    page.screenshot(path=str(shots / f"imported_{name or 'runs'}.png"), full_page=False)
            finally:
                browser.close()
    finally:
        server.close()
