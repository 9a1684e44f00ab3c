"""Concurrent shoppers against a real app server over HTTP, as browsers would drive it.

    python bench/load_bench.py                                  # 50 shoppers x 20 rounds, 10k products
    python bench/load_bench.py --server-products 100000         # also: one shopper's round time at 100k
    python bench/load_bench.py --products 500 --shoppers 5 --rounds 5 --server-products 0   # smoke run

Checks 0 errors, 0 repeated products, no shopper seeing another's picks; prints p50/p99 round latency as the
shopper sees it (click posted -> new gallery received).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from catalogs import make_catalog  # noqa: E402
from gradio_http import Shopper, gallery_rows, start_app  # noqa: E402


def wait_for_thumbnails(log: Path, timeout: float = 900) -> None:
    """Block until the app logs that every thumbnail is made (so rounds are measured warm)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "product images checked" in log.read_text():
            return
        time.sleep(0.5)
    raise TimeoutError("thumbnails not ready")


def shop_concurrently(url: str, shoppers: int, rounds: int) -> dict:
    """Run `shoppers` threads of `rounds` picks each; returns latencies and counted problems."""
    latencies: list[float] = []
    problems = {"errors": 0, "repeats": 0, "leaks": 0}
    lock = threading.Lock()
    config = Shopper(url).config
    barrier = threading.Barrier(shoppers)

    def shopper(k: int) -> None:
        rng = np.random.default_rng(k)
        try:
            s = Shopper(url, config)
            gallery = s.call("start")[1]
            seen, picked, mine = set(gallery_rows(gallery)), [], []
            barrier.wait(timeout=120)
            for _ in range(rounds):
                i = int(rng.integers(0, 10))
                picked.append(gallery_rows(gallery)[i])
                t = time.perf_counter()
                _, gallery, picks, _, *_ = s.pick(i, gallery["value"][i])
                mine.append(time.perf_counter() - t)
                rows = gallery_rows(gallery)
                with lock:
                    problems["repeats"] += len(seen & set(rows))
                    problems["leaks"] += gallery_rows(picks) != picked
                seen |= set(rows)
            with lock:
                latencies.extend(mine)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                problems["errors"] += 1
            print(f"shopper {k}: {type(exc).__name__}: {exc}", file=sys.stderr)

    threads = [threading.Thread(target=shopper, args=(k,)) for k in range(shoppers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"latencies_ms": np.array(latencies) * 1000, "seconds": time.perf_counter() - t, **problems}


@contextmanager
def serving(products: int, tmp: Path, dim: int) -> Iterator[tuple]:
    """Make a catalog of `products` and serve the app on it for the block: (process, url); stopped after."""
    t = time.perf_counter()
    cat = make_catalog(tmp / f"catalog-{products}", n=products, dim=dim)
    print(f"catalog of {products:,} products ({dim}-d) made in {time.perf_counter() - t:.1f} s", flush=True)
    log = tmp / f"app-{products}.log"
    env = {**os.environ, "APP_LOG": str(log), "CACHE_DIR": str(tmp / "cache"), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1"}
    proc, url = start_app(["--dataset", str(cat)], env, timeout=600)
    try:
        wait_for_thumbnails(log)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(products: int, shoppers: int, rounds: int, dim: int = 768, tmp: Path | None = None) -> dict:
    """The load test proper; returns its figures."""
    with tempfile.TemporaryDirectory() as own, serving(products, Path(tmp or own), dim) as (_, url):
        return shop_concurrently(url, shoppers, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--shoppers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--server-products", type=int, default=100_000,
                    help="catalog size for the one-shopper round time (0 to skip)")
    args = ap.parse_args()
    r = run(args.products, args.shoppers, args.rounds, args.dim)
    lat = r["latencies_ms"]
    print(f"{args.shoppers} shoppers x {args.rounds} rounds on {args.products:,} products: "
          f"{len(lat)} rounds in {r['seconds']:.1f} s; errors {r['errors']}, repeats {r['repeats']}, "
          f"leaked picks {r['leaks']}")
    if len(lat):
        print(f"round latency as shoppers see it: p50 {np.percentile(lat, 50):.1f} ms, "
              f"p99 {np.percentile(lat, 99):.1f} ms", flush=True)
    if args.server_products:
        one = run(args.server_products, 1, 40, args.dim)
        lat = one["latencies_ms"]
        print(f"one shopper on {args.server_products:,} products (event in -> gallery out, over loopback): "
              f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; errors {one['errors']}")


if __name__ == "__main__":
    main()
