"""A shop's product table into the datasets: Shopify and WooCommerce exports as they are, plain CSV / JSON Lines /
Parquet with their types, the join with an image folder, image URLs downloaded (and each way a download fails),
unsafe links dropped; the datasets upload_ds.py writes from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from shop_files import PhotoServer, photo, shop_upload_flags, shopify_export, woocommerce_export, write_csv

import upload_ds
from common.untrusted import price_value, safe_url
from intake.download import DownloadOptions, download_all
from intake.exports import plain_text
from intake.products import read_products
from intake.shop_input import gather


@pytest.fixture(scope="module")
def server():
    s = PhotoServer()
    yield s
    s.close()


def test_shopify_export_as_it_is(server, tmp_path):
    """Every column of the export that says something about a product lands in one: images in position order,
    variant options, the first variant's compare-at price, metafields, the lowest of differing variant prices;
    drafts, gift cards and an excluded type left out and listed; a price of 0 noted."""
    path = shopify_export(tmp_path / "products_export_1.csv", server)
    table = read_products(path, shop_url="https://shop.example/", exclude_types=("insurance",))
    assert table.kind == "shopify"
    assert table.report().splitlines()[0] == "11 rows -> 7 products (4 variant and image rows folded)"
    assert [p.id for p in table.products] == ["red-dress", "blue-shirt", "gone-shoe", "free-sample"]
    assert table.products[1].images == [server.url("/missing.png"), server.url("/p/3.png")]  # both, in order
    rows = table.columns.to_pylist()
    dress = rows[0]
    assert dress["title"] == "Red <b>summer</b> dress"  # a title is text: shown as it is, never as HTML
    assert dress["description"] == "Light & airy.\nCotton"  # Body (HTML) as plain text, the script dropped
    assert (dress["brand"], dress["category"], dress["tags"]) == ("Acme", "Dresses", "red, summer, women")
    assert dress["images"] == [server.url(f"/p/{i}.png") for i in (0, 1, 2)]  # by Image Position; once each
    assert dress["options"] == "Size: S, M, L\nColor: Red"
    assert dress["attributes"] == "Color: Red; Natural Black\nHair length: 16 in"
    assert (dress["price"], dress["compare_at_price"], dress["lowest_price"]) == (52.0, 59.9, 49.9)
    assert dress["url"] == "https://shop.example/products/red-dress"
    shirt = rows[1]  # one variant ("Default Title"), a compare-at price below its price
    assert (shirt["options"], shirt["compare_at_price"], shirt["lowest_price"]) == (None, None, None)
    assert shirt["attributes"] == "Color: Natural Black" and shirt["price"] == 19.0
    schema = table.columns.schema
    assert schema.field("images").type == pa.list_(pa.string())
    assert all(schema.field(n).type == pa.float64() for n in ("price", "compare_at_price", "lowest_price"))
    assert table.skipped == [
        ("old-hat", "not on sale in the shop (Status: draft)"),
        ("gift-card", "a gift card (Gift Card: true), not a product to show"),
        ("shipping-protection", "product type 'Insurance', left out by --exclude-type"),
    ]
    assert table.notes == [("free-sample", "price 0: kept, shown as free")]
    no_url = read_products(path)
    assert no_url.columns.column("url").to_pylist() == [None] * 5
    assert "shipping-protection" in [p.id for p in no_url.products]  # kept unless excluded


def test_woocommerce_export(server, tmp_path):
    """Simple, variable (variations folded into it, Size its option), grouped (no price: noted) and external
    products; attributes; an unpublished product and an excluded category listed."""
    path = woocommerce_export(tmp_path / "wc-product-export.csv", server)
    table = read_products(path, shop_url="https://w.example", exclude_types=("Insurance",))
    assert table.kind == "woocommerce"
    assert table.report().splitlines()[0] == "8 rows -> 6 products (2 variant and image rows folded)"
    assert [p.id for p in table.products] == ["MUG-1", "TEE", "SET", "EXT"]
    mug, tee, grouped, external = table.columns.to_pylist()
    assert (mug["title"], mug["price"], mug["compare_at_price"], mug["category"], mug["description"]) == (
        "Mug",
        9.99,
        12.5,
        "Kitchen > Mugs",
        "A big mug",
    )
    assert mug["images"] == [server.url("/p/5.png"), server.url("/p/6.png")]
    assert (mug["attributes"], mug["options"]) == ("Material: Ceramic", None)
    assert mug["url"] == "https://w.example/?post_type=product&p=11"
    assert (tee["price"], tee["lowest_price"], tee["options"], tee["attributes"]) == (
        18.0,
        15.0,
        "Size: S, M",
        "Material: Cotton",
    )  # a variable product: its first variation's price, "from" the lowest
    assert tee["images"] == [server.url("/p/7.png"), server.url("/p/3.png")]  # its variation's image after its own
    assert grouped["price"] is None and external["url"] == "https://partner.example/lamp"
    assert table.skipped == [
        ("17", "not published in the shop (Published: 0)"),
        ("ROUTE", "product type 'Insurance', left out by --exclude-type"),
    ]
    assert table.notes == [("SET", "no price: kept, shown without one")]


def test_plain_tables_keep_their_types(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.png").write_bytes(photo(i))
    rows = [
        {
            "id": "007",
            "image": "img/0.png",
            "title": "Boot",
            "price": "19.5",
            "stock": "3",
            "weight": "0.4",
            "url": "https://s.example/007",
        },
        {
            "id": "008",
            "image": "img/1.png",
            "title": "Bag",
            "price": "5",
            "stock": "0",
            "weight": "1.25",
            "url": "javascript:alert(1)",
        },
        {
            "id": "009",
            "image": "img/2.png",
            "title": "Cap",
            "price": "",
            "stock": "7",
            "weight": "2",
            "url": "/relative/page",
        },
    ]
    header = list(rows[0])
    write_csv(tmp_path / "t.csv", header, rows)
    with (tmp_path / "t.jsonl").open("w") as f:
        for r in rows:
            f.write(
                json.dumps(
                    {
                        **r,
                        "price": float(r["price"]) if r["price"] else None,
                        "stock": int(r["stock"]),
                        "weight": float(r["weight"]),
                    }
                )
                + "\n"
            )
    pq.write_table(
        pa.Table.from_pylist([json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]),
        tmp_path / "t.parquet",
    )
    for name in ("t.csv", "t.jsonl", "t.parquet"):
        table = read_products(tmp_path / name)
        assert table.kind == "table"
        assert [p.id for p in table.products] == ["007", "008", "009"], name  # "007" stays text
        assert table.products[1].image == str(tmp_path / "img" / "1.png")  # relative to the table's folder
        schema = table.columns.schema
        assert pa.types.is_integer(schema.field("stock").type), name  # numbers stay numbers
        assert schema.field("weight").type == pa.float64() and schema.field("price").type == pa.float64()
        assert table.columns.column("price").to_pylist() == [19.5, 5.0, None]
        assert table.columns.column("url").to_pylist() == ["https://s.example/007", None, None], name
        assert [n for n, _ in table.notes] == ["008", "009", "009"] and "only http(s) links" in table.notes[0][1]
        assert table.notes[2] == ("009", "no price: kept, shown without one")
        assert "images" not in table.columns.column_names  # one image column: no list of them


def test_values_are_checked():
    assert safe_url("https://a.example/x?y=1") and safe_url("HTTP://a.example")
    for bad in (
        "javascript:alert(1)",
        "data:text/html,<script>",
        "/p/1",
        "//evil.example/x",
        "https://",
        "ftp://a.example/f",
        "https://a.example/\nx",
        None,
        3,
    ):
        assert safe_url(bad) is None, bad
    assert [price_value(v) for v in ("19.90", "$1,299.00", "19,90 €", 7, "", None)] == [
        19.9,
        1299.0,
        19.9,
        7.0,
        None,
        None,
    ]
    for bad in ("abc", "-5", "nan", "inf", True):
        with pytest.raises(ValueError):
            price_value(bad)
    assert plain_text("<p>A&nbsp;<b>b</b></p><style>p{}</style><p>c &lt;d&gt;</p>") == "A b\nc <d>"


def test_bad_tables_are_clear_errors(tmp_path):
    write_csv(tmp_path / "dup.csv", ["id", "image"], [{"id": "a", "image": "x.png"}, {"id": "a", "image": "y.png"}])
    with pytest.raises(ValueError, match="id 'a' twice"):
        read_products(tmp_path / "dup.csv")
    write_csv(tmp_path / "noimg.csv", ["id", "title"], [{"id": "a", "title": "A"}])
    with pytest.raises(ValueError, match="needs an image column"):
        read_products(tmp_path / "noimg.csv")
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(ValueError, match=".csv, .jsonl or .parquet"):
        read_products(tmp_path / "x.xlsx")
    with pytest.raises(FileNotFoundError):
        read_products(tmp_path / "missing.csv")


def test_downloads_fail_each_way_and_are_cached(server, tmp_path):
    urls = [server.url(p) for p in ("/p/0.png", "/p/1.png", "/missing.png", "/slow.png", "/huge.png", "/notes.png")]
    options = DownloadOptions(timeout=1.0, max_bytes=1 << 20, retries=1, workers=6, backoff=0.05, allow_private=True)
    results = download_all(urls + urls[:1], tmp_path / "cache", options, progress=False)
    assert len(results) == 6
    ok = {u: path.read_bytes() for u, (path, _) in results.items() if path is not None}
    assert ok == {urls[0]: photo(0), urls[1]: photo(1)}
    reasons = {u.rsplit("/", 1)[1]: why for u, (_, why) in results.items() if why}
    assert "HTTP 404" in reasons["missing.png"] and "(2 tries)" not in reasons["missing.png"]  # a 404 is final
    assert "timed out" in reasons["slow.png"] and "(2 tries)" in reasons["slow.png"]  # a timeout is tried again
    assert "too large" in reasons["huge.png"]
    assert "not an image" in reasons["notes.png"]
    before = dict(server.hits)
    again = download_all(urls[:2], tmp_path / "cache", options, progress=False)
    assert all(path is not None for path, _ in again.values())
    assert server.hits == before, "a rerun downloaded a cached image again"


def test_a_table_s_images_column_gives_the_next_image_when_the_first_cannot_be_read(tmp_path):
    (tmp_path / "broken.png").write_text("not a picture")
    (tmp_path / "good.png").write_bytes(photo(1))
    rows = [
        {"id": "a", "image": "broken.png", "images": "good.png", "price": "3"},
        {"id": "b", "image": "broken.png", "images": "", "price": "4"},
    ]
    shop = gather(products=write_csv(tmp_path / "t.csv", ["id", "image", "images", "price"], rows), progress=False)
    assert [(i, p.name) for i, p, _ in shop.items] == [("a", "good.png"), ("b", "broken.png")]
    assert shop.table.columns.column("images").to_pylist() == [["broken.png", "good.png"], ["broken.png"]]
    broken = tmp_path / "broken.png"
    assert [n for n, _ in shop.notes] == [f"a ({broken})"] and "image 2 used instead" in shop.notes[0][1]
    scan = upload_ds.read_images(shop, progress=False)  # a lone image is decoded once, with all the others
    assert [i for i, _ in scan.images] == ["a"] and scan.skipped == [
        (f"b ({broken})", "not an image (unrecognised format)")
    ]


def test_a_remote_ray_worker_falls_back_to_a_product_s_next_image(server, tmp_path):
    """On a remote cluster the workers fetch the URLs (read_and_check, run here without Ray): the same fallback."""
    from intake.ray_embed import read_and_check

    gone, first, second = server.url("/missing.png"), server.url("/p/1.png"), server.url("/p/2.png")
    rows = [
        {"order": 0, "id": "a", "path": gone.encode(), "next": [second.encode()]},
        {"order": 1, "id": "b", "path": first.encode(), "next": [gone.encode()]},
        {"order": 2, "id": "c", "path": gone.encode(), "next": []},
    ]
    out = read_and_check(pa.Table.from_pylist(rows), 10**8, allow_private=True).to_pylist()
    assert [r["image"]["bytes"] for r in out] == [photo(2), photo(1), b""]
    assert out[0]["reason"] is None and "image 1 failed" in out[0]["note"] and "HTTP 404" in out[0]["note"]
    assert out[1]["note"] is None and "HTTP 404" in out[2]["reason"] and out[2]["note"] is None


def test_table_joined_with_a_folder_reports_both_sides(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes(photo(ord(name)))
    write_csv(
        tmp_path / "t.csv",
        ["id", "title", "price"],
        [
            {"id": "a", "title": "A", "price": "1"},
            {"id": "b", "title": "B", "price": "2"},
            {"id": "z", "title": "Z", "price": "3"},
        ],
    )
    shop = gather(folder, tmp_path / "t.csv", progress=False)
    assert [(i, p.name) for i, p, _ in shop.items] == [("a", "a.png"), ("b", "b.png"), ("c", "c.png")]
    assert shop.skipped == [("z", "a row of the table without an image (no file with this id in the image folder)")]
    assert shop.notes == [("c.png", "no row in the product table: kept, without the table's columns")]


def upload(*args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "upload_ds.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def expected_shop(server) -> dict[str, list]:
    """The columns upload_ds.py writes for shopify_export's products, left-out ones aside."""
    return {
        "id": ["red-dress", "blue-shirt", "free-sample"],
        "price": [52.0, 19.0, 0.0],
        "compare_at_price": [59.9, None, None],
        "lowest_price": [49.9, None, None],
        "options": ["Size: S, M, L\nColor: Red", None, None],
        "attributes": ["Color: Red; Natural Black\nHair length: 16 in", "Color: Natural Black", None],
        "images": [
            [server.url(f"/p/{i}.png") for i in (0, 1, 2)],
            [server.url("/missing.png"), server.url("/p/3.png")],
            [server.url("/p/5.png")],
        ],
        "currency": ["EUR"] * 3,
    }


