"""Per-round time of recommender.py, float32 against sq8, each beside its floor, from a memory-mapped file.

    python bench/round_bench.py                                   # N = 1k, 10k, 100k, 1M; d = 768
    python bench/round_bench.py --sizes 1000,10000 --seed-sizes 10000   # smoke run
    python bench/round_bench.py --sizes 10000000 --compressions sq8 --sessions 1 --rounds 5   # 10M x 768

For each size, random unit rows are written a block at a time into a float32 file (31 GB at 10M x 768), and
each configuration runs in its own process that memory-maps the file, builds a `Recommender` from it and
times `--sessions` shoppers x `--rounds` rounds of `mean` (picks drawn at random from the shown products).
Printed per configuration, all from the same run: round p50/p99; its floor (the plain FAISS scan the round is
built on: IndexFlatIP, or the 8-bit code scan, both with the session's exclusion bitmap); build time; peak RSS
of the process (build and serving); whether its galleries equal float32's, round for round. Plus `bayes` at
the largest size, the seed's approach (rebuild an index over the remaining rows every round) at --seed-sizes,
and with --approx an approximate index's time and top-5 agreement with the exact one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from engine.faiss_index import search_params  # noqa: E402
from engine.rows import drop_pages  # noqa: E402
from engine.sq8 import SHARD_MIN_ROWS  # noqa: E402
from recommender import Recommender  # noqa: E402


def unit_vectors(n: int, d: int, seed: int = 0, clusters: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Random float32 unit rows (around `clusters` random centres if > 0), made in chunks into `out` (or memory)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32) if out is None else out
    centres = rng.standard_normal((clusters, d), dtype=np.float32) / np.sqrt(d) * 2 if clusters else None
    for s in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        if centres is not None:
            block = block / np.sqrt(d) + centres[rng.integers(0, clusters, len(block))]
        x[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        if out is not None:
            drop_pages(x[s : s + len(block)])
    return x


def rows_file(folder: Path, n: int, d: int) -> Path:
    """A float32 file of n x d random unit rows, written in blocks (made once per size)."""
    path = folder / f"rows-{n}x{d}.npy"
    if not path.exists():
        t = time.perf_counter()
        mm = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, d))
        unit_vectors(n, d, out=mm)
        mm.flush()
        del mm
        path.with_suffix(".tmp.npy").rename(path)
        print(f"  {n:,} x {d} rows written to disk in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def time_rounds(rec: Recommender, sessions: int, rounds: int, strategy: str | None = None) -> tuple[list, list]:
    """(milliseconds per round after the first, galleries shown) over `sessions` shoppers picking at random."""
    times, shown_all = [], []
    for s in range(sessions):
        session = rec.new_session(seed=s, strategy=strategy)
        shown = session.next_round()
        shown_all.append(shown)
        pick_rng = random.Random(s)
        for _ in range(rounds):
            pick = pick_rng.choice(shown)
            t = time.perf_counter()
            shown = session.next_round(pick=pick)
            times.append((time.perf_counter() - t) * 1000)
            shown_all.append(shown)
    return times, shown_all


def floor_ms(rec: Recommender, trials: int = 9) -> float:
    """p50 of the plain FAISS scan a `mean` round is built on (5 nearest, session bitmap), no re-ranking."""
    session = rec.new_session(seed=0)
    session.next_round()
    query = rec.unit[session.history[0][:3]].mean(axis=0).astype(np.float32).reshape(1, -1)
    if rec.sq8_index is not None:
        u = rec.sq8_index._query(query.ravel())[0]
        scan = lambda: rec.sq8_index._scan(u, rec.similar, session.unseen.bits)  # noqa: E731
    else:
        params = search_params(rec.index.index, faiss.IDSelectorBitmap(rec.n, faiss.swig_ptr(session.unseen.bits)))
        scan = lambda: rec.index.index.search(query, rec.similar, params=params)  # noqa: E731
    times = []
    for _ in range(trials):
        t = time.perf_counter()
        scan()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def child(path: str, n: int, d: int, compression: str, threads: int, sessions: int, rounds: int, bayes: bool) -> dict:
    """One configuration, in its own process so its peak RSS is its own."""
    x = np.load(path, mmap_mode="r")
    t = time.perf_counter()
    rec = Recommender(x, seed=0, compression=compression, threads=threads or None)
    build = time.perf_counter() - t
    times, shown = time_rounds(rec, sessions, rounds)
    out = {"build": build, "times": times, "shown": shown, "floor": floor_ms(rec)}
    if rec.sq8_index is not None:
        out["scans_per_search"] = rec.sq8_index.scans / max(rec.sq8_index.searches, 1)
        out["shards"] = len(rec.sq8_index.shards)
    if bayes:
        out["bayes"], _ = time_rounds(rec, max(1, sessions - 1), rounds, strategy="bayes")
        out["belief_bytes"] = rec.n * 4 + (rec.n + 7) // 8  # log-belief per row + the unseen bitmap
    out["peak_rss"] = peak_rss_mib()
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: of its own memory map, unlike ru_maxrss, which also counts
    the parent's peak when the child was started by vfork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(
    path: Path, n: int, d: int, compression: str, threads: int, args: argparse.Namespace, bayes: bool
) -> dict:
    """Run `child` in a fresh interpreter and return its figures."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(path),
        "--sizes",
        str(n),
        "--dim",
        str(d),
        "--compressions",
        compression,
        "--threads",
        str(threads),
        "--sessions",
        str(args.sessions),
        "--rounds",
        str(args.rounds),
    ]
    if bayes:
        cmd.append("--bayes")
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if res.returncode:
        raise SystemExit(f"{compression} at N={n} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


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


def pct(times: list[float]) -> str:
    """p50 / p99 of a list of milliseconds."""
    return f"p50 {np.percentile(times, 50):8.2f} ms  p99 {np.percentile(times, 99):8.2f} ms"


def main() -> None:
    """Measure every size and configuration (each in a fresh child) and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000", help="catalog sizes N, comma-separated")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--compressions", default="none,sq8", help="configurations to run, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="sq8 scan threads (0: the recommender's default)")
    ap.add_argument("--one-thread-too", action="store_true", help="also run sq8 with one scan thread")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--seed-sizes", default="10000,100000", help="sizes at which to time the seed's approach")
    ap.add_argument(
        "--approx",
        default="",
        help="index_factory string to compare (e.g. IVF1024,Flat), at the largest size on clustered vectors",
    )
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--dir", default=None, help="folder for the row files (default: a temporary one)")
    ap.add_argument("--bayes", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    configs = [c for c in args.compressions.split(",") if c]
    if args.child:
        print(
            json.dumps(
                child(args.child, sizes[0], args.dim, configs[0], args.threads, args.sessions, args.rounds, args.bayes)
            )
        )
        return
    print(
        f"faiss {faiss.__version__}, {os.cpu_count()} cores, d = {args.dim}; {args.sessions} sessions x "
        f"{args.rounds} rounds of `mean` per configuration",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in sizes:
            path = rows_file(Path(args.dir or tmp), n, args.dim)
            results = compare_configs(path, n, sizes, configs, args)
            if n in {int(s) for s in args.seed_sizes.split(",") if s}:
                x = np.load(path, mmap_mode="r")
                theirs = seed_rounds(np.asarray(x), args.rounds)
                ours = results.get(("none", args.threads), next(iter(results.values())))["times"]
                print(
                    f"{'':14}seed's approach: round {pct(theirs)}  (ours is {np.median(theirs) / np.median(ours):.0f}"
                    f"x faster at p50)",
                    flush=True,
                )
            path.unlink()
        if args.approx:
            compare_approx(max(sizes), args)


def compare_configs(path: Path, n: int, sizes: list[int], configs: list[str], args: argparse.Namespace) -> dict:
    """Each configuration's rounds on the N rows in `path`, printed beside float32's; returns them by config."""
    runs = [(c, args.threads) for c in configs]
    if args.one_thread_too and "sq8" in configs and n >= SHARD_MIN_ROWS:
        runs.append(("sq8", 1))
    results = {}
    for compression, threads in runs:
        bayes = n == max(sizes) and (compression == "sq8" or "sq8" not in configs)
        results[(compression, threads)] = r = run_child(path, n, args.dim, compression, threads, args, bayes)
        base = results.get(("none", args.threads))
        label = (
            compression
            if compression == "none"
            else f"{compression} ({r['shards']} thread{'s' if r['shards'] > 1 else ''})"
        )
        line = (
            f"N={n:>10,}  {label:<17} round {pct(r['times'])}  floor {r['floor']:8.2f} ms  "
            f"build {r['build']:6.1f} s  peak RSS {r['peak_rss']:7,.0f} MiB"
        )
        if base is not None and compression != "none":
            ratio = np.median(r["times"]) / np.median(base["times"])
            line += f"  = {ratio:.2f}x float32's round, galleries identical: {r['shown'] == base['shown']}"
            line += f", scans a search {r['scans_per_search']:.2f}"
        elif compression != "none":
            line += f"  scans a search {r['scans_per_search']:.2f}"
        print(line, flush=True)
        if "bayes" in r:
            print(
                f"{'':14}bayes on {label}: round {pct(r['bayes'])}; belief {r['belief_bytes'] / 2**20:.1f}"
                f" MiB a session",
                flush=True,
            )
    return results


def compare_approx(n: int, args: argparse.Namespace) -> None:
    """An approximate index (--approx) on clustered vectors: its round time and top-5 agreement with the exact."""
    x = unit_vectors(n, args.dim, clusters=max(16, n // 1000))
    exact = Recommender(x, seed=0)
    t = time.perf_counter()
    approx = Recommender(x, seed=0, index_factory=args.approx, nprobe=args.nprobe)
    build = time.perf_counter() - t
    times, _ = time_rounds(approx, args.sessions, args.rounds)
    print(
        f"N={n:>10,}  {args.approx} nprobe={args.nprobe} (clustered vectors): round {pct(times)}  build "
        f"{build:6.1f} s  top-5 equal to exact in {top5_agreement(exact, approx, 50):.0%} of queries"
    )


if __name__ == "__main__":
    main()
