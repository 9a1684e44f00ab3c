"""A small shop (20 products, the size of Shopify's sample shops) in Debian Chromium at a phone's 390 x 844 and a
laptop's 1366 x 900: never a dead end, tiles that show title and price whole, the phone's short header, the tap
that brings the product page into view, no stale "selected" ring, the shop's own name."""

from __future__ import annotations

import os
import re

import pytest
from browsing import CONTRAST, captions_of, gallery_srcs, hunt_records, opened, wait_status
from catalogs import make_catalog
from gradio_http import start_app
from helpers import caption_parts, seen_before

N = 20
SHOP_NAME = "Lumen & <i>Co</i> lamps"  # markup in a name is shown as text
PHONE, LAPTOP = (390, 844), (1366, 900)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small-shop")
    cat = make_catalog(tmp / "catalog", n=N, products=True)
    env = {**os.environ, "APP_LOG": str(tmp / "app.log"), "CACHE_DIR": str(tmp / "cache")}
    hunts = tmp / "hunts.jsonl"
    proc, url = start_app(["--dataset", str(cat), "--shop-name", SHOP_NAME, "--hunt-log", str(hunts)], env)
    yield url, hunts
    proc.terminate()
    proc.wait(timeout=20)


# Per tile: what of its price or title is outside its box or cut ("" when all is inside and whole).
TILES_WHOLE = """() => [...document.querySelectorAll('#products .thumbnail-item')].map(tile => {
  const box = tile.getBoundingClientRect(), out = [];
  for (const part of ['.cap-title', '.cap-price']) {
    const e = tile.querySelector(part), r = e?.getBoundingClientRect();
    if (!e || !r.width || !r.height) { out.push(`no ${part}`); continue; }
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
      out.push(`${part} ${e.textContent} outside its tile`);
    if (part === '.cap-price' && (e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1))
      out.push(`${e.textContent} cut`);
    if (part === '.cap-title' && r.height > 2.7 * parseFloat(getComputedStyle(e).lineHeight))
      out.push(`${e.textContent} on more than two lines`);
  }
  return out.join('; ');
})"""
LOOKS = "els => els.map(e => [getComputedStyle(e).borderColor, getComputedStyle(e).boxShadow].join(' '))"
NAMED = (
    "[...document.querySelectorAll('#products .thumbnail-item')].every("
    "e => e.getAttribute('aria-label') === e.querySelector('.caption-label')?.innerText.split('\\n').join(', '))"
)
PAGE_IN_VIEW = (
    "(() => { const t = document.getElementById('product-page').getBoundingClientRect().top;"
    " return t > -2 && t < window.innerHeight - 100; })()"
)
# The phone's header: how far down the search box and the first tile start, and whether the placeholder fits.
HEADER = """() => {
  const box = document.querySelector('#search input, #search textarea');
  const value = box.value;
  box.value = box.placeholder;  // its width as text; no input event, so the page does not search
  const fits = box.scrollWidth <= box.clientWidth;
  box.value = value;
  const top = e => e.getBoundingClientRect().top + window.scrollY;
  return {search: top(document.getElementById('search')), tile: top(document.querySelector('#products img')),
          fits, placeholder: box.placeholder};
}"""


@pytest.mark.slow
def test_thirty_rounds_on_a_phone_then_a_laptop(browser, shop):
    """30 rounds, the first 15 at 390 x 844, then 15 at 1366 x 900 in the same page: each round ten products with
    title and price whole inside their tiles, named by their captions, none with the "selected" look; from the
    third round (20 products, 10 a round) each marked "seen before"; on the phone the tap brought the product
    page into view; the header is the shop's name, and on the phone the search box and products come first."""
    url, _ = shop
    context, page, _ = opened(browser, url, PHONE)
    assert page.title() == SHOP_NAME and page.inner_text("#shop-name h2") == SHOP_NAME
    header = page.evaluate(HEADER)
    assert header["search"] <= 170 and header["tile"] <= 320 and header["fits"], header
    for r in range(1, 31):
        if r == 16:
            page.set_viewport_size({"width": LAPTOP[0], "height": LAPTOP[1]})
        phone = r < 16
        if phone:
            page.evaluate("window.scrollTo(0, 0)")
        page.locator("#products .thumbnail-item").nth(3 * r % 10).click()
        wait_status(page, f"Round {r + 1} ")
        page.wait_for_function(NAMED, timeout=15_000)
        if phone:
            page.wait_for_function(PAGE_IN_VIEW, timeout=15_000)
        page.mouse.move(1, 1)  # no hover look either
        captions = page.eval_on_selector_all("#products .caption-label", "els => els.map(e => e.innerText)")
        assert len(captions) == 10 and all(caption_parts(c)[1] for c in captions), (r, captions)
        assert page.evaluate(TILES_WHOLE) == [""] * 10, (r, page.evaluate(TILES_WHOLE))
        looks = page.eval_on_selector_all("#products .thumbnail-item", LOOKS)
        assert len(set(looks)) == 1, (r, looks)
        names = page.eval_on_selector_all("#products .thumbnail-item", "els => els.map(e => e.ariaLabel)")
        assert all(caption_parts(c)[0] in name for c, name in zip(captions, names)), names
        if r >= 2:  # rounds 1 and 2 showed all 20
            assert all(seen_before(c) for c in captions), (r, captions)
            assert f"seen all {N} products" in page.inner_text("#status")
    assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP[0]
    context.close()