def assert_shop_dataset(folder, server) -> None:
    """Both datasets under `folder` hold the shop's products with every column right, each image the one used."""
    for name in ("shop", "shop-embeddings"):
        ds = datasets.load_from_disk(str(folder / name))
        assert {column: ds[column] for column in expected_shop(server)} == expected_shop(server), name
        assert ds.features["price"] == datasets.Value("float64") and ds["title"][0] == "Red <b>summer</b> dress"
        assert ds.features["images"] == datasets.List(datasets.Value("string"))
        assert ds["url"][1] == "https://shop.example/products/blue-shirt"
    emb = datasets.load_from_disk(str(folder / "shop-embeddings"))
    assert {"embeddings", "appearance"} <= set(emb.column_names)
    raw = emb.cast_column("image", datasets.Image(decode=False))["image"]
    assert [r["bytes"] for r in raw] == [photo(0), photo(3), photo(5)]  # the shirt's second image: its first is gone


def assert_shop_report(out: str) -> None:
    """The report opens with the rows folded; the left-out products are listed, the fallback and price 0 noted."""
    report = out[out.index("summary:") :].splitlines()
    assert "11 rows -> 7 products (4 variant and image rows folded)" in report[1:4]
    assert "  note blue-shirt (" in out and "image 1 failed (download failed: HTTP 404" in out
    assert "image 2 used instead" in out
    for line in ("skipped gone-shoe", "HTTP 404", "skipped old-hat", "skipped gift-card: a gift card"):
        assert line in out, line
    assert "skipped shipping-protection: product type 'Insurance', left out by --exclude-type" in out
    assert "note free-sample: price 0" in out and "summary: 3 products" in out


