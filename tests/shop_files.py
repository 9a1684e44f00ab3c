"""A small test shop: product photos served over local HTTP (with a 404, a slow, an oversized and a non-image
URL), and the same products as a Shopify export, a WooCommerce export and plain tables. The benches and
docs/screenshot.py build their shops with `serve_files` and `write_csv` too; docs/screenshot.py uploads its shop with
`shop_upload_flags`, as the tests do."""

from __future__ import annotations

import contextlib
import csv
import http.server
import io
import mimetypes
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHOPIFY_HEADER = [  # the columns of Shopify's product export (2024), two metafields among them
    "Handle",
    "Title",
    "Body (HTML)",
    "Vendor",
    "Product Category",
    "Type",
    "Tags",
    "Published",
    "Option1 Name",
    "Option1 Value",
    "Option1 Linked To",
    "Option2 Name",
    "Option2 Value",
    "Option2 Linked To",
    "Option3 Name",
    "Option3 Value",
    "Option3 Linked To",
    "Variant SKU",
    "Variant Grams",
    "Variant Inventory Tracker",
    "Variant Inventory Qty",
    "Variant Inventory Policy",
    "Variant Fulfillment Service",
    "Variant Price",
    "Variant Compare At Price",
    "Variant Requires Shipping",
    "Variant Taxable",
    "Variant Barcode",
    "Image Src",
    "Image Position",
    "Image Alt Text",
    "Gift Card",
    "SEO Title",
    "SEO Description",
    "Google Shopping / Google Product Category",
    "Google Shopping / Gender",
    "Color (product.metafields.shopify.color-pattern)",
    "Hair length (product.metafields.custom.length)",
    "Variant Image",
    "Variant Weight Unit",
    "Variant Tax Code",
    "Cost per item",
    "Status",
]
SHOPIFY_SHORT_HEADER = [
    "Handle",
    "Title",
    "Body (HTML)",
    "Vendor",
    "Type",
    "Variant Price",
    "Image Src",
    "Image Position",
    "Status",
]  # the columns a Shopify export needs, and a few more
WOO_HEADER = [  # the columns of WooCommerce's product export, two attributes among them
    "ID",
    "Type",
    "SKU",
    "Name",
    "Published",
    "Is featured?",
    "Visibility in catalog",
    "Short description",
    "Description",
    "Tax status",
    "In stock?",
    "Stock",
    "Sale price",
    "Regular price",
    "Categories",
    "Tags",
    "Images",
    "Parent",
    "Grouped products",
    "External URL",
    "Button text",
    "Position",
    "Attribute 1 name",
    "Attribute 1 value(s)",
    "Attribute 1 visible",
    "Attribute 1 global",
    "Attribute 2 name",
    "Attribute 2 value(s)",
    "Attribute 2 visible",
    "Attribute 2 global",
]


