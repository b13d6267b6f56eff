"""A real browser (Debian's Chromium via Playwright) visits every tab and runs one generation in each.

Screenshots land in ``artifacts/screenshots/`` for people to look at.
"""

import os
from pathlib import Path

import pytest
from live_app import live_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TABS = [
    ("Text to image", "#t2i-run", "#t2i-gallery img"),
    ("ControlNet", "#cn-run", "#cn-gallery img"),
    ("Classifier guidance", "#cg-run", "#cg-gallery img"),
    ("CLIP image conditioning", "#img-run", "#img-gallery img"),
    ("2D guidance playground", "#pg-run", "#pg-plot img"),
]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError("Debian's chromium is missing: .ci/run installs it with apt-get")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(everything_profile):
    with live_app(everything_profile) as client:
        yield client.app_url


def test_every_tab_generates_in_a_real_browser(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(app_url)
            page.get_by_role("heading", name="Conditioning Lab").wait_for(timeout=60_000)
            assert [t.strip() for t in page.get_by_role("tab").all_inner_texts()] == [t[0] for t in TABS]
            for name, button, result in TABS:
                page.get_by_role("tab", name=name).click()
                page.locator(button).click()
                # Whichever comes first: the result, or an error toast (whose text then explains the failure).
                page.locator(f"{result}, .toast-body.error").first.wait_for(state="visible", timeout=180_000)
                page.screenshot(path=str(ARTIFACTS / f"{name.split()[0].lower()}.png"), full_page=True)
                toasts = page.locator(".toast-body.error")
                assert toasts.count() == 0, f"{name}: the page shows an error: {toasts.first.inner_text()}"
        finally:
            browser.close()
