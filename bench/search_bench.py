"""The search box at 100k products: the full-text index's build, its queries, and the memory both take.

    python bench/search_bench.py                       # 100k products, descriptions of 50-150 words
    python bench/search_bench.py --products 5000       # smoke run

In one run: a shop's products made up with real-length text (title, tags, category, brand, options, attributes,
a description of 50 to 150 words drawn from a Zipf-distributed vocabulary of 8,000 words: a few hundred shop
words and a long tail of rare ones, as real descriptions have), the FTS5 index built as the app builds it
(`TextIndex.open`), then a mix of shopper queries (one to three words: kinds, colours, materials, plurals,
accents, prefixes, a description word, a synonym) timed one by one. Prints the build time (target <= 15 s), the
query p50 and p95 (target p50 <= 10 ms), the index file's size and the process's resident memory: its growth
while building (the peak) and after the queries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from catalog.fulltext import TextIndex, read_synonyms  # noqa: E402

KINDS = [
    "sneaker",
    "sandal",
    "boot",
    "dress",
    "coat",
    "shirt",
    "blouse",
    "skirt",
    "jacket",
    "sweater",
    "hoodie",
    "jeans",
    "trousers",
    "shorts",
    "bag",
    "tote",
    "wallet",
    "belt",
    "scarf",
    "hat",
    "cap",
    "wig",
    "lamp",
    "mug",
    "vase",
    "candle",
]
COLOURS = [
    "black",
    "white",
    "red",
    "blue",
    "navy",
    "green",
    "olive",
    "grey",
    "beige",
    "brown",
    "pink",
    "purple",
    "yellow",
    "orange",
    "cream",
    "gold",
    "silver",
]
MATERIALS = [
    "leather",
    "suede",
    "cotton",
    "linen",
    "wool",
    "silk",
    "denim",
    "canvas",
    "velvet",
    "cashmere",
    "ceramic",
    "glass",
    "oak",
]
ADJECTIVES = [
    "soft",
    "light",
    "warm",
    "cool",
    "classic",
    "modern",
    "vintage",
    "slim",
    "relaxed",
    "cropped",
    "oversized",
    "handmade",
    "organic",
    "recycled",
    "waterproof",
    "breathable",
    "durable",
    "elegant",
    "casual",
    "everyday",
    "festive",
    "minimal",
    "bold",
    "natural",
    "straight",
    "curly",
    "wavy",
]
COMMON = [
    "the",
    "a",
    "and",
    "with",
    "for",
    "of",
    "in",
    "to",
    "on",
    "your",
    "this",
    "is",
    "it",
    "that",
    "from",
    "made",
    "by",
    "our",
    "every",
    "day",
    "wear",
    "fit",
    "size",
    "care",
    "wash",
    "hand",
    "cold",
    "dry",
    "clean",
    "fabric",
    "feel",
    "look",
    "style",
    "comfort",
    "quality",
    "detail",
    "finish",
    "stitch",
    "pocket",
    "zip",
    "button",
    "collar",
    "sleeve",
    "hem",
    "lining",
    "sole",
    "heel",
    "strap",
    "buckle",
    "handle",
    "shape",
    "colour",
    "tone",
    "shade",
    "pattern",
    "print",
    "stripe",
    "check",
    "texture",
    "weight",
    "length",
    "width",
    "inch",
    "cm",
    "perfect",
    "gift",
    "season",
    "summer",
    "winter",
    "spring",
    "autumn",
    "evening",
    "office",
    "weekend",
    "travel",
    "beach",
    "city",
    "walk",
    "work",
    "party",
    "home",
    "layer",
    "pair",
    "match",
    "easy",
    "keep",
    "long",
    "last",
    "years",
    "love",
    "new",
    "best",
]
ACCENTED = ["crème", "café", "naïve", "résumé", "fiancée", "piñata", "façade", "entrée"]


def vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """Shop words first (the frequent ones), then made-up rare words (names, models, places) to `size`."""
    words = list(dict.fromkeys(COMMON + ADJECTIVES + COLOURS + MATERIALS + KINDS + ACCENTED))
    letters = np.array(list("abcdefghiklmnoprstuvwy"))
    while len(words) < size:
        words.append("".join(rng.choice(letters, int(rng.integers(4, 11)))))
    return words[:size]


def make_products(n: int, seed: int = 0) -> dict[str, list]:
    """`n` products' text columns, descriptions of 50-150 words (Zipf over the vocabulary)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary(rng, 8000), dtype=object)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    p /= p.sum()
    lengths = rng.integers(50, 151, n)
    words = vocab[rng.choice(len(vocab), int(lengths.sum()), p=p)]
    ends = np.cumsum(lengths)
    descriptions = [" ".join(words[e - k : e]) + "." for e, k in zip(ends.tolist(), lengths.tolist())]
    kind, colour = rng.integers(len(KINDS), size=n), rng.integers(len(COLOURS), size=n)
    material, adjective = rng.integers(len(MATERIALS), size=n), rng.integers(len(ADJECTIVES), size=n)
    titles = [
        f"{ADJECTIVES[a].title()} {COLOURS[c]} {MATERIALS[m]} {KINDS[k]} {vocab[300 + i % 7000]}"
        for i, (a, c, m, k) in enumerate(zip(adjective.tolist(), colour.tolist(), material.tolist(), kind.tolist()))
    ]
    return {
        "id": [f"sku-{i:06d}" for i in range(n)],
        "title": titles,
        "tags": [[["women", "men", "kids", "unisex"][i % 4], COLOURS[c]] for i, c in enumerate(colour.tolist())],
        "category": [KINDS[k].title() for k in kind.tolist()],
        "brand": [f"Brand {vocab[200 + i % 97]}" for i in range(n)],
        "options": [f"Color: {COLOURS[c]}, {COLOURS[(c + 3) % len(COLOURS)]}\nSize: S, M, L" for c in colour.tolist()],
        "attributes": [f"Material: {MATERIALS[m]}\nFit: {ADJECTIVES[a]}" for m, a in zip(material, adjective)],
        "description": descriptions,
        "url": [f"https://shop.example/products/sku-{i:06d}" for i in range(n)],
        "price": rng.uniform(5, 500, n).round(2).tolist(),
    }


