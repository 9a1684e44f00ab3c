"""The catalog layer shared by app.py and evaluate.py: load a shop's dataset, and know which products can be shown.

    load_dataset_source(SRC)  -> a `datasets.Dataset` (a folder saved by upload_ds.py --out, or a Hub id)
    Catalog(ds, name)         -> embeddings, labels, and gallery thumbnails, each made once and kept on disk
    catalog.find("red shoes") -> what typed words ask for: the products whose text has the words (full-text search,
                                 catalog/fulltext.py), best first, and on CLIP-family catalogs a vector of their
                                 meaning too; the pair is a query for `Session.next_round(query=...)`

Every product image is checked once: a few at start (a catalog whose images mostly fail is a CatalogError
then), the rest in a background thread that makes the thumbnails. A product whose image cannot be shown is
reported to `on_hide` (the app passes `Recommender.hide`), so no gallery ever shows it and no page
or click fails because of it. No UI imports here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from catalog.dataset import (
    CatalogError,
    dataset_folder,
    dataset_meta,
    dataset_views,
    embedding_blocks,
    picture_data,
    picture_source,
)
from catalog.fulltext import TextIndex, words_of
from common.images import APPEARANCE_SIZE, appearance_vectors, open_image, to_rgb
from common.untrusted import clean_text, price_value, safe_url

if TYPE_CHECKING:
    import babel
    import datasets
    from PIL import Image

    from embed import TextEncoder

log = logging.getLogger("catalog")
THUMB_PX = 256  # gallery tiles: pictures shrunk or (smoothly) enlarged to fit this square
PAGE_PX = 512  # the product page's larger picture
THUMB_VERSION = "s2"  # in the thumbnail folder's name: bump when thumbnails are made differently
PRODUCT_FIELDS = ("title", "price", "currency", "brand", "category", "description", "url")
PRICE_FIELDS = ("price", "compare_at_price", "lowest_price")  # optional price columns (old datasets lack the last two)
DEFAULT_LOCALE = "en_US"  # how prices are written unless app.py --locale says otherwise
MAX_SHOWN_PRICE = 1e12  # a price above this is not shown (a stray 1e308 would be 309 digits)
CAPTION_CHARS = 40  # a longer title is cut with an ellipsis in a tile's caption
MADE_MEMO = 200_000  # picture files remembered per catalog (rows whose picture bytes need no hashing again)
MAX_QUERY_CHARS = 200  # typed text beyond this is cut (a pasted page is not a query)
SAMPLE_AT_START = 48  # product images decoded before serving; most of them failing stops the start
DEFAULT_CACHE = Path(os.environ.get("CACHE_DIR") or Path.home() / ".cache" / "product-recommender")


def catalog_title(src: str) -> str:
    """What the page calls a catalog given as `src`: a Hub id as it is, a local folder by its last name only
    (a visitor has no business knowing where the shop's files are)."""
    path = Path(src).expanduser()
    return (path.resolve().name or "catalog") if path.exists() else src


def catalog_id(src: str | None) -> str:
    """Which catalog the hunt log names, and files its hunts under: "demo" for the built-in demo (no `src`), else
    the catalog as the page names it (a Hub id, a local folder's last name; see catalog_title)."""
    return catalog_title(src) if src and src.strip() else "demo"


def shop_title(name: str) -> str:
    """The shop's own name for a catalog called `name` (see catalog_title): a Hub id's last part, without the
    "-embeddings" suffix the upload gives the second dataset ("USER/my-shop-embeddings" -> "my-shop")."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix("-embeddings") or last or "Shop"


def markdown_text(text: str) -> str:
    """`text` to show literally inside Markdown: its Markdown and HTML characters escaped."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", text)


def shop_locale(name: str) -> babel.Locale:
    """The Babel locale called `name` ("de_DE", "de-DE", "fr"), for writing prices; a ValueError saying why not."""
    import babel

    try:
        return babel.Locale.parse(str(name).strip().replace("-", "_"))
    except (babel.UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"{name!r} is not a locale (e.g. en_US, de_DE, fr_FR): {str(exc).splitlines()[0]}") from None


@functools.cache
def iso_currencies() -> frozenset[str]:
    """The ISO 4217 currency codes Babel knows ("EUR", "USD", ...)."""
    from babel.numbers import list_currencies

    return frozenset(list_currencies())


