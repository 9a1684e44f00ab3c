"""A real shopper in Debian Chromium (Playwright): click products for several rounds, watch the page change; the
product page, "This is it", script-bearing titles shown as text, the Settings after a reload, the phone layout."""

from __future__ import annotations

import os
import re

import pytest
from browsing import CONTRAST, captions_of, gallery_srcs, opened, wait_status
from browsing import hunt_records as read_hunt_records
from catalogs import XSS_TITLE, make_catalog, product_columns
from gradio_http import start_app
from helpers import caption_parts

from catalog.catalog import price_text

HUNT_LOG: dict = {}


def hunt_records() -> list[dict]:
    return read_hunt_records(HUNT_LOG["path"])


SHOP_NAME = "Ada's <b>Shoes</b> & more"  # markup in a name is shown as text


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    cat = make_catalog(tmp / "catalog", n=80, products=True)
    env = {**os.environ, "APP_LOG": str(tmp / "app.log"), "CACHE_DIR": str(tmp / "cache")}
    proc, url = start_app(["--dataset", str(cat), "--shop-name", SHOP_NAME, "--strategy", "mean"], env)
    HUNT_LOG["path"] = tmp / "cache" / "hunts" / "catalog.jsonl"  # the default place: the catalog folder's name
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_shopper_clicks_through_rounds(browser, shop, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(shop)
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=30_000)
    assert page.title() == SHOP_NAME and page.inner_text("#shop-name h2") == SHOP_NAME  # the owner's name, as text
    assert "Round 1" in page.inner_text("#status")
    seen = set(gallery_srcs(page, "products"))
    for r in range(1, 5):
        before = gallery_srcs(page, "products")
        index = 0 if r == 2 else r % 10  # rounds 2 and 3 click the same position twice in a row
        page.locator("#products .thumbnail-item").nth(index if r != 3 else 0).click()
        page.wait_for_function(
            f"document.querySelectorAll('#picks .thumbnail-item img').length === {r}", timeout=15_000
        )
        page.wait_for_function(f"document.querySelector('#status').innerText.includes('Round {r + 1}')", timeout=15_000)
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
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=30_000)
    for r in range(1, 3):
        page.locator("#products .thumbnail-item").nth(r).click()
        page.wait_for_function(
            f"document.querySelectorAll('#picks .thumbnail-item img').length === {r}", timeout=15_000
        )
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 3')", timeout=15_000)
    gallery, picks = gallery_srcs(page, "products"), gallery_srcs(page, "picks")
    page.reload()
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 2", timeout=30_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 3')", timeout=15_000)
    assert gallery_srcs(page, "picks") == picks and gallery_srcs(page, "products") == gallery
    page.locator("#products .thumbnail-item").nth(0).click()
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 3", timeout=15_000)
    assert "Round 4" in page.inner_text("#status")
    page.get_by_text("How products are chosen, and your results").click()  # the catalog's line is folded there
    assert "80 products" in page.inner_text("#catalog")
    context.close()


def test_shopper_types_what_they_want(browser, shop):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(shop)
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=30_000)
    before = gallery_srcs(page, "products")
    box = page.locator("#search textarea, #search input").first
    box.fill("round")
    box.press("Enter")
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes(\"products match 'round'\")", timeout=15_000
    )
    after = gallery_srcs(page, "products")
    assert len(after) == 10 and after != before  # round lamps shown before may come again, marked so
    captions = page.eval_on_selector_all("#products .caption-label", "els => els.map(e => e.innerText)")
    titles = [caption_parts(c)[0] for c in captions[:5]]
    assert all(t.startswith(("★ Round lamp", "★ A remarkably")) for t in titles), captions
    box.fill("xyz")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function(
        "document.querySelector('#status').innerText.includes(\"No product matches 'xyz'\")", timeout=15_000
    )
    assert gallery_srcs(page, "products") == after
    page.get_by_role("button", name="Start over").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Round 1')", timeout=15_000)
    assert box.input_value() == ""
    page.close()


