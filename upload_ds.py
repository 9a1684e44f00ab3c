"""Image folder (one image per product) -> two Hugging Face datasets, pushed to the Hub and/or saved locally.

    python upload_ds.py IMG_DIR --repo USER/NAME [--model M] [--batch-size B] [--private] [--out DIR] [--no-push]

`NAME` holds `image` (bytes) and `id`; `NAME-embeddings` adds `embeddings` (L2-normalised). Unreadable files are
skipped and listed at the end with the reason for each. The token comes from HF_TOKEN or `hf auth login`.
An interrupted run, started again with the same arguments, resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from embed import DEFAULT_MODEL, describe_model, to_rgb
from hubcheck import HubUnavailableError, require_hub

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".avif", ".heic"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (~ 9459 x 9459)


@dataclass
class FolderScan:
    """Result of reading a folder: the images to keep (id, path) and the files skipped, each with its reason."""

    root: Path
    images: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        """A count line plus one line per skipped file."""
        lines = [f"{len(self.images)} images kept, {len(self.skipped)} skipped"]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def find_image_files(img_dir: Path) -> list[Path]:
    """Image files under `img_dir`, recursively, by extension (case-insensitive), in a stable sorted order."""
    files = [p for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()]
    return sorted(files, key=lambda p: p.relative_to(img_dir).as_posix())


def check_image(src: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why a file (path or its bytes) cannot be used as a product image, or None when it decodes fully to RGB."""
    try:
        if (len(src) if isinstance(src, bytes) else src.stat().st_size) == 0:
            return "zero-byte file"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
                w, h = img.size
                if w * h > max_pixels:
                    return f"decompression-bomb size: {w}x{h} = {w * h:,} pixels > limit {max_pixels:,}"
                img.load()
                to_rgb(img)
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"decompression-bomb size: {exc}"
    except PermissionError:
        return "unreadable: permission denied"
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "broken data stream" in text or "end of file" in text.lower():
            return f"truncated: {text}"
        return f"unreadable: {text}"
    except Exception as exc:  # a codec bug on a strange file must not stop the whole folder
        return f"unreadable: {type(exc).__name__}: {exc}"
    return None


def make_ids(root: Path, files: list[Path]) -> list[str]:
    """id = path relative to root without extension; files that would share an id keep their extension."""
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in files]
    counts = Counter(stems)
    return [s if counts[s] == 1 else p.relative_to(root).as_posix() for s, p in zip(stems, files)]


def list_folder(root: Path) -> list[Path]:
    """The folder's image files, or a clear error for a missing folder, a file, or no images."""
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    files = find_image_files(root)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {root}")
    return files


def scan_folder(img_dir: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True) -> FolderScan:
    """Find and fully decode every image under `img_dir` (in parallel), keeping the good ones in sorted order."""
    from tqdm.auto import tqdm

    root = Path(img_dir)
    files = list_folder(root)
    ids = make_ids(root, files)
    scan = FolderScan(root)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        reasons = pool.map(lambda p: check_image(p, max_pixels), files)
        for path, id_, reason in tqdm(zip(files, ids, reasons), total=len(files), desc="reading", unit="img",
                                      disable=not progress):
            if reason is None:
                scan.images.append((id_, path))
            else:
                scan.skipped.append((path.relative_to(root).as_posix(), reason))
    if not scan.images:
        raise ValueError(f"none of the {len(files)} image files under {root} could be read:\n{scan.report()}")
    return scan


def _image_rows(files: list[tuple[str, str]]):
    """Generator for Dataset.from_generator: one row per product, the image's original file bytes inside."""
    for id_, path in files:
        yield {"image": {"bytes": Path(path).read_bytes(), "path": Path(path).name}, "id": id_}


def images_dataset(scan: FolderScan):
    """The `NAME` dataset (image bytes + id), written to the datasets cache, keyed by the files' names/sizes/times."""
    import datasets

    files = [(id_, str(p)) for id_, p in scan.images]
    features = datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    return datasets.Dataset.from_generator(
        _image_rows, features=features, gen_kwargs={"files": files}, fingerprint=files_key(files)[:32]
    )


