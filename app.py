"""The shopping app: a gallery of products; click the one you like best, get more like it. Thin Gradio wiring.

    python app.py                                  # the built-in demo catalog (Fashion-MNIST, offline)
    python app.py --dataset USER/NAME-embeddings   # a Hub dataset made by upload_ds.py
    python app.py --dataset out/NAME-embeddings    # or the same saved locally with upload_ds.py --out

Every flag can also be set by an environment variable (DATASET, HOST, PORT, PER_ROUND, SIMILAR, STRATEGY,
DEMO_SIZE, SHARE, CACHE_DIR), so a Hugging Face Space is configured in its settings, not its code.
All round logic lives in recommender.py; this file only loads the catalog, makes thumbnails and wires events.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from demo import DEFAULT_CACHE, load_demo_catalog
from embed import embedding_matrix, open_image, to_rgb
from hubcheck import HubUnavailableError, require_hub
from recommender import STRATEGIES, Recommender, Session, belief_space

log = logging.getLogger("app")
THUMB_PX = 256


class CatalogError(ValueError):
    """The dataset given to the app cannot be used (missing, unreachable, wrong columns, bad embeddings)."""


# -------------------------------------------------------------------------------------------------- catalog
def load_dataset_source(src: str):
    """A local directory from `save_to_disk` (load_from_disk) or a Hub dataset id (load_dataset, split train)."""
    import datasets

    path = Path(src).expanduser()
    if path.exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise CatalogError(f"{src} is not a dataset saved with save_to_disk: {exc}") from exc
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise CatalogError(f"{src} has splits {list(ds)} but no 'train' split")
            ds = ds["train"]
        return ds
    if src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise CatalogError(f"{src} is neither an existing directory nor a Hub dataset id (USER/NAME)")
    try:
        require_hub(f"loading the dataset {src!r}")
        return datasets.load_dataset(src, split="train")
    except HubUnavailableError as exc:
        raise CatalogError(str(exc)) from exc
    except Exception as exc:
        raise CatalogError(f"could not load the Hub dataset {src!r}: {exc}") from exc


class Catalog:
    """The products a shop shows: images (as gallery-sized thumbnail files), labels and embeddings."""

    def __init__(self, ds, name: str, cache_dir: Path = DEFAULT_CACHE, image_column: str = "image") -> None:
        import datasets

        missing = [c for c in (image_column, "embeddings") if c not in ds.column_names]
        if missing:
            raise CatalogError(f"dataset {name} has no {' or '.join(map(repr, missing))} column "
                               f"(columns: {ds.column_names}); make it with upload_ds.py")
        if len(ds) == 0:
            raise CatalogError(f"dataset {name} has no rows")
        try:
            self.embeddings = embedding_matrix(ds)
        except ValueError as exc:
            raise CatalogError(f"dataset {name}: {exc}") from exc
        self.name = name
        self.n = len(ds)
        self.images = ds.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
        self.image_column = image_column
        label_col = "category" if "category" in ds.column_names else "id" if "id" in ds.column_names else None
        self.labels = [str(v) for v in ds[label_col]] if label_col else [f"#{i}" for i in range(self.n)]
        try:
            self.model = json.loads(ds.info.description or "{}").get("model")
        except (ValueError, AttributeError):
            self.model = None
        self.thumb_dir = Path(cache_dir) / "thumbs" / f"{ds._fingerprint}-{THUMB_PX}"
        self.thumb_dir.mkdir(parents=True, exist_ok=True)

    def thumb(self, row: int) -> str:
        """Path of the product's gallery-sized JPEG, made on first use and kept on disk."""
        path = self.thumb_dir / f"r{row}.jpg"
        if not path.exists():
            img = to_rgb(open_image(self.images[row][self.image_column]))
            img.thumbnail((THUMB_PX, THUMB_PX))
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
            img.save(tmp, "JPEG", quality=88)
            os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        return str(path)

    def warm_thumbnails(self) -> threading.Thread:
        """Make every thumbnail in a background thread so rounds only read files."""

        def work() -> None:
            t = time.perf_counter()
            for row in range(self.n):
                try:
                    self.thumb(row)
                except Exception as exc:  # a broken image must not stop the rest
                    log.warning("thumbnail of row %d failed: %s", row, exc)
            log.info("thumbnails of %d products ready in %.1f s", self.n, time.perf_counter() - t)

        thread = threading.Thread(target=work, name="thumbnails", daemon=True)
        thread.start()
        return thread