def test_upload_a_shopify_export_over_http(server, tiny_model, tmp_path, capsys):
    """The whole command on a Shopify export whose images are URLs: both datasets carry every product column
    with its type; a 404 first image falls back to the second; the report says what was folded and left out."""
    table = shopify_export(tmp_path / "products_export_1.csv", server)
    more = ["--download-timeout", "5", "--exclude-type", "Insurance"]
    code = upload_ds.main(shop_upload_flags(table, "me/shop", tiny_model, tmp_path / "out", *more))
    out = capsys.readouterr().out
    assert code == 0, out
    assert_shop_dataset(tmp_path / "out", server)
    assert_shop_report(out)


@pytest.mark.slow
def test_the_ray_engine_writes_the_same_shop(server, tiny_model, tmp_path):
    """--engine ray on the same Shopify export: the same columns, images and report."""
    pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements-ray.txt)")
    table = shopify_export(tmp_path / "products_export_1.csv", server)
    more = ["--exclude-type", "Insurance", "--engine", "ray", "--num-workers", "1", "--work-dir", tmp_path / "work"]
    res = upload(
        *shop_upload_flags(table, "me/shop", tiny_model, tmp_path / "out", *more), env={"RAY_AUTH_MODE": "disabled"}
    )
    assert res.returncode == 0, res.stderr
    assert_shop_dataset(tmp_path / "out", server)
    assert_shop_report(res.stdout)


