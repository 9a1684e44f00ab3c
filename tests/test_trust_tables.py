"""A shop owner's tables, hostile or careless (issue 35, "Tables"): each test named after what a probe found.

No fixed CSV field limit (a 50 MB cell reads, or is one line naming its row); prices read by the locale's rules or
refused per row with a note; non-finite and absurd prices noted and left out; "NA", "null", "N/A" kept as text in
id and title columns; `--currency` an ISO 4217 code.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import run_in_process
from shop_files import SHOPIFY_SHORT_HEADER, photo, write_csv

from intake import products
from intake.prices import read_price
from intake.products import MAX_TEXT, read_products


@pytest.fixture
def pictures(tmp_path):
    """Three product photos beside the tables."""
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(photo(i))
    return tmp_path


def shopify_row(handle: str, body: str = "", price: str = "10") -> dict:
    return {
        "Handle": handle,
        "Title": handle.title(),
        "Body (HTML)": body,
        "Vendor": "Acme",
        "Variant Price": price,
        "Image Src": f"{handle}.png",
        "Image Position": "1",
        "Status": "active",
    }


def test_a_50_mb_shopify_description_cell_is_read_not_a_csv_error_traceback(tmp_path):
    body = "<p>" + "long words " * (50 * 2**20 // 11) + "</p>"
    rows = [shopify_row("a", body), shopify_row("b", "<p>short</p>")]
    table = read_products(write_csv(tmp_path / "products_export.csv", SHOPIFY_SHORT_HEADER, rows))
    assert [p.id for p in table.products] == ["a", "b"]
    description = table.columns.column("description").to_pylist()
    assert description[0].startswith("long words long") and len(description[0]) == MAX_TEXT
    assert description[1] == "short"


def test_a_long_cell_of_a_plain_table_is_read(pictures):
    """Arrow reads a CSV in blocks of 1 MB by default, and a row longer than a block was an error."""
    rows = [{"id": "a", "image": "0.png", "notes": "x" * (8 << 20)}, {"id": "b", "image": "1.png", "notes": "y"}]
    table = read_products(write_csv(pictures / "t.csv", ["id", "image", "notes"], rows))
    assert [p.id for p in table.products] == ["a", "b"]
    assert len(table.columns.column("notes")[0].as_py()) == 8 << 20


def test_a_cell_over_the_limit_is_one_error_line_naming_its_row(pictures, monkeypatch, capsys):
    monkeypatch.setattr(products, "MAX_CELL", 1000)
    rows = [{"id": "a", "image": "0.png", "notes": "ok"}, {"id": "b", "image": "1.png", "notes": "x" * 5000}]
    plain = write_csv(pictures / "t.csv", ["id", "image", "notes"], rows)
    shop = write_csv(pictures / "s.csv", SHOPIFY_SHORT_HEADER, [shopify_row("a"), shopify_row("b", "x" * 5000)])
    for table in (plain, shop):
        res = run_in_process(
            "upload_ds",
            ["--products", table, "--repo", "s", "--no-push", "--out", pictures / "o"],
            {},
            monkeypatch,
            capsys,
        )
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith("error: ") and "row 3" in res.stderr and "Traceback" not in res.stderr


def test_prices_1_299_and_1_299_00_are_read_by_the_locale_s_rules(pictures):
    rows = [
        {"id": "a", "image": "0.png", "price": "1,299"},
        {"id": "b", "image": "1.png", "price": "$1,299.50"},
        {"id": "c", "image": "2.png", "price": "19,90"},
    ]
    table = read_products(write_csv(pictures / "us.csv", ["id", "image", "price"], rows))
    assert table.columns.column("price").to_pylist() == [1299.0, 1299.5, None]
    assert [(ident, "en_US" in why) for ident, why in table.notes] == [("c", True)]  # refused with a note
    rows = [
        {"id": "a", "image": "0.png", "price": "1.299,00"},
        {"id": "b", "image": "1.png", "price": "1.299"},
        {"id": "c", "image": "2.png", "price": "19,90 €"},
    ]
    table = read_products(write_csv(pictures / "de.csv", ["id", "image", "price"], rows), locale="de_DE")
    assert table.columns.column("price").to_pylist() == [1299.0, 1299.0, 19.9] and not table.notes
    shop = write_csv(pictures / "s.csv", SHOPIFY_SHORT_HEADER, [shopify_row("a", price="49.90")])
    assert read_products(shop, locale="de_DE").columns.column("price").to_pylist() == [49.9]  # as Shopify writes
    assert read_price("1\u00a0299,00", "fr_FR") == read_price("1 299,00", "fr_FR") == 1299.0


def test_non_finite_and_absurd_prices_are_noted_and_left_out(pictures):
    values = ["NaN", "inf", "1e308", "2000000000", "-5", "12.5"]
    rows = [{"id": f"p{i}", "image": "0.png", "price": v} for i, v in enumerate(values)]
    table = read_products(write_csv(pictures / "t.csv", ["id", "image", "price"], rows))
    assert table.columns.column("price").to_pylist() == [None] * 5 + [12.5]
    assert [ident for ident, _ in table.notes] == ["p0", "p1", "p2", "p3", "p4"]
    numbers = [math.nan, math.inf, 1e308, 2e9, 12.5]
    parquet = pa.table({"id": [f"q{i}" for i in range(5)], "image": ["0.png"] * 5, "price": numbers})
    pq.write_table(parquet, pictures / "t.parquet")
    table = read_products(pictures / "t.parquet")
    assert table.columns.column("price").to_pylist() == [None] * 4 + [12.5]
    notes = dict(table.notes)
    assert "finite" in notes["q0"] and "finite" in notes["q1"] and "too large" in notes["q2"] and len(notes) == 4


def test_na_null_and_n_a_stay_text_in_id_and_title_columns(pictures):
    rows = [
        {"id": "NA", "image": "0.png", "title": "null", "stock": "3"},
        {"id": "null", "image": "1.png", "title": "N/A", "stock": "NA"},
        {"id": "N/A", "image": "2.png", "title": "", "stock": ""},
    ]
    table = read_products(write_csv(pictures / "t.csv", ["id", "image", "title", "stock"], rows))
    assert [p.id for p in table.products] == ["NA", "null", "N/A"] and not table.skipped
    assert table.columns.column("title").to_pylist() == ["null", "N/A", None]
    assert table.columns.column("stock").to_pylist() == [3, None, None]  # a number column keeps its nulls


@pytest.mark.parametrize("code", ["$", "euro", "EURO", "XYZ"])
def test_a_currency_that_is_not_an_iso_code_is_one_error_line(code, tmp_path, monkeypatch, capsys):
    argv = ["--products", tmp_path / "t.csv", "--repo", "s", "--no-push", "--out", tmp_path, "--currency", code]
    res = run_in_process("upload_ds", argv, {}, monkeypatch, capsys)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "ISO 4217" in res.stderr, res.stderr


def test_currency_codes_in_any_case_and_locales_are_checked(tmp_path, monkeypatch, capsys):
    import upload_ds

    base = ["--products", str(tmp_path / "t.csv"), "--repo", "s", "--no-push", "--out", str(tmp_path)]
    args = upload_ds.parse_args([*base, "--currency", "eur", "--locale", "de-DE"])
    assert (args.currency, args.locale) == ("EUR", "de_DE")
    res = run_in_process("upload_ds", [*base, "--locale", "xx_YY"], {}, monkeypatch, capsys)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--locale" in res.stderr
