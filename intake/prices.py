"""Prices and currencies as a shop's table writes them, read by a locale's rules (Babel), checked.

    read_price("1,299", "en_US")      # 1299.0
    read_price("1.299,00 €", "de_DE")  # 1299.0
    read_price("19,90", "en_US")      # ValueError: not a number the way en_US writes one (the row gets a note)

A price is a finite number from 0 to MAX_PRICE; anything else is a ValueError saying why, so the caller can leave
the price out of its row and report it. No UI imports here.
"""

from __future__ import annotations

import math
import re

MAX_PRICE = 1e9  # a price above this is a typo or a probe, not a product
PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")  # how Shopify and WooCommerce write a price: 1299.00
SPACES = ("\u00a0", "\u202f", " ")  # the thousands separators that look like a space


def check_locale(name: str) -> str:
    """`name` (de_DE or de-DE) as a locale Babel knows, else a ValueError naming it."""
    from babel import Locale, UnknownLocaleError

    text = str(name).strip().replace("-", "_")
    try:
        return str(Locale.parse(text))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"unknown locale {name!r}; give one like en_US or de_DE") from None


def check_currency(code: str) -> str:
    """`code` as an ISO 4217 currency code in capitals (eur -> EUR), else a ValueError naming it."""
    from babel.numbers import list_currencies

    text = str(code).strip().upper()
    if text not in list_currencies():
        raise ValueError(f"{code!r} is not an ISO 4217 currency code; give one like EUR, USD or GBP")
    return text


def read_price(value: object, locale: str = "en_US", plain_first: bool = False) -> float | None:
    """A price as a float, read by `locale`'s rules (`plain_first`: a plain 1299.00 as it is, as shop exports
    write prices); None when empty; a ValueError saying why otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"price {value!r} is not a number")
    if isinstance(value, (int, float)):
        return checked_price(float(value), value)
    text = str(value).strip()
    if plain_first and PLAIN_NUMBER.fullmatch(text):
        return checked_price(float(text), value)
    return checked_price(_parse(text, locale), value)


def _parse(text: str, locale: str) -> float:
    from babel.numbers import NumberFormatError, get_group_symbol, parse_decimal

    bare = re.sub(r"^[^\d+\-.,\s]+|[^\d.,\s]+$", "", text).strip()  # a currency sign or code before or after
    group = get_group_symbol(locale)
    if group in SPACES:
        for space in SPACES:
            bare = bare.replace(space, group)
    if not bare or not re.search(r"\d", bare):
        raise ValueError(f"price {text[:40]!r} is not a number")
    try:
        return float(parse_decimal(bare, locale, strict=True))
    except (NumberFormatError, ValueError, ArithmeticError):
        raise ValueError(f"price {text[:40]!r} is not a number the way {locale} writes one") from None


def checked_price(number: float, shown: object) -> float:
    """`number` when it can be a price (finite, 0 to MAX_PRICE); else a ValueError naming `shown`."""
    if not math.isfinite(number):
        raise ValueError(f"price {str(shown)[:40]!r} is not a finite number")
    if number < 0:
        raise ValueError(f"price {str(shown)[:40]!r} is below 0")
    if number > MAX_PRICE:
        raise ValueError(f"price {str(shown)[:40]!r} is above {MAX_PRICE:,.0f}, too large to be a price")
    return number
