"""The shopping app: a gallery of products; click the one you like best, get more like it. Thin Gradio wiring.

    python app.py                                  # the built-in demo catalog (Fashion-MNIST, offline)
    python app.py --dataset USER/NAME-embeddings   # a Hub dataset made by upload_ds.py
    python app.py --dataset out/NAME-embeddings    # or the same saved locally with upload_ds.py --out

Every flag can also be set by an environment variable (DATASET, HOST, PORT, PER_ROUND, SIMILAR, STRATEGY,
DEMO_SIZE, SHARE, CACHE_DIR, MAX_SESSIONS, THREADS, COMPRESSION, HUNT_LOG, HUNT_LOG_KEEP, COMPARE, LOCALE, SYNONYMS), so
a Hugging Face Space is configured in its settings, not its code. VISIT_SECRET (environment only, 32+ characters)
signs shoppers' saved visits alike on every replica of a shop; without it a key is made once in CACHE_DIR.
All round logic lives in recommender.py; this file only loads the catalog, makes thumbnails and wires events.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "PYTHONMALLOC" not in os.environ:
    # Run on the C library's malloc, not Python's small-object arenas: an arena is only handed back when every
    # object in it is gone, so a server that once held many sessions kept ~+60 MB after they all closed;
    # with malloc, MemoryKeeper's malloc_trim returns it (bench/session_bench.py). Done before the big imports.
    os.environ["PYTHONMALLOC"] = "malloc"
    os.execv(sys.executable, sys.orig_argv)

import argparse
import functools
import logging
import socket
import threading
import time
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from catalog.catalog import (
    DEFAULT_CACHE,
    DEFAULT_LOCALE,
    Catalog,
    catalog_id,
    catalog_title,
    markdown_text,
    shop_locale,
    shop_title,
)
from catalog.dataset import CatalogError, load_dataset_source
from catalog.demo import load_demo_catalog
from catalog.fulltext import SynonymError, read_synonyms
from common.cli import ArgumentParser, env, env_option, folder_problem
from common.cli import run as run_cli
from common.huntlog import HuntLog, log_file_name, path_problem
from common.untrusted import clean_text
from engine.bayes import belief_rows
from recommender import AUTO_SQ8_BYTES, COMPRESSIONS, STRATEGIES, Recommender, choose_compression
from shop import page
from shop.api import add_api
from shop.server import BodyLimit, MemoryKeeper, NoUploads, Pictures, RequestCap, quiet_accept_errors, raise_file_limit
from shop.shop import HUNT_LOG_NOTE, OUTPUTS, Shop, search_hint
from shop.visit import MIN_SECRET_CHARS, browser_key, visit_key
from shop.wire import forget_session, keep_no_sessions_for_calls

log = logging.getLogger("app")
SESSION_IDLE_S = 2 * 3600  # a browser session's state is dropped after this long without an event
DEFAULT_THREADS = max(4, 2 * (os.cpu_count() or 1))  # Gradio's own default is 40
DEMO_SYNONYMS = Path(__file__).resolve().parent / "data" / "demo-synonyms.txt"  # the demo's ten categories


# Every event of the page: (component, event, Shop handler, inputs, API name, whether the search box is an output).
# Each answers with the outputs of View (shop/shop.py) in its fields' order; a click in a gallery leaves the search
# box as the shopper typed it (no box output).
EVENTS = (
    ("products", "select", "on_select", ("state", "saved"), "pick", False),
    ("picks", "select", "on_view", ("state", "saved"), "view_pick", False),
    ("this_is_it", "click", "on_choose", ("state", "saved"), "this_is_it", False),
    ("product_page", "click", "on_shop", ("state", "saved"), "view_in_shop", False),
    ("new_search", "click", "start", ("strategy", "state"), "new_search", True),
    ("restart", "click", "start", ("strategy", "state"), "start_over", True),
    ("hunt", "click", "find_product", ("strategy", "state"), "find_product", True),
    ("strategy", "input", "set_strategy", ("strategy", "state"), "set_strategy", True),
    ("box", "submit", "on_search", ("box", "state", "saved"), "search", True),
    ("search_button", "click", "on_search", ("box", "state", "saved"), False, True),
)


def build_app(
    catalog: Catalog,
    rec: Recommender,
    session_idle_s: float = SESSION_IDLE_S,
    key: bytes | None = None,
    hunt_log: HuntLog | None = None,
    compare: list[str] | tuple[str, ...] = (),
    shop_name: str | None = None,
) -> gr.Blocks:
    """The Gradio Blocks of the shop over one catalog and one recommender (shared, read-only).

    `shop_name` heads the page and names the browser tab (default: the catalog's own name, see shop_title).
    `key` signs the visit each browser keeps (shop/visit.py; the key its copy is encrypted with is made from
    it); the same key across restarts and replicas lets a reload resume anywhere (None: a new one per process,
    see visit_key). `hunt_log` records ended hunts (None: off);
    `compare` gives each new hunt one of these strategies at random, unless the shopper chose one.
    """
    shop = Shop(catalog, rec, hunt_log, compare, key)
    shop_name = clean_text(shop_name or shop_title(catalog.name), 80).strip() or "Shop"
    with gr.Blocks(title=shop_name) as demo:
        ui = lay_out(shop, session_idle_s, shop_name)
        # Every event sends its outputs in the page's own format (Shop.render), so Gradio postprocesses nothing.
        outputs = [ui[name] for name in OUTPUTS if name != "box"]
        with_box = [ui[name] for name in OUTPUTS]
        # The page's own events take the page's own formats (a click's event data, the browser's saved visit):
        # they are left off the "Use via API" page, which lists the API made for programs (shop/api.py) instead.
        fast = {"postprocess": False, "concurrency_limit": None, "api_visibility": "private"}
        demo.load(shop.load, [ui["saved"]], with_box, api_name="start", **fast)
        for component, event, handler, inputs, api_name, box in EVENTS:
            getattr(ui[component], event)(
                getattr(shop, handler),
                [ui[name] for name in inputs],
                with_box if box else outputs,
                api_name=api_name,
                **fast,
            )
        add_api(shop)
        memory = MemoryKeeper()

        def on_unload(request: gr.Request) -> None:
            forget_session(demo, request)
            memory.soon()

        demo.unload(on_unload)
    return demo


def lay_out(shop: Shop, session_idle_s: float, shop_name: str) -> dict[str, gr.components.Component]:
    """The page's components, laid out in the Blocks being built, by name: each output's is its field of View."""
    catalog = shop.catalog
    gr.Markdown(
        f"## {markdown_text(shop_name)}\nClick the product you like best; each round shows products that look "
        "like your picks, plus a few new ones.",
        elem_id="shop-name",
    )
    ui = {
        "state": gr.State(None, time_to_live=session_idle_s, delete_callback=shop.forget),
        "saved": gr.BrowserState(None, storage_key=f"product-recommender-{catalog.key}", secret=browser_key(shop.key)),
        "info": gr.Markdown(elem_id="status"),
    }
    ui |= lay_out_search(catalog)
    ui |= lay_out_shelf(catalog)
    ui |= lay_out_picks()
    ui |= lay_out_settings(shop.rec, catalog)
    if shop.hunt_log.enabled:
        gr.Markdown(HUNT_LOG_NOTE, elem_id="hunt-log-note")
    return ui


def lay_out_search(catalog: Catalog) -> dict[str, gr.components.Component]:
    """The search box and its button, in one row."""
    with gr.Row(equal_height=True):
        box = gr.Textbox(
            label="Describe what you want",
            placeholder=search_hint(catalog),
            scale=4,
            max_lines=1,
            elem_id="search",
            submit_btn=False,
        )
        button = gr.Button("Search", elem_id="search-button", scale=1, min_width=90)
    return {"box": box, "search_button": button}


def lay_out_shelf(catalog: Catalog) -> dict[str, gr.components.Component]:
    """The round's products, and beside them the target of a hunt and the page of the product last picked."""
    ui = {}
    with gr.Row(elem_id="shop-row"):
        ui["products"] = gr.Gallery(
            label="Products",
            columns=5,
            height="auto",
            allow_preview=False,
            scale=3,
            object_fit="contain",
            elem_id="products",
            interactive=False,
            buttons=[],
        )
        with gr.Column(scale=1, min_width=240, elem_id="side"):
            ui["target"] = gr.Image(
                label="Find this product", visible=False, interactive=False, elem_id="target", buttons=[]
            )
            with gr.Column(elem_id="product-page"):
                ui["product_page"] = gr.HTML(
                    page.product_page(catalog, None), elem_id="product-details", js_on_load=page.SHOP_LINK_JS
                )
                ui["this_is_it"] = gr.Button("This is it", variant="secondary", visible=False, elem_id="this-is-it")
                ui["new_search"] = gr.Button(
                    "Start a new search", variant="primary", visible=False, elem_id="new-search"
                )
    return ui


def lay_out_picks() -> dict[str, gr.components.Component]:
    """The start-over and find-a-product buttons, then the shopper's picks so far."""
    with gr.Row():
        restart = gr.Button("Start over", elem_id="start-over")
        hunt = gr.Button("Find a product", elem_id="find-product")
    picks = gr.Gallery(
        label="Your picks (click one to see it again)",
        columns=10,
        height="auto",
        allow_preview=False,
        object_fit="contain",
        elem_id="picks",
        interactive=False,
        buttons=[],
    )
    return {"restart": restart, "hunt": hunt, "picks": picks}


def lay_out_settings(rec: Recommender, catalog: Catalog) -> dict[str, gr.components.Component]:
    """The folded panel: the catalog's line, the strategy chooser, a note on the strategy followed, and the
    shopper's results (folded away: the page's top is the shop's name, its search box and its products)."""
    with gr.Accordion("How products are chosen, and your results", open=False, elem_id="shop-settings"):
        header = gr.Markdown(catalog.summary(), elem_id="catalog")
        strategy = gr.Radio(
            page.strategy_choices(sorted(STRATEGIES)),
            value=rec.strategy,
            elem_id="strategy",
            label="How the next products are chosen (changing it starts over)",
        )
        following = gr.Markdown(elem_id="strategy-note")
        results = gr.Dataframe(
            headers=page.RESULT_HEADERS, value=[], interactive=False, label="Your results", elem_id="results"
        )
    return {"header": header, "strategy": strategy, "following": following, "results": results}


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, each defaulting to its environment variable; a bad value of either is one `error:` line, exit 2."""
    ap = ArgumentParser(prog="app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = functools.partial(env_option, ap)
    dataset = "Hub dataset id or directory saved by upload_ds.py --out"
    flag("--dataset", dataset, metavar="SRC", shown="the built-in demo catalog")
    flag("--host", "address to listen on", env("GRADIO_SERVER_NAME"))
    flag("--port", "port", env("GRADIO_SERVER_PORT", "7860"), span=(1, 65535))
    flag("--share", "create a public share link", action="store_true")
    flag("--per-round", "products per round", "10", span=(1, 100))
    flag("--similar", "similar products per round, at most --per-round", "5", span=(0, 100))
    strategy = (
        "how each round's products are chosen: bayes (a belief over what the shopper wants; 7.1 rounds to a product "
        "where mean, the seed's rule of 5 nearest to the picks + 5 random, takes 29.2 in 600 simulated hunts)"
    )
    flag("--strategy", strategy, "bayes", choices=sorted(STRATEGIES))
    flag("--demo-size", "products in the built-in demo catalog", "2000", span=(1, 70_000))
    flag("--shop-name", "the shop's name, atop the page and on the browser tab", metavar="NAME", shown="the catalog's")
    locale = "how prices are written, as this locale writes them (de_DE: 1.008,00 €; fr_CH, ja_JP, ...)"
    flag("--locale", locale, DEFAULT_LOCALE, metavar="LOCALE")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="thumbnails and demo cache (env CACHE_DIR)")
    sessions = (
        "browser sessions kept in memory at once; the least recently used beyond it is dropped and resumes from the "
        "browser's copy"
    )
    flag("--max-sessions", sessions, "1000", span=(1, None))
    threads = "worker threads for shoppers' events; rounds are CPU work, so more threads than cores only add memory"
    shown = f"{DEFAULT_THREADS} here: twice the cores, at least 4"
    flag("--threads", threads, str(DEFAULT_THREADS), span=(1, 1000), shown=shown)
    hunts = "where ended hunts are recorded for insights.py, a JSON line each, nothing that identifies a person"
    shown = "CACHE_DIR/hunts/CATALOG.jsonl, one file per catalog; 'none' turns it off"
    flag("--hunt-log", hunts, "", metavar="PATH", shown=shown)
    flag("--hunt-log-keep", "rotated hunt logs (64 MB each) kept; older ones are removed", "10", span=(0, 100_000))
    compare = (
        "give each new hunt one of these strategies at random (e.g. mean,bayes), recorded in the hunt log so "
        "insights.py can compare them on real shoppers; a shopper's own choice in Settings wins"
    )
    flag("--compare", compare, metavar="A,B")
    scan = (
        "how rounds scan the catalog: none (float32 rows in memory), sq8 (8-bit codes in memory, float32 rows left "
        "on disk; the same galleries, ~0.3x the time and a quarter of the memory), auto: sq8 from "
        f"{AUTO_SQ8_BYTES >> 20} MB of float32 rows, e.g. {AUTO_SQ8_BYTES // (4 * 768):,} products of 768-d"
    )
    flag("--compression", scan, "auto", choices=["auto", *COMPRESSIONS])
    synonyms = "the shop's synonyms: lines like 'shoes: sneaker, sandal, ankle boot' (a typed word also finds these)"
    flag("--synonyms", synonyms, metavar="FILE", shown=f"{DEMO_SYNONYMS.name} for the demo, none for a shop")
    busy = "HTTP requests served at once; one more is answered 503 (a crowd of slow clients cannot starve the next)"
    flag("--max-requests", busy, metavar="N", span=(1, None), shown="half the open-file limit, at least 64")
    args = ap.parse_args(argv)
    if args.dataset is None and os.environ.get("DATASET", "") != "":  # set, but blank: a mistake, not "the demo"
        ap.error("DATASET is blank: give a Hub dataset id or a folder from upload_ds.py, or unset it for the demo")
    try:
        path = args.synonyms or (None if args.dataset else DEMO_SYNONYMS)
        args.synonym_words = read_synonyms(path) if path else {}
    except SynonymError as exc:
        ap.error(f"--synonyms (or SYNONYMS): {exc}")
    if args.dataset is not None and not args.dataset.strip():
        ap.error("--dataset is empty: give a Hub dataset id or a folder from upload_ds.py, or omit it for the demo")
    problem = folder_problem(args.cache_dir, "--cache-dir (or CACHE_DIR)")
    if problem:
        ap.error(problem)
    try:
        shop_locale(args.locale)
    except ValueError as exc:
        ap.error(f"--locale (or LOCALE): {exc}")
    if args.compression not in ("auto", *COMPRESSIONS):
        ap.error(f"COMPRESSION {args.compression!r} is not one of auto, {', '.join(COMPRESSIONS)}")
    if 0 < len(os.environ.get("VISIT_SECRET", "")) < MIN_SECRET_CHARS:
        ap.error(
            f"VISIT_SECRET is too short: give at least {MIN_SECRET_CHARS} random characters (openssl rand -hex 32)"
        )
    if args.similar > args.per_round:
        ap.error(f"--similar ({args.similar}) cannot exceed --per-round ({args.per_round})")
    if args.strategy not in STRATEGIES:  # argparse does not check a default (here: STRATEGY) against choices
        ap.error(f"STRATEGY {args.strategy!r} is not one of {sorted(STRATEGIES)}")
    args.compare = [name.strip() for name in (args.compare or "").split(",") if name.strip()]
    unknown = [name for name in args.compare if name not in STRATEGIES]
    if unknown or len(args.compare) == 1:
        ap.error(
            f"--compare (or COMPARE) takes two or more of {sorted(STRATEGIES)} separated by commas, got "
            f"{','.join(args.compare) or 'nothing'}"
        )
    if args.hunt_log.strip().lower() == "none":
        args.hunt_log = None
    else:
        default = Path(args.cache_dir) / "hunts" / log_file_name(catalog_id(args.dataset))
        args.hunt_log = args.hunt_log or str(default)
        problem = path_problem(Path(args.hunt_log).expanduser())  # a FIFO would hang the shop, a symlink mislead it
        if problem:
            ap.error(f"--hunt-log (or HUNT_LOG): {problem}; give a file's path, or 'none'")
        problem = folder_problem(Path(args.hunt_log).expanduser().parent, "--hunt-log (or HUNT_LOG) folder")
        if problem:
            log.warning("the hunt log cannot be written: %s; the shop goes on without it", problem)
    return args


def port_problem(host: str | None, port: int) -> str | None:
    """Why the server could not listen on host:port (in use, not allowed), or None when it can."""
    with socket.socket(socket.AF_INET6 if host and ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "127.0.0.1", port))
        except OSError as exc:
            return f"cannot listen on {host or '127.0.0.1'}:{port}: {exc.strerror or exc}; pass --port (or PORT)"
    return None


def prepare(args: argparse.Namespace) -> tuple[Catalog, Recommender]:
    """Load the catalog, check a sample of its images and build the index once; CatalogError with one line."""
    t = time.perf_counter()
    cache = Path(args.cache_dir)
    if args.dataset:
        ds, name = load_dataset_source(args.dataset), catalog_title(args.dataset)
    else:
        try:
            ds = load_demo_catalog(size=args.demo_size, cache_dir=cache)
        except (ValueError, FileNotFoundError) as exc:
            raise CatalogError(f"demo catalog: {exc}") from exc
        name = f"demo: Fashion-MNIST ({args.demo_size})"
    catalog = Catalog(ds, name, cache, locale=args.locale)
    catalog.id = catalog_id(args.dataset)
    catalog.synonyms = args.synonym_words
    catalog.add_appearance()  # bayes's second pair of eyes, on datasets made without it
    dim = catalog.embeddings[0].shape[1]
    compression = choose_compression(args.compression, catalog.n, dim)
    try:
        rec = Recommender(
            catalog.embeddings,
            per_round=args.per_round,
            similar=args.similar,
            strategy=args.strategy,
            compression=compression,
            views=catalog.views,
        )
    except ValueError as exc:
        raise CatalogError(f"dataset {name}: {exc}") from exc
    catalog.on_hide = rec.hide
    catalog.check_sample()
    why_not = catalog.load_text_encoder() if catalog.has_text else None
    if why_not:
        log.warning("typed words search product texts, not meanings: %s", why_not)
    t_search = time.perf_counter()
    _ = catalog.search_index  # built once per dataset (kept in the cache folder), before any shopper searches
    log.info(
        "search box: every product text (SQLite FTS5, %d synonym words; %.1f s)%s",
        len(catalog.synonyms),
        time.perf_counter() - t_search,
        f" and meaning (text tower of {catalog.model})" if catalog.text_encoder else "",
    )
    index = (
        f"8-bit codes ({rec.sq8_index.nbytes / 2**20:,.0f} MB; float32 rows read from disk)"
        if rec.sq8_index
        else f"float32 ({rec.n * rec.dim * 4 / 2**20:,.0f} MB)"
    )
    log.info(
        "catalog %s: %d products, %d-d embeddings%s; index: %s (--compression %s); ready in %.1f s",
        name,
        catalog.n,
        rec.dim,
        f" ({catalog.model})" if catalog.model else "",
        index,
        args.compression,
        time.perf_counter() - t,
    )
    return catalog, rec


def server_guards(max_requests: int | None, pictures: Path) -> list[Middleware]:
    """The web server's guards (shop/server.py): the open-file limit raised, accept errors logged once a second,
    and the middleware: uploads refused, requests in flight capped, bodies capped, pictures served by name."""
    quiet_accept_errors()
    files_before, files = raise_file_limit()
    max_requests = max_requests or max(64, files // 2)
    log.info("open files: up to %d (was %d); requests at once: up to %d", files, files_before, max_requests)
    return [
        Middleware(NoUploads),
        Middleware(RequestCap, limit=max_requests),
        Middleware(BodyLimit),
        Middleware(Pictures, folder=pictures),
    ]


def main(argv: list[str] | None = None) -> int:
    """Start the server; exit code 2 with one error line when the settings or the catalog cannot be used."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    try:
        catalog, rec = prepare(args)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")  # Gradio keeps 10,000 events' records by default
    # ... and summarises them all (a pandas DataFrame) after every event; once every 500 events is plenty
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "500")
    gr.set_static_paths([str(catalog.thumb_dir)])

    def warm_up() -> None:  # what "bayes" sessions compare, made before use
        for view in ("embedding", *rec.views):
            belief_rows(rec, view)

    hunt_log = HuntLog(args.hunt_log, keep=args.hunt_log_keep)
    log.info("hunt log: %s%s", args.hunt_log or "off", f"; comparing {', '.join(args.compare)}" if args.compare else "")
    demo = build_app(
        catalog,
        rec,
        key=visit_key(Path(args.cache_dir)),
        hunt_log=hunt_log,
        compare=args.compare,
        shop_name=args.shop_name,
    )
    log.info("start-up %.1f s; serving %d products", time.perf_counter() - t, catalog.n)
    guards = server_guards(args.max_requests, catalog.thumb_dir)
    try:
        demo.queue(default_concurrency_limit=None).launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            state_session_capacity=args.max_sessions,
            css=page.CSS,
            head=page.HEAD,
            max_threads=args.threads,
            app_kwargs={"middleware": guards},
            prevent_thread_lock=True,
        )
    except OSError as exc:  # the port was taken between the check and the start
        print(f"error: cannot start the server: {exc}", file=sys.stderr)
        return 2
    keep_no_sessions_for_calls(demo)  # an API call without a session of its own leaves none behind
    # Started once the server answers: on a big catalog this CPU work would starve Gradio's own start-up check
    # ("localhost is not accessible") on a small machine.
    catalog.check_all()
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted="stopped"))
