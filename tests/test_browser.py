"""A real browser (Debian's Chromium via Playwright) visits every tab and runs one generation in each.

Screenshots land in ``artifacts/screenshots/`` for people to look at. With ``CONDLAB_SCREENSHOT=1`` the first tab's
screenshot is also written to ``docs/img/app.png`` (the README's picture; CI leaves the tree as it is).
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from live_app import live_app

pytestmark = [pytest.mark.browser, pytest.mark.live]

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
README_SCREENSHOT = ROOT / "docs" / "img" / "app.png"


def shown(selector: str) -> str:
    """A result that is an image, or a plot the browser draws (Vega's SVG: a native plot, not a picture)."""
    return f"{selector} img, {selector} svg.marks"


TABS = [
    ("Text to image", "#t2i-run", "#t2i-gallery img"),
    ("ControlNet", "#cn-run", "#cn-gallery img"),
    ("Classifier guidance vs CFG", "#cg-run", "#cg-gallery img"),
    ("Classifier guidance vs CFG", "#ccfg-run", "#ccfg-gallery img"),
    ("Classifier guidance vs CFG", "#cmp-run", shown("#cmp-plot")),
    ("CLIP image conditioning", "#img-run", "#img-gallery img"),
    ("2D guidance playground", "#pg-run", shown("#pg-plot")),
    ("p_uncond", "#pu-run", shown("#pu-plot")),
    ("Attention cost", "#ac-run", shown("#ac-plot")),
    ("Attention binding", "#ab-run", "#ab-gallery img"),
    ("AdaLN-zero", "#az-run", shown("#az-plot")),
    ("Guidance distillation", "#dc-run", "#dc-grid img"),
]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError("Debian's chromium is missing: .ci/run installs it with apt-get")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(student_profile):
    with live_app(student_profile) as client:
        yield client.app_url


@pytest.fixture(scope="module")
def toy_app(tmp_path_factory):
    """The toy profile as users run it, its example cache in a fresh folder (so the first click must write it)."""
    cache = tmp_path_factory.mktemp("examples")
    with live_app("toy", env={"GRADIO_EXAMPLES_CACHE": str(cache)}) as client:
        yield client.app_url, cache, client


FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]


@contextmanager
def browser_page(url: str, width: int = 1280):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 1100})
            # A script error leaves the page half alive (a cached example's plot once stopped the tabs from switching).
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            page.get_by_role("heading", name="Conditioning Lab").wait_for(timeout=60_000)
            yield page
            assert not errors, f"the page raised script errors: {errors}"
        finally:
            browser.close()


def wait_for_result(page, name: str, result: str, screenshot: str) -> None:
    # Whichever comes first: the result, or an error toast (whose text then explains the failure).
    page.locator(f"{result}, .toast-body.error").first.wait_for(state="visible", timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    toasts = page.locator(".toast-body.error")
    assert toasts.count() == 0, f"{name}: the page shows an error: {toasts.first.inner_text()}"


def test_every_tab_generates_in_a_real_browser(app_url):
    with browser_page(app_url, width=1800) as page:  # wide enough for every tab to sit in the bar, none in "…"
        tab_names = list(dict.fromkeys(t[0] for t in TABS))  # a tab may hold several endpoints
        assert [t.strip() for t in page.get_by_role("tab").all_inner_texts()] == tab_names
        for name, button, result in TABS:
            page.get_by_role("tab", name=name).click()
            page.locator(button).click()
            wait_for_result(page, name, result, f"{button.removeprefix('#')}.png")


def test_toy_examples_are_cached_on_first_click(toy_app):
    url, cache, _ = toy_app
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


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the dropdown labelled ``label`` (the first visible one: the open tab's)."""
    page.get_by_label(label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def radio(page, label: str, value: str) -> None:
    """Check ``value`` in the radio group labelled ``label``."""
    group = page.locator("fieldset", has=page.locator("[data-testid='block-info']", has_text=label))
    group.locator(f"input[type='radio'][value='{value}']").check()


def hover_read(page, plot, step: int, series: str) -> dict[str, str]:
    """Hover the plotted point of ``series`` at ``step`` and read the tooltip Vega shows: {field: text}."""
    point = plot.locator(f"[aria-label^='step: {step};'][aria-label*='series: {series}']").first
    box = point.bounding_box()
    assert box, f"no point at step {step} of {series!r} in the plot"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tooltip = page.locator("#vg-tooltip-element")
    tooltip.wait_for(state="visible", timeout=10_000)
    rows = tooltip.locator("tr").evaluate_all(
        "rows => rows.map(r => [r.querySelector('.key')?.innerText ?? '', r.querySelector('.value')?.innerText ?? ''])")
    return {key.strip(): value.strip() for key, value in rows}


def test_compare_with_cfg_and_a_value_read_off_the_diagnostics_plot(toy_app):
    """On Text to image, compare_with=cfg shows the method and plain CFG in the ImageSlider; the per-step diagnostics
    are a native (Vega) plot whose values the browser reads on hover — the same numbers the API returns."""
    url, _, client = toy_app
    with browser_page(url) as page:
        choose(page, "guidance", "perp-cfg")
        radio(page, "compare with", "cfg")
        page.locator("#t2i-run").click()
        slider = page.locator("#t2i-compare img")
        slider.nth(1).wait_for(state="visible", timeout=120_000)
        wait_for_result(page, "Text to image", "#t2i-gallery img", "t2i_compare.png")
        sources = slider.evaluate_all("images => images.map(i => i.src)")
        assert len(sources) == 2 and sources[0] != sources[1], sources  # the method and plain CFG, two images

        block = page.locator(".block", has_text="guidance per step").last
        plot = block.locator("svg.marks")
        plot.wait_for(state="visible", timeout=30_000)
        assert block.locator("img").count() == 0  # drawn in the browser from data, not a server-side picture
        block.scroll_into_view_if_needed()
        read = hover_read(page, plot, 12, "‖Δ⊥‖")
        page.screenshot(path=str(ARTIFACTS / "t2i_plot_hover.png"), full_page=False)
        if os.environ.get("CONDLAB_SCREENSHOT") == "1":
            page.mouse.move(0, 0)
            page.evaluate("window.scrollTo(0, 0)")
            README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(README_SCREENSHOT), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1280, "height": 1400})

    assert read["step"] == "12" and read["series"].startswith("‖Δ⊥‖"), read
    value = float(next(v for k, v in read.items() if k not in ("step", "series")))
    # The same request through the API: the value the browser showed is the one in the plot's data.
    result = client.predict(prompt="a red circle", guidance="perp-cfg", compare_with="cfg", seed=0,
                            api_name="/text_to_image")
    rows = result[1]["data"]
    expected = next(v for step, v, series in rows if step == 12 and series.startswith("‖Δ⊥‖"))
    neighbour = next(v for step, v, series in rows if step == 13 and series.startswith("‖Δ⊥‖"))
    print(f"diagnostics plot, hovered: step 12, ‖Δ⊥‖ = {value} (API: {expected}; step 13: {neighbour})")
    assert abs(value - expected) <= 1e-6 * max(1.0, abs(expected))
    assert abs(neighbour - expected) > 1e-6  # the comparison can fail: the next step's value is another number
