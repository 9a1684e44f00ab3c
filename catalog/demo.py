"""The built-in demo catalog: Fashion-MNIST product photos embedded by a pretrained EfficientNet-Lite0, offline.

Products come from Debian's `dataset-fashion-mnist` package (70,000 images) when installed, else from the
balanced subset shipped in data/ (200 per category). Both give the same products for sizes up to 2,000.
The first run embeds with a progress bar and caches the dataset with `save_to_disk`; later runs load it.

    python demo.py --size 2000            # build (or load) the cached catalog and print its precision@5
    python demo.py --make-subset          # regenerate data/fashion-mnist-subset.npz from the Debian package

Fashion-MNIST is (c) Zalando SE, MIT licence: https://github.com/zalandoresearch/fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from catalog.catalog import DEFAULT_CACHE
from common.cli import ArgumentParser, add_runtime_options, folder_problem, whole_number
from common.cores import usable_cores
from common.saving import save_replacing

if TYPE_CHECKING:
    import datasets

    from embed import ImageEncoder

CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
SUBSET_FILE = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist-subset.npz"
SUBSET_PER_CATEGORY = 200
DISPLAY_PX = 224  # 8x the 28 px originals, enlarged with a smooth filter (no hard pixel blocks)
DEMO_MODEL = "efficientnet-lite0"
CACHE_VERSION = "v4"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) as a uint8 array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def debian_available() -> bool:
    """Whether Debian's dataset-fashion-mnist files are installed."""
    return all(
        (DEBIAN_DIR / f"{p}-{k}-idx{d}-ubyte.gz").exists()
        for p in ("train", "t10k")
        for k, d in (("images", 3), ("labels", 1))
    )


