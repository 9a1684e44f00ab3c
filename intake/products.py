"""A shop's product table -> products: Shopify's and WooCommerce's exports as they are, or any CSV, JSON Lines or
Parquet table with an image column; checked, with a report of everything left out.

    table = read_products("products_export.csv", shop_url="https://shop.example")
    table.products   # [Product(id, image, row)]: image = a local path or an http(s) URL
    table.columns    # the product columns as one Arrow table, row i = products[i] (numbers stay numbers)

Standard columns (any others are carried as they are): id, title, description (plain text), brand, category,
tags, price (float), currency, url. A `url` that is not an absolute http(s) address (`javascript:`, `data:`, a
relative one) is dropped from its row and reported; the product stays. No UI imports here.
"""

from __future__ import annotations

import csv
import html
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow as pa

from common.untrusted import safe_url
from intake.prices import read_price

STANDARD = ("id", "title", "description", "brand", "category", "tags", "price", "currency", "url")
TEXT_COLUMNS = ("id", "title", "description", "brand", "category", "tags", "currency", "url")
IMAGE_COLUMNS = ("image", "image_url", "image_src", "path")  # the first present names each product's image
RESERVED = ("image", "embeddings", "appearance")  # written by upload_ds.py itself
SHOPIFY_HEADER = {"Handle", "Title", "Body (HTML)", "Vendor", "Variant Price", "Image Src"}
WOOCOMMERCE_HEADER = {"ID", "Type", "SKU", "Name", "Regular price", "Images"}
MAX_TEXT = 20_000  # characters kept of one text value (a description is not a book)
MAX_CELL = 128 << 20  # characters of one CSV cell read at most (a 50 MB description reads, then is cut)
PRICE_COLUMNS = ("price",)  # read by the locale's rules, never as the CSV reader guesses


@dataclass
class Product:
    """One product of a table: its id, where its image is (a local path or an http(s) URL; "" when none)."""

    id: str
    image: str


@dataclass
class ProductTable:
    """The products of a table, their columns (Arrow, one row per product), and what was left out and why."""

    products: list[Product]
    columns: pa.Table
    kind: str  # "shopify", "woocommerce" or "table"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row or id, why it is not a product)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (id, what was dropped from it): product stays

    def report(self) -> str:
        """One line per row left out and per value dropped."""
        lines = [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines + [f"  note {name}: {why}" for name, why in self.notes])


# ------------------------------------------------------------------------------------------------ text
class _Text(HTMLParser):
    """Collects the text of an HTML fragment: block tags become line breaks, scripts and styles are dropped."""

    BLOCKS = {"p", "div", "br", "li", "ul", "ol", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def plain_text(fragment: str | None) -> str:
    """An HTML fragment (a shop's product description) as plain text: tags gone, entities decoded, spaces tidied."""
    if not fragment:
        return ""
    parser = _Text()
    parser.feed(str(fragment)[: 20 * MAX_TEXT])  # enough markup for MAX_TEXT characters of text
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)[:MAX_TEXT]


# ------------------------------------------------------------------------------------------------ reading
def read_products(
    path: str | os.PathLike,
    shop_url: str | None = None,
    currency: str | None = None,
    need_images: bool = True,
    locale: str = "en_US",
) -> ProductTable:
    """The products of a CSV, JSON Lines or Parquet table (Shopify's and WooCommerce's CSV exports recognised by
    their header). `shop_url` makes the product links of a shop export; `currency` fills rows without one;
    `need_images=False` (a folder gives the images) lets rows go without an image column; prices written as
    text are read by `locale`'s rules."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"product table {path} does not exist" if not path.exists() else f"product table {path} is not a file"
        )
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        header = csv_header(path)
        if set(header) >= SHOPIFY_HEADER:
            table = from_shopify(read_csv_text(path, header), shop_url, locale)
        elif set(header) >= WOOCOMMERCE_HEADER:
            table = from_woocommerce(read_csv_text(path, header), shop_url, locale)
        else:
            table = from_table(read_csv_typed(path, header), need_images, locale)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pj

        table = from_table(_readable(lambda: pj.read_json(path), path), need_images, locale)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = from_table(_readable(lambda: pq.read_table(path), path), need_images, locale)
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
    return [{h: (row[i] if i < len(row) else "") for i, h in enumerate(header)} for row in rows if any(row)]


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
def from_shopify(rows: list[dict[str, str]], shop_url: str | None, locale: str = "en_US") -> ProductTable:
    """Shopify's product export: one product per Handle (its later rows are variants and extra images)."""
    by_handle: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        handle = row.get("Handle", "").strip()
        if handle:
            by_handle.setdefault(handle, []).append(row)
    records, skipped = [], []
    for handle, group in by_handle.items():
        first = group[0]
        status = first.get("Status", "").strip().lower()
        if status and status != "active":
            skipped.append((handle, f"not on sale in the shop (Status: {status})"))
            continue
        images = [
            (_position(r.get("Image Position")), i, r["Image Src"].strip())
            for i, r in enumerate(group)
            if r.get("Image Src", "").strip()
        ]
        price = next((r["Variant Price"] for r in group if r.get("Variant Price", "").strip()), None)
        records.append(
            {
                "id": handle,
                "image": min(images)[2] if images else "",
                "title": first.get("Title", ""),
                "description": plain_text(first.get("Body (HTML)")),
                "brand": first.get("Vendor", ""),
                "category": first.get("Type", "") or first.get("Product Category", ""),
                "tags": first.get("Tags", ""),
                "price": price,
                "url": f"{shop_url.rstrip('/')}/products/{quote(handle)}" if shop_url else None,
            }
        )
    return from_records(records, "shopify", skipped, locale)


