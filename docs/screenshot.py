"""Make docs/product-page.png and docs/phone.png: a small test shop, built the way a shop owner builds theirs,
seen in Chromium on a laptop and on a phone.

    python docs/screenshot.py [--out docs/product-page.png] [--width 1366] [--height 900]
                              [--phone-out docs/phone.png] [--phone-width 390] [--phone-height 844]

60 Fashion-MNIST product photos (the demo's shipped subset) are served over local HTTP and listed in a Shopify
product export; `upload_ds.py --products` downloads and embeds them (EfficientNet-Lite0, offline), `app.py`
serves the result, and Chromium (Debian's, via Playwright) picks two products and photographs the product page
beside the gallery (laptop), then, on a phone, picks one and photographs the top of the page (the shop's name,
the search box and the first products), as a shopper opening the shop sees it.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from gradio_http import start_app  # noqa: E402
from shop_files import SHOPIFY_SHORT_HEADER, serve_files, shop_upload_flags, write_csv  # noqa: E402

SHOP_NAME = "Sample Fashion Store"

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
COLOURS = ["Black", "Grey", "Navy", "Olive", "Sand", "White"]


def shop_photos(n: int) -> tuple[dict[str, bytes], list[tuple[str, str, float]]]:
    """n product photos from the demo's subset (PNG, 224 px) and their (handle, title, price)."""
    from catalog.demo import CATEGORIES, DISPLAY_PX, SUBSET_FILE, product_photo

    z = np.load(SUBSET_FILE)
    rows = np.random.default_rng(3).choice(len(z["labels"]), n, replace=False)
    files, products = {}, []
    for k, r in enumerate(rows):
        buf = io.BytesIO()
        product_photo(z["images"][r], DISPLAY_PX).save(buf, "PNG")
        files[f"/photos/{k}.png"] = buf.getvalue()
        category = CATEGORIES[int(z["labels"][r])]
        products.append(
            (
                f"{category.lower().replace('/', '-').replace(' ', '-')}-{k}",
                f"{COLOURS[k % len(COLOURS)]} {category.lower()}",
                round(12 + 7.5 * (k % 9), 2),
            )
        )
    return files, products


def main() -> None:
    """Build the test shop, serve it, and photograph its product page after two picks (see the module doc)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "product-page.png"))
    ap.add_argument("--width", type=int, default=1366)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--phone-out", default=str(ROOT / "docs" / "phone.png"))
    ap.add_argument("--phone-width", type=int, default=390)
    ap.add_argument("--phone-height", type=int, default=844)
    args = ap.parse_args()

    files, products = shop_photos(60)
    server = serve_files(files)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            {
                "Handle": handle,
                "Title": title.capitalize(),
                "Vendor": "Zalando sample",
                "Body (HTML)": f"<p>Our {title}: soft, durable, made to last.</p>",
                "Variant Price": f"{price:.2f}",
                "Type": title.split(" ", 1)[1].capitalize(),
                "Image Src": f"{base}/photos/{k}.png",
                "Image Position": "1",
                "Status": "active",
            }
            for k, (handle, title, price) in enumerate(products)
        ]
        table = write_csv(Path(tmp) / "products_export_1.csv", SHOPIFY_SHORT_HEADER, rows)
        flags = shop_upload_flags(table, "test-shop", "efficientnet-lite0", f"{tmp}/out")
        subprocess.run([sys.executable, str(ROOT / "upload_ds.py"), *flags], check=True, env=env)
        app, url = start_app(
            ["--dataset", f"{tmp}/out/test-shop-embeddings", "--cache-dir", f"{tmp}/cache", "--shop-name", SHOP_NAME],
            env,
        )
        try:
            photograph(url, args.out, (args.width, args.height), picks=2)
            photograph(url, args.phone_out, (args.phone_width, args.phone_height), picks=1)
        finally:
            app.terminate()
            app.wait(timeout=30)
            server.shutdown()
    print(f"saved {args.out} and {args.phone_out}")


def photograph(url: str, out: str, viewport: tuple[int, int], picks: int) -> None:
    """The shop at `url` in a new Chromium at `viewport` after `picks` picks: on a laptop the product page beside
    the gallery; on a phone (640 px or narrower) the top of the page, where a shopper starts."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        page.goto(f"{url}/")
        page.wait_for_function(
            "document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=60_000
        )
        for r in range(1, picks + 1):
            page.locator("#products .thumbnail-item").nth(r).click()
            page.wait_for_function(
                f"document.querySelectorAll('#picks .thumbnail-item').length === {r}", timeout=30_000
            )
        page.wait_for_function("document.querySelector('#product-page .pp-img')?.complete", timeout=30_000)
        if viewport[0] <= 640:
            page.evaluate("window.scrollTo(0, 0)")
        page.mouse.move(1, 1)
        page.wait_for_timeout(1000)
        page.screenshot(path=out, full_page=False)
        browser.close()


if __name__ == "__main__":
    main()