def test_product_page_this_is_it_and_titles_as_text(browser, shop):
    """Captions (no marks before a pick), a script-bearing title found by its words and opened on the product page,
    the shop link, "This is it" and "Start a new search"; the title stays text everywhere and no dialog opens."""
    context, page, dialogs = opened(browser, shop)
    captions = captions_of(page)
    assert not any(c[0] in "★✦" for c in captions), captions  # nothing to explain before the first pick
    prices = product_columns(80)["price"]
    rows = [int(re.search(r"r(\d+)-", src).group(1)) for src in gallery_srcs(page, "products")]
    assert [caption_parts(c)[1] for c in captions] == [price_text(prices[r], "EUR") for r in rows], captions
    xss = f"{XSS_TITLE}\n{price_text(prices[1], 'EUR')}"
    assert "Pick a product to see it here" in page.inner_text("#product-page")
    assert not page.locator("#this-is-it").is_visible()
    searched = xss not in captions  # else it is in the first gallery already
    if searched:
        box = page.locator("#search textarea, #search input").first
        box.fill("onerror")
        box.press("Enter")
        wait_status(page, "1 product matches 'onerror'")
        captions = captions_of(page)
        assert captions[0].startswith(f"★ {xss}"), captions  # the literal characters, marked as a match
    page.locator("#products .thumbnail-item").nth(next(i for i, c in enumerate(captions) if xss in c)).click()
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 1", timeout=15_000)
    page.wait_for_function(f"document.querySelector('#product-page h3')?.innerText === {XSS_TITLE!r}", timeout=15_000)
    details = page.inner_text("#product-page")
    assert price_text(prices[1], "EUR") in details and "Acme" in details and "<b>Not bold</b> & plain text." in details
    assert page.locator("#product-page img[src='x']").count() == 0
    shown = page.locator("#product-page .pp-img").evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width]")
    tile = page.eval_on_selector("#products .thumbnail-item img", "e => e.getBoundingClientRect().width")
    assert shown[0] == 256 and shown[1] > 1.2 * tile  # the 48 px picture's own tile file, drawn larger
    link = page.get_by_role("link", name="View in shop")
    assert link.get_attribute("href") == "https://shop.example/products/p001"
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener noreferrer"
    assert captions_of(page, "picks") == [xss]
    before = len(hunt_records())
    page.get_by_role("button", name="This is it").click()
    wait_status(page, "This is it:")
    rounds = 2 if searched else 1
    wait_status(page, f"This is it: {XSS_TITLE}, found in {rounds} round")
    assert f"found in {rounds} round" in page.inner_text("#product-page")
    assert page.locator("#new-search").is_visible() and not page.locator("#this-is-it").is_visible()
    assert not page.locator("#products").is_visible()  # the hunt is over: no more rounds to click
    page.get_by_text("How products are chosen, and your results").click()
    page.wait_for_function(f"document.querySelector('#results')?.innerText.includes({XSS_TITLE!r})", timeout=15_000)
    page.get_by_role("button", name="Start a new search").click()
    wait_status(page, "Round 1")
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=15_000)
    assert "Pick a product to see it here" in page.inner_text("#product-page")
    assert XSS_TITLE in page.inner_text("#results")  # the result is kept
    found = hunt_records()[before:]
    assert [(r["ended"], r["found"]) for r in found] == [("found", "p001")]  # one record, and no second one
    assert found[0]["rounds"][0]["words"] == ("onerror" if searched else None)
    assert found[0]["rounds"][rounds - 1]["pick"] == "p001"
    assert dialogs == [], dialogs
    context.close()


def wait_product_page(page, caption: str) -> None:
    """Wait until the product page shows the product of a tile's `caption` (title and price; a title over 40
    characters is cut there with an ellipsis, the product page shows it whole)."""
    title = caption_parts(caption)[0]
    check = "h => h.startsWith(t.slice(0, -1))" if title.endswith("…") else "h => h === t"
    page.wait_for_function(
        f"t => ({check})(document.querySelector('#product-page h3')?.innerText ?? '')", arg=title, timeout=15_000
    )


