"""A shop's product table -> products: Shopify's and WooCommerce's exports as they are, or any CSV, JSON Lines or
Parquet table with an image column; checked, with a report of everything left out.

    table = read_products("products_export.csv", shop_url="https://shop.example")
    table.products   # [Product(id, images)]: images = local paths or http(s) URLs, the first the one to use
    table.columns    # the product columns as one Arrow table, row i = products[i] (numbers stay numbers)

Standard columns (any others are carried as they are): id, title, description (plain text), brand, category,
tags, price (float), currency, url, images (list of text), options, attributes (text), compare_at_price and
lowest_price (floats). A `url` that is not an absolute http(s) address (`javascript:`, `data:`, a relative one)
is dropped from its row and reported; the product stays. No UI imports here.
"""

from __future__ import annotations

import csv
import html
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa

from common.untrusted import safe_url
from intake.exports import MAX_IMAGES, MAX_TEXT, Mapped, excluded, shopify_records, woocommerce_records
from intake.prices import read_price

TEXT_COLUMNS = ("id", "title", "description", "brand", "category", "tags", "currency", "url", "options", "attributes")
PRICE_COLUMNS = ("price", "compare_at_price", "lowest_price")  # read by the locale's rules, never as a CSV guesses
STANDARD = (*TEXT_COLUMNS, *PRICE_COLUMNS, "images")
IMAGE_COLUMNS = ("image", "image_url", "image_src", "path")  # the first present names each product's image
RESERVED = ("image", "embeddings", "appearance")  # written by upload_ds.py itself
SHOPIFY_HEADER = {"Handle", "Title", "Body (HTML)", "Vendor", "Variant Price", "Image Src"}
WOOCOMMERCE_HEADER = {"ID", "Type", "SKU", "Name", "Regular price", "Images"}
MAX_CELL = 128 << 20  # characters of one CSV cell read at most (a 50 MB description reads, then is cut)


@dataclass
class Product:
    """One product of a table: its id, where its images are (local paths or http(s) URLs, the first the one to
    use, the next ones if it cannot be read; none when the table has no image)."""

    id: str
    images: list[str]

    @property
    def image(self) -> str:
        """The product's first image ("" when none)."""
        return self.images[0] if self.images else ""


@dataclass
class ProductTable:
    """The products of a table, their columns (Arrow, one row per product), and what was left out and why."""

    products: list[Product]
    columns: pa.Table
    kind: str  # "shopify", "woocommerce" or "table"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row or id, why it is not a product)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (id, what was dropped from it): product stays
    rows: int = 0  # the table's rows
    folded: int = 0  # variant and image rows folded into the product of an earlier row

    def opening(self) -> str:
        """The report's first line: "565 rows -> 84 products (481 variant and image rows folded)"."""
        return f"{self.rows} rows -> {self.rows - self.folded} products ({self.folded} variant and image rows folded)"

    def report(self) -> str:
        """The opening line, then one line per row left out and per value dropped."""
        lines = [self.opening()] + [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines + [f"  note {name}: {why}" for name, why in self.notes])


