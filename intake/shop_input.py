"""What an upload reads: a folder of photos, a product table, or both joined on id -> one list of product images
(id, local file) and the product columns, with one report of everything left out. Shared by both engines.

Images given as URLs are downloaded first (download.py), so both engines read local files only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from intake.download import DownloadOptions, download_all
from intake.folder import DEFAULT_MAX_PIXELS, FolderScan, check_image, list_folder, make_ids, relative_name
from intake.products import ProductTable, read_products

if TYPE_CHECKING:
    import datasets


@dataclass
class ShopInput:
    """The images to read, (id, local file or, for a remote cluster, URL, name in the report), in product order;
    each product's next images, tried when its first cannot be read; the table (or None); and what was skipped
    or noted before any image is read."""

    root: Path
    items: list[tuple[str, Path | str, str]]
    table: ProductTable | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    downloads: str = ""  # one line on the image URLs: how many, how fast, how many failed ("" when none)
    alternates: dict[str, list[str]] = field(default_factory=dict)  # id -> its next images (paths or URLs)

    def scan(self) -> FolderScan:
        """An empty FolderScan carrying this input's report, for the engines to fill."""
        opening = self.table.opening() if self.table is not None else ""
        return FolderScan(
            self.root, skipped=list(self.skipped), notes=list(self.notes), downloads=self.downloads, opening=opening
        )


def gather(
    img_dir: str | os.PathLike | None = None,
    products: str | os.PathLike | None = None,
    shop_url: str | None = None,
    currency: str | None = None,
    download: DownloadOptions | None = None,
    download_cache: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    fetch_urls: bool = True,
    locale: str = "en_US",
    exclude_types: tuple[str, ...] = (),
) -> ShopInput:
    """The products of a folder, a table, or a table joined with a folder on `id` (the folder's image wins; an
    image without a row stays a product, listed; a row without an image is skipped, listed). Image URLs are
    downloaded here, unless `fetch_urls` is False (then by `fetch_images`, or a remote Ray cluster's workers).
    Prices written as text are read by `locale`'s rules; `exclude_types` are left out (listed)."""
    if img_dir is None and products is None:
        raise ValueError("give an image folder, a product table (--products), or both")
    folder: dict[str, tuple[Path, str]] = {}
    root = Path(img_dir) if img_dir is not None else Path(products).parent
    shop = ShopInput(root, [])
    if img_dir is not None:
        files, shop.skipped = list_folder(root)
        folder = {id_: (path, relative_name(root, path)) for id_, path in zip(make_ids(root, files), files)}
    if products is None:
        shop.items = [(id_, path, name) for id_, (path, name) in folder.items()]
        return shop
    table = read_products(
        products, shop_url, currency, need_images=img_dir is None, locale=locale, exclude_types=exclude_types
    )
    shop.skipped += table.skipped
    shop.notes += table.notes
    sources = []  # (id, [local paths or URLs, the first to use], name in the report)
    for product in table.products:
        if product.id in folder:
            path, name = folder.pop(product.id)
            sources.append((product.id, [str(path)], name))
        elif product.images:
            sources.append((product.id, product.images, f"{product.id} ({product.image})"))
        else:
            shop.skipped.append(
                (
                    product.id,
                    "a row of the table without an image"
                    + (" (no file with this id in the image folder)" if img_dir is not None else ""),
                )
            )
    for id_, (path, name) in folder.items():  # the folder's images without a row: products without its columns
        sources.append((id_, [str(path)], name))
        shop.notes.append((name, "no row in the product table: kept, without the table's columns"))
    shop.items = [(id_, _source(srcs[0]), name) for id_, srcs, name in sources]
    shop.alternates = {id_: srcs[1:] for id_, srcs, _ in sources if len(srcs) > 1}
    shop.table = table
    if fetch_urls:
        fetch_images(shop, download, download_cache, max_pixels, progress)
    return shop


def _source(src: str) -> Path | str:
    """A URL stays text; a file becomes a Path."""
    return src if src.startswith(("http://", "https://")) else Path(src)


def fetch_images(
    shop: ShopInput,
    options: DownloadOptions | None = None,
    cache: str | os.PathLike | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> None:
    """Every product's image as a local file that decodes: URLs downloaded (several at a time), and a product
    whose image fails falls back to its next one (noted); one with none left is skipped with the first reason."""
    if cache is None:
        import datasets

        cache = Path(datasets.config.HF_DATASETS_CACHE) / "product-images"
    pending = {id_: [src, *map(_source, shop.alternates.get(id_, []))] for id_, src, _ in shop.items}
    chosen: dict[str, Path] = {}
    failures: dict[str, list[str]] = {}
    fetched: dict[str, tuple[Path | None, str | None]] = {}
    t = time.perf_counter()
    while pending:  # round k tries the k-th image of the products still without one
        urls = [srcs[0] for srcs in pending.values() if isinstance(srcs[0], str)]
        this_round = options
        if urls and fetched and options is not None and options.budget:  # the budget is the whole run's
            this_round = replace(options, budget=max(options.budget - (time.perf_counter() - t), 1e-3))
        fetched |= download_all(urls, cache, this_round, max_pixels, progress) if urls else {}
        left = {}
        for id_, (src, *rest) in pending.items():
            if isinstance(src, str):
                path, why = fetched[src]
            else:  # a file: decoded here only when there is another image to fall back to
                path, why = src, check_image(src, max_pixels) if rest else None
            if why is None:
                chosen[id_] = path
            else:
                failures.setdefault(id_, []).append(why)
                if rest:
                    left[id_] = rest
        pending = left
    if fetched:
        took, failed = time.perf_counter() - t, sum(path is None for path, _ in fetched.values())
        shop.downloads = (
            f"{len(fetched)} image URLs fetched or found cached in {took:.1f} s "
            f"({len(fetched) / max(took, 1e-9):.0f}/s), {failed} failed"
        )
    items = []
    for id_, _, name in shop.items:
        whys = failures.get(id_, [])
        if id_ not in chosen:
            shop.skipped.append((name, whys[0] if len(whys) == 1 else f"all {len(whys)} images failed: {whys[0]}"))
            continue
        if whys:
            shop.notes.append((name, f"image 1 failed ({whys[0]}); image {len(whys) + 1} used instead"))
        items.append((id_, chosen[id_], name))
    shop.items, shop.alternates = items, {}  # every product has its image now


def product_columns(ids: list[str], table: ProductTable | None) -> pa.Table | None:
    """The table's columns (all but id) for the products `ids`, in that order; nulls for a product without a row."""
    if table is None or not table.columns.num_columns:
        return None
    where = {p.id: i for i, p in enumerate(table.products)}
    columns = table.columns.drop_columns(["id"]) if "id" in table.columns.column_names else table.columns
    return columns.take(pa.array([where.get(i) for i in ids], pa.int64()))


def with_product_columns(ds: datasets.Dataset, table: ProductTable | None) -> datasets.Dataset:
    """`ds` (a dataset with an `id` column) plus the product table's columns, their types kept."""
    import datasets

    columns = product_columns(list(ds["id"]), table)
    if columns is None or not columns.num_columns:
        return ds
    return datasets.concatenate_datasets([ds, datasets.Dataset(columns)], axis=1)