def test_picks_open_the_product_page_without_a_round(browser, shop):
    context, page, _ = opened(browser, shop)
    for r in (1, 2):
        page.locator("#products .thumbnail-item").nth(3).click()
        page.wait_for_function(
            f"document.querySelectorAll('#picks .thumbnail-item img').length === {r}", timeout=15_000
        )
        wait_status(page, f"Round {r + 1}")
    picked = captions_of(page, "picks")  # what was picked, as the page says it (a products caption may be stale)
    assert len(picked) == 2
    wait_product_page(page, picked[1])
    gallery = gallery_srcs(page, "products")
    page.locator("#picks .thumbnail-item").nth(0).click()
    wait_product_page(page, picked[0])
    assert "Round 3" in page.inner_text("#status") and gallery_srcs(page, "products") == gallery
    context.close()


def checked_strategy(page) -> str:
    return page.eval_on_selector("#strategy input:checked", "e => e.value")


def test_strategy_control_shows_the_session_after_reload(browser, shop):
    context, page, _ = opened(browser, shop)
    page.get_by_text("How products are chosen, and your results").click()
    page.locator("#strategy label", has_text="bayes:").click()
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=15_000)
    page.locator("#products .thumbnail-item").nth(0).click()
    wait_status(page, "Round 2")
    page.wait_for_function(
        "document.querySelector('#strategy-note').innerText.includes('Following:')", timeout=15_000
    )  # the catalog has no appearance column: it was computed at load
    assert "Following" not in page.inner_text("#status") and "bayes" not in page.inner_text("#status")
    page.reload()
    wait_status(page, "Round 2")
    page.get_by_text("How products are chosen, and your results").click()
    page.wait_for_function("document.querySelector('#strategy input:checked')?.value === 'bayes'", timeout=15_000)
    before = len(hunt_records())
    page.get_by_role("button", name="Start over").click()
    wait_status(page, "Round 1")
    over = hunt_records()[before:]
    assert [(r["ended"], r["strategy"], r["strategy_from"]) for r in over] == [("started_over", "bayes", "shopper")]
    page.locator("#products .thumbnail-item").nth(0).click()
    wait_status(page, "Round 2")
    page.wait_for_function(
        "document.querySelector('#strategy-note').innerText.includes('Following:')", timeout=15_000
    )  # Start over kept bayes
    assert checked_strategy(page) == "bayes"
    context.close()


SIDEWAYS = """() => [...document.querySelectorAll('*')].filter(e => {
    const s = getComputedStyle(e);
    return e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(s.overflowX);
}).map(e => e.id || e.className)"""
TILES = """() => [...document.querySelectorAll('#products .thumbnail-item')].map(e => {
    const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })"""


