"""Prices as the shopper's locale writes them (Babel): the tile captions and the product page of a real catalog,
"from" the lowest variant price, a compare-at price struck through, old datasets' currencies, a bad --locale."""

from __future__ import annotations

import datasets
import pytest
from catalogs import make_catalog, product_columns
from helpers import run_in_process

from catalog.catalog import Catalog, price_text
from shop import page


def test_prices_as_the_locale_writes_them():
    assert price_text(1008, "EUR", "de_DE").replace("\xa0", " ") == "1.008,00 €"  # the issue's own example
    assert price_text(1008, "EUR", "en_US") == "€1,008.00"
    assert price_text(1008.5, "usd", "en_US") == "$1,008.50"  # an ISO code in any case
    # an old dataset: no currency, or a symbol that is not an ISO code: the number as the locale writes it
    assert price_text(1008.5, None, "de_DE") == "1.008,50"
    assert price_text(1008.5, "$", "de_DE") == "1.008,50 $"
    assert price_text(1008.5, "Euro (inkl. MwSt)", "en_US") == "1,008.50 Euro (inkl. MwSt)"
    assert price_text(None, "EUR") == "" and price_text(1e308, "EUR") == "" and price_text(float("nan"), "EUR") == ""


@pytest.fixture(scope="module")
def shop_catalog(tmp_path_factory):
    """A catalog with the new price columns: row 0 with a lower variant price, row 1 with a higher compare-at price,
    row 2 whose first variant is the cheapest, row 3 with a compare-at price below its price (not a sale)."""
    tmp = tmp_path_factory.mktemp("prices")
    ds = datasets.load_from_disk(str(make_catalog(tmp / "catalog", n=8, products=True)))
    prices = product_columns(8)["price"]
    lowest = [prices[0] - 2, None, prices[2], None, None, None, None, None]
    compare = [None, prices[1] + 10, None, prices[3] - 1, None, None, None, None]
    ds = ds.add_column("lowest_price", lowest).add_column("compare_at_price", compare)
    return Catalog(ds, "prices", tmp / "cache", locale="de_DE"), prices


def test_captions_and_product_page_in_the_shops_locale(shop_catalog):
    catalog, prices = shop_catalog
    for row in range(4):
        assert catalog.caption(row).endswith(f"\n{price_text(prices[row], 'EUR', 'de_DE')}")
    de = lambda p: price_text(p, "EUR", "de_DE")  # noqa: E731
    lower = page.product_page(catalog, 0)
    assert f'<p class="pp-price">{de(prices[0])} ' in lower and f"options from {de(prices[0] - 2)}" in lower
    sale = page.product_page(catalog, 1)
    assert f'<span class="pp-sr">was </span><s>{de(prices[1] + 10)}</s>' in sale and "from" not in sale
    assert f'<p class="pp-price">from {de(prices[2])}</p>' in page.product_page(catalog, 2)
    assert f'<p class="pp-price">{de(prices[3])}</p>' in page.product_page(catalog, 3)  # no "was" below the price


def test_an_old_dataset_without_currency_shows_its_prices(tmp_path):
    ds = datasets.load_from_disk(str(make_catalog(tmp_path / "catalog", n=4, products=True)))
    ds = ds.remove_columns(["currency"])
    catalog = Catalog(ds, "old", tmp_path / "cache", locale="de_DE")
    price = product_columns(4)["price"][3]
    assert catalog.caption(3).endswith(f"\n{price_text(price, None, 'de_DE')}") and "," in catalog.caption(3)
    assert f'<p class="pp-price">{price_text(price, None, "de_DE")}</p>' in page.product_page(catalog, 3)


def test_a_bad_locale_is_one_error_line(monkeypatch, capsys, tmp_path):
    for argv, env in (([], {"LOCALE": "xx_YY"}), (["--locale", "C"], {}), (["--locale", ""], {})):
        ran = run_in_process("app", argv, {"CACHE_DIR": tmp_path, **env}, monkeypatch, capsys)
        assert ran.returncode == 2 and ran.stdout == "", ran
        assert ran.stderr.count("\n") == 1 and ran.stderr.startswith("error: --locale (or LOCALE)"), ran.stderr