def photo(seed: int, size: int = 40) -> bytes:
    """A distinct product photo (PNG bytes): a coloured shape on white."""
    rng = np.random.default_rng(seed)
    arr = np.full((size, size, 3), 255, np.uint8)
    y0, x0 = rng.integers(0, size // 2, 2)
    arr[y0 : y0 + size // 2, x0 : x0 + size // 2] = rng.integers(0, 200, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


class PhotoServer:
    """A local HTTP server: /p/<n>.png photos, /missing.png (404), /slow.png (past any short timeout),
    /huge.png (bigger than the size limit), /notes.png (text). Counts the requests per path."""

    def __init__(self, n: int = 8, slow_s: float = 5.0, huge_bytes: int = 3 << 20) -> None:
        self.hits: dict[str, int] = {}
        photos = {f"/p/{i}.png": photo(i) for i in range(n)}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path in photos:
                    self._send(photos[self.path], "image/png")
                elif self.path == "/slow.png":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    for _ in range(int(slow_s * 10)):
                        try:
                            self.wfile.write(b"\x89PNG"[:1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.1)
                elif self.path == "/huge.png":
                    self._send(b"\x89PNG\r\n\x1a\n" + b"\0" * huge_bytes, "image/png")
                elif self.path == "/notes.png":
                    self._send(b"these are not the pictures you are looking for", "text/plain")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        """The address of `name` (e.g. /p/3.png) on this server."""
        return f"{self.base}{name}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_files(files: dict[str, bytes], latency_s: float = 0.0) -> http.server.ThreadingHTTPServer:
    """A local HTTP server (already serving, in a thread) of `files` by path, each answer `latency_s` late as a far
    server's would be; stop it with `shutdown()`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            time.sleep(latency_s)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", mimetypes.guess_type(self.path)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_csv(path: Path, header: list[str], rows: list[dict]) -> Path:
    """`rows` as a CSV table with `header` (a column a row lacks is left empty); returns `path`."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        for row in rows:
            writer.writerow({h: row.get(h, "") for h in header})
    return path


def shop_upload_flags(table: Path | str, repo: str, model: str, out: Path | str, *more: str) -> list[str]:
    """upload_ds.py's flags for a Shopify export of https://shop.example in EUR: saved under `out`, not pushed; its
    pictures are fetched from this machine's local server (--allow-private-urls)."""
    shop = ["--products", str(table), "--shop-url", "https://shop.example", "--currency", "EUR", "--allow-private-urls"]
    return [*shop, "--repo", repo, "--model", model, "--no-push", "--out", str(out), *more]


COLOR = "Color (product.metafields.shopify.color-pattern)"
LENGTH = "Hair length (product.metafields.custom.length)"


def shopify_export(path: Path, server: PhotoServer) -> Path:
    """Seven products in eleven rows, as Shopify exports them: a dress with three sizes at different prices, a
    compare-at price, metafields and three images on rows of their own (out of position order); a shirt whose
    first image is gone (404) and its second is there; a draft; a product whose only image is gone; a gift card;
    a "Shipping Protection by Route" add-on (type Insurance); a free sample (price 0)."""

    def product(handle: str, title: str, kind: str, price: str, image: str, **more: str) -> dict:
        row = {"Handle": handle, "Title": title, "Vendor": "Acme", "Type": kind, "Published": "true"}
        row |= {"Option1 Name": "Title", "Option1 Value": "Default Title", "Variant Price": price}
        row |= {"Variant Inventory Policy": "deny", "Variant Fulfillment Service": "manual", "Gift Card": "false"}
        return row | {"Image Src": server.url(image), "Image Position": "1", "Status": "active"} | more

    dress = {
        "Handle": "red-dress",
        "Title": "Red <b>summer</b> dress",
        "Body (HTML)": "<p>Light &amp; airy.</p><ul><li>Cotton</li></ul><script>alert(1)</script>",
        "Vendor": "Acme",
        "Product Category": "Apparel & Accessories > Clothing > Dresses",
        "Type": "Dresses",
        "Tags": "red, summer, women",
        "Published": "true",
        "Option1 Name": "Size",
        "Option1 Value": "S",
        "Option2 Name": "Color",
        "Option2 Value": "Red",
        "Variant SKU": "RD-S",
        "Variant Price": "52.00",
        "Variant Compare At Price": "59.90",
        "Image Src": server.url("/p/1.png"),
        "Image Position": "2",
        "Gift Card": "false",
        COLOR: "Red; Natural Black",
        LENGTH: "16 in",
        "Status": "active",
    }
    rows = [
        dress,
        {"Handle": "red-dress", "Option1 Value": "M", "Option2 Value": "Red", "Variant SKU": "RD-M"}
        | {"Variant Price": "49.90", "Image Src": server.url("/p/0.png"), "Image Position": "1"},
        {"Handle": "red-dress", "Option1 Value": "L", "Option2 Value": "Red", "Variant SKU": "RD-L"}
        | {"Variant Price": "55.00", "Variant Image": server.url("/p/0.png")},
        {"Handle": "red-dress", "Image Src": server.url("/p/2.png"), "Image Position": "3"},
        product("blue-shirt", "Blue shirt", "Shirts", "19", "/missing.png")
        | {"Body (HTML)": "Plain.", "Variant Compare At Price": "15", COLOR: "Natural Black"},
        {"Handle": "blue-shirt", "Image Src": server.url("/p/3.png"), "Image Position": "2"},
        product("old-hat", "Old hat", "Hats", "5", "/p/4.png", Status="draft"),
        product("gone-shoe", "Gone shoe", "Shoes", "80", "/missing.png"),
        product("gift-card", "Gift card", "Gift Card", "25.00", "/p/6.png") | {"Gift Card": "true"},
        product("shipping-protection", "Shipping Protection by Route", "Insurance", "0.98", "/p/7.png")
        | {"Vendor": "Route"},
        product("free-sample", "Free sample", "Samples", "0.00", "/p/5.png"),
    ]
    return write_csv(path, SHOPIFY_HEADER, rows)


def woocommerce_export(path: Path, server: PhotoServer) -> Path:
    """Six products in eight rows, as WooCommerce exports them: a simple one on sale with an attribute, a
    variable one (its two variations at different prices, Size its option), a grouped one (no price of its own),
    an external one, an unpublished one, and a route insurance (category Insurance)."""

    def attribute(n: int, name: str, values: str) -> dict:
        return {f"Attribute {n} name": name, f"Attribute {n} value(s)": values, f"Attribute {n} visible": "1"}

    rows = [
        {"ID": "11", "Type": "simple", "SKU": "MUG-1", "Name": "Mug", "Published": "1"}
        | {"Short description": "<p>A <em>big</em> mug</p>", "Regular price": "12.50", "Sale price": "9.99"}
        | {"Categories": "Kitchen > Mugs, Gifts", "Tags": "mug"}
        | {"Images": f"{server.url('/p/5.png')}, {server.url('/p/6.png')}"}
        | attribute(1, "Material", "Ceramic"),
        {"ID": "12", "Type": "variable", "SKU": "TEE", "Name": "Tee", "Published": "1", "Description": "Soft tee"}
        | {"Categories": "Shirts", "Images": server.url("/p/7.png")}
        | attribute(1, "Size", "S, M")
        | attribute(2, "Material", "Cotton"),
        {"ID": "13", "Type": "variation", "SKU": "TEE-S", "Name": "Tee - S", "Published": "1"}
        | {"Regular price": "18", "Parent": "id:12"}
        | attribute(1, "Size", "S"),
        {"ID": "14", "Type": "variation", "SKU": "TEE-M", "Name": "Tee - M", "Published": "1"}
        | {"Regular price": "15", "Parent": "TEE", "Images": server.url("/p/3.png")}
        | attribute(1, "Size", "M"),
        {"ID": "15", "Type": "grouped", "SKU": "SET", "Name": "Mug set", "Published": "1", "Categories": "Kitchen"}
        | {"Grouped products": "MUG-1", "Images": server.url("/p/1.png")},
        {"ID": "16", "Type": "external", "SKU": "EXT", "Name": "Partner lamp", "Published": "1"}
        | {"Regular price": "30", "External URL": "https://partner.example/lamp", "Images": server.url("/p/2.png")},
        {"ID": "17", "Type": "simple", "SKU": "", "Name": "Secret", "Published": "0", "Regular price": "1"}
        | {"Images": server.url("/p/1.png")},
        {"ID": "18", "Type": "simple", "SKU": "ROUTE", "Name": "Route insurance", "Published": "1"}
        | {"Regular price": "0.98", "Categories": "Insurance", "Images": server.url("/p/4.png")},
    ]
    return write_csv(path, WOO_HEADER, rows)