def test_phone_and_desktop_layout(browser, shop):
    """At 390x844 two columns and nothing scrolls sideways; at 1366x900 five; a hovered tile does not look picked;
    the target of Find a product is drawn at tile size."""
    context, page, _ = opened(browser, shop, (390, 844))
    page.locator("#products .thumbnail-item").nth(0).click()
    wait_status(page, "Round 2")
    page.wait_for_function("document.querySelector('#product-page h3') !== null", timeout=15_000)
    page.evaluate("window.scrollTo(0, 0)")  # the tap brought the product page into view; the tiles are above
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate(SIDEWAYS) == []
    tiles = page.evaluate(TILES)
    assert len({round(t[1]) for t in tiles}) == 5  # 10 tiles in rows of 2
    inside = [t for t in tiles if t[2] >= 120 and t[0] >= 0 and t[0] + t[2] <= 390 and t[1] >= 0 and t[1] + t[3] <= 844]
    assert len(inside) >= 2, tiles
    for caption in page.eval_on_selector_all("#products .cap-title", "els => els.map(e => e.clientHeight)"):
        assert caption >= 14  # a readable line, under the picture
    context.close()
    context, page, _ = opened(browser, shop, (1366, 900))
    tiles = page.evaluate(TILES)
    assert len({round(t[1]) for t in tiles}) == 2 and len(tiles) == 10
    for top in {round(t[1]) for t in tiles}:
        assert sum(round(t[1]) == top for t in tiles) == 5
    caption_top = page.eval_on_selector("#products .cap", "e => e.getBoundingClientRect().top")
    picture_bottom = page.eval_on_selector("#products .thumbnail-item img", "e => e.getBoundingClientRect().bottom")
    assert caption_top >= picture_bottom - 1  # the caption is under the picture, not over it
    look = "els => els.slice(0, 2).map(e => [getComputedStyle(e).borderColor, getComputedStyle(e).filter])"
    page.locator("#products .thumbnail-item").nth(0).hover()
    hovered, plain = page.eval_on_selector_all("#products .thumbnail-item", look)
    assert hovered == plain  # hovering lifts a tile a little; it does not take on the picked look
    page.get_by_role("button", name="Find a product").click()
    page.wait_for_function("document.querySelector('#target img') !== null", timeout=15_000)
    page.wait_for_timeout(300)
    target = page.eval_on_selector("#target img", "e => e.getBoundingClientRect().height")
    tile = page.eval_on_selector("#products .thumbnail-item img", "e => e.getBoundingClientRect().height")
    assert 0.8 <= target / tile <= 1.25, (target, tile)
    context.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_product_page_reads_in_full_and_every_text_has_contrast(browser, shop, theme):
    """A long description folds under a visible "more" that opens it in full; every text of the product page, and
    every button of the page once the hunt ends, has a contrast of at least 4.5:1 against its background (WCAG
    AA), in the light and the dark theme."""
    context, page, _ = opened(browser, f"{shop}/?__theme={theme}")
    srcs = gallery_srcs(page, "products")
    index = next((i for i, s in enumerate(srcs) if int(re.search(r"r(\d+)-", s).group(1)) % 5 == 4), None)
    if index is None:  # no long description in this first gallery: the next one
        page.locator("#products .thumbnail-item").nth(0).click()
        wait_status(page, "Round 2")
        srcs = gallery_srcs(page, "products")
        index = next(i for i, s in enumerate(srcs) if int(re.search(r"r(\d+)-", s).group(1)) % 5 == 4)
    page.locator("#products .thumbnail-item").nth(index).click()
    page.wait_for_selector("#product-page details.pp-more summary", timeout=15_000)
    assert not page.get_by_text("The last words of a long description.").is_visible()
    page.locator("#product-page details.pp-more summary").click()
    assert page.get_by_text("The last words of a long description.").is_visible()
    ratios = page.eval_on_selector_all(
        "#product-page p, #product-page h3, #product-page summary, #product-page a", CONTRAST
    )
    assert ratios and all(r >= 4.5 for _, r in ratios), ratios
    page.get_by_role("button", name="This is it").click()  # the hunt's end shows "Start a new search"
    page.wait_for_selector("#new-search", state="visible", timeout=15_000)
    ratios = page.eval_on_selector_all("button, footer a", CONTRAST)  # every button and link that shows, Gradio's too
    assert len(ratios) >= 4 and all(r >= 4.5 for _, r in ratios), [x for x in ratios if x[1] < 4.5]
    context.close()


def test_screen_readers_hear_titles_and_prices_and_tab_enter_picks(browser, shop):
    """Each tile's accessible name is its caption (title and price, not "Thumbnail 1 of 10"); the status line is
    a polite live region; Tab to a tile and Enter picks it."""
    context, page, _ = opened(browser, shop)
    captions = captions_of(page)
    names = page.eval_on_selector_all("#products .thumbnail-item", "els => els.map(e => e.getAttribute('aria-label'))")
    assert names == [", ".join(c.split("\n")) for c in captions] and all(caption_parts(c)[1] for c in captions)
    assert page.get_by_role("button", name=names[2], exact=True).count() == 1
    status = page.locator("#status")
    assert status.get_attribute("aria-live") == "polite" and status.get_attribute("role") == "status"
    page.locator("#products .thumbnail-item").nth(2).focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#picks .thumbnail-item img').length === 1", timeout=15_000)
    wait_status(page, "Round 2")
    page.wait_for_function(
        "[...document.querySelectorAll('#products .thumbnail-item')].every("
        "e => e.getAttribute('aria-label') === e.querySelector('.caption-label')?.innerText.split('\\n').join(', '))",
        timeout=15_000,
    )
    context.close()