def files_key(rows: list[tuple[str, str]], salt: str = "") -> str:
    """A hash of (id, source) rows with each local file's size and mtime, so a changed file changes the key."""
    h = hashlib.sha256(salt.encode())
    for id_, src in rows:
        st = os.stat(src) if os.path.exists(src) else None  # URLs have no local stamp
        h.update(f"{id_}\x00{src}\x00{st and st.st_size}\x00{st and st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_token() -> str | None:
    """The Hub token from HF_TOKEN or a cached `hf auth login`; never from code or arguments."""
    from huggingface_hub import get_token

    return get_token()


def scrub(text: str, token: str | None) -> str:
    """`text` with the token masked, for anything printed."""
    return text.replace(token, "hf_***") if token else text


def push(images_ds, emb_ds, repo: str, token: str, private: bool) -> list[str]:
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


def model_card_text(emb_ds) -> str:
    """The dataset-card section that says which model and pooling made the vectors."""
    meta = json.loads(emb_ds.info.description)
    return (f"## Embeddings\n\nColumn `embeddings`: {meta['dim']}-d, L2-normalised, made by `{meta['model']}` "
            f"({meta['pooling']} pooling) with upload_ds.py.\n\n```json\n{json.dumps(meta, indent=2)}\n```\n")


def build(img_dir: str | os.PathLike, model: str = DEFAULT_MODEL, batch_size: int = 32, pooling: str = "cls",
          max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True, encoder=None):
    """Scan the folder, then embed: returns (scan, images dataset, embeddings dataset)."""
    from embed import ImageEncoder, embed_dataset

    scan = scan_folder(img_dir, max_pixels=max_pixels, progress=progress)  # errors before any model loads
    encoder = encoder or ImageEncoder(model, batch_size=batch_size, pooling=pooling)
    images_ds = images_dataset(scan)
    emb_ds = embed_dataset(images_ds, encoder, batch_size=batch_size, progress=progress)
    emb_ds.info.description = json.dumps({**encoder.describe(), "source": "upload_ds.py"})
    return scan, images_ds, emb_ds


def build_ray(img_dir: str | None, manifest: str | None, model: str, batch_size: int, pooling: str,
              max_pixels: int, num_workers: int, gpus_per_worker: float, ray_address: str | None,
              work_dir: str | None, shard_size: int = 64):
    """The same three results as `build`, with reading, decoding and embedding run as Ray Data stages."""
    import datasets

    import ray_embed

    rel: dict[str, str] = {}  # source -> name in the skip report (folder-relative for folders)
    if manifest:
        rows, root = ray_embed.read_manifest(manifest), Path(manifest).parent
    else:
        root = Path(img_dir)
        files = list_folder(root)
        rows = list(zip(make_ids(root, files), map(str, files)))
        rel = {str(p): p.relative_to(root).as_posix() for p in files}
    key = files_key(rows, salt=f"{model}\x00{pooling}\x00{max_pixels}\n")
    work = Path(work_dir) if work_dir else Path(datasets.config.HF_DATASETS_CACHE) / "ray-embed" / key[:24]
    emb_ds, skipped = ray_embed.run(rows, work, model, pooling, batch_size, num_workers, gpus_per_worker, ray_address,
                                    max_pixels, shard_size, log=lambda msg: print(msg, file=sys.stderr))
    scan = FolderScan(root, images=list(zip(emb_ds["id"], [None] * len(emb_ds))),
                      skipped=[(rel.get(src, src), reason) for src, reason in skipped])
    if not len(emb_ds):
        raise ValueError(f"none of the {len(rows)} images could be read:\n{scan.report()}")
    dim = emb_ds.features["embeddings"].length
    emb_ds.info.description = json.dumps({**describe_model(model, pooling, dim), "source": "upload_ds.py (ray)"})
    return scan, emb_ds.select_columns(["image", "id"]), emb_ds


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="upload_ds.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("img_dir", metavar="IMG_DIR", nargs="?",
                    help="folder of product images, searched recursively (or give --manifest)")
    ap.add_argument("--repo", required=True, metavar="USER/NAME",
                    help="dataset name; pushed as USER/NAME and USER/NAME-embeddings, saved as NAME under --out")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"Hub id or local dir of a vision model, or 'efficientnet-lite0' (default {DEFAULT_MODEL})")
    ap.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="token pooling (default cls)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per model batch (default 32)")
    ap.add_argument("--private", action="store_true", help="create the Hub repos as private")
    ap.add_argument("--out", metavar="DIR", help="also save both datasets with save_to_disk under DIR")
    ap.add_argument("--no-push", action="store_true", help="do not push to the Hub (then --out is required)")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                    help="skip images larger than this many pixels (decompression-bomb guard)")
    ray = ap.add_argument_group("distributed engine (pip install -r requirements-ray.txt)")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process; ray: Ray Data stages on a local or existing Ray cluster")
    ray.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: start a local one)")
    ray.add_argument("--num-workers", type=int, default=2, help="embedding actors (default 2)")
    ray.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per embedding actor (default 0)")
    ray.add_argument("--manifest", metavar="CSV", help="images listed in a CSV (path or url column, optional id)")
    ray.add_argument("--work-dir", metavar="DIR", help="where the ray engine keeps its Parquet shards")
    ray.add_argument("--shard-size", type=int, default=64, help="images per read task and Parquet shard (64)")
    args = ap.parse_args(argv)
    if (args.img_dir is None) == (args.manifest is None):
        ap.error("give either IMG_DIR or --manifest CSV")
    if args.engine != "ray" and (args.manifest or args.ray_address or args.work_dir):
        ap.error("--manifest, --ray-address and --work-dir go with --engine ray")
    if args.num_workers < 1 or args.gpus_per_worker < 0 or args.shard_size < 1:
        ap.error("--num-workers and --shard-size must be at least 1, --gpus-per-worker at least 0")
    if args.engine == "ray":
        try:
            import ray as _ray  # noqa: F401
        except ImportError:
            ap.error("--engine ray needs Ray: pip install -r requirements-ray.txt")
    if args.no_push and not args.out:
        ap.error("--no-push needs --out DIR, or nothing would be kept")
    if args.batch_size < 1:
        ap.error("--batch-size must be at least 1")
    repo = args.repo.strip("/")
    if not repo or repo.count("/") > 1:
        ap.error(f"--repo must look like USER/NAME, got {args.repo!r}")
    name = repo.split("/")[-1]
    if not args.no_push and "/" not in repo:
        ap.error(f"--repo must be USER/NAME to push, got {args.repo!r}")

    token = None
    if not args.no_push:
        token = resolve_token()
        if not token:
            print("error: pushing to the Hub needs a token: set HF_TOKEN, or run `hf auth login` "
                  "(huggingface-cli login); or use --no-push --out DIR to save locally only", file=sys.stderr)
            return 2
        try:
            require_hub(f"pushing to {repo}")
        except HubUnavailableError as exc:
            print(f"error: {exc}; use --no-push --out DIR to save locally", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    try:
        if args.engine == "ray":
            scan, images_ds, emb_ds = build_ray(args.img_dir, args.manifest, args.model, args.batch_size, args.pooling,
                                                args.max_pixels, args.num_workers, args.gpus_per_worker,
                                                args.ray_address, args.work_dir, args.shard_size)
        else:
            scan, images_ds, emb_ds = build(args.img_dir, args.model, args.batch_size, args.pooling, args.max_pixels)
    except (FileNotFoundError, NotADirectoryError, ValueError, HubUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.engine != "ray":
            raise
        print(f"error: the ray engine stopped: {type(exc).__name__}: {str(exc)[:2000]}\nthe shards it finished are "
              "kept; run the same command again to resume", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - t0
    meta = json.loads(emb_ds.info.description)
    if args.out:
        out = Path(args.out)
        for ds, sub in ((images_ds, name), (emb_ds, f"{name}-embeddings")):
            ds.save_to_disk(str(out / sub))
        (out / f"{name}-embeddings" / "README.md").write_text(f"# {name}-embeddings\n\n{model_card_text(emb_ds)}")
        print(f"saved {out / name} and {out / (name + '-embeddings')}")
    if not args.no_push:
        try:
            pushed = push(images_ds, emb_ds, repo, token, args.private)
        except Exception as exc:
            print(f"error: push to the Hub failed: {scrub(f'{type(exc).__name__}: {exc}', token)}", file=sys.stderr)
            return 1
        print("pushed " + " and ".join(pushed))
    n = len(scan.images)
    print(f"\nsummary: {n} products, {len(scan.skipped)} skipped, dim {meta['dim']}, model {meta['model']} "
          f"({meta['pooling']}), {elapsed:.1f} s, {n / max(elapsed, 1e-9):.1f} images/s")
    print(scan.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
