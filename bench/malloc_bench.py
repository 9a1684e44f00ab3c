"""What pinning glibc's mmap threshold costs: `bayes` rounds and embedding, pinned vs glibc's adaptive threshold.

    python bench/malloc_bench.py                        # 100k products, 160 demo pictures, 2 runs each
    python bench/malloc_bench.py --products 5000 --images 32 --repeats 1   # smoke run

Each measurement is a fresh child process on the C library's malloc (`PYTHONMALLOC=malloc`, as `app.py` runs)
with `MemoryKeeper(mmap_threshold=...)` made first, as the app makes it; pinned and adaptive children
alternate, so both see the same machine in the same run. A pinned threshold gives every array above it its own
mapping, so the round's temporaries are mapped, faulted in and unmapped again each round (system time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = 256 * 1024  # what app.py pinned it to before


def child(threshold: int | None, products: int, dim: int, images: int, rounds: int) -> dict:
    """Time `rounds` bayes rounds and one embedding of `images` demo pictures under one malloc setting."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from catalog import demo
    from embed import ImageEncoder
    from recommender import Recommender
    from shop.server import MemoryKeeper

    MemoryKeeper(mmap_threshold=threshold)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((products, dim), dtype=np.float32)
    rec = Recommender(x, seed=0, strategy="bayes", views={"appearance": rng.random((products, 192), dtype=np.float32)})
    times = []
    session = rec.new_session(seed=0)
    shown = session.next_round()
    for r in range(rounds):
        t = time.perf_counter()
        shown = session.next_round(pick=shown[r % len(shown)])
        times.append(time.perf_counter() - t)
    _, pixels, _, _ = demo.load_source("subset")
    pictures = [demo.product_photo(pixels[i], 28) for i in range(images)]
    encoder = ImageEncoder(demo.DEMO_MODEL, batch_size=16)
    encoder.embed(pictures[:16])  # warm-up: weights loaded, first batch's allocations made
    t = time.perf_counter()
    encoder.embed(pictures)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "round_ms": 1000 * float(np.median(times)),
        "embed_s": time.perf_counter() - t,
        "sys_s": usage.ru_stime,
        "user_s": usage.ru_utime,
    }


def main() -> None:
    """Alternate pinned and adaptive children and print the rounds' and embedding's times side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--images", type=int, default=160, help="demo pictures embedded by EfficientNet-Lite0")
    ap.add_argument("--rounds", type=int, default=12, help="bayes rounds timed (median reported)")
    ap.add_argument("--repeats", type=int, default=2, help="child processes per setting, alternating")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        threshold = None if args.child == "adaptive" else int(args.child)
        print(json.dumps(child(threshold, args.products, args.dim, args.images, args.rounds)))
        return
    env = {**os.environ, "PYTHONMALLOC": "malloc", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    results: dict[str, list[dict]] = {"adaptive": [], "pinned": []}
    for _ in range(args.repeats):
        for name, flag in (("adaptive", "adaptive"), ("pinned", str(PINNED))):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    flag,
                    "--products",
                    str(args.products),
                    "--dim",
                    str(args.dim),
                    "--images",
                    str(args.images),
                    "--rounds",
                    str(args.rounds),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{args.products:,} products x {args.dim} (+ a 192-d view), bayes; {args.images} pictures, Lite0; "
        f"{args.repeats} child process(es) per setting, best of them"
    )
    best = {name: {k: min(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    for name, b in best.items():
        print(
            f"  {name:9s} round p50 {b['round_ms']:7.1f} ms   embed {b['embed_s']:6.2f} s   "
            f"process sys {b['sys_s']:5.1f} s, user {b['user_s']:5.1f} s"
        )
    a, p = best["adaptive"], best["pinned"]
    print(
        f"  pinned / adaptive: rounds {p['round_ms'] / a['round_ms']:.2f}x, "
        f"embedding {p['embed_s'] / a['embed_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
