"""What a typed search adds to a round: words matched in names, and text embedded by a CLIP text tower.

    python bench/search_bench.py                              # 100k products x 512-d (CLIP ViT-B/32's space)
    python bench/search_bench.py --products 5000 --repeats 5  # smoke run

Per strategy, in one run: a plain round after a pick (the baseline), then the same round with a search typed
before it: "names" = `catalog.find`'s word match through the index built once (`words.WordIndex`) plus the
round; "meaning" = one forward pass of a CLIP text tower of ViT-B/32's size (random weights: the same
arithmetic as openai/clip-vit-base-patch32, which this machine cannot download) plus the round. Prints median
ms and what the search added (the target: <= 30 ms at 100k products).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from catalogs import save_clip  # noqa: E402

from catalog.words import WordIndex  # noqa: E402
from embed import TextEncoder  # noqa: E402
from recommender import Recommender  # noqa: E402

KINDS = ["Sneaker", "Dress", "Coat", "Bag", "Ankle boot", "Sandal", "Shirt", "T-shirt/top", "Trouser", "Pullover"]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "grey", "pink"]


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median ms of `fn()` over `repeats` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    """Build the catalog, names and text tower; print the round times with and without a search."""
    ap = argparse.ArgumentParser(
        prog="search_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--strategy", default="mean,bayes")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # one shopper's event on one core, as the app runs many at once
    rng = np.random.default_rng(0)
    n, d = args.products, args.dim
    kind = rng.integers(len(KINDS), size=n)
    centres = rng.standard_normal((len(KINDS), d)).astype(np.float32)
    x = centres[kind] + rng.standard_normal((n, d), dtype=np.float32) * 1.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    names = [[f"shop/{KINDS[k]}/{COLOURS[i % len(COLOURS)]}-{i:07d}.jpg", KINDS[k]] for i, k in enumerate(kind)]
    t = time.perf_counter()
    index = WordIndex(names)
    print(
        f"{n:,} products x {d}-d; word index built once in {time.perf_counter() - t:.2f} s ({len(index.vocab):,} words)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        words = " ".join(KINDS + COLOURS).lower().replace("/", " ").split()
        encoder = TextEncoder(save_clip(Path(tmp), words, full_size=True))
        print(
            f"CLIP text tower of ViT-B/32's size (12 layers, 512 wide) ready in {time.perf_counter() - t:.1f} s"
            f"{', int8 linear layers' if encoder.quantized else ''}"
        )
        rec = Recommender(x, seed=0)
        print(f"{'strategy':<8} {'search':<8} {'round ms':>9} {'plain ms':>9} {'added ms':>9}")
        for strategy in args.strategy.split(","):

            def session_after_a_pick(strategy=strategy):
                s = rec.new_session(seed=1, strategy=strategy)
                s.next_round(pick=s.next_round()[3])
                return s

            def plain():
                s = session_after_a_pick()
                return lambda: s.next_round(pick=s.shown[0]) if s.shown else None

            def words():
                s = session_after_a_pick()
                return lambda: s.next_round(pick=s.shown[0], query=index.match("red sneakers")[0])

            def meaning():
                s = session_after_a_pick()
                return lambda: s.next_round(pick=s.shown[0], query=encoder.embed(["a red sneaker"])[0])

            # each timed call is a new round of a fresh session (2 rounds in), so every strategy does its full work
            base = statistics.median(timed(plain(), 1) for _ in range(args.repeats))
            for label, make in (("names", words), ("meaning", meaning)):
                ms = statistics.median(timed(make(), 1) for _ in range(args.repeats))
                print(f"{strategy:<8} {label:<8} {ms:9.1f} {base:9.1f} {ms - base:+9.1f}", flush=True)
        only = timed(lambda: index.match("red sneakers"), args.repeats)
        text = timed(lambda: encoder.embed(["a red sneaker"]), args.repeats)
        print(f"alone: word match {only:.2f} ms, text forward pass {text:.1f} ms (one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
