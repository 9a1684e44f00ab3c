"""Images/s of the ViT-B/16 architecture (random weights, same cost as the real model), three ways, in one run:

(a) our pipeline: image files -> decode/convert -> processor -> batched forward (ImageEncoder.embed)
(b) the model's pure forward pass on ready tensors, at the best batch size found
(c) one image at a time through processor + model (the seed's way)

  python bench/embed_bench.py [--images 64] [--batch-size 32] [--size 800x600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from embed import ImageEncoder  # noqa: E402


def make_model(path: Path) -> None:
    """Save a ViT-B/16 (default ViTConfig) with random weights and the default 224 px processor."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(), add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor().save_pretrained(path)


def make_images(folder: Path, n: int, w: int, h: int) -> list[Path]:
    """`n` JPEG product-photo-sized files with varied content."""
    rng = np.random.default_rng(0)
    files = []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        c = rng.integers(0, 255, size=3)
        arr = np.stack([(xx + c[0]) % 256, (yy + c[1]) % 256, ((xx * yy) // 97 + c[2]) % 256], -1).astype(np.uint8)
        files.append(folder / f"p{i:04d}.jpg")
        Image.fromarray(arr).save(files[-1], quality=90)
    return files


def rate(n: int, seconds: float) -> float:
    """Images per second."""
    return n / seconds


def main() -> None:
    """Measure each configuration on the same images and print images per second."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per measurement")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of our pipeline (a)")
    ap.add_argument("--batch-sizes", default="1,8,16,32,64", help="batch sizes tried for the pure forward (b)")
    ap.add_argument("--size", default="800x600", help="pixel size of the test JPEGs, WxH")
    ray = "ray: also time the Ray engine with each of --workers (needs requirements-ray.txt)"
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help=ray)
    ap.add_argument("--workers", default="1,2", help="worker counts for --engine ray (default 1,2)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; ViT-B/16 (random weights), "
        f"{args.images} JPEGs of {w}x{h}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "vit")
        files = make_images(tmp, args.images, w, h)
        enc = ImageEncoder(str(tmp / "vit"), batch_size=args.batch_size)
        enc.embed(files[:2])  # warm-up

        t = time.perf_counter()
        vecs = enc.embed(files)
        a = rate(len(files), time.perf_counter() - t)
        assert vecs.shape == (len(files), 768)
        print(f"(a) pipeline, files -> vectors, batch {args.batch_size}: {a:7.2f} images/s", flush=True)

        pixels = enc.preprocess(files)
        best_b, best = 0, 0.0
        for b in (int(v) for v in args.batch_sizes.split(",")):
            with torch.inference_mode():
                enc.model(pixel_values=pixels[:b])
                t = time.perf_counter()
                for s in range(0, len(pixels), b):
                    enc.model(pixel_values=pixels[s : s + b])
            r = rate(len(pixels), time.perf_counter() - t)
            print(f"    pure forward, batch {b:3d}: {r:7.2f} images/s", flush=True)
            if r > best:
                best_b, best = b, r
        print(f"(b) pure forward, best batch {best_b}: {best:7.2f} images/s", flush=True)

        t = time.perf_counter()
        for f in files:
            img = Image.open(f).convert("RGB")
            with torch.inference_mode():
                out = enc.model(**enc.processor(images=img, return_tensors="pt"))
            out.last_hidden_state[:, 0].numpy()
        c = rate(len(files), time.perf_counter() - t)
        print(f"(c) one image at a time (seed's way): {c:7.2f} images/s", flush=True)
        ray_rates = ray_engine(tmp, files, args) if args.engine == "ray" else {}
    print(f"\n(a)/(b) = {a / best:.0%}  (target >= 80%)\n(a)/(c) = {a / c:.2f}x")
    for workers, (r, total) in ray_rates.items():
        print(
            f"ray engine, {workers} worker(s): {r:7.2f} images/s embedding ({total:.1f} s with cluster start), "
            f"{r / a:.2f}x the default engine"
        )


def ray_engine(tmp: Path, files: list[Path], args: argparse.Namespace) -> dict[int, tuple[float, float]]:
    """Images/s of upload_ds's Ray engine (read -> decode -> actor pool -> Parquet) for each worker count."""
    import ray

    from intake import ray_embed

    rows = [(f.stem, str(f)) for f in files]
    out = {}
    for workers in (int(w) for w in args.workers.split(",")):
        t0 = time.perf_counter()
        ray.init(num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False, log_to_driver=False)
        try:
            t = time.perf_counter()
            options = ray_embed.RayOptions(
                str(tmp / "vit"), batch_size=args.batch_size, num_workers=workers, shard_size=16
            )
            ray_embed.run(rows, tmp / f"ray-{workers}", options, log=lambda m: None)
            out[workers] = (len(rows) / (time.perf_counter() - t), time.perf_counter() - t0)
        finally:
            ray.shutdown()
        print(f"ray engine, {workers} worker(s): {out[workers][0]:7.2f} images/s", flush=True)
    return out


if __name__ == "__main__":
    main()