def test_cli_needs_a_folder_or_a_table(tmp_path):
    res = upload("--repo", "me/shop", "--no-push", "--out", tmp_path)
    assert res.returncode == 2 and "IMG_DIR, --products FILE, or both" in res.stderr
    res = upload(
        "--products",
        tmp_path / "t.csv",
        "--shop-url",
        "javascript:alert(1)",
        "--repo",
        "me/shop",
        "--no-push",
        "--out",
        tmp_path,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--shop-url" in res.stderr


# ------------------------------------------------------------------------------------------ the app's side
def test_catalog_reads_product_facts_as_checked_text(tmp_path):
    """A dataset made elsewhere: prices as text (one junk), an unsafe link, a long title, lists as tags."""
    from catalogs import make_catalog
    from helpers import caption_parts

    from catalog.catalog import Catalog, price_text

    ds = datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=6)))
    ds = ds.add_column("title", ["Lamp", "x" * 80, None, "  Two\nlines ", "Cap", "Hat"])
    ds = ds.add_column("price", ["12.5", "abc", "", "$1,299.00", None, "-3"])
    ds = ds.add_column(
        "url", ["https://s.example/a", "javascript:alert(1)", "data:text/html,x", "/rel", None, "http://s.example/f"]
    )
    catalog = Catalog(ds, "t", tmp_path / "cache")
    facts = [catalog.product(r) for r in range(6)]
    assert [f["price"] for f in facts] == [12.5, None, None, 1299.0, None, None]
    assert [f["url"] for f in facts] == ["https://s.example/a", None, None, None, None, "http://s.example/f"]
    assert facts[2]["title"] == "p002"  # no title: the id
    captions = [catalog.caption(r) for r in range(6)]
    assert caption_parts(captions[0]) == ("Lamp", price_text(12.5, None))  # the price on a line of its own
    assert caption_parts(captions[3]) == ("Two lines", price_text(1299.0, None))
    assert captions[1] == "x" * 39 + "…" and len(captions[1]) == 40  # no price: the title alone