# ------------------------------------------------------------------------------------------------ reading
def read_products(
    path: str | os.PathLike,
    shop_url: str | None = None,
    currency: str | None = None,
    need_images: bool = True,
    locale: str = "en_US",
    exclude_types: tuple[str, ...] = (),
) -> ProductTable:
    """The products of a CSV, JSON Lines or Parquet table (Shopify's and WooCommerce's CSV exports recognised by
    their header). `shop_url` makes the product links of a shop export; `currency` fills rows without one;
    `need_images=False` (a folder gives the images) lets rows go without an image column; prices written as
    text are read by `locale`'s rules; products whose type or category is in `exclude_types` are left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"product table {path} does not exist" if not path.exists() else f"product table {path} is not a file"
        )
    suffix, exclude = path.suffix.lower(), {t.strip().casefold() for t in exclude_types}
    if suffix in (".csv", ".tsv", ".txt"):
        header = csv_header(path)
        if set(header) >= SHOPIFY_HEADER:
            table = from_export(
                shopify_records(read_csv_text(path, header), shop_url, locale, exclude), "shopify", locale
            )
        elif set(header) >= WOOCOMMERCE_HEADER:
            mapped = woocommerce_records(read_csv_text(path, header), shop_url, locale, exclude)
            table = from_export(mapped, "woocommerce", locale)
        else:
            table = from_table(read_csv_typed(path, header), need_images, locale, exclude)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pj

        table = from_table(_readable(lambda: pj.read_json(path), path), need_images, locale, exclude)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = from_table(_readable(lambda: pq.read_table(path), path), need_images, locale, exclude)
    else:
        raise ValueError(f"product table {path}: give a .csv, .jsonl or .parquet file")
    if not table.products:
        raise ValueError(f"product table {path} has no products\n{table.report()}".rstrip())
    resolve_images(table, path.parent)
    if currency and "currency" in table.columns.column_names:
        filled = [c if c else currency for c in table.columns.column("currency").to_pylist()]
        table.columns = table.columns.set_column(
            table.columns.column_names.index("currency"), "currency", pa.array(filled, pa.string())
        )
    elif currency:
        table.columns = table.columns.append_column("currency", pa.array([currency] * len(table.products), pa.string()))
    return table


def _readable(read, path: Path) -> pa.Table:
    try:
        return read()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise ValueError(f"product table {path} cannot be read: {str(exc).splitlines()[0][:300]}") from None


def csv_rows(path: Path) -> Iterator[list[str]]:
    """The rows of a CSV file as lists of text (a UTF-8 byte-order mark dropped); a cell longer than MAX_CELL is
    a ValueError naming its row, never a csv.Error."""
    csv.field_size_limit(MAX_CELL)  # Python's own limit is 128 KB: a long product description is more
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            yield from reader
        except csv.Error as exc:
            raise ValueError(
                f"product table {path}, row {reader.line_num}: cannot be read ({exc}; at most {MAX_CELL >> 20} MB "
                "per cell)"
            ) from None


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file."""
    header = next(csv_rows(path), None)
    if not header:
        raise ValueError(f"product table {path} is empty")
    return [h.strip() for h in header]


def read_csv_text(path: Path, header: list[str]) -> list[dict[str, str]]:
    """A CSV's rows as dicts of text (a shop export: every value is text until mapped)."""
    rows = csv_rows(path)
    next(rows, None)
    blank = [""] * len(header)
    return [dict(zip(header, row + blank[len(row) :])) for row in rows if any(row)]


