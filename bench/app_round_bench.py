"""What the app adds to a round in-process (thumbnails, checks, page outputs), and its start-up time.

    python bench/app_round_bench.py                          # this tree, 2,000 products, pictures as bytes and paths
    python bench/app_round_bench.py --compare /tmp/before    # and another checkout of the project, same run

For each tree and catalog kind: the median time of the app's `pick` handler (a round as the server computes it,
gallery thumbnails and page outputs included, no HTTP), the engine's own `next_round` beside it (the floor),
and the time from `python app.py` to its first answer (warm thumbnail cache). Trees alternate, so both see the
same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time, statistics
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
import datasets, gradio as gr, app
from app import Catalog, Recommender
catalog = Catalog(datasets.load_from_disk(sys.argv[2]), "bench", sys.argv[3])
rec = Recommender(catalog.embeddings, seed=0)
catalog.on_hide = rec.hide
catalog.check_all(background=False)
fns = {f.api_name: f.fn for f in app.build_app(catalog, rec).fns.values()}
handler, engine = [], []
for hunt in range(int(sys.argv[4])):
    visit = fns["start"](None)[0]
    for _ in range(10):
        rows = list(visit.session.shown)
        item = {"image": {"path": catalog.thumb(rows[3])}}
        t = time.perf_counter()
        visit = fns["pick"](visit, None, gr.SelectData(None, {"index": 3, "value": item}))[0]
        handler.append(time.perf_counter() - t)
        probe = rec.new_session(seed=hunt)
        probe.next_round()
        t = time.perf_counter()
        probe.next_round(pick=probe.shown[3])
        engine.append(time.perf_counter() - t)
print(json.dumps({"handler": statistics.median(handler), "engine": statistics.median(engine)}))
"""


def startup_s(root: Path, dataset: Path, cache: Path) -> float:
    """Seconds from `python app.py --dataset` to its first answer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from gradio_http import start_app

    t = time.perf_counter()
    proc, _ = start_app(["--dataset", str(dataset)], {**os.environ, "CACHE_DIR": str(cache)}, app=root / "app.py")
    took = time.perf_counter() - t
    proc.terminate()
    proc.wait(timeout=20)
    return took


def main() -> int:
    """Measure each tree and catalog kind, alternating, and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--hunts", type=int, default=20, help="hunts of 10 picks per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs per tree")
    ap.add_argument("--compare", metavar="DIR", help="another checkout of the project, measured in the same run")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from catalogs import make_catalog

    trees = {"this tree": ROOT, **({f"{args.compare}": Path(args.compare)} if args.compare else {})}
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bytes", "paths"):
            data = make_catalog(Path(tmp) / kind, n=args.products, as_paths=kind == "paths")
            for _ in range(args.repeats):
                for name, root in trees.items():
                    cache = Path(tmp) / f"cache-{kind}-{abs(hash(name))}"
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(root), str(data), str(cache), str(args.hunts)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row = results.setdefault((kind, name), {"handler": [], "engine": [], "startup": []})
                    measured = json.loads(out.stdout.strip().splitlines()[-1])
                    row["handler"].append(measured["handler"])
                    row["engine"].append(measured["engine"])
                    row["startup"].append(startup_s(root, data, cache))
    print(f"{args.products:,} products, median of {args.repeats} runs, this machine ({os.cpu_count()} cores)")
    print(f"{'pictures':8} {'tree':28} {'pick ms':>8} {'engine ms':>9} {'ratio':>6} {'start-up s':>10}")
    for (kind, name), row in results.items():
        h, e, s = (statistics.median(row[k]) for k in ("handler", "engine", "startup"))
        print(f"{kind:8} {name[-28:]:28} {h * 1e3:8.2f} {e * 1e3:9.2f} {h / e:6.1f} {s:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
