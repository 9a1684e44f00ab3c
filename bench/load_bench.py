"""What a round costs through the web: concurrent shoppers against a real app server over HTTP, beside the
framework's floor (a minimal Gradio app with the same event shape) and the engine's own cost, in one run.

    python bench/load_bench.py                                  # 50 shoppers x 20 rounds, 10k products
    python bench/load_bench.py --server-products 100000         # also: one shopper's round time at 100k
    python bench/load_bench.py --products 500 --shoppers 5 --rounds 5 --server-products 0 --no-floor  # smoke
    python bench/load_bench.py --chromium                       # also: click -> ten pictures drawn, in Chromium
    python bench/load_bench.py --shoppers 20 --rounds 10 --turns 3 --no-floor   # page vs API, 3 turns each

The shoppers run in a separate process (their own CPU is not the server's). Printed per strategy: server CPU
per round (from /proc, over the timed rounds only: from the moment every shopper has connected and started its
hunt), p50/p99 latency as the shopper sees it (click posted -> new gallery received), rounds per second, for the
page's events and, on the same server, for the API (/recommend by product ids, the caller carrying its signed
visit, shop/api.py) called two ways: through gradio_client, and as plain HTTP without a session (as curl); the
floor's CPU per event (files, and URLs); the engine's CPU per
round (`Session.next_round` in-process, same catalog); the ratio server / (floor + engine); and the visit
signature's cost per round, in-process, signed against unsigned (shop/visit.py's HMAC swapped for a constant).
Checks 0 errors, 0 repeated products and no shopper seeing another's picks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
sys.path.insert(0, str(ROOT))
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------ the shoppers' process
def run_all(one, shoppers: int, problems: dict, lock: threading.Lock, pid: int, who: str) -> dict:
    """Run `one(k, barrier)` (a shopper's round latencies) for every shopper k in a thread of its own, counting
    each that fails in `problems` (and printing why), and the run's figures once all have ended: the server's
    (`pid`) CPU seconds and the wall time from the moment every shopper is ready (each waits at `barrier` once it
    has connected and started its hunt, so setting up is not counted) to the last round's end."""
    start: dict[str, float] = {}
    latencies: list[float] = []

    def mark() -> None:
        start.update(cpu=cpu_seconds(pid), t=time.perf_counter())

    def run(k: int, barrier: threading.Barrier) -> None:
        try:
            mine = one(k, barrier)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            with lock:
                problems["errors"] += 1
            print(f"{who} {k}: {type(exc).__name__}: {exc}", file=sys.stderr)
            barrier.abort()
        else:
            with lock:
                latencies.extend(mine)

    barrier = threading.Barrier(shoppers, action=mark)
    threads = [threading.Thread(target=run, args=(k, barrier)) for k in range(shoppers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {
        "latencies_ms": [x * 1000 for x in latencies],
        "seconds": time.perf_counter() - start.get("t", time.perf_counter()),
        "server_cpu_s": cpu_seconds(pid) - start.get("cpu", cpu_seconds(pid)),
        **problems,
    }


def shop_concurrently(url: str, shoppers: int, rounds: int, pid: int, shop: bool = True) -> dict:
    """Run `shoppers` threads of `rounds` picks each; returns latencies and counted problems (`shop`: check the
    shop's galleries for repeats and leaked picks; the floor app has none to check)."""
    problems = {"errors": 0, "repeats": 0, "leaks": 0}
    lock = threading.Lock()
    config = Shopper(url).config

    def shopper(k: int, barrier: threading.Barrier) -> list[float]:
        rng = np.random.default_rng(k)
        s = Shopper(url, config)
        out = s.call("start")
        gallery = out[1] if shop else out[0]
        seen, picked, mine = set(gallery_rows(gallery)) if shop else set(), [], []
        barrier.wait(timeout=120)
        for _ in range(rounds):
            i = int(rng.integers(0, 10))
            items = gallery["value"] if isinstance(gallery, dict) else gallery
            t = time.perf_counter()
            out = s.pick(i, items[i])
            mine.append(time.perf_counter() - t)
            if not shop:
                gallery = out[0]
                continue
            picked.append(gallery_rows(gallery)[i])
            gallery, picks = out[1], out[2]
            rows = gallery_rows(gallery)
            with lock:
                problems["repeats"] += len(seen & set(rows))
                problems["leaks"] += gallery_rows(picks) != picked
            seen |= set(rows)
        return mine

    return run_all(shopper, shoppers, problems, lock, pid, "shopper")


def api_call(http, url: str, name: str, data: list, session: str | None = None) -> dict:
    """One call of the shop's API over Gradio's two-step HTTP route (post, then read the result's event stream),
    as curl would make it; `session`: a session hash sent with it (none: Gradio makes a session for each call)."""
    body = {"data": data, **({"session_hash": session} if session else {})}
    posted = http.post(f"{url}/gradio_api/call/{name}", json=body, timeout=60)
    posted.raise_for_status()
    stream = http.get(f"{url}/gradio_api/call/{name}/{posted.json()['event_id']}", timeout=60).text
    lines = stream.splitlines()  # "event: heartbeat" / "data: null" pairs may come first
    for kind, data_line in zip(lines, lines[1:]):
        if kind == "event: complete":
            return json.loads(data_line.removeprefix("data: "))[0]
    raise RuntimeError(f"{name} failed: {stream[-300:]}")


API_CLIENTS = ("gradio_client", "http")  # how the API's callers call: Gradio's Python client, or plain HTTP


def api_concurrently(url: str, shoppers: int, rounds: int, pid: int, client: str = "gradio_client") -> dict:
    """`shoppers` threads of `rounds` /recommend calls each, picking by product id, each caller with its own
    gradio_client Client (`client` "gradio_client", as docs/api.md's example) or plain HTTP without a session
    ("http", as docs/api.md's curl lines); same figures as `shop_concurrently` (a repeat: a product shown twice
    to one caller; a leak: a visit whose picks are not its caller's own)."""
    import requests
    from gradio_client import Client

    problems = {"errors": 0, "repeats": 0, "leaks": 0}
    lock, connecting = threading.Lock(), threading.Lock()

    def caller(k: int, barrier: threading.Barrier) -> list[float]:
        rng = np.random.default_rng(k)
        if client == "gradio_client":
            with connecting:  # one at a time, as a storefront connects once: each reads the app's whole config
                gradio = Client(url, verbose=False)

            def recommend(visit: str = "", pick: str = "") -> dict:
                return gradio.predict(visit=visit, pick=pick, words="", strategy="", api_name="/recommend")
        else:
            http = requests.Session()

            def recommend(visit: str = "", pick: str = "") -> dict:
                return api_call(http, url, "recommend", [visit, pick, "", ""])

        answer = recommend()
        seen, picked, mine = {p["id"] for p in answer["products"]}, [], []
        barrier.wait(timeout=120)
        for _ in range(rounds):
            pick = answer["products"][int(rng.integers(len(answer["products"])))]["id"]
            picked.append(int(pick[1:]))
            t = time.perf_counter()
            answer = recommend(answer["visit"], pick)
            mine.append(time.perf_counter() - t)
            ids = {p["id"] for p in answer["products"]}
            with lock:
                problems["repeats"] += len(seen & ids)
                problems["leaks"] += json.loads(answer["visit"])["picks"] != picked
            seen |= ids
        return mine

    return run_all(caller, shoppers, problems, lock, pid, "caller")


def drive(url: str, shoppers: int, rounds: int, shop: bool, pid: int, api: str | None = None) -> dict:
    """Shop from a separate process (through the page's events, or the API called the `api` way, one of
    API_CLIENTS), reading the server's CPU (pid) over the timed rounds."""
    res = subprocess.run(
        [
            sys.executable,
            __file__,
            "--drive",
            url,
            "--server-pid",
            str(pid),
            "--shoppers",
            str(shoppers),
            "--rounds",
            str(rounds),
            *([] if shop else ["--floor-driver"]),
            *(["--api-driver", api] if api else []),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if res.returncode != 0:
        raise RuntimeError(f"driver failed: {res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    n = len(out["latencies_ms"])
    out.update(
        latencies_ms=np.array(out["latencies_ms"]),
        server_cpu_ms=1000 * out["server_cpu_s"] / max(n, 1),
        rounds_per_s=n / out["seconds"],
    )
    return out


# ------------------------------------------------------------------------------------------- the servers
@contextmanager
def serving(products: int, tmp: Path, dim: int, strategy: str = "mean") -> Iterator[tuple]:
    """Serve the app on a catalog of `products` for the block: (process, url, catalog path, cache dir)."""
    cat = tmp / f"catalog-{products}-{dim}"
    if not cat.exists():
        t = time.perf_counter()
        make_catalog(cat, n=products, dim=dim)
        print(f"catalog of {products:,} products ({dim}-d) made in {time.perf_counter() - t:.1f} s", flush=True)
    log = tmp / f"app-{products}-{strategy}.log"
    env = {
        **os.environ,
        "APP_LOG": str(log),
        "CACHE_DIR": str(tmp / "cache"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "HUNT_LOG": "none",
    }
    proc, url = start_app(["--dataset", str(cat), "--strategy", strategy], env, timeout=600)
    try:
        wait_for_thumbnails(log)
        yield proc, url, cat
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def floor_serving(pictures: Path, urls: bool) -> Iterator[tuple]:
    """The floor app (bench/floor_app.py) over the same thumbnail files: (process, url)."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "APP_LOG": "/dev/null"}
    proc, url = start_app([str(pictures), *(["--urls"] if urls else [])], env, app=ROOT / "bench" / "floor_app.py")
    try:
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def engine_cost(catalog: Path, strategy: str, shoppers: int, rounds: int) -> dict:
    """The engine alone on the same catalog: CPU and wall time per `next_round`, the app's settings."""
    import datasets

    from catalog.dataset import dataset_views, embedding_matrix
    from recommender import Recommender, choose_compression

    ds = datasets.load_from_disk(str(catalog))
    x = embedding_matrix(ds)
    rec = Recommender(
        x, strategy=strategy, compression=choose_compression("auto", len(x), x.shape[1]), views=dataset_views(ds)
    )
    walls, cpu0 = [], time.process_time()
    for k in range(shoppers):
        rng = np.random.default_rng(k)
        session = rec.new_session(strategy=strategy)
        session.next_round()
        for _ in range(rounds):
            t = time.perf_counter()
            session.next_round(pick=session.shown[int(rng.integers(len(session.shown)))])
            walls.append(time.perf_counter() - t)
    n = shoppers * rounds
    return {"cpu_ms": 1000 * (time.process_time() - cpu0) / n, "p50_ms": 1000 * float(np.median(walls))}


def signature_cost(catalog: Path, strategy: str, shoppers: int, rounds: int) -> dict:
    """The visit signature's CPU per round, in-process on the same catalog: rounds through the API's handler (each
    restores its visit, checking the signature, and signs the next), signed and unsigned (the HMAC swapped for a
    constant) in turn, shopper by shopper, with every thumbnail made first; and one HMAC of the last visit."""
    import datasets

    import shop.visit
    from catalog.catalog import Catalog
    from recommender import Recommender
    from shop.api import Api
    from shop.shop import Shop

    with tempfile.TemporaryDirectory() as cache:
        cat = Catalog(datasets.load_from_disk(str(catalog)), "bench", cache)
        cat.check_all(background=False)
        rec = Recommender(cat.embeddings, strategy=strategy, views=cat.views)
        api, signature = Api(Shop(cat, rec)), shop.visit.signature
        modes = {"signed": signature, "unsigned": lambda body, key: "0" * 64}
        cpu = dict.fromkeys(modes, 0.0)
        for k in range(shoppers):
            for name in sorted(modes, reverse=k % 2 == 1):  # each goes first in half the turns
                shop.visit.signature = modes[name]
                try:
                    rng, cpu0 = np.random.default_rng(k), time.process_time()
                    answer = api.recommend()
                    for _ in range(rounds):
                        pick = answer["products"][int(rng.integers(len(answer["products"])))]["id"]
                        answer = api.recommend(answer["visit"], pick)
                    cpu[name] += time.process_time() - cpu0
                finally:
                    shop.visit.signature = signature
        cpu = {name: 1000 * seconds / (shoppers * (rounds + 1)) for name, seconds in cpu.items()}
        body = {k: v for k, v in json.loads(answer["visit"]).items() if k != "sig"}
        t, reps = time.process_time(), 200
        for _ in range(reps):
            signature(body, b"k" * 32)
        cpu["one"] = 1000 * (time.process_time() - t) / reps
    return cpu


def thumbnails_of(tmp: Path) -> Path:
    """The app's thumbnail folder under `tmp` (the fullest one), for the floor app to serve the same files."""
    return max((p for p in (tmp / "cache" / "thumbs").iterdir() if p.is_dir()), key=lambda p: len(list(p.iterdir())))


# ----------------------------------------------------------------------------------------------- reports
def run(
    products: int, shoppers: int, rounds: int, dim: int = 768, tmp: Path | None = None, strategy: str = "mean"
) -> dict:
    """The shop under load (shoppers in their own process); returns its figures."""
    with tempfile.TemporaryDirectory() as own, serving(products, Path(tmp or own), dim, strategy) as (proc, url, _):
        return drive(url, shoppers, rounds, True, proc.pid)


def percentiles(latencies_ms: list[float], width: int = 0) -> str:
    """`p50 X ms, p99 Y ms` of the latencies, each figure `width` characters wide at the least."""
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    return f"p50 {p50:{width}.1f} ms, p99 {p99:{width}.1f} ms"


def line(name: str, r: dict) -> str:
    """One printed line of a run's figures: server CPU, latencies, rounds per second and problems."""
    problems = f"errors {r['errors']}, repeats {r['repeats']}, leaked picks {r['leaks']}"
    return (
        f"{name:<22} server CPU {r['server_cpu_ms']:6.1f} ms/round; {percentiles(r['latencies_ms'], 7)}; "
        f"{r['rounds_per_s']:5.1f} rounds/s; {problems}"
    )


WAYS = ("page", *API_CLIENTS)  # the page's events, then the API called each way


def page_and_api(url: str, shoppers: int, rounds: int, pid: int, turns: int) -> dict[str, dict]:
    """The figures of the page and of the API called each way (WAYS) on one server, in `turns` turns, each turn
    starting with the next of them (a shared machine's load drifts: none always runs first or last), summed."""
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for turn in range(turns):
        for way in WAYS[turn % len(WAYS) :] + WAYS[: turn % len(WAYS)]:
            runs[way].append(drive(url, shoppers, rounds, True, pid, api=None if way == "page" else way))
    return {way: summed(parts) for way, parts in runs.items()}


def summed(parts: list[dict]) -> dict:
    """Several runs' figures as one: all latencies, CPU and rounds per second over all rounds, problems added."""
    n = [len(p["latencies_ms"]) for p in parts]
    return {
        "latencies_ms": np.concatenate([p["latencies_ms"] for p in parts]),
        "server_cpu_ms": sum(p["server_cpu_ms"] * k for p, k in zip(parts, n)) / max(sum(n), 1),
        "rounds_per_s": sum(n) / sum(k / max(p["rounds_per_s"], 1e-9) for p, k in zip(parts, n)),
        **{name: sum(p[name] for p in parts) for name in ("errors", "repeats", "leaks")},
    }


def compare(args: argparse.Namespace, tmp: Path) -> None:
    """The shop per strategy, the floor (files, URLs) and the engine on one catalog, in one run."""
    print(
        f"{args.shoppers} shoppers x {args.rounds} rounds, {args.products:,} products ({args.dim}-d), "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    shop, engine = {}, {}
    for strategy in args.strategies:
        with serving(args.products, tmp, args.dim, strategy) as (proc, url, cat):
            ways = page_and_api(url, args.shoppers, args.rounds, proc.pid, args.turns)
            shop[strategy] = ways["page"]
            print(line(f"shop ({strategy})", shop[strategy]), flush=True)
            for way in API_CLIENTS:
                print(line(f"API, {way} ({strategy})", ways[way]), flush=True)
            ratios = ", ".join(
                f"{way} {ways[way]['server_cpu_ms'] / shop[strategy]['server_cpu_ms']:.2f}" for way in API_CLIENTS
            )
            print(f"{'':<22} API / page, server CPU per round: {ratios}", flush=True)
        engine[strategy] = engine_cost(cat, strategy, args.shoppers, args.rounds)
        print(
            f"{'engine (' + strategy + ')':<22} CPU {engine[strategy]['cpu_ms']:6.2f} ms/round, p50 "
            f"{engine[strategy]['p50_ms']:.2f} ms",
            flush=True,
        )
        sig = signature_cost(cat, strategy, min(args.shoppers, 10), args.rounds)
        print(
            f"{'signature (' + strategy + ')':<22} API round in-process: signed {sig['signed']:.2f} ms, unsigned "
            f"{sig['unsigned']:.2f} ms CPU ({sig['signed'] - sig['unsigned']:+.2f} ms); one HMAC of a "
            f"{args.rounds + 1}-round visit {sig['one']:.3f} ms (the page signs once per round, the API checks "
            "and signs)",
            flush=True,
        )
    floor = {}
    if args.floor:
        for urls in (False, True):
            name = "floor (URLs)" if urls else "floor (files)"
            with floor_serving(thumbnails_of(tmp), urls) as (proc, url):
                floor[name] = drive(url, args.shoppers, args.rounds, False, proc.pid)
            print(line(name, floor[name]), flush=True)
        base = floor["floor (files)"]["server_cpu_ms"]
        for strategy in args.strategies:
            ratio = shop[strategy]["server_cpu_ms"] / (base + engine[strategy]["cpu_ms"])
            print(
                f"server / (floor + engine), {strategy}: {shop[strategy]['server_cpu_ms']:.1f} / ({base:.1f} + "
                f"{engine[strategy]['cpu_ms']:.2f}) = {ratio:.2f}"
            )


def one_shopper(args: argparse.Namespace, tmp: Path) -> None:
    """Print one shopper's round time on a catalog of --server-products."""
    with serving(args.server_products, tmp, args.dim) as (proc, url, cat):
        r = drive(url, 1, 40, True, proc.pid)
    e = engine_cost(cat, "mean", 1, 40)
    beyond = np.percentile(r["latencies_ms"], 50) - e["p50_ms"]
    print(
        f"one shopper on {args.server_products:,} products (event in -> gallery out, over loopback): "
        f"{percentiles(r['latencies_ms'])}; the engine's round p50 {e['p50_ms']:.1f} ms: +{beyond:.1f} ms; "
        f"errors {r['errors']}"
    )


def chromium(args: argparse.Namespace, tmp: Path) -> None:
    """Click -> all ten new pictures drawn, in Debian's Chromium: median of 10 clicks."""
    from playwright.sync_api import sync_playwright

    with serving(args.products, tmp, args.dim) as (_, url, _), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url)
        page.wait_for_function(
            "document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=60_000
        )
        times = []
        for r in range(10):
            before = page.eval_on_selector_all("#products .thumbnail-item img", "els => els.map(e => e.src)")
            t = time.perf_counter()
            page.locator("#products .thumbnail-item").nth(r % 10).click()
            page.wait_for_function(
                f"(() => {{ const imgs = [...document.querySelectorAll('#products .thumbnail-item img')]; "
                f"const old = new Set({json.dumps(before)}); return imgs.length === 10 && "
                f"imgs.every(i => !old.has(i.src) && i.complete && i.naturalWidth > 0); }})()",
                timeout=30_000,
            )
            times.append(time.perf_counter() - t)
        browser.close()
    print(
        f"Chromium, click -> ten new pictures drawn: median {1000 * np.median(times):.0f} ms of 10 clicks "
        f"(min {1000 * min(times):.0f}, max {1000 * max(times):.0f})"
    )


def main() -> None:
    """Run the shoppers against the app per strategy, then the floor and the engine, and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--shoppers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--strategies", default="mean,bayes")
    ap.add_argument(
        "--turns", type=int, default=1, help="turns of page then API (alternating which goes first), summed"
    )
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor app")
    ap.add_argument(
        "--server-products",
        type=int,
        default=0,
        help="catalog size for the one-shopper round time (0 to skip; the issue's figure: 100000)",
    )
    ap.add_argument("--chromium", action="store_true", help="also time click -> pictures drawn in Chromium")
    ap.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # the shoppers' own process
    ap.add_argument("--floor-driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--api-driver", choices=API_CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive and args.api_driver:
        print(json.dumps(api_concurrently(args.drive, args.shoppers, args.rounds, args.server_pid, args.api_driver)))
        return
    if args.drive:
        figures = shop_concurrently(args.drive, args.shoppers, args.rounds, args.server_pid, shop=not args.floor_driver)
        print(json.dumps(figures))
        return
    args.strategies = [s for s in args.strategies.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        compare(args, Path(tmp))
        if args.server_products:
            one_shopper(args, Path(tmp))
        if args.chromium:
            chromium(args, Path(tmp))


if __name__ == "__main__":
    main()
