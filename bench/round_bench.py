"""Per-round time of recommender.py against the seed's approach, on random unit vectors.

    python bench/round_bench.py                     # N = 1k, 10k, 100k, 1M; d = 768
    python bench/round_bench.py --sizes 1000,10000  # smaller smoke run

Prints p50/p99 per-round milliseconds (20 rounds x a few sessions), the seed's approach (rebuild an index over
the remaining rows every round and filter Python lists) at the sizes given by --seed-sizes, construction time
and peak memory at the largest N, and the approximate index's time and top-5 agreement with the exact one.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recommender import Recommender  # noqa: E402


def unit_vectors(n: int, d: int, seed: int = 0, clusters: int = 0) -> np.ndarray:
    """Random float32 unit rows (around `clusters` random centres if > 0), made in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    centres = rng.standard_normal((clusters, d), dtype=np.float32) / np.sqrt(d) * 2 if clusters else None
    for s in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        if centres is not None:
            block = block / np.sqrt(d) + centres[rng.integers(0, clusters, len(block))]
        x[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def time_rounds(rec: Recommender, sessions: int, rounds: int, strategy: str | None = None) -> list[float]:
    """Milliseconds per round after the first, over `sessions` shoppers who always pick a random shown item."""
    times = []
    for s in range(sessions):
        session = rec.new_session(seed=s, strategy=strategy)
        shown = session.next_round()
        pick_rng = random.Random(s)
        for _ in range(rounds):
            pick = pick_rng.choice(shown)
            t = time.perf_counter()
            shown = session.next_round(pick=pick)
            times.append((time.perf_counter() - t) * 1000)
    return times


def seed_rounds(x: np.ndarray, rounds: int, per_round: int = 10, similar: int = 5) -> list[float]:
    """The seed's way: every round, filter the remaining list and build a fresh flat index over it."""
    rng = random.Random(0)
    n = len(x)
    seen: list[int] = []
    picks: list[int] = []
    shown = rng.sample(range(n), per_round)
    seen += shown
    times = []
    for _ in range(rounds):
        picks.append(rng.choice(shown))
        t = time.perf_counter()
        seen_set = set(seen)
        remaining = [i for i in range(n) if i not in seen_set]
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x[remaining])
        query = x[picks].mean(axis=0, keepdims=True)
        _, ids = index.search(query, similar)
        top = [remaining[i] for i in ids[0]]
        top_set = set(top)
        rest = rng.sample([i for i in remaining if i not in top_set], per_round - similar)
        shown = top + rest
        seen += shown
        times.append((time.perf_counter() - t) * 1000)
    return times


def pct(times: list[float]) -> str:
    """p50 / p99 of a list of milliseconds."""
    return f"p50 {np.percentile(times, 50):8.2f} ms   p99 {np.percentile(times, 99):8.2f} ms"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000", help="catalog sizes N, comma-separated")
    ap.add_argument("--seed-sizes", default="10000,100000", help="sizes at which to time the seed's approach")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--approx", default="IVF1024,Flat", help="index_factory string for the approximate option")
    ap.add_argument("--nprobe", type=int, default=32)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    seed_sizes = {int(s) for s in args.seed_sizes.split(",") if s}
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, d = {args.dim}")
    for n in sizes:
        x = unit_vectors(n, args.dim)
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        rec = Recommender(x, seed=0)
        build = time.perf_counter() - t
        ours = time_rounds(rec, args.sessions, args.rounds)
        line = f"N={n:>9,}  ours: {pct(ours)}   build {build:6.2f} s"
        if n == max(sizes):
            line += f"   peak RSS {peak_rss_mb():,.0f} MiB (matrix {x.nbytes / 2**20:,.0f} MiB, " \
                    f"construction added {peak_rss_mb() - rss_before:,.0f} MiB)"
        print(line, flush=True)
        if n in seed_sizes:
            theirs = seed_rounds(x, args.rounds)
            ratio = np.median(theirs) / np.median(ours)
            print(f"{'':13}seed: {pct(theirs)}   ours is {ratio:.0f}x faster (p50)", flush=True)
        if n == max(sizes):
            bayes = time_rounds(rec, args.sessions, args.rounds, strategy="bayes")
            print(f"{'':13}strategy bayes: {pct(bayes)}", flush=True)
        if n == max(sizes) and args.approx:
            # random unit vectors have no neighbourhoods for IVF to exploit; a catalog has, so test on clusters
            del rec, x
            x = unit_vectors(n, args.dim, clusters=max(16, n // 1000))
            rec = Recommender(x, seed=0)
            t = time.perf_counter()
            approx = Recommender(x, seed=0, index_factory=args.approx, nprobe=args.nprobe)
            abuild = time.perf_counter() - t
            times = time_rounds(approx, args.sessions, args.rounds)
            agree = top5_agreement(rec, approx, trials=50)
            print(f"{'':13}{args.approx} nprobe={args.nprobe} (clustered vectors): {pct(times)}   build "
                  f"{abuild:6.2f} s   top-5 equal to exact in {agree:.0%} of queries", flush=True)
            del approx
        del rec, x


def top5_agreement(exact: Recommender, approx: Recommender, trials: int) -> float:
    """Share of preference queries (means of 1-5 random picks) whose top-5 sets agree between two indexes."""
    rng = np.random.default_rng(1)
    same = 0
    for _ in range(trials):
        picks = rng.choice(exact.n, size=rng.integers(1, 6), replace=False)
        a, b = exact.new_session(seed=0), approx.new_session(seed=0)
        q = exact.unit[picks].mean(axis=0)
        same += set(a.search(q, 5)) == set(b.search(q, 5))
    return same / trials


if __name__ == "__main__":
    main()