def row_of_thumb(value) -> int | None:
    """The catalog row encoded in a gallery item's file name (r<row>.jpg), or None."""
    text = json.dumps(value) if not isinstance(value, str) else value
    match = re.search(r"[\\/]r(\d+)\.jpg", text or "")
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------------------------ UI
@dataclass
class Visit:
    """One browser session's state: the recommender session, and the target and results of "Find a product"."""

    session: Session
    target: int | None = None  # the product to find, in "Find a product" mode
    found_in: int | None = None  # rounds it took, once clicked
    results: list[dict] = field(default_factory=list)  # the shopper's own hunts, newest last
    lock: threading.Lock = field(default_factory=threading.Lock)  # one click at a time per browser session


def build_app(catalog: Catalog, rec: Recommender):
    """The Gradio Blocks of the shop over one catalog and one recommender (shared, read-only)."""
    strategies = sorted(STRATEGIES)

    def gallery_items(session: Session) -> list[tuple[str, str]]:
        return [(catalog.thumb(row), ("★ match · " if i < session.n_similar else "✦ new · ") + catalog.labels[row])
                for i, row in enumerate(session.shown)]

    def status(visit: Visit) -> str:
        session = visit.session
        seen = f"{session.n_seen:,} of {catalog.n:,} products seen"
        if visit.found_in is not None:
            return (f"**Found it in {visit.found_in} round{'s' * (visit.found_in != 1)}** with strategy "
                    f"*{session.strategy}*. Press *Find a product* for another, or *Start over* to shop.")
        if session.exhausted and not session.shown:
            return f"**You have seen all {catalog.n:,} products.** Press *Start over* to browse again. ({seen})"
        if visit.target is not None:
            return f"**Round {session.round}** · {seen} · Find the product shown on the right, by clicking " \
                   f"what looks most like it."
        hint = "Pick the product you like best." if session.round == 1 else \
            "★ products look like your picks; ✦ are something new."
        return f"**Round {session.round}** · {seen} · {hint}"

    def results_table(visit: Visit) -> list[list]:
        rows = [[r["strategy"], r["rounds"] if r["rounds"] is not None else "gave up"] for r in visit.results]
        for name in sorted({r["strategy"] for r in visit.results}):
            done = [r["rounds"] for r in visit.results if r["strategy"] == name and r["rounds"] is not None]
            if done:
                rows.append([f"{name}: mean of {len(done)}", round(sum(done) / len(done), 2)])
        return rows

    def render(visit: Visit, extras: bool = True):
        """All outputs; with extras=False the target image and results table are left as they are (cheaper)."""
        session = visit.session
        target = catalog.thumb(visit.target) if visit.target is not None else None
        return (visit, gr.Gallery(value=gallery_items(session), selected_index=None),
                [(catalog.thumb(row), catalog.labels[row]) for row in session.picks], status(visit),
                gr.Image(value=target, visible=target is not None) if extras else gr.skip(),
                results_table(visit) if extras else gr.skip())

    def new_visit(strategy: str | None, old: Visit | None, hunt: bool) -> Visit:
        strategy = strategy if strategy in STRATEGIES else rec.strategy
        visit = Visit(rec.new_session(strategy=strategy), results=old.results if old else [])
        if old is not None and old.target is not None and old.found_in is None and old.session.round > 0:
            visit.results.append({"strategy": old.session.strategy, "rounds": None})  # abandoned hunt
        if hunt:
            visit.target = int(visit.session.rng.integers(catalog.n))
        visit.session.next_round()
        return visit

    def start(strategy: str | None = None, visit: Visit | None = None):
        return render(new_visit(strategy, visit, hunt=False))

    def find_product(strategy: str | None = None, visit: Visit | None = None):
        return render(new_visit(strategy, visit, hunt=True))

    def on_select(visit: Visit | None, evt: gr.SelectData):
        if visit is None:
            return start()
        with visit.lock:  # a double click sends two events at once; the second sees the first's result
            return pick(visit, evt)

    def pick(visit: Visit, evt: gr.SelectData):
        session = visit.session
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(session.shown) or visit.found_in is not None:
            return render(visit, extras=False)  # out of range, or the hunt is over: ignore
        clicked = row_of_thumb(evt.value)
        if clicked is not None and clicked != session.shown[index]:
            return render(visit, extras=False)  # a click on a gallery the shopper no longer sees
        row = session.shown[index]
        if visit.target is not None and row == visit.target:
            visit.found_in = session.round
            visit.results.append({"strategy": session.strategy, "rounds": session.round})
            return render(visit)
        session.next_round(pick=row)
        return render(visit, extras=False)

    with gr.Blocks(title="Visual product recommender") as demo:
        gr.Markdown(f"## Find your product\nClick the product you like best; each round shows products that look "
                    f"like your picks, plus a few new ones. Catalog: **{catalog.name}**, {catalog.n:,} products.")
        state = gr.State(None)
        info = gr.Markdown(elem_id="status")
        with gr.Row():
            products = gr.Gallery(label="Products", columns=5, rows=2, height="auto", allow_preview=False, scale=4,
                                  object_fit="contain", elem_id="products", interactive=False, buttons=[])
            target = gr.Image(label="Find this product", visible=False, interactive=False, elem_id="target", height=280,
                              scale=1, buttons=[])
        with gr.Row():
            restart = gr.Button("Start over", elem_id="start-over")
            hunt = gr.Button("Find a product", elem_id="find-product")
        picks = gr.Gallery(label="Your picks", columns=10, height=200, allow_preview=False, fit_columns=False,
                           object_fit="contain", elem_id="picks", interactive=False, buttons=[])
        with gr.Accordion("Settings and your results", open=False):
            strategy = gr.Radio(strategies, value=rec.strategy, label="Strategy (changing it starts over)",
                                info="mean: the seed's rule (5 nearest to your picks + 5 random); rocchio: also "
                                     "moves away from what you passed over; bayes: a belief over what you want, "
                                     "galleries chosen to narrow it fastest; random: the baseline",
                                elem_id="strategy")
            results = gr.Dataframe(headers=["strategy", "rounds to find"], value=[], interactive=False,
                                   label="Find a product: your results", elem_id="results")
        outputs = [state, products, picks, info, target, results]
        demo.load(start, None, outputs, api_name="start")
        products.select(on_select, [state], outputs, api_name="pick", concurrency_limit=None)
        restart.click(start, [strategy, state], outputs, api_name="start_over")
        hunt.click(find_product, [strategy, state], outputs, api_name="find_product")
        strategy.input(start, [strategy, state], outputs, api_name="set_strategy")
    return demo