def test_view_in_shop_is_the_main_action_and_ends_the_hunt_as_found(browser, shop):
    """On a phone, after a tap: the product page in view with *View in shop* as its main action (a button-looking
    link opening the shop's page in a new tab, noopener noreferrer; *This is it* below it), every text of the page
    at a contrast of 4.5:1 or more; following the link ends the hunt as found, one record in the hunt log."""
    url, hunts = shop
    context, page, dialogs = opened(browser, url, PHONE)
    context.route("https://shop.example/**", lambda route: route.fulfill(body="<title>the shop</title>"))
    rows = [int(re.search(r"r(\d+)-", src).group(1)) for src in gallery_srcs(page, "products")]
    page.locator("#products .thumbnail-item").nth(next(i for i, r in enumerate(rows) if r != 2)).click()  # 2: no link
    wait_status(page, "Round 2 ")
    link = page.locator("#product-page a.pp-shop")
    link.wait_for(timeout=15_000)
    page.wait_for_function(PAGE_IN_VIEW, timeout=15_000)
    href, product = link.get_attribute("href"), link.get_attribute("data-product")
    assert href == f"https://shop.example/products/{product}" and link.is_visible()
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener noreferrer"
    look = link.evaluate("e => [getComputedStyle(e).backgroundColor, e.getBoundingClientRect().height]")
    assert look[0] not in ("rgba(0, 0, 0, 0)", "transparent") and look[1] >= 36, look  # a button, not a bare link
    box, second = link.bounding_box(), page.locator("#this-is-it").bounding_box()
    assert box["y"] + box["height"] <= second["y"] and box["y"] < PHONE[1], (box, second)  # first, and in view
    ratios = page.eval_on_selector_all(
        "#product-page p, #product-page h3, #product-page summary, #product-page a", CONTRAST
    )
    assert ratios and all(r >= 4.5 for _, r in ratios), ratios
    before = len(hunt_records(hunts))
    with context.expect_page() as opened_tab:
        link.click()
    assert opened_tab.value.url == href
    wait_status(page, "You opened")
    found = hunt_records(hunts)[before:]
    assert [(r["ended"], r["found"], r["rounds"][0]["pick"]) for r in found] == [("found", product, product)]
    assert "Opened in the shop: found in 1 round" in page.inner_text("#product-page")
    assert page.locator("#new-search").is_visible() and not page.locator("#this-is-it").is_visible()
    link.click()  # again: the hunt has ended, nothing more is written
    page.wait_for_timeout(500)
    assert len(hunt_records(hunts)) == before + 1 and dialogs == []
    context.close()


def test_a_search_for_a_product_already_shown_brings_it_back(browser, shop):
    """After a round, typing the title of a product from the first gallery brings it back, marked as a match and
    as seen before, and the status says how many products match."""
    url, _ = shop
    context, page, _ = opened(browser, url, LAPTOP)
    first = page.eval_on_selector_all("#products .caption-label", "els => els.map(e => e.innerText)")
    title = caption_parts(first[7])[0]
    page.locator("#products .thumbnail-item").nth(0).click()
    wait_status(page, "Round 2 ")
    assert title not in [caption_parts(c)[0].lstrip("★ ") for c in captions_of(page)]  # the seed's rule
    box = page.locator("#search textarea, #search input").first
    box.fill(title)
    box.press("Enter")
    page.wait_for_function("/products? match/.test(document.querySelector('#status').innerText)", timeout=15_000)
    back = [c for c in captions_of(page) if caption_parts(c)[0].lstrip("★ ") == title]
    assert len(back) == 1 and caption_parts(back[0])[0].startswith("★") and seen_before(back[0]), captions_of(page)
    assert re.search(r"\b\d+ products? match", page.inner_text("#status"))
    context.close()