def _position(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def from_woocommerce(rows: list[dict[str, str]], shop_url: str | None, locale: str = "en_US") -> ProductTable:
    """WooCommerce's product export: one product per row that is not a variation (a variable product's price is
    its first variation's); id = SKU, else ID; the first of its Images."""
    records, skipped = [], []
    variation_price: dict[str, str] = {}
    for row in rows:
        if row.get("Type", "").strip().lower() == "variation":
            parent = row.get("Parent", "").strip()
            price = row.get("Sale price", "").strip() or row.get("Regular price", "").strip()
            if parent and price:
                variation_price.setdefault(parent, price)
    for row in rows:
        kind = row.get("Type", "").strip().lower()
        ident, sku = row.get("ID", "").strip(), row.get("SKU", "").strip()
        if kind == "variation":
            continue
        if row.get("Published", "1").strip() not in ("1", ""):
            skipped.append((sku or ident, f"not published in the shop (Published: {row['Published'].strip()})"))
            continue
        price = (
            row.get("Sale price", "").strip()
            or row.get("Regular price", "").strip()
            or variation_price.get(f"id:{ident}")
            or variation_price.get(sku)
        )
        images = [u.strip() for u in row.get("Images", "").split(",") if u.strip()]
        url = None
        if shop_url and ident:
            url = f"{shop_url.rstrip('/')}/?post_type=product&p={quote(ident)}"
        records.append(
            {
                "id": sku or ident,
                "image": images[0] if images else "",
                "title": row.get("Name", ""),
                "description": plain_text(row.get("Short description") or row.get("Description")),
                "brand": row.get("Brands", ""),
                "category": row.get("Categories", "").split(",")[0].strip(),
                "tags": row.get("Tags", ""),
                "price": price,
                "url": row.get("External URL", "").strip() or url,
            }
        )
    return from_records(records, "woocommerce", skipped, locale)


def from_records(records: list[dict], kind: str, skipped: list[tuple[str, str]], locale: str) -> ProductTable:
    """A shop export's mapped rows (standard columns as text; price as text) -> a ProductTable."""
    columns = {name: [r.get(name) or None for r in records] for name in STANDARD}
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    return checked(table, [r["image"] for r in records], kind, skipped, locale)


def from_table(table: pa.Table, need_images: bool, locale: str = "en_US") -> ProductTable:
    """Any table with an image column (or, with `need_images=False`, an id column): other columns carried."""
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
    images = [_text(v) for v in table.column(image_col).to_pylist()] if image_col else [""] * table.num_rows
    table = table.drop_columns([image_col]) if image_col else table
    table = table.rename_columns(
        [n.strip().lower() if n.strip().lower() in STANDARD else n.strip() for n in table.column_names]
    )
    if "id" not in table.column_names:  # ids from the images' file names, as a folder gets them
        ids = [os.path.splitext(src.rstrip("/").split("/")[-1].split("?")[0])[0] for src in images]
        table = table.append_column("id", pa.array(ids, pa.string()))
    return checked(table, images, "table", [], locale)


def _text(value) -> str:
    return "" if value is None else str(value).strip()


# ------------------------------------------------------------------------------------------- checks
def checked(
    table: pa.Table, images: list[str], kind: str, skipped: list[tuple[str, str]], locale: str = "en_US"
) -> ProductTable:
    """The standard columns typed and checked (ids unique and present, prices numbers, urls http(s)), rows without
    an id skipped, the columns upload_ds.py writes itself left out; all of it reported. Prices written as text
    are read by `locale`'s rules (a shop export's plain 1299.00 as it is)."""
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
    for name in PRICE_COLUMNS:
        if name in table.column_names:
            prices = _prices(table.column(name).to_pylist(), ids, name, locale, kind != "table", notes)
            table = table.set_column(table.column_names.index(name), name, pa.array(prices, pa.float64()))
    products = [Product(ident, image) for ident, image in zip(ids, images)]
    return ProductTable(products, table, kind, skipped, notes)


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
    """Each product's image as an http(s) URL or an absolute local path (relative ones against the table's folder);
    other schemes are skipped with their reason."""
    kept, rows = [], []
    for i, product in enumerate(table.products):
        src = product.image
        if not src:
            kept.append(product)
            rows.append(i)
            continue
        scheme = urlsplit(src).scheme.lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", src) else ""
        if scheme in ("http", "https"):
            pass
        elif scheme == "file":
            src = urlsplit(src).path
        elif scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive
            table.skipped.append((product.id, f"image {src[:60]!r}: only http(s) URLs and files can be read"))
            continue
        else:
            src = str(Path(src) if Path(src).is_absolute() else (base / src))
        kept.append(Product(product.id, src))
        rows.append(i)
    table.products = kept
    table.columns = table.columns.take(pa.array(rows, pa.int64()))
