"""Images/s through ImageEncoder.embed (JPEG files -> unit vectors), in one run, for torch float32, auto (ONNX
Runtime when it agrees with torch) and int8, on EfficientNet-Lite0 (its weights) and ViT-B/16 (random weights,
default ViTConfig: the same cost as the real model), each with its least cosine to torch float32's vectors.
Exports are made afresh in a temporary cache folder (their time is in "ready in").

  python bench/embed_bench.py [--images 64] [--batch-size 32] [--size 300x300] [--forward] [--engine ray]

--forward adds, for torch ViT-B/16: (a) our pipeline, (b) the model's pure forward on ready tensors at the best
batch size found, (c) one image at a time through processor + model (the seed's way).
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
from common.cores import usable_cores  # noqa: E402
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


RUNS = (("torch float32", "torch", "float32"), ("auto float32", "auto", "float32"), ("int8", "auto", "int8"))


def runtimes(tmp: Path, files: list[Path], args: argparse.Namespace) -> None:
    """Images/s through ImageEncoder.embed for torch float32, auto and int8, on each model, with the least cosine
    of each run's vectors to torch float32's; rounds alternate between the runs so load changes hit all alike."""
    models = {"EfficientNet-Lite0 (its weights)": "efficientnet-lite0", "ViT-B/16 (random weights)": str(tmp / "vit")}
    for title, model in models.items():
        encoders, rates = {}, {}
        for label, runtime, precision in RUNS:
            t = time.perf_counter()
            encoders[label] = ImageEncoder(model, batch_size=args.batch_size, runtime=runtime, precision=precision)
            encoders[label].embed(files[:2])  # warm-up
            print(f"    {label}: ready in {time.perf_counter() - t:.1f} s ({encoders[label].runtime})", flush=True)
        vectors = {}
        for _ in range(args.rounds):
            for label, enc in encoders.items():
                t = time.perf_counter()
                vectors[label] = enc.embed(files)
                rates[label] = max(rates.get(label, 0.0), rate(len(files), time.perf_counter() - t))
        base = rates["torch float32"]
        print(f"{title}, {len(files)} pictures, batch {args.batch_size}, best of {args.rounds} rounds:")
        for label, enc in encoders.items():
            cos = float((vectors[label] * vectors["torch float32"]).sum(axis=1).min())
            print(
                f"  {label:13s} ({enc.runtime:5s}) {rates[label]:7.2f} images/s  {rates[label] / base:5.2f}x torch  "
                f"min cos {cos:.5f}",
                flush=True,
            )


def main() -> None:
    """Measure each configuration on the same images and print images per second."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per measurement")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of our pipeline")
    ap.add_argument("--size", default="300x300", help="pixel size of the test JPEGs, WxH (default 300x300)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the runtime runs (best kept)")
    forward = "also (a) the pipeline vs (b) the model's pure forward vs (c) one image at a time, torch ViT-B/16"
    ap.add_argument("--forward", action="store_true", help=forward)
    ap.add_argument("--batch-sizes", default="1,8,16,32,64", help="batch sizes tried for the pure forward (b)")
    ray = "ray: also time the Ray engine with each of --workers (needs requirements-ray.txt)"
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help=ray)
    ap.add_argument("--workers", default="1,2", help="worker counts for --engine ray (default 1,2)")
    start = "only time the demo's first start (`python app.py`, empty cache, until it serves) here and in DIR"
    ap.add_argument("--demo-start", nargs="*", metavar="DIR", help=start)
    args = ap.parse_args()
    if args.demo_start is not None:
        for folder in [Path(__file__).resolve().parent.parent, *map(Path, args.demo_start)]:
            print(f"demo's first start, {folder}: {demo_first_start(folder):.1f} s", flush=True)
        return
    w, h = (int(v) for v in args.size.split("x"))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {usable_cores()} usable cores, load average {load}; {args.images} JPEGs {w}x{h}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CACHE_DIR"] = str(tmp / "cache")  # exports made afresh, timed in "ready in"
        make_model(tmp / "vit")
        files = make_images(tmp, args.images, w, h)
        runtimes(tmp, files, args)
        if args.forward:
            pipeline_vs_forward(tmp, files, args)
        ray_rates = ray_engine(tmp, files, args) if args.engine == "ray" else {}
    for workers, (r, total) in ray_rates.items():
        print(f"ray engine, {workers} worker(s): {r:7.2f} images/s embedding ({total:.1f} s with cluster start)")


def pipeline_vs_forward(tmp: Path, files: list[Path], args: argparse.Namespace) -> None:
    """(a) our torch pipeline, (b) the model's pure forward on ready tensors at its best batch, (c) the seed's way."""
    enc = ImageEncoder(str(tmp / "vit"), batch_size=args.batch_size, runtime="torch")
    enc.embed(files[:2])  # warm-up
    t = time.perf_counter()
    enc.embed(files)
    a = rate(len(files), time.perf_counter() - t)
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
    print(f"(a)/(b) = {a / best:.0%}  (target >= 80%)\n(a)/(c) = {a / c:.2f}x")


def demo_first_start(folder: Path, timeout: float = 600) -> float:
    """Seconds from `python app.py` (the checkout in `folder`, a fresh empty CACHE_DIR) to its answering HTTP."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CACHE_DIR": cache, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        t = time.perf_counter()
        cmd = [sys.executable, "app.py", "--port", str(port), "--host", "127.0.0.1"]
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - t < timeout and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2):
                        return time.perf_counter() - t
                except OSError:
                    time.sleep(0.2)
            raise RuntimeError(f"{folder}/app.py did not serve (exit code {proc.poll()})")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


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
