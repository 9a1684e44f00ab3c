"""A real shopper in Debian Chromium (Playwright): click products for several rounds, watch the page change."""

from __future__ import annotations

import os
import shutil

import pytest
from catalogs import make_catalog
from gradio_http import start_app

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium): browser test not run")
    with playwright.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:  # noqa: BLE001 - only a browser that truly cannot start skips
            pytest.skip(f"Chromium could not start: {exc}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    cat = make_catalog(tmp / "catalog", n=80)
    env = {**os.environ, "APP_LOG": str(tmp / "app.log"), "CACHE_DIR": str(tmp / "cache")}
    proc, url = start_app(["--dataset", str(cat)], env)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def gallery_srcs(page, elem_id: str) -> list[str]:
    return page.eval_on_selector_all(f"#{elem_id} .thumbnail-item img", "els => els.map(e => e.src)")


def test_shopper_clicks_through_rounds(browser, shop, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(shop)
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10",
                           timeout=30_000)
    assert "Round 1" in page.inner_text("#status")
    seen = set(gallery_srcs(page, "products"))
    for r in range(1, 5):
        before = gallery_srcs(page, "products")
        index = 0 if r == 2 else r % 10  # rounds 2 and 3 click the same position twice in a row
        page.locator("#products .thumbnail-item").nth(index if r != 3 else 0).click()
        page.wait_for_function(
            f"document.querySelectorAll('#picks .thumbnail-item img').length === {r}", timeout=15_000)
        page.wait_for_function(f"document.querySelector('#status').innerText.includes('Round {r + 1}')",
                               timeout=15_000)
        after = gallery_srcs(page, "products")
        assert len(after) == 10 and after != before
        assert not seen & set(after), "the gallery showed a product again"
        seen |= set(after)
        picks = gallery_srcs(page, "picks")
        assert len(picks) == r and picks[-1] in before
        captions = page.eval_on_selector_all("#products .caption-label", "els => els.map(e => e.innerText)")
        assert sum(c.startswith("★") for c in captions) == 5
    shot = tmp_path / "shop.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot saved to {shot}")
    page.get_by_role("button", name="Start over").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 1')", timeout=15_000)
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 0", timeout=15_000)
    page.close()


def test_reload_keeps_the_shoppers_place(browser, shop):
    """Picks survive a page reload in the same browser (gr.BrowserState), then shopping goes on from there."""
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    page.goto(shop)
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10",
                           timeout=30_000)
    for r in range(1, 3):
        page.locator("#products .thumbnail-item").nth(r).click()
        page.wait_for_function(f"document.querySelectorAll('#picks .thumbnail-item img').length === {r}",
                               timeout=15_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 3')", timeout=15_000)
    gallery, picks = gallery_srcs(page, "products"), gallery_srcs(page, "picks")
    page.reload()
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 2", timeout=30_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 3')", timeout=15_000)
    assert gallery_srcs(page, "picks") == picks and gallery_srcs(page, "products") == gallery
    page.locator("#products .thumbnail-item").nth(0).click()
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 3", timeout=15_000)
    assert "Round 4" in page.inner_text("#status")
    assert "80 products" in page.inner_text("#catalog")
    context.close()


def test_shopper_types_what_they_want(browser, shop):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(shop)
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10",
                           timeout=30_000)
    before = gallery_srcs(page, "products")
    box = page.locator("#search textarea, #search input").first
    box.fill("round")
    box.press("Enter")
    page.wait_for_function("document.querySelector('#status').innerText.includes(\"Searching 'round' by names\")",
                           timeout=15_000)
    after = gallery_srcs(page, "products")
    assert len(after) == 10 and not set(after) & set(before)
    captions = page.eval_on_selector_all("#products .caption-label", "els => els.map(e => e.innerText)")
    assert all(c.startswith("★ match · round") for c in captions[:5]), captions
    box.fill("xyz")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes(\"No product matches 'xyz'\")",
                           timeout=15_000)
    assert gallery_srcs(page, "products") == after
    page.get_by_role("button", name="Start over").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 1')", timeout=15_000)
    assert box.input_value() == ""
    page.close()