def test_appearance_view_is_computed_once_and_cached(tmp_path, monkeypatch):
    import numpy as np
    from catalogs import make_catalog

    from catalog import catalog as catalog_module
    from catalog.catalog import Catalog
    from catalog.dataset import picture_data
    from common.images import appearance_vectors

    ds = datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=12, bad_rows=(4,))))
    first = Catalog(ds, "t", tmp_path / "cache")
    assert "appearance" not in first.views
    first.add_appearance()
    view = np.asarray(first.views["appearance"])
    expected = appearance_vectors([picture_data(first.picture(r)[0]) for r in (0, 5, 11)])
    np.testing.assert_allclose(view[[0, 5, 11]], expected)
    assert not view[4].any()  # the unreadable picture: zeros
    assert list((tmp_path / "cache" / "thumbs").glob("*-appearance8.npy"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached view was computed again")

    monkeypatch.setattr(catalog_module, "appearance_vectors", no_decoding)
    again = Catalog(ds, "t", tmp_path / "cache")
    again.add_appearance()
    np.testing.assert_array_equal(np.asarray(again.views["appearance"]), view)


def test_search_hint_names_words_the_catalog_meets(tmp_path):
    from catalogs import make_catalog

    from catalog.catalog import Catalog
    from shop.shop import search_hint

    catalog = Catalog(datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=9))), "t", tmp_path / "cache")
    assert search_hint(catalog) == "e.g. box, round, wedge"
    assert all(catalog.find(word).query is not None for word in ("round", "box", "wedge"))


def test_page_pictures_are_larger_only_when_the_picture_is(tmp_path):
    import io

    from catalogs import make_catalog
    from PIL import Image

    from catalog.catalog import PAGE_PX, THUMB_PX, Catalog

    ds = datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=3)))
    big = io.BytesIO()
    Image.new("RGB", (900, 600), "teal").save(big, "PNG")
    images = list(ds.cast_column("image", datasets.Image(decode=False))["image"])
    images[0] = {"bytes": big.getvalue(), "path": "big.png"}
    ds = ds.remove_columns("image").add_column("image", images).cast_column("image", datasets.Image())
    catalog = Catalog(ds, "t", tmp_path / "cache")
    with Image.open(catalog.page_picture(0)) as large:
        assert large.size == (PAGE_PX, PAGE_PX * 2 // 3)
    assert catalog.page_picture(1) == catalog.thumb(1)  # a 48 px picture: its tile's file, not a blurrier copy
    with Image.open(catalog.thumb(1)) as tile:
        assert max(tile.size) == THUMB_PX
