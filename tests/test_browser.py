"""A real browser (Debian's Chromium via Playwright) visits every tab and runs one generation in each.

Screenshots land in ``artifacts/screenshots/`` for people to look at.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from live_app import live_app

pytestmark = [pytest.mark.browser, pytest.mark.live]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TABS = [
    ("Text to image", "#t2i-run", "#t2i-gallery img"),
    ("ControlNet", "#cn-run", "#cn-gallery img"),
    ("Classifier guidance vs CFG", "#cg-run", "#cg-gallery img"),
    ("Classifier guidance vs CFG", "#ccfg-run", "#ccfg-gallery img"),
    ("Classifier guidance vs CFG", "#cmp-run", "#cmp-plot img"),
    ("CLIP image conditioning", "#img-run", "#img-gallery img"),
    ("2D guidance playground", "#pg-run", "#pg-plot img"),
    ("p_uncond", "#pu-run", "#pu-plot img"),
    ("Attention cost", "#ac-run", "#ac-plot img"),
    ("Attention binding", "#ab-run", "#ab-gallery img"),
    ("AdaLN-zero", "#az-run", "#az-plot img"),
]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError("Debian's chromium is missing: .ci/run installs it with apt-get")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(everything_profile):
    with live_app(everything_profile) as client:
        yield client.app_url


@pytest.fixture(scope="module")
def toy_app(tmp_path_factory):
    """The toy profile as users run it, its example cache in a fresh folder (so the first click must write it)."""
    cache = tmp_path_factory.mktemp("examples")
    with live_app("toy", env={"GRADIO_EXAMPLES_CACHE": str(cache)}) as client:
        yield client.app_url, cache


FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]


@contextmanager
def browser_page(url: str):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url)
            page.get_by_role("heading", name="Conditioning Lab").wait_for(timeout=60_000)
            yield page
        finally:
            browser.close()


def wait_for_result(page, name: str, result: str, screenshot: str) -> None:
    # Whichever comes first: the result, or an error toast (whose text then explains the failure).
    page.locator(f"{result}, .toast-body.error").first.wait_for(state="visible", timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    toasts = page.locator(".toast-body.error")
    assert toasts.count() == 0, f"{name}: the page shows an error: {toasts.first.inner_text()}"


def test_every_tab_generates_in_a_real_browser(app_url):
    with browser_page(app_url) as page:
        tab_names = list(dict.fromkeys(t[0] for t in TABS))  # a tab may hold several endpoints
        assert [t.strip() for t in page.get_by_role("tab").all_inner_texts()] == tab_names
        for name, button, result in TABS:
            page.get_by_role("tab", name=name).click()
            page.locator(button).click()
            wait_for_result(page, name, result, f"{button.removeprefix('#')}.png")


def test_toy_examples_are_cached_on_first_click(toy_app):
    url, cache = toy_app
    with browser_page(url) as page:
        for tab, example, result in (("Text to image", "a red circle", "#t2i-gallery img"),
                                     ("ControlNet", "a magenta square", "#cn-gallery img"),
                                     ("Classifier guidance vs CFG", "cyan cross", "#cg-gallery img"),
                                     ("CLIP image conditioning", "a red cross", "#img-gallery img")):  # fmt: skip
            page.get_by_role("tab", name=tab).click()
            page.get_by_text(example, exact=True).first.click()
            wait_for_result(page, tab, result, f"toy_{tab.split()[0].lower()}_example.png")
    cached = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    # one lazily written cache folder per clicked example set (four tabs), each with its index and outputs
    folders = {p.parts[0] for p in cached if p.suffix == ".csv"}
    assert len(folders) == 4, cached
    assert all(any(p.parts[0] == f and p.suffix == ".png" for p in cached) for f in folders), cached


def test_text_to_image_shows_x0_previews_before_the_result(toy_app):
    """The gallery first shows "x̂0 at step …" previews (replacing each other in place), then the images."""
    with browser_page(toy_app[0]) as page:
        steps = page.locator("#t2i-steps input[type='number']")
        steps.fill("100")
        steps.press("Enter")
        page.locator("#t2i-run").click()
        page.get_by_text("denoising", exact=False).first.wait_for(state="visible", timeout=60_000)  # the progress bar
        preview = page.locator("#t2i-gallery").get_by_text("x̂0 at step", exact=False).first
        preview.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "t2i_preview.png"), full_page=True)
        shown = preview.inner_text()
        page.locator("#t2i-gallery").get_by_text("seed 0 · #0").first.wait_for(state="visible", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "t2i_after_preview.png"), full_page=True)
        assert shown.startswith("x̂0 at step") and "/100" in shown
        assert page.locator("#t2i-gallery").get_by_text("x̂0 at step", exact=False).count() == 0  # replaced
