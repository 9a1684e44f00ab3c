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

SHOPIFY_HEADER = [
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
    "Variant SKU",
    "Variant Price",
    "Variant Compare At Price",
    "Image Src",
    "Image Position",
    "Image Alt Text",
    "Gift Card",
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
WOO_HEADER = [
    "ID",
    "Type",
    "SKU",
    "Name",
    "Published",
    "Is featured?",
    "Short description",
    "Description",
    "Sale price",
    "Regular price",
    "Categories",
    "Tags",
    "Images",
    "Parent",
    "External URL",
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


def shopify_export(path: Path, server: PhotoServer) -> Path:
    """Three products as Shopify exports them (variants and extra images on rows of their own), one draft."""
    rows = [
        {
            "Handle": "red-dress",
            "Title": "Red <b>summer</b> dress",
            "Body (HTML)": "<p>Light &amp; airy.</p><ul><li>Cotton</li></ul><script>alert(1)</script>",
            "Vendor": "Acme",
            "Type": "Dresses",
            "Tags": "red, summer",
            "Published": "true",
            "Option1 Name": "Size",
            "Option1 Value": "S",
            "Variant Price": "49.90",
            "Image Src": server.url("/p/1.png"),
            "Image Position": "2",
            "Status": "active",
        },
        {
            "Handle": "red-dress",
            "Option1 Value": "M",
            "Variant Price": "52.00",
            "Image Src": server.url("/p/0.png"),
            "Image Position": "1",
        },
        {"Handle": "red-dress", "Image Src": server.url("/p/2.png"), "Image Position": "3"},
        {
            "Handle": "blue-shirt",
            "Title": "Blue shirt",
            "Body (HTML)": "Plain.",
            "Vendor": "Acme",
            "Type": "Shirts",
            "Variant Price": "19",
            "Image Src": server.url("/p/3.png"),
            "Image Position": "1",
            "Status": "active",
        },
        {
            "Handle": "old-hat",
            "Title": "Old hat",
            "Variant Price": "5",
            "Image Src": server.url("/p/4.png"),
            "Image Position": "1",
            "Status": "draft",
        },
        {
            "Handle": "gone-shoe",
            "Title": "Gone shoe",
            "Variant Price": "80",
            "Image Src": server.url("/missing.png"),
            "Image Position": "1",
            "Status": "active",
        },
    ]
    return write_csv(path, SHOPIFY_HEADER, rows)


def woocommerce_export(path: Path, server: PhotoServer) -> Path:
    """A simple product, a variable one (price on its variation), and a draft, as WooCommerce exports them."""
    rows = [
        {
            "ID": "11",
            "Type": "simple",
            "SKU": "MUG-1",
            "Name": "Mug",
            "Published": "1",
            "Short description": "<p>A <em>big</em> mug</p>",
            "Regular price": "12.50",
            "Sale price": "9.99",
            "Categories": "Kitchen > Mugs, Gifts",
            "Tags": "mug",
            "Images": f"{server.url('/p/5.png')}, {server.url('/p/6.png')}",
        },
        {
            "ID": "12",
            "Type": "variable",
            "SKU": "TEE",
            "Name": "Tee",
            "Published": "1",
            "Description": "Soft tee",
            "Categories": "Shirts",
            "Images": server.url("/p/7.png"),
        },
        {
            "ID": "13",
            "Type": "variation",
            "SKU": "TEE-S",
            "Name": "Tee - S",
            "Published": "1",
            "Regular price": "15",
            "Parent": "id:12",
        },
        {
            "ID": "14",
            "Type": "simple",
            "SKU": "",
            "Name": "Secret",
            "Published": "0",
            "Regular price": "1",
            "Images": server.url("/p/1.png"),
        },
    ]
    return write_csv(path, WOO_HEADER, rows)