def read_csv_typed(path: Path, header: list[str]) -> pa.Table:
    """A plain CSV as Arrow with its types inferred (numbers stay numbers); the standard text columns and prices
    as text, "NA", "null" or "N/A" in them as written (only an empty cell is no value)."""
    import pyarrow.csv as pc

    types = {h: pa.string() for h in header if h.lower() in TEXT_COLUMNS + IMAGE_COLUMNS + PRICE_COLUMNS}
    # one block holds the longest row (Arrow's default block of 1 MB cannot hold a long description)
    block = int(min(max(path.stat().st_size + 1, 1 << 20), 2 * MAX_CELL))
    convert = pc.ConvertOptions(column_types=types, strings_can_be_null=False)
    try:
        table = pc.read_csv(path, read_options=pc.ReadOptions(block_size=block), convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        for _ in csv_rows(path):  # names the row with the over-long cell, if that is what went wrong
            pass
        raise ValueError(f"product table {path} cannot be read: {str(exc).splitlines()[0][:300]}") from None
    for i, name in enumerate(table.column_names):  # other text columns: an empty cell is no value, as before
        if pa.types.is_string(table.schema.field(i).type) and name not in types:
            values = [v or None for v in table.column(i).to_pylist()]
            table = table.set_column(i, name, pa.array(values, pa.string()))
    return table


# ------------------------------------------------------------------------------------------- shop exports
def from_export(mapped: Mapped, kind: str, locale: str) -> ProductTable:
    """A shop export's records (see exports.py) -> a ProductTable, with its rows read and folded."""
    columns: dict[str, pa.Array] = {}
    for name in STANDARD:
        if name != "images":  # lowest_price comes as a number, the other prices as written
            values = [r.get(name) for r in mapped.records]
            kind_of = pa.float64() if name == "lowest_price" else pa.string()
            columns[name] = pa.array([None if v in ("", None) else v for v in values], kind_of)
    table = checked(pa.table(columns), [r["images"] for r in mapped.records], kind, mapped.skipped, locale)
    table.rows, table.folded = mapped.rows, mapped.folded
    return table


def from_table(
    table: pa.Table, need_images: bool, locale: str = "en_US", exclude: set[str] = frozenset()
) -> ProductTable:
    """Any table with an image column (or, with `need_images=False`, an id column; an `images` column adds the
    next images): other columns carried; rows whose category is in `exclude` left out."""
    names = {name.strip().lower(): name for name in table.column_names}
    image_col = next((names[c] for c in IMAGE_COLUMNS if c in names), None)
    if image_col is None and need_images and "url" in names:
        image_col = names["url"]  # the old --manifest: a url column of images (with no folder, the only images)
    if image_col is None and need_images:
        raise ValueError(
            f"the product table needs an image column ({', '.join(IMAGE_COLUMNS)}), has {table.column_names}"
        )
    if image_col is None and "id" not in names:
        raise ValueError(
            f"the product table needs an id column to join with the image folder, has {table.column_names}"
        )
    first = [_text(v) for v in table.column(image_col).to_pylist()] if image_col else [""] * table.num_rows
    more = table.column(names["images"]).to_pylist() if "images" in names else [None] * table.num_rows
    images = [_image_list([one], also) for one, also in zip(first, more)]
    table = table.drop_columns([c for c in (image_col, names.get("images")) if c])
    table = table.rename_columns(
        [n.strip().lower() if n.strip().lower() in STANDARD else n.strip() for n in table.column_names]
    )
    if "id" not in table.column_names:  # ids from the images' file names, as a folder gets them
        ids = [os.path.splitext(src.rstrip("/").split("/")[-1].split("?")[0])[0] for src in first]
        table = table.append_column("id", pa.array(ids, pa.string()))
    skipped = []
    if exclude and "category" in table.column_names:
        kinds = [_text(v) for v in table.column("category").to_pylist()]
        out = [(i, kind) for i, kind in enumerate(kinds) if excluded([kind], exclude)]
        ids = table.column("id").to_pylist()
        skipped = [(_text(ids[i]), f"product type {kind!r}, left out by --exclude-type") for i, kind in out]
        keep = sorted(set(range(table.num_rows)) - {i for i, _ in out})
        table, images = table.take(pa.array(keep, pa.int64())), [images[i] for i in keep]
    result = checked(table, images, "table", skipped, locale, images_column="images" in names)
    result.rows = table.num_rows + len(skipped)
    return result


def _image_list(first: list[str], more) -> list[str]:
    """A product's images: `first`, then those of an `images` value (a list, or text separated by commas)."""
    if isinstance(more, str):
        more = more.split(",")
    values = [*first, *(more or [])]
    return list(dict.fromkeys(_text(v) for v in values if _text(v)))[:MAX_IMAGES]


def _text(value) -> str:
    return "" if value is None else str(value).strip()


# ------------------------------------------------------------------------------------------- checks
def checked(
    table: pa.Table,
    images: list[list[str]],
    kind: str,
    skipped: list[tuple[str, str]],
    locale: str = "en_US",
    images_column: bool = True,
) -> ProductTable:
    """The standard columns typed and checked (ids unique and present, prices numbers, urls http(s)), rows without
    an id skipped, the columns upload_ds.py writes itself left out; all of it reported. Prices written as text
    are read by `locale`'s rules (a shop export's plain 1299.00 as it is); `images_column` writes the products'
    images as the column `images`."""
    notes: list[tuple[str, str]] = []
    for name in RESERVED:
        if name in table.column_names:
            table = table.drop_columns([name])
            notes.append(("(table)", f"column {name!r} is written by upload_ds.py; the table's is left out"))
    ids = [_text(v) for v in table.column("id").to_pylist()]
    keep = [i for i, ident in enumerate(ids) if ident]
    skipped += [(f"row {i + 2}", "no id") for i, ident in enumerate(ids) if not ident]
    seen: dict[str, int] = {}
    for i in keep:
        if ids[i] in seen:
            raise ValueError(
                f"the product table has the id {ids[i]!r} twice (rows {seen[ids[i]] + 2} and {i + 2}); "
                "ids must be unique"
            )
        seen[ids[i]] = i
    table = table.take(pa.array(keep, pa.int64()))
    ids = [ids[i] for i in keep]
    images = [images[i] for i in keep]
    table = table.set_column(table.column_names.index("id"), "id", pa.array(ids, pa.string()))
    for name in TEXT_COLUMNS:
        if name in table.column_names and name != "id":
            values = [_as_text(v) for v in table.column(name).to_pylist()]
            if name == "url":
                values = _safe_urls(values, ids, notes)
            table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.string()))
    table = checked_prices(table, ids, locale, kind != "table", notes)
    if images_column:
        table = table.append_column("images", pa.array(images, pa.list_(pa.string())))
    products = [Product(ident, list(srcs)) for ident, srcs in zip(ids, images)]
    return ProductTable(products, table, kind, skipped, notes)