def load_source(source: str = "auto") -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(name, images (n, 28, 28) uint8, labels (n,), original indices (n,)) from 'debian', 'subset' or 'auto'."""
    if source not in ("auto", "debian", "subset"):
        raise ValueError(f"source must be auto, debian or subset, got {source!r}")
    if source == "debian" or (source == "auto" and debian_available()):
        if not debian_available():
            raise FileNotFoundError(f"no Fashion-MNIST under {DEBIAN_DIR}: apt-get install dataset-fashion-mnist")
        images = np.concatenate([read_idx(DEBIAN_DIR / f"{p}-images-idx3-ubyte.gz") for p in ("train", "t10k")])
        labels = np.concatenate([read_idx(DEBIAN_DIR / f"{p}-labels-idx1-ubyte.gz") for p in ("train", "t10k")])
        return "debian", images, labels, np.arange(len(labels))
    with np.load(SUBSET_FILE) as z:
        return "subset", z["images"], z["labels"], z["index"]


def balanced_order(labels: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Positions of `size` products, as even across categories as possible, in a fixed shuffled order.

    Ranks come from one fixed permutation of all 70,000 original indices, so any source holding the first
    products of each category in that order (the shipped subset does) selects exactly the same products.
    """
    rank = np.random.default_rng(0).permutation(70_000).argsort()[index]
    per = [size // len(CATEGORIES) + (c < size % len(CATEGORIES)) for c in range(len(CATEGORIES))]
    chosen = []
    for c, k in enumerate(per):
        pos = np.flatnonzero(labels == c)
        if len(pos) < k:
            raise ValueError(
                f"this source has only {len(pos)} products of category {CATEGORIES[c]}, "
                f"{k} needed for size {size}; install dataset-fashion-mnist for up to 70,000"
            )
        chosen.append(pos[np.argsort(rank[pos], kind="stable")[:k]])
    chosen = np.concatenate(chosen)
    return chosen[np.argsort(rank[chosen], kind="stable")]


def product_photo(pixels: np.ndarray, px: int) -> Image.Image:
    """A 28x28 Fashion-MNIST image as a dark-on-white product photo (the dataset stores negatives) of `px` size."""
    img = Image.fromarray(255 - pixels, "L")
    return img.resize((px, px), Image.LANCZOS) if px != pixels.shape[0] else img


def png_file(image: Image.Image) -> dict:
    """`image` as a datasets Image value: PNG bytes at zlib's fastest level (4x quicker than the default level,
    15% larger; the pixels are the same)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def load_demo_catalog(
    size: int = 2000,
    cache_dir: str | os.PathLike | None = None,
    source: str = "auto",
    encoder: ImageEncoder | None = None,
    progress: bool = True,
    runtime: str = "auto",
    precision: str = "float32",
) -> datasets.Dataset:
    """The demo catalog as a `datasets.Dataset` (image, id, category, title, embeddings, appearance); cached on
    disk after one build (one per precision; `runtime` is what makes it, see embed.ImageEncoder)."""
    import datasets

    if size < 1:
        raise ValueError(f"demo size must be at least 1, got {size}")
    name, images, labels, index = load_source(source)
    if size > len(labels):
        hint = "; install dataset-fashion-mnist (apt) for up to 70,000" if name == "subset" else ""
        raise ValueError(f"the {name} Fashion-MNIST source has {len(labels)} products, asked for {size}{hint}")
    model = encoder.model_name if encoder is not None else DEMO_MODEL
    precision = encoder.precision if encoder is not None else precision
    kind = f"{model.replace('/', '_')}{'-int8' if precision == 'int8' else ''}"  # float32 of either runtime: the same
    cache = Path(cache_dir or DEFAULT_CACHE) / f"demo-{name}-{size}-{kind}-{CACHE_VERSION}"
    if (cache / "dataset_info.json").exists():
        return datasets.load_from_disk(str(cache))
    from embed import ImageEncoder, embed_dataset

    t = time.perf_counter()
    rows = balanced_order(labels, index, size)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "id": datasets.Value("string"),
            "category": datasets.Value("string"),
            "title": datasets.Value("string"),
            "source": datasets.Image(),
        }
    )
    with ThreadPoolExecutor(usable_cores()) as pool:  # PNG-encoding 2,000 pictures is a third of a first start
        shown = list(pool.map(lambda r: png_file(product_photo(images[r], DISPLAY_PX)), rows))
        source = list(pool.map(lambda r: png_file(product_photo(images[r], 28)), rows))
    ds = datasets.Dataset.from_dict(
        {
            "image": shown,
            "id": [f"fashion-mnist-{int(index[r]):05d}" for r in rows],
            "category": [CATEGORIES[int(labels[r])] for r in rows],
            "title": [f"{CATEGORIES[int(labels[r])]} no. {int(index[r])}" for r in rows],
            "source": source,
        },
        features=features,
    )
    if encoder is None:  # batches of 16: larger ones thrash the CPU's cache
        encoder = ImageEncoder(DEMO_MODEL, 16, runtime=runtime, precision=precision, cache_dir=cache_dir)
    ds = embed_dataset(ds, encoder, image_column="source", progress=progress).remove_columns("source")
    ds.info.description = json.dumps({**encoder.describe(), "source": f"Fashion-MNIST ({name})", "size": size})
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_replacing(ds, cache)  # only a complete catalog ever sits at the cache path
    if progress:
        print(
            f"demo catalog: {size} products from {name}, embedded in {time.perf_counter() - t:.1f} s -> {cache}",
            file=sys.stderr,
        )
    return datasets.load_from_disk(str(cache))


def make_subset(path: Path = SUBSET_FILE, per_category: int = SUBSET_PER_CATEGORY) -> None:
    """Write the shipped subset: the first `per_category` products of each category in the fixed order."""
    name, images, labels, index = load_source("debian")
    rows = balanced_order(labels, index, per_category * len(CATEGORIES))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images[rows], labels=labels[rows], index=index[rows].astype(np.int32))
    print(f"wrote {path}: {len(rows)} images, {path.stat().st_size / 1e6:.2f} MB")


def main(argv: list[str] | None = None) -> int:
    """CLI: build/load the demo catalog, or regenerate the shipped subset."""
    ap = ArgumentParser(prog="demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=whole_number(1, 70_000), default=2000, help="products in the catalog (default 2000)")
    ap.add_argument("--source", choices=("auto", "debian", "subset"), default="auto")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--make-subset", action="store_true", help="regenerate data/fashion-mnist-subset.npz")
    add_runtime_options(ap, "the demo's")
    args = ap.parse_args(argv)
    problem = folder_problem(args.cache_dir, "--cache-dir")
    if problem:
        ap.error(problem)
    if args.make_subset:
        make_subset()
        return 0
    from catalog.dataset import embedding_matrix

    t = time.perf_counter()
    ds = load_demo_catalog(args.size, args.cache_dir, args.source, runtime=args.runtime, precision=args.precision)
    p5 = category_precision_at_k(embedding_matrix(ds), ds["category"])
    print(f"{len(ds)} products in {time.perf_counter() - t:.1f} s; category precision@5 {p5:.3f}")
    return 0


def category_precision_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Mean share of each product's k nearest neighbours (itself excluded) that are of its category."""
    x = np.asarray(embeddings, dtype=np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.asarray(labels)
    hits = 0.0
    for s in range(0, len(x), 2048):
        sims = x[s : s + 2048] @ x.T
        sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -np.inf
        nn = np.argpartition(-sims, k, axis=1)[:, :k]
        hits += (labels[nn] == labels[s : s + len(sims), None]).sum()
    return float(hits / (len(x) * k))
