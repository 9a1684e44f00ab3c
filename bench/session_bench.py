"""Memory of browser sessions: open and close many on a big catalog; the app's RSS must come back down.

    python bench/session_bench.py                                 # 1,000 sessions on 100k products
    python bench/session_bench.py --products 2000 --sessions 60   # smoke run

Each session is a browser tab as Gradio sees it: a heartbeat stream, the page load, a switch to `bayes` for
every other one (its belief is 4 bytes a product), two clicks; then the tab closes (the stream ends). After
a warm-up batch (the server's thread pool and Python's allocator grow to the load once), RSS of the app
process is read from /proc before, with a batch open, and after all have closed; then, in the same
run, the same number of sessions that never close (API clients without a heartbeat: Gradio cannot know they
are gone, so only --max-sessions bounds them) for comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from gradio_http import Shopper  # noqa: E402
from load_bench import serving  # noqa: E402


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process, in MB (VmRSS; or RssAnon / RssFile for its parts)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def visit(url: str, config: dict, k: int, heartbeat: bool) -> tuple[Shopper, requests.Response | None]:
    """One tab: heartbeat (optional), page load, bayes for odd k, two clicks; returns it still open."""
    shopper = Shopper(url, config)
    beat = None
    if heartbeat:
        beat = requests.get(f"{url}/gradio_api/heartbeat/{shopper.session_hash}", stream=True, timeout=60)
        beat.lines = beat.iter_lines()  # kept referenced: dropping it would close the stream early
        next(beat.lines)
    gallery = shopper.call("start")[1]
    if k % 2:
        gallery = shopper.call("set_strategy", ["bayes", None])[1]
    for i in (1, 4):
        gallery = shopper.pick(i, gallery["value"][i])[1]
    return shopper, beat


def settle(pid: int, seconds: float = 10.0) -> float:
    """RSS after the server has had a moment to run its unload handlers."""
    time.sleep(seconds)
    return rss_mb(pid)


def run(products: int, sessions: int, batch: int, dim: int, workers: int, tmp: Path) -> dict:
    """Open/close `sessions` tabs in batches, then as many that never close; returns the RSS figures."""
    with serving(products, tmp, dim) as (proc, url):
        config = Shopper(url).config
        figures = {"idle": rss_mb(proc.pid)}
        with ThreadPoolExecutor(workers) as pool:
            # warm-up: one batch opened and closed, so the server's thread pool and Python's allocator reach the
            # size this load needs; what they take then is the server's, measured apart as `warm - idle`
            for _, beat in pool.map(lambda k: visit(url, config, k, True), range(batch)):
                beat.close()
            figures["before"] = settle(proc.pid)
            figures["before_anon"] = rss_mb(proc.pid, "RssAnon")
            peak, t, figures["trend"] = 0.0, time.perf_counter(), []
            for start in range(0, sessions, batch):
                tabs = list(pool.map(lambda k: visit(url, config, k, True), range(start, min(start + batch, sessions))))
                peak = max(peak, rss_mb(proc.pid))
                for _, beat in tabs:
                    beat.close()
                figures["trend"].append((start + len(tabs), settle(proc.pid, 7), rss_mb(proc.pid, "RssAnon")))
            figures["seconds"] = time.perf_counter() - t
            figures["peak"] = peak
            figures["after"] = settle(proc.pid)
            figures["after_anon"] = rss_mb(proc.pid, "RssAnon")
            list(pool.map(lambda k: visit(url, config, k, False), range(sessions)))
            figures["never_closed"] = settle(proc.pid)
        return figures


def main() -> None:
    """Open and close the sessions against the app and print its RSS before, at the peak and after."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=200, help="tabs open at once")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--workers", type=int, default=4, help="client threads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f = run(args.products, args.sessions, args.batch, args.dim, args.workers, Path(tmp))
    grown = f["after"] - f["before"]
    print(
        f"{args.sessions:,} sessions ({args.batch} open at a time, half of them bayes) on {args.products:,} "
        f"products in {f['seconds']:.0f} s"
    )
    print(
        f"app RSS: idle {f['idle']:.0f} MB, warmed up by {args.batch} sessions {f['before']:.0f} MB "
        f"({f['before'] - f['idle']:+.0f} MB), peak with {args.batch} open {f['peak']:.0f} MB, after "
        f"{args.sessions:,} more opened and closed {f['after']:.0f} MB: {grown:+.0f} MB (bound +50 MB) "
        f"{'OK' if grown <= 50 else 'OVER'}; of it anonymous memory {f['after_anon'] - f['before_anon']:+.0f} MB"
    )
    print(
        "after each batch closed (sessions, RSS MB, anonymous MB): "
        + ", ".join(f"{n:,} {rss:.0f} {anon:.0f}" for n, rss, anon in f["trend"])
    )
    print(
        f"same number of sessions that never close (bounded only by --max-sessions): {f['never_closed']:.0f} MB, "
        f"{f['never_closed'] - f['after']:+.0f} MB, {(f['never_closed'] - f['after']) * 1024 / args.sessions:.0f} "
        f"KB a session"
    )


if __name__ == "__main__":
    main()