def checked_prices(
    table: pa.Table, ids: list[str], locale: str, plain_first: bool, notes: list[tuple[str, str]]
) -> pa.Table:
    """The price columns read (see read_price) and noted: a price of 0 or none (the product stays), a
    compare-at price kept only above the price (as a shop shows it)."""
    given = table.column("price").to_pylist() if "price" in table.column_names else []
    for name in PRICE_COLUMNS:
        if name in table.column_names:
            prices = _prices(table.column(name).to_pylist(), ids, name, locale, plain_first, notes)
            table = table.set_column(table.column_names.index(name), name, pa.array(prices, pa.float64()))
    if "price" not in table.column_names:
        return table
    prices = table.column("price").to_pylist()
    for ident, price, raw in zip(ids, prices, given):
        if price == 0 or raw is None or (isinstance(raw, str) and not raw.strip()):  # one it could not read is noted
            notes.append((ident, "price 0: kept, shown as free" if price == 0 else "no price: kept, shown without one"))
    if "compare_at_price" in table.column_names:
        compare = table.column("compare_at_price").to_pylist()
        above = [c if c is not None and p is not None and c > p else None for c, p in zip(compare, prices)]
        table = table.set_column(
            table.column_names.index("compare_at_price"), "compare_at_price", pa.array(above, pa.float64())
        )
    return table


def _prices(
    values: list, ids: list[str], name: str, locale: str, plain_first: bool, notes: list[tuple[str, str]]
) -> list[float | None]:
    """The column `name`'s values as prices (see read_price); one that cannot be a price is left out, noted."""
    out = []
    for ident, value in zip(ids, values):
        try:
            out.append(read_price(value, locale, plain_first))
        except ValueError as exc:
            out.append(None)
            notes.append((ident, f"{exc}; {'shown without a price' if name == 'price' else f'{name} left out'}"))
    return out


def _as_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    text = str(value).strip()[:MAX_TEXT]
    return text or None


def _safe_urls(values: list[str | None], ids: list[str], notes: list[tuple[str, str]]) -> list[str | None]:
    out = []
    for ident, value in zip(ids, values):
        url = safe_url(value) if value else None
        if value and url is None:
            notes.append((ident, f"url {html.escape(value[:60])!r} dropped: only http(s) links are kept"))
        out.append(url)
    return out


def resolve_images(table: ProductTable, base: Path) -> None:
    """Each product's images as http(s) URLs or absolute local paths (relative ones against the table's folder);
    other schemes are dropped (noted), and a product left with no image is skipped with the reason."""
    kept, rows, given = [], [], []
    for i, product in enumerate(table.products):
        sources, why = [], None
        for src in product.images:
            scheme = urlsplit(src).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", src) else ""
            if scheme and scheme not in ("http", "https", "file") and len(scheme) > 1:  # one letter: a drive
                why = f"image {src[:60]!r}: only http(s) URLs and files can be read"
                continue
            local = urlsplit(src).path if scheme == "file" else src
            absolute = src if scheme in ("http", "https") else str(base / local)  # base / an absolute path = it
            sources.append((src, absolute))
        if why and not sources:
            table.skipped.append((product.id, why))
            continue
        if why:
            table.notes.append((product.id, f"{why}; its other images are kept"))
        kept.append(Product(product.id, [absolute for _, absolute in sources]))
        given.append([src for src, _ in sources])
        rows.append(i)
    table.products = kept
    table.columns = table.columns.take(pa.array(rows, pa.int64()))
    if "images" in table.columns.column_names:
        at = table.columns.column_names.index("images")
        table.columns = table.columns.set_column(at, "images", pa.array(given, pa.list_(pa.string())))