# ---------------------------------------------------------------------------------------------------- main
def env(name: str, default=None):
    """An environment setting, '' counting as unset."""
    value = os.environ.get(name, "")
    return value if value != "" else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, each defaulting to its environment variable."""
    ap = argparse.ArgumentParser(prog="app.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=env("DATASET"), metavar="SRC",
                    help="Hub dataset id or directory saved by upload_ds.py --out (env DATASET); "
                         "default: the built-in demo catalog")
    ap.add_argument("--host", default=env("HOST", env("GRADIO_SERVER_NAME")), help="address to listen on (env HOST)")
    ap.add_argument("--port", type=int, default=int(env("PORT", env("GRADIO_SERVER_PORT", 7860))),
                    help="port (env PORT, default 7860)")
    ap.add_argument("--share", action="store_true", default=env("SHARE", "0").lower() in ("1", "true", "yes"),
                    help="create a public share link (env SHARE)")
    ap.add_argument("--per-round", type=int, default=int(env("PER_ROUND", 10)), help="products per round (10)")
    ap.add_argument("--similar", type=int, default=int(env("SIMILAR", 5)), help="similar products per round (5)")
    ap.add_argument("--strategy", default=env("STRATEGY", "mean"), choices=sorted(STRATEGIES),
                    help="recommendation strategy (env STRATEGY, default mean)")
    ap.add_argument("--demo-size", type=int, default=int(env("DEMO_SIZE", 2000)),
                    help="products in the built-in demo catalog (env DEMO_SIZE, default 2000)")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="thumbnails and demo cache (env CACHE_DIR)")
    return ap.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[Catalog, Recommender]:
    """Load the catalog and build the index once; raises CatalogError with a one-line reason."""
    t = time.perf_counter()
    cache = Path(args.cache_dir)
    if args.dataset:
        ds, name = load_dataset_source(args.dataset), args.dataset
    else:
        ds, name = load_demo_catalog(size=args.demo_size, cache_dir=cache), f"demo: Fashion-MNIST ({args.demo_size})"
    catalog = Catalog(ds, name, cache)
    try:
        rec = Recommender(catalog.embeddings, per_round=args.per_round, similar=args.similar, strategy=args.strategy)
    except ValueError as exc:
        raise CatalogError(f"dataset {name}: {exc}") from exc
    log.info("catalog %s: %d products, %d-d embeddings%s; ready in %.1f s", name, catalog.n, rec.dim,
             f" ({catalog.model})" if catalog.model else "", time.perf_counter() - t)
    return catalog, rec


def main(argv: list[str] | None = None) -> int:
    """Start the server; exit code 2 with one error line when the catalog cannot be used."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    t = time.perf_counter()
    try:
        catalog, rec = prepare(args)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gr.set_static_paths([str(catalog.thumb_dir)])
    catalog.warm_thumbnails()
    threading.Thread(target=belief_space, args=(rec,), name="belief", daemon=True).start()  # for "bayes" sessions
    demo = build_app(catalog, rec)
    log.info("start-up %.1f s; serving %d products", time.perf_counter() - t, catalog.n)
    demo.queue(default_concurrency_limit=None).launch(server_name=args.host, server_port=args.port,
                                                      share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
