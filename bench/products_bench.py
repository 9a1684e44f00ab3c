"""upload_ds.py --products on a shop export whose images are served over local HTTP: downloads per second and the
same run's embedding time.

    python bench/products_bench.py [--products 500] [--model efficientnet-lite0] [--latency-ms 0]

Writes a Shopify-style export of N products (one extra image row each) whose photos a local HTTP server serves
(`--latency-ms` delays each answer, as a far server would), then times the download stage and the whole command.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from shop_files import SHOPIFY_SHORT_HEADER, serve_files, write_csv  # noqa: E402


def photos(n: int, px: int = 400) -> dict[str, bytes]:
    """n distinct JPEG product photos of px x px (a coloured block and a gradient on white)."""
    rng = np.random.default_rng(0)
    out = {}
    ramp = np.linspace(0, 60, px, dtype=np.float32)[None, :, None]
    for i in range(n):
        arr = np.full((px, px, 3), 255, np.float32) - ramp
        y, x = rng.integers(0, px // 2, 2)
        arr[y : y + px // 2, x : x + px // 3] = rng.integers(0, 220, 3)
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
        out[f"/img/{i}.jpg"] = buf.getvalue()
    return out


def main() -> None:
    """Serve the photos, write the export, time the downloads and the whole upload, and print both."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=500)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()
    import upload_ds
    from intake.download import DownloadOptions, download_all

    files = photos(args.products)
    server = serve_files(files, args.latency_ms / 1000)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i in range(args.products):  # a second image of each product on a row of its own, as Shopify has it
            rows.append(
                {
                    "Handle": f"p{i}",
                    "Title": f"Product {i}",
                    "Body (HTML)": "<p>A product.</p>",
                    "Vendor": "Acme",
                    "Type": "Things",
                    "Variant Price": f"{5 + i % 50}.90",
                    "Image Src": f"{base}/img/{i}.jpg",
                    "Image Position": "1",
                    "Status": "active",
                }
            )
            rows.append(
                {"Handle": f"p{i}", "Image Src": f"{base}/img/{(i + 1) % args.products}.jpg", "Image Position": "2"}
            )
        table = write_csv(Path(tmp) / "products_export.csv", SHOPIFY_SHORT_HEADER, rows)
        urls = [f"{base}/img/{i}.jpg" for i in range(args.products)]
        t = time.perf_counter()
        results = download_all(urls, Path(tmp) / "dl", DownloadOptions(allow_private=True), progress=False)
        download_s = time.perf_counter() - t
        assert all(path is not None for path, _ in results.values())
        t = time.perf_counter()
        code = upload_ds.main(
            [
                "--products",
                str(table),
                "--shop-url",
                "https://shop.example",
                "--repo",
                "me/bench",
                "--model",
                args.model,
                "--no-push",
                "--allow-private-urls",
                "--out",
                str(Path(tmp) / "out"),
                "--download-cache",
                str(Path(tmp) / "dl2"),
            ]
        )
        total_s = time.perf_counter() - t
        assert code == 0
    server.shutdown()
    mb = sum(len(b) for b in files.values()) / 2**20
    print(
        f"\n{args.products} products ({mb:.1f} MB of JPEGs, {args.latency_ms:g} ms latency per request), "
        f"model {args.model}"
    )
    print(f"  downloads alone: {download_s:.2f} s = {args.products / download_s:.0f} images/s (8 at a time)")
    print(f"  whole upload_ds.py --products run (download again, decode-check, embed, save): {total_s:.1f} s")


if __name__ == "__main__":
    main()