def queries(rng: np.random.Generator, k: int) -> list[str]:
    """`k` shopper queries of one to three words, the kinds of words shoppers type."""
    plural = [f"{w}s" for w in KINDS if not w.endswith("s")]
    pools = [KINDS, COLOURS, MATERIALS, ADJECTIVES, plural, ACCENTED, ["sneak", "leath", "cashm", "vint"], ["shoes"]]
    out = []
    for _ in range(k):
        n_words = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        out.append(" ".join(str(rng.choice(pools[int(rng.integers(len(pools)))])) for _ in range(n_words)))
    return out


def rss() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes since the last `reset_peak`) of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak() -> None:
    """Start measuring the peak resident memory afresh (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str] | None = None) -> int:
    """Make the products, build the index, time the queries; print the figures."""
    ap = argparse.ArgumentParser(
        prog="search_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=400)
    args = ap.parse_args(argv)
    import datasets

    t = time.perf_counter()
    columns = make_products(args.products)
    ds = datasets.Dataset.from_dict(columns)
    del columns
    words = sum(len(d.split()) for d in ds.select_columns(["description"])["description"])
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average before the run: {' '.join(load)} on {os.cpu_count()} CPUs (other work slows wall times)")
    print(
        f"{args.products:,} products made in {time.perf_counter() - t:.1f} s: descriptions of "
        f"{words / args.products:.0f} words on average ({words:,} in all), plus title, tags, category, brand, "
        "options, attributes, id"
    )
    synonyms = read_synonyms(ROOT / "data" / "demo-synonyms.txt")
    with tempfile.TemporaryDirectory() as tmp:
        before, _ = rss()
        reset_peak()
        t, cpu = time.perf_counter(), time.process_time()
        index = TextIndex.open(ds, tmp)
        build, cpu = time.perf_counter() - t, time.process_time() - cpu
        _, peak = rss()
        size = index.path.stat().st_size
        print(
            f"index built in {build:.1f} s (target <= 15 s; {cpu:.1f} s of CPU); file {size / 2**20:.0f} MB; "
            f"resident memory +{(peak - before) / 2**20:.0f} MB at the peak of the build"
        )
        rng = np.random.default_rng(1)
        mix = queries(rng, args.queries)
        index.search(mix[0], synonyms)  # the connection opened, the file's first pages read
        before, _ = rss()
        times, cpus, counts = [], [], []
        for text in mix:
            t, cpu = time.perf_counter(), time.thread_time()
            found = index.search(text, synonyms)
            times.append((time.perf_counter() - t) * 1000)
            cpus.append((time.thread_time() - cpu) * 1000)
            counts.append(found.count)
        after, _ = rss()
        q, c = np.percentile(times, [50, 95, 99]), np.percentile(cpus, [50, 95])
        print(
            f"{len(mix)} queries (1-3 words): p50 {q[0]:.2f} ms (target <= 10 ms), p95 {q[1]:.2f} ms, p99 "
            f"{q[2]:.2f} ms, max {max(times):.1f} ms; CPU time p50 {c[0]:.2f} ms, p95 {c[1]:.2f} ms (the same "
            f"work without waiting for a busy CPU); matches per query: median {statistics.median(counts):,.0f}, "
            f"max {max(counts):,}; resident memory +{(after - before) / 2**20:.0f} MB over the queries"
        )
        slow = sorted(zip(times, mix, counts), reverse=True)[:3]
        print("slowest: " + "; ".join(f"'{text}' {ms:.1f} ms ({n:,} matches)" for ms, text, n in slow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
