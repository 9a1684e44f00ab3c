"""A small shop (20 products, the size of Shopify's sample shops) in Debian Chromium at a phone's 390 x 844 and a
laptop's 1366 x 900: never a dead end, tiles that show title and price whole, the phone's short header, the tap
that brings the product page into view, no stale "selected" ring, the shop's own name."""

from __future__ import annotations

import os

import pytest
from browsing import opened, wait_status
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
    proc, url = start_app(["--dataset", str(cat), "--shop-name", SHOP_NAME], env)
    yield url, tmp / "cache" / "hunts" / "hunts.jsonl"
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
