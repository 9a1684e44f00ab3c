"""What the Chromium tests share (tests/test_browser.py, tests/test_browser_shop.py): Debian's Chromium started
by Playwright, a page opened on a shop, and reading what the page shows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> Iterator:
    """Debian's Chromium under Playwright (the `browser` fixture); skips when it is not installed or cannot start."""
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


def opened(browser, shop: str, viewport: tuple[int, int] = (1366, 900)):
    """A new browser context on the shop at `shop`, once its first gallery shows: (context, page, dialogs seen)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(shop)
    page.wait_for_function("document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=30_000)
    return context, page, dialogs


def wait_status(page, text: str) -> None:
    page.wait_for_function(f"document.querySelector('#status')?.innerText.includes({text!r})", timeout=30_000)


def captions_of(page, elem_id: str = "products") -> list[str]:
    return page.eval_on_selector_all(f"#{elem_id} .caption-label", "els => els.map(e => e.innerText)")


def gallery_srcs(page, elem_id: str) -> list[str]:
    return page.eval_on_selector_all(f"#{elem_id} .thumbnail-item img", "els => els.map(e => e.src)")


def hunt_records(path: Path) -> list[dict]:
    """The records of the hunt log at `path` (none before its first)."""
    from common.huntlog import read_records

    return list(read_records([path])) if path.exists() else []


# Each text's contrast against the first opaque background up the tree (WCAG's relative luminance).
CONTRAST = """els => els.filter(e => e.innerText.trim() && e.getClientRects().length).map(e => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lin = v => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  let bg = e, back = null;
  while (bg && !back) {  // the first background that is not transparent, up the tree
    const c = rgb(getComputedStyle(bg).backgroundColor);
    if (c.length === 3 || c[3] > 0) back = c.slice(0, 3);
    bg = bg.parentElement;
  }
  const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(back || [255, 255, 255])];
  return [e.className || e.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
})"""
