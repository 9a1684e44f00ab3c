"""Shopify's and WooCommerce's product exports, as they come -> one record per product, with what was folded in
and what was left out.

A record holds the standard columns as text (prices as written; products.py reads and checks them), `images`
(every image, in the shop's order), `options` ("Size: S, M" per variant option), `attributes` ("Color: Natural
Black" per metafield or attribute) and, when the variants' prices differ, `lowest_price`. No UI imports here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote

from intake.prices import read_price

MAX_TEXT = 20_000  # characters kept of one text value (a description is not a book)
MAX_IMAGES = 50  # images kept per product
METAFIELD = re.compile(r"^(.*?)\s*\((?:product|variant)\.metafields\.[^.()]+\.([^()]+)\)\s*$")


@dataclass
class Mapped:
    """A shop export's products as records, the products left out (id, why), and the rows read and folded."""

    records: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0
    folded: int = 0  # variant and image rows that went into a product of an earlier row


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


def _distinct(values) -> list[str]:
    """The non-empty values, stripped, each once, in order."""
    return list(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def _lines(pairs: dict[str, list[str]]) -> str | None:
    """{name: values} as one "Name: value1, value2" line each (None when there is none)."""
    return "\n".join(f"{name}: {', '.join(values)}" for name, values in pairs.items() if values) or None


def _lowest(prices: list[str], locale: str) -> float | None:
    """The lowest of the variants' prices when they differ (None when they agree or cannot be read)."""
    numbers = set()
    for text in prices:
        try:
            number = read_price(text, locale, plain_first=True)
        except ValueError:
            continue
        if number is not None:
            numbers.add(number)
    return min(numbers) if len(numbers) > 1 else None


def excluded(kinds: list[str], exclude: set[str]) -> str | None:
    """The first of a product's types or categories ("Insurance", "Clothing > Hats": its last part counts too)
    that `exclude` (casefolded) names, else None."""
    for kind in kinds:
        for name in (kind.strip(), kind.split(">")[-1].strip()):
            if name and name.casefold() in exclude:
                return name
    return None


# ------------------------------------------------------------------------------------------------ Shopify
def shopify_records(
    rows: list[dict[str, str]], shop_url: str | None, locale: str = "en_US", exclude: set[str] = frozenset()
) -> Mapped:
    """Shopify's product export: one product per Handle (its later rows are variants and extra images). Drafts,
    archived products, gift cards and the types in `exclude` are left out."""
    by_handle: dict[str, list[dict[str, str]]] = {}
    out = Mapped()
    for i, row in enumerate(rows):
        handle = row.get("Handle", "").strip()
        if handle:
            by_handle.setdefault(handle, []).append(row)
        else:
            out.skipped.append((f"row {i + 2}", "no Handle"))
    out.rows = sum(map(len, by_handle.values()))
    out.folded = out.rows - len(by_handle)
    metafields = [
        (name, m.group(1) or m.group(2)) for name in (rows[0] if rows else {}) if (m := METAFIELD.match(name))
    ]
    for handle, group in by_handle.items():
        why = _shopify_left_out(group[0], exclude)
        if why:
            out.skipped.append((handle, why))
        else:
            out.records.append(_shopify_product(handle, group, shop_url, metafields, locale))
    return out


def _shopify_left_out(first: dict[str, str], exclude: set[str]) -> str | None:
    status = first.get("Status", "").strip().lower()
    if status and status != "active":
        return f"not on sale in the shop (Status: {status})"
    if first.get("Gift Card", "").strip().lower() == "true":
        return "a gift card (Gift Card: true), not a product to show"
    kind = excluded([first.get("Type", ""), first.get("Product Category", "")], exclude)
    return f"product type {kind!r}, left out by --exclude-type" if kind else None


def _shopify_product(
    handle: str, group: list[dict[str, str]], shop_url: str | None, metafields: list[tuple[str, str]], locale: str
) -> dict:
    first = group[0]
    positioned = sorted(
        (_position(r.get("Image Position")), i, r["Image Src"].strip())
        for i, r in enumerate(group)
        if r.get("Image Src", "").strip()
    )
    images = _distinct([src for _, _, src in positioned] + [r.get("Variant Image", "") for r in group])
    variants = [r for r in group if r.get("Variant Price", "").strip()] or [first]
    options = {}
    for k in (1, 2, 3):
        name = first.get(f"Option{k} Name", "").strip()
        values = _distinct(r.get(f"Option{k} Value", "") for r in variants)
        if name and values != ["Default Title"]:
            options[name] = values
    attributes = {label.strip(): _distinct(r.get(column, "") for r in group) for column, label in metafields}
    return {
        "id": handle,
        "images": images[:MAX_IMAGES],
        "title": first.get("Title", ""),
        "description": plain_text(first.get("Body (HTML)")),
        "brand": first.get("Vendor", ""),
        "category": first.get("Type", "") or first.get("Product Category", ""),
        "tags": first.get("Tags", ""),
        "price": variants[0].get("Variant Price"),
        "compare_at_price": variants[0].get("Variant Compare At Price"),
        "lowest_price": _lowest([r.get("Variant Price", "") for r in variants], locale),
        "options": _lines(options),
        "attributes": _lines(attributes),
        "url": f"{shop_url.rstrip('/')}/products/{quote(handle)}" if shop_url else None,
    }


def _position(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


# ------------------------------------------------------------------------------------------------ WooCommerce
def woocommerce_records(
    rows: list[dict[str, str]], shop_url: str | None, locale: str = "en_US", exclude: set[str] = frozenset()
) -> Mapped:
    """WooCommerce's product export: one product per row that is not a variation (simple, variable, grouped,
    external); a variation folds into its Parent (id:ID or SKU). Unpublished products and the types or
    categories in `exclude` are left out. id = SKU, else ID."""
    out = Mapped(rows=len(rows))
    variations: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if _woo_type(row) == "variation":
            variations.setdefault(row.get("Parent", "").strip(), []).append(row)
    used: set[str] = set()
    for row in rows:
        if _woo_type(row) == "variation":
            continue
        ident, sku = row.get("ID", "").strip(), row.get("SKU", "").strip()
        keys = [k for k in (f"id:{ident}" if ident else "", sku) if k]
        own = [v for k in keys for v in variations.get(k, [])]
        used.update(k for k in keys if k in variations)
        out.folded += len(own)
        why = _woo_left_out(row, exclude)
        if why:
            out.skipped.append((sku or ident, why))
        else:
            out.records.append(_woo_product(row, own, shop_url, locale))
    for parent, orphans in variations.items():
        if parent not in used:
            out.skipped += [
                (v.get("SKU", "").strip() or v.get("ID", ""), f"a variation of {parent!r}, which is not in the table")
                for v in orphans
            ]
    return out


def _woo_type(row: dict[str, str]) -> str:
    return row.get("Type", "").strip().lower()


def _woo_left_out(row: dict[str, str], exclude: set[str]) -> str | None:
    if row.get("Published", "1").strip() not in ("1", ""):
        return f"not published in the shop (Published: {row['Published'].strip()})"
    kind = excluded([row.get("Type", ""), *row.get("Categories", "").split(",")], exclude)
    return f"product type {kind!r}, left out by --exclude-type" if kind else None


def _woo_attributes(row: dict[str, str]) -> dict[str, list[str]]:
    """A row's visible attributes (`Attribute N name` / `Attribute N value(s)`): name -> values."""
    out: dict[str, list[str]] = {}
    for key in row:
        m = re.fullmatch(r"Attribute (\d+) name", key)
        name = row[key].strip() if m else ""
        if name and row.get(f"Attribute {m.group(1)} visible", "1").strip() != "0":
            out.setdefault(name, [])
            out[name] = _distinct(out[name] + row.get(f"Attribute {m.group(1)} value(s)", "").split(","))
    return out


def _woo_price(row: dict[str, str]) -> tuple[str, str | None]:
    """(price, compare-at price): the sale price and the regular one it replaces, else the regular price."""
    sale, regular = row.get("Sale price", "").strip(), row.get("Regular price", "").strip()
    return (sale, regular or None) if sale else (regular, None)


def _woo_product(row: dict[str, str], variations: list[dict[str, str]], shop_url: str | None, locale: str) -> dict:
    ident, sku = row.get("ID", "").strip(), row.get("SKU", "").strip()
    images = _distinct(
        [*row.get("Images", "").split(","), *(u for v in variations for u in v.get("Images", "").split(","))]
    )
    options: dict[str, list[str]] = {}
    for variation in variations:
        for name, values in _woo_attributes(variation).items():
            options[name] = _distinct(options.get(name, []) + values)
    attributes = {k: v for k, v in _woo_attributes(row).items() if k not in options}
    priced = [v for v in variations if _woo_price(v)[0]]
    price, compare = _woo_price(priced[0] if priced and not _woo_price(row)[0] else row)
    url = f"{shop_url.rstrip('/')}/?post_type=product&p={quote(ident)}" if shop_url and ident else None
    return {
        "id": sku or ident,
        "images": images[:MAX_IMAGES],
        "title": row.get("Name", ""),
        "description": plain_text(row.get("Short description") or row.get("Description")),
        "brand": row.get("Brands", ""),
        "category": row.get("Categories", "").split(",")[0].strip(),
        "tags": row.get("Tags", ""),
        "price": price,
        "compare_at_price": compare,
        "lowest_price": _lowest([_woo_price(v)[0] for v in priced], locale),
        "options": _lines(options),
        "attributes": _lines(attributes),
        "url": row.get("External URL", "").strip() or url,
    }