def price_text(price: float | None, currency: str | None, locale: str | babel.Locale = DEFAULT_LOCALE) -> str:
    """A price as the shopper's locale writes it, by Babel ("€1,008.00" in en_US, "1.008,00 €" in de_DE); a
    currency that is not an ISO code (an old dataset's "$") follows the number as it is; "" when there is no price
    (or an absurd one)."""
    from babel.numbers import format_currency, format_decimal

    if price is None or not 0 <= price <= MAX_SHOWN_PRICE:
        return ""
    code = (currency or "").strip()
    if code.upper() in iso_currencies():
        return format_currency(price, code.upper(), locale=locale)
    number = format_decimal(price, format="#,##0.00", locale=locale)
    return f"{number} {code}" if code else number


def fit_square(img: Image.Image, px: int) -> Image.Image:
    """`img` scaled to fit a px x px square: shrunk, or enlarged with a smooth filter (a tiny picture shown large
    stays soft, not blocky)."""
    from PIL import Image

    scale = px / max(img.size)
    if scale == 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.LANCZOS if scale > 1 else Image.BICUBIC, reducing_gap=None if scale > 1 else 2.0)


def _text(value) -> str | None:
    """A dataset value as one clean line of text (None for missing); lists joined with commas."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    text = clean_text(str(value), 5000).strip()
    return text or None


@dataclass
class TypedQuery:
    """What typed words ask for: the products whose text has them (`rows`, best first; None: none has) and, on a
    CLIP-family catalog, their meaning (`vector`, from the model's text tower); how it searches (`search_by`:
    "words", "meaning" or "words and meaning"), and a line for the shopper when nothing can be searched."""

    text: str
    search_by: str
    vector: np.ndarray | None = None
    rows: np.ndarray | None = None
    message: str = ""

    @property
    def query(self) -> tuple[np.ndarray | None, np.ndarray | None] | None:
        """The query `Session.next_round` takes, (vector, rows best first); None when there is nothing to search."""
        return None if self.vector is None and self.rows is None else (self.vector, self.rows)

    @property
    def matches(self) -> int:
        """How many products have the words."""
        return 0 if self.rows is None else int(self.rows.size)


class Catalog:
    """The products a shop shows: embeddings, labels, and images as gallery-sized thumbnail files."""

    def __init__(
        self,
        ds: datasets.Dataset,
        name: str,
        cache_dir: str | os.PathLike = DEFAULT_CACHE,
        image_column: str = "image",
        base_dir: str | os.PathLike | None = None,
        locale: str = DEFAULT_LOCALE,
    ) -> None:
        import datasets

        missing = [c for c in (image_column, "embeddings") if c not in ds.column_names]
        if missing:
            raise CatalogError(
                f"dataset {name} has no {' or '.join(map(repr, missing))} column "
                f"(columns: {ds.column_names}); make it with upload_ds.py"
            )
        if len(ds) == 0:
            raise CatalogError(f"dataset {name} has no rows")
        try:
            self.embeddings = embedding_blocks(ds)  # views of the mapped Arrow file: read, never copied whole
            self.views = dataset_views(ds)  # e.g. each product's colour layout, for `bayes`
        except ValueError as exc:
            raise CatalogError(f"dataset {name}: {exc}") from exc
        self.name = name
        self.id = name  # which catalog the hunt log names (app.py gives catalog_id(SRC))
        self.locale = shop_locale(locale)  # how the page writes prices
        self.n = len(ds)
        feature = ds.features[image_column]
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            self.images = ds.select_columns([image_column])  # plain paths, opened relative to the dataset
        elif isinstance(feature, datasets.Image):
            self.images = ds.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
        else:
            raise CatalogError(
                f"dataset {name}: column {image_column!r} must hold images or image paths, got {feature}"
            )
        self.image_column = image_column
        # the column as Arrow stores it: a row's bytes or path read without a decoded row (see `picture`)
        self._stored = self.images.data.column(image_column) if self.images._indices is None else None
        self.base_dir = Path(base_dir) if base_dir is not None else dataset_folder(ds)
        label_col = "category" if "category" in ds.column_names else "id" if "id" in ds.column_names else None
        self.labels = [str(v) for v in ds[label_col]] if label_col else [f"#{i}" for i in range(self.n)]
        meta = dataset_meta(ds)
        self.model = meta.get("model")
        self.has_text = bool(meta.get("text"))  # embeddings share a space with the model's text tower
        self.precision = str(meta.get("precision") or "float32")  # of the image vectors; typed words' must match
        self.text_encoder = None  # set by `load_text_encoder`
        self._ds = ds  # read once more, to build the search index
        self._search: TextIndex | None = None  # the full-text index, see `search_index`
        self._search_lock = threading.Lock()
        self.synonyms: dict[str, list[str]] = {}  # the owner's: a word -> alternatives it also finds (fulltext.py)
        self._text_lock = threading.Lock()  # a tokenizer is not safe to call from two threads at once
        present = [c for c in dict.fromkeys(("id", *PRODUCT_FIELDS, *PRICE_FIELDS)) if c in ds.column_names]
        facts = ds.select_columns(present) if present else None
        self._facts = (facts.flatten_indices() if facts._indices is not None else facts).data if facts else None
        self._ids = None  # the ids as text, for `row_of`
        self.key = f"{ds._fingerprint}-{self.n}"  # which catalog: a browser's saved place is only for this one
        self.thumb_dir = Path(cache_dir) / "thumbs" / f"{ds._fingerprint}-{THUMB_PX}{THUMB_VERSION}"
        self.thumb_dir.mkdir(parents=True, exist_ok=True)
        self.search_dir = Path(cache_dir) / "search"
        self.hidden: dict[int, str] = {}  # row -> why its image cannot be shown
        self._made: dict[tuple[str, int], str] = {}  # (kind, row) -> its picture file, for pictures stored as bytes
        self.checked = 0  # rows the background check has been through
        self.on_hide: Callable[[list[int]], object] | None = None  # told the rows newly hidden
        self._lock = threading.Lock()

    # -- what a shopper reads about a product
    def product(self, row: int) -> dict:
        """The product's facts as the page shows them: id, title, price, compare_at_price and lowest_price (floats),
        currency, brand, category, description, url (http(s) only); a fact the dataset lacks or that does not check
        out is None."""
        raw = {name: self._facts.column(name)[row].as_py() for name in self._facts.column_names} if self._facts else {}
        facts = {name: _text(raw.get(name)) for name in ("id", *PRODUCT_FIELDS)}
        for name in PRICE_FIELDS:
            try:
                facts[name] = price_value(raw.get(name))
            except ValueError:
                facts[name] = None
        facts["url"] = safe_url(facts["url"])
        facts["title"] = facts["title"] or facts["id"] or self.labels[row]
        return facts

    def product_id(self, row: int) -> str:
        """The product's id as the dataset has it (else "#row"): how the hunt log names products."""
        if self._facts is not None and "id" in self._facts.column_names:
            value = self._facts.column("id")[row].as_py()
            if value is not None:
                return str(value)
        return f"#{row}"

    def row_of(self, product_id: str) -> int | None:
        """The row of the product with this id (as `product_id` gives it; the first, if ids repeat), or None."""
        if self._facts is not None and "id" in self._facts.column_names:
            if self._ids is None:  # the ids as text, made once (a view when they are text already)
                self._ids = pc.cast(self._facts.column("id"), pa.string())
            row = pc.index(self._ids, product_id).as_py()
            return row if row >= 0 else None
        text = product_id[1:] if product_id.startswith("#") else ""
        return int(text) if text.isdigit() and str(int(text)) == text and int(text) < self.n else None

    def caption(self, row: int) -> str:
        """A tile's caption: the title (else the id), cut with an ellipsis, and on a line of its own the price where
        known ("title\nprice": the page shows the title on up to two lines and the price below it)."""
        facts = self.product(row)
        title = " ".join(facts["title"].split())
        title = title if len(title) <= CAPTION_CHARS else title[: CAPTION_CHARS - 1].rstrip() + "…"
        price = price_text(facts["price"], facts["currency"], self.locale)
        return f"{title}\n{price}" if price else title

    def page_picture(self, row: int) -> str | None:
        """Path of the product page's larger picture (up to PAGE_PX; a picture no larger than a tile's is the tile's
        own file: enlarging it further adds nothing), made on first use; None when it cannot be shown."""
        tile = self.showable(row)
        if tile is None:
            return None
        try:
            return self._picture_file(row, "p", PAGE_PX, small=tile)
        except Exception:  # the tile was made, so this is a passing failure (a full disk): show the tile
            return tile

    # -- typed words
    def load_text_encoder(self, encoder: TextEncoder | None = None) -> str | None:
        """Load the text tower of the catalog's CLIP-family model (or take `encoder`), so `find` searches by
        meaning; returns why not (None when loaded). Without it `find` matches names. A tower of another precision
        than the catalog's vectors (float32 against int8) is refused: its vectors would not be the ones compared."""
        if not self.has_text or not self.model:
            return "the catalog's model has no text tower"
        try:
            from embed import TextEncoder

            encoder = encoder or TextEncoder(self.model, precision=self.precision)
        except Exception as exc:  # the Hub out of reach, a missing local folder...: names still work
            return f"cannot load the text tower of {self.model}: {type(exc).__name__}: {str(exc)[:300]}"
        if encoder.precision != self.precision:
            return (
                f"the text tower runs in {encoder.precision}, the catalog's vectors were made in {self.precision}; "
                f"typed words search names"
            )
        if encoder.dim != self.embeddings[0].shape[1]:
            return (
                f"{self.model}'s text vectors have {encoder.dim} numbers, the catalog's embeddings "
                f"{self.embeddings[0].shape[1]}"
            )
        self.text_encoder = encoder
        return None

    @property
    def search_index(self) -> TextIndex:
        """The full-text index of every product's text: built on first use (app.py builds it at start), once, and
        kept in the cache folder under the dataset's fingerprint, so a restart reads it from disk."""
        if self._search is None:
            with self._search_lock:
                if self._search is None:
                    self._search = TextIndex.open(self._ds, self.search_dir)
        return self._search

    def find(self, text: str) -> TypedQuery:
        """What `text` asks for: the products having its words (or their synonyms), best first; with the model's
        text tower loaded, its meaning as well (the two are combined in the rounds, see `Session.next_round`)."""
        text = " ".join(clean_text(text, MAX_QUERY_CHARS * 4).split())[:MAX_QUERY_CHARS]
        if not words_of(text):
            return TypedQuery(text, "", message="Type a word or two about the product you want." if text else "")
        try:
            found = self.search_index.search(text, self.synonyms)
        except sqlite3.Error as exc:  # its file gone under the app (a cache folder cleared): built again, once
            log.warning("the search index cannot be read (%s): building it again", exc)
            with self._search_lock:
                self._search = None
            found = self.search_index.search(text, self.synonyms)
        rows = found.rows if found.count else None
        if self.text_encoder is None:
            if rows is None:
                return TypedQuery(text, "words", message=f"No product matches '{text}'.")
            return TypedQuery(text, "words", rows=rows)
        with self._text_lock:
            vector = self.text_encoder.embed([text])[0]
        return TypedQuery(text, "meaning" if rows is None else "words and meaning", vector, rows)

    # -- images
    def picture(self, row: int) -> tuple[bytes | Path, str]:
        """The product's picture, as stored bytes or a checked file, and a key that changes when it does (see
        `picture_source`)."""
        stored = self._stored[row].as_py() if self._stored is not None else self.images[row][self.image_column]
        return picture_source(stored, self.base_dir)

    def thumb(self, row: int) -> str:
        """Path of the product's gallery-sized JPEG, made on first use and kept on disk; raises if it cannot be.

        The file is named by the row and its picture's key, so a picture changed on disk gets a new thumbnail."""
        return self._picture_file(row, "r", THUMB_PX)

    def _picture_file(self, row: int, prefix: str, px: int, small: str | None = None) -> str:
        """The product's picture fitted to px x px as a JPEG in the thumbnail folder, made once; `small`: the file
        to use instead when the picture is no larger than THUMB_PX."""
        made = self._made.get((prefix, row))
        if made is not None and os.path.exists(made):  # a cache folder cleared under the app: made again
            return made
        source, key = self.picture(row)
        path = self.thumb_dir / f"{prefix}{row}-{key}.jpg"
        if not path.exists():
            img = to_rgb(open_image(picture_data(source)))
            if small is not None and max(img.size) <= THUMB_PX:
                path = Path(small)
            else:
                img = fit_square(img, px)
                tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
                img.save(tmp, "JPEG", quality=88)
                os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        if isinstance(source, bytes):  # stored in the dataset, which cannot change under us: no need to look again
            if len(self._made) >= MADE_MEMO:
                self._made.clear()
            self._made[(prefix, row)] = str(path)
        return str(path)

    def showable(self, row: int) -> str | None:
        """The product's thumbnail path, or None (and the product hidden) when it cannot be made."""
        if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < self.n:
            raise ValueError(f"{row!r} is not a row of the catalog")  # a caller's bug, never the product's fault
        if row in self.hidden:
            return None
        try:
            return self.thumb(row)
        except Exception as exc:  # any failure of one product's image stays that product's problem
            self.hide({row: f"{type(exc).__name__}: {exc}"})
            return None

    def hide(self, reasons: dict[int, str]) -> None:
        """Record products whose image cannot be shown (row -> why), log them, and tell `on_hide`."""
        with self._lock:
            new = {r: why for r, why in reasons.items() if r not in self.hidden}
            self.hidden.update(new)
        for row, why in list(new.items())[:20]:
            log.warning(
                "product %d (%s) cannot be shown and is left out of every gallery: %s", row, self.labels[row], why[:300]
            )
        if len(new) > 20:
            log.warning("... and %d more products cannot be shown", len(new) - 20)
        if new and self.on_hide is not None:
            self.on_hide(sorted(new))

    # -- a second pair of eyes
    def add_appearance(self) -> None:
        """Give a dataset made without an `appearance` column (made elsewhere, or before it) that view, computed
        from its pictures once and cached beside the thumbnails, so `bayes` compares colour and shape on every
        catalog. A picture that cannot be read gets zeros (it is never shown anyway)."""
        if "appearance" in self.views:
            return
        path = self.thumb_dir.parent / f"{self.thumb_dir.name}-appearance{APPEARANCE_SIZE}.npy"
        try:
            view = np.load(path, mmap_mode="r")
            if view.shape == (self.n, 3 * APPEARANCE_SIZE**2) and view.dtype == np.float32:
                self.views["appearance"] = view
                return
        except (OSError, ValueError):
            pass
        t = last = time.perf_counter()
        view = np.zeros((self.n, 3 * APPEARANCE_SIZE**2), np.float32)
        for row in range(self.n):
            with contextlib.suppress(Exception):  # one unreadable picture leaves its row at zero
                view[row] = appearance_vectors([picture_data(self.picture(row)[0])])[0]
            if time.perf_counter() - last > 10:
                last = time.perf_counter()
                log.info("computing the appearance view: %d of %d pictures", row + 1, self.n)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.npy")
        try:
            np.save(tmp, view)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot cache the appearance view in %s: %s", path, exc)
        log.info("appearance view of %d pictures computed in %.1f s", self.n, time.perf_counter() - t)
        self.views["appearance"] = view

    # -- checks
    def check_sample(self, k: int = SAMPLE_AT_START, seed: int = 0) -> None:
        """Decode up to `k` products now; a CatalogError when more than half of them cannot be shown."""
        rows = np.sort(np.random.default_rng(seed).choice(self.n, min(k, self.n), replace=False))
        failed = [int(r) for r in rows if self.showable(int(r)) is None]
        if len(failed) * 2 > len(rows):
            why = self.hidden[failed[0]]
            raise CatalogError(
                f"dataset {self.name}: {len(failed)} of {len(rows)} product images checked cannot "
                f"be shown (row {failed[0]}: {why[:200]})"
            )

    def check_all(self, background: bool = True) -> threading.Thread | None:
        """Check every product image once by making its thumbnail (in a thread), logging progress and failures."""

        def work() -> None:
            t = last = time.perf_counter()
            for row in range(self.n):
                self.showable(row)
                self.checked = row + 1
                if time.perf_counter() - last > 10:
                    last = time.perf_counter()
                    log.info(
                        "checking product images: %d of %d (%d cannot be shown)", row + 1, self.n, len(self.hidden)
                    )
            bad = len(self.hidden)
            log.info(
                "product images checked in %.1f s: %d of %d can be shown%s",
                time.perf_counter() - t,
                self.n - bad,
                self.n,
                f", {bad} left out (see the warnings above)" if bad else "",
            )
            if bad * 2 > self.n:
                log.error("most product images of %s cannot be shown; check the dataset", self.name)

        if not background:
            work()
            return None
        thread = threading.Thread(target=work, name="check-images", daemon=True)
        thread.start()
        return thread

    def summary(self) -> str:
        """One line for the page header: how many products, and how many cannot be shown."""
        text = f"Catalog: **{markdown_text(self.name)}**, {self.n - len(self.hidden):,} products"
        if self.hidden:
            text += f" ({len(self.hidden):,} left out: their image cannot be shown)"
        if self.checked < self.n:
            text += f" · checking images: {self.checked * 100 // self.n}%"
        return text
