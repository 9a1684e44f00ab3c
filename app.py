"""The shopping app: a gallery of products; click the one you like best, get more like it. Thin Gradio wiring.

    python app.py                                  # the built-in demo catalog (Fashion-MNIST, offline)
    python app.py --dataset USER/NAME-embeddings   # a Hub dataset made by upload_ds.py
    python app.py --dataset out/NAME-embeddings    # or the same saved locally with upload_ds.py --out

Every flag can also be set by an environment variable (DATASET, HOST, PORT, PER_ROUND, SIMILAR, STRATEGY,
DEMO_SIZE, SHARE, CACHE_DIR, MAX_SESSIONS, THREADS, COMPRESSION, HUNT_LOG, COMPARE), so a Hugging Face Space is
configured in its settings, not its code.
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
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import gradio as gr
from starlette.middleware import Middleware

import page
from catalog import (
    DEFAULT_CACHE,
    MAX_QUERY_CHARS,
    Catalog,
    CatalogError,
    catalog_title,
    load_dataset_source,
    markdown_text,
)
from cli import ArgumentParser, env, env_flag, folder_problem, whole_number
from cli import run as run_cli
from demo import load_demo_catalog
from huntlog import HuntLog, minute_now, round_entries
from recommender import (
    AUTO_SQ8_BYTES,
    COMPRESSIONS,
    STRATEGIES,
    Recommender,
    Session,
    belief_rows,
    choose_compression,
    view_weights,
)
from server import BodyLimit, MemoryKeeper, forget_session
from untrusted import clean_text
from visit import MAX_RESULTS, Visit, restore_visit, saved_results  # noqa: F401 - MAX_RESULTS, saved_results re-exported

log = logging.getLogger("app")
SESSION_IDLE_S = 2 * 3600  # a browser session's state is dropped after this long without an event
DEFAULT_THREADS = max(4, 2 * (os.cpu_count() or 1))  # Gradio's own default is 40
SEARCH_HINT = "e.g. sneaker, red dress, shoes/42 - press Enter"
KEEP, SKIP = object(), object()  # Shop.render's `box`: not an output of the event / an output left as it is
HUNT_LOG_NOTE = "Anonymous hunts (the products shown and picked, and typed words; nothing about you) are recorded to " \
    "improve this shop."


def row_of_thumb(value) -> int | None:
    """The catalog row encoded in a gallery item's file name (r<row>-<key>.jpg), or None."""
    text = json.dumps(value) if not isinstance(value, str) else value
    match = re.search(r"[\\/]r(\d+)-[0-9a-f]+\.jpg", text or "")
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------------------------------ UI
class Shop:
    """The page's event handlers over one catalog and one recommender (shared, read-only); what an event changes
    is the shopper's own Visit. `build_app` lays out the page and wires each event to one of these."""

    def __init__(self, catalog: Catalog, rec: Recommender, hunt_log: HuntLog | None = None,
                 compare: list[str] | tuple[str, ...] = ()) -> None:
        self.catalog, self.rec = catalog, rec
        self.hunt_log = hunt_log or HuntLog(None)
        self.compare = [name for name in compare if name in STRATEGIES]  # each new hunt draws one of these
        self._draw = random.Random()  # which strategy a hunt gets under --compare (not the shopper's galleries)
        self.catalog_info = {"name": catalog.name, "rows": catalog.n, "model": catalog.model}

    # -- the hunt log
    def hunt_record(self, visit: Visit, ended: str) -> dict:
        """The hunt log's record of `visit` (see huntlog.py): what was shown, picked and typed, and how it ended."""
        session, product_id = visit.session, self.catalog.product_id
        picks = dict(zip(session.pick_rounds, session.picks))
        found = visit.chosen
        if visit.target is not None and visit.found_in is not None:
            found = picks[visit.found_in] = visit.target  # clicking the target ends the hunt without a next round
        return {"hunt": visit.hunt, "time": minute_now(), "catalog": self.catalog_info, "strategy": session.strategy,
                "strategy_from": visit.strategy_from,
                "target": None if visit.target is None else product_id(visit.target),
                "rounds": round_entries(session.history, picks, visit.searches, product_id),
                "found": None if found is None else product_id(found), "ended": ended}

    def log_end(self, visit: Visit, ended: str) -> None:
        """Write the hunt's record once, when it ends."""
        if not visit.logged:
            visit.logged = True
            self.hunt_log.write(self.hunt_record(visit, ended))

    def forget(self, visit) -> None:
        """A page let its visit go (tab closed, session timed out): its hunt, if not ended, is abandoned."""
        if isinstance(visit, Visit):
            self.hunt_log.closed(visit.hunt, None if visit.logged else self.hunt_record(visit, "abandoned"))

    def resume(self, saved) -> Visit | None:
        """The visit a browser kept (see `restore_visit`), its hunt held again by this page."""
        visit = restore_visit(saved, self.catalog, self.rec)
        if visit is not None:
            self.hunt_log.opened(visit.hunt)
        return visit

    def gallery_items(self, visit: Visit) -> list[tuple[str, str]]:
        """The current round as (picture URL, caption); products whose image turns out unreadable are swapped out
        (a few tries at most, then left off the gallery)."""
        session = visit.session
        for _ in range(5):
            paths = {row: self.catalog.showable(row) for row in session.shown}
            bad = [row for row, path in paths.items() if path is None]
            if not bad:
                break
            session.hide(bad)
        rows = [row for row in session.shown if paths.get(row) is not None]
        n_like = sum(1 for row in session.shown[: session.n_similar] if paths.get(row) is not None)
        marked = bool(session.picks) or (bool(visit.words) and session.strategy != "random")
        urls = [picture_url(visit.root, paths[row]) for row in rows]
        return list(zip(urls, page.captions(self.catalog, rows, n_like, marked)))

    def render(self, visit: Visit, box=KEEP):
        """The outputs of an event, in the page's own data format (every event runs with postprocess=False: no
        Gradio processing per output, and no component is rebuilt unless its visibility changes): the 13 outputs
        every event has, plus the search box's text when `box` is given (SKIP: leave it as the shopper typed)."""
        session, root = visit.session, visit.root
        gallery = self.gallery_items(visit)  # first: it may swap products, which the status line counts
        picks = [(picture_url(root, path), self.catalog.caption(row)) for row in session.picks
                 if (path := self.catalog.showable(row))]
        line = page.status_line(self.catalog, visit)
        if visit.note:
            line, visit.note = f"**{markdown_text(visit.note)}** {line}", ""
        shown = visit.chosen if visit.chosen is not None else visit.viewing
        if visit.target is not None and not visit.ended:
            shown = None  # while hunting a target, the product page stays out of the way
        target = self.catalog.showable(visit.target) if visit.target is not None else None
        visible = self.visible
        out = (visit,
               visible(visit, "products", visit.chosen is None, gallery_data(gallery)),
               gallery_data(picks), line,
               visible(visit, "target", target is not None, file_data(root, target)),
               {"headers": page.RESULT_HEADERS, "data": self.results_rows(visit), "metadata": None},
               visit.saved(self.catalog), self.catalog.summary(), session.strategy,
               page.following_text(view_weights(session)) if session.strategy == "bayes" else "",
               page.product_page(self.catalog, shown, visit.found_in if visit.chosen is not None else None),
               visible(visit, "this is it", shown is not None and not visit.ended and visit.target is None,
                       "This is it"),
               visible(visit, "new search", visit.chosen is not None, "Start a new search"))
        if box is KEEP:
            return out
        return (*out, gr.skip() if box is SKIP else box)

    def results_rows(self, visit: Visit) -> list[list]:
        """The results table, made again only when a result was added (results only grow): a round need not read
        up to 500 products' titles to send the same table."""
        made = visit.page.get("results rows")
        if made is None or made[0] != len(visit.results):
            made = visit.page["results rows"] = (len(visit.results), page.results_rows(self.catalog, visit.results))
        return made[1]

    @staticmethod
    def visible(visit: Visit, key: str, shown: bool, value):
        """`value` as it is, or, when the output's visibility on this page changes, an update that also sets it
        (the one case that makes Gradio rebuild a component, so it is sent only then)."""
        if visit.page.get(key) == shown:
            return value
        visit.page[key] = shown
        return {"__type__": "update", "value": value, "visible": shown}

    def draw_target(self, session: Session) -> int | None:
        """A random product that can be shown, to hunt for."""
        for _ in range(100):
            row = int(session.rng.integers(self.catalog.n))
            if not self.rec.is_hidden(row) and self.catalog.showable(row) is not None:
                return row
        return None

    def new_visit(self, strategy: str | None, old: Visit | None, hunt: bool, by_shopper: bool = False) -> Visit:
        """A new hunt that keeps the shopper's results; the old one, unless it ended, is logged as started over."""
        results = []
        if old is not None:
            with old.lock:  # two Start-over clicks at once record the abandoned hunt once
                if old.target is not None and old.found_in is None and old.session.round > 0:
                    old.results.append({"strategy": old.session.strategy, "rounds": None})
                self.log_end(old, "started_over")
                old.target = None
                results = old.results
            self.hunt_log.closed(old.hunt, None)
        strategy, strategy_from = self.strategy_for(strategy, old, by_shopper)
        visit = Visit(self.rec.new_session(strategy=strategy), results=results, strategy_from=strategy_from)
        if old is not None:  # the same browser page: its address, and what it shows now
            visit.root, visit.page = old.root, old.page
        self.hunt_log.opened(visit.hunt)
        if hunt:
            visit.target = self.draw_target(visit.session)
        visit.session.next_round()
        return visit

    def strategy_for(self, asked: str | None, old: Visit | None, by_shopper: bool) -> tuple[str, str]:
        """A new hunt's strategy and who chose it: the shopper (in Settings, or a strategy other than the one shown
        that an API call names), else the previous choice of the shopper, else a random draw among --compare's,
        else the shop's default."""
        shown = old.session.strategy if old is not None else None
        if asked in STRATEGIES and (by_shopper or asked != (shown or self.rec.strategy)):
            return asked, "shopper"
        if old is not None and old.strategy_from == "shopper":
            return old.session.strategy, "shopper"
        if self.compare:
            return self._draw.choice(self.compare), "compare"
        return self.rec.strategy, "default"

    def load(self, saved, request: gr.Request | None = None):
        """A page (re)load: resume what this browser saved, or start a new visit."""
        visit = self.at(self.resume(saved), request)
        if visit is None:
            return self.render(self.at(self.new_visit(None, None, hunt=False), request), box="")
        return self.render(visit, box=visit.words or "")

    def start(self, strategy: str | None = None, visit: Visit | None = None, request: gr.Request | None = None):
        return self.render(self.at(self.new_visit(strategy, visit, hunt=False), request), box="")

    def set_strategy(self, strategy: str | None = None, visit: Visit | None = None,
                     request: gr.Request | None = None):
        """The shopper chose a strategy in Settings: a new hunt with it, and their choice kept for the next ones."""
        return self.render(self.at(self.new_visit(strategy, visit, hunt=False, by_shopper=True), request), box="")

    def find_product(self, strategy: str | None = None, visit: Visit | None = None,
                     request: gr.Request | None = None):
        return self.render(self.at(self.new_visit(strategy, visit, hunt=True), request), box="")

    def on_search(self, text, visit: Visit | None, saved, request: gr.Request | None = None):
        visit = self.current(visit, saved, request)
        with visit.lock:
            return self.search(visit, clean_text(text, MAX_QUERY_CHARS * 4))

    def current(self, visit: Visit | None, saved, request: gr.Request | None = None) -> Visit:
        """This browser's visit: the server's copy, else the browser's (the server let it go: idle, a restart),
        else a new one."""
        if visit is None:
            visit = self.resume(saved) or self.new_visit(None, None, hunt=False)
        return self.at(visit, request)

    @staticmethod
    def at(visit: Visit | None, request: gr.Request | None) -> Visit | None:
        """`visit`, knowing the root URL of the page it is on (once: it is the same page for its life)."""
        if visit is not None and visit.root is None and request is not None:
            visit.root = page_root(request)
        return visit

    def search(self, visit: Visit, text: str):
        """Typed words steer the next round like a pick; a miss says so and changes nothing; an empty box clears."""
        session = visit.session
        if visit.ended:
            return self.render(visit, box=SKIP)
        found = self.catalog.find(text)
        if found.query is None:
            if not found.text and visit.words:
                session.set_query(None)
                visit.words, visit.search_by, visit.note = None, "", "Search cleared."
            else:
                visit.note = found.message
                if found.search_by:  # words that matched nothing: the shop would like to know
                    visit.searches.setdefault(session.round, []).append((found.text, 0))
            return self.render(visit, box=SKIP)
        try:
            session.next_round(query=found.query)
        except ValueError as exc:  # e.g. a text tower whose vectors do not fit the catalog: say it, change nothing
            visit.note = f"Search failed: {exc}"
            return self.render(visit, box=SKIP)
        matches = len(found.query) if found.search_by == "names" else None
        visit.searches.setdefault(session.round - 1, []).append((found.text, matches))
        visit.words, visit.search_by = found.text, found.search_by
        return self.render(visit, box=found.text)

    def on_select(self, visit: Visit | None, saved, evt: gr.SelectData, request: gr.Request | None = None):
        if visit is None:  # the server let this session's state go (idle, or a restart): the browser has it
            visit = self.at(self.resume(saved), request)
            if visit is None:
                return self.render(self.at(self.new_visit(None, None, hunt=False), request))
        with visit.lock:  # a double click sends two events at once; the second sees the first's result
            return self.pick(visit, evt)

    def pick(self, visit: Visit, evt: gr.SelectData):
        session = visit.session
        row = clicked_row(session.shown, evt)
        if row is None or visit.ended:
            return self.render(visit)  # out of range, a stale gallery, or the hunt is over: ignore
        visit.viewing = row
        if visit.target is not None and row == visit.target:
            visit.found_in = session.round
            visit.results.append({"strategy": session.strategy, "rounds": session.round, "product": row,
                                  "how": "target"})
            self.log_end(visit, "found")
            return self.render(visit)
        session.next_round(pick=row)
        return self.render(visit)

    def on_view(self, visit: Visit | None, saved, evt: gr.SelectData, request: gr.Request | None = None):
        """A click in *Your picks*: that product on the product page; no round is spent."""
        visit = self.current(visit, saved, request)
        with visit.lock:
            row = clicked_row(visit.session.picks, evt)
            if row is not None and visit.chosen is None:
                visit.viewing = row
            return self.render(visit)

    def on_choose(self, visit: Visit | None, saved, request: gr.Request | None = None):
        """"This is it": the product on the page ends the hunt, recorded with the rounds it took."""
        visit = self.current(visit, saved, request)
        with visit.lock:
            session = visit.session
            if visit.viewing is not None and not visit.ended and visit.target is None:
                visit.chosen, visit.found_in = visit.viewing, max(1, session.round - 1)
                visit.results.append({"strategy": session.strategy, "rounds": visit.found_in,
                                      "product": visit.chosen, "how": "chosen"})
                self.log_end(visit, "found")
            return self.render(visit)


def gallery_data(items: list[tuple[str, str]]) -> list[dict]:
    """A gallery's value as the page takes it (what Gradio's Gallery.postprocess makes, without its thread pool):
    each picture a FileData (its URL, or a file for Gradio to serve) with its caption."""
    return [{"image": file_data_of(src), "caption": caption} for src, caption in items]


def file_data(root: str | None, path: str | None) -> dict | None:
    """A picture file as an Image output's value (its URL when the page's root URL is known), or None."""
    return None if path is None else file_data_of(picture_url(root, path))


def file_data_of(src: str) -> dict:
    url = src if src.startswith(("http://", "https://")) else None
    return {"path": src, "url": url, "size": None, "orig_name": src.rsplit("/", 1)[-1], "mime_type": "image/jpeg",
            "is_stream": False, "meta": {"_type": "gradio.FileData"}}


def picture_url(root: str | None, path: str) -> str:
    """A thumbnail's address for a gallery: its URL under Gradio's file route when the page's root URL is known
    (the gallery then sends no file through Gradio's per-event file handling), else the file itself."""
    return f"{root}/gradio_api/file={quote(path)}" if root else path


def page_root(request: gr.Request | None) -> str | None:
    """The page's public root URL as Gradio itself works it out (proxies' forwarded host and scheme included)."""
    raw = getattr(request, "request", None)
    if raw is None:
        return None
    try:
        from gradio import route_utils

        return route_utils.get_root_url(request=raw, route_path=route_utils.get_api_call_path(request=raw),
                                        root_path=getattr(raw.app, "root_path", None) or None)
    except Exception:  # noqa: BLE001 - then the gallery sends files, as Gradio does by default
        return None


def clicked_row(rows: list[int], evt: gr.SelectData) -> int | None:
    """The row a click on a gallery of `rows` chose, or None when its index is out of range or its picture is not
    the one at that place (a click on a gallery the shopper no longer sees)."""
    index = evt.index if isinstance(evt.index, int) and not isinstance(evt.index, bool) else None
    if index is None or not 0 <= index < len(rows):
        return None
    clicked = row_of_thumb(evt.value)
    return rows[index] if clicked is None or clicked == rows[index] else None


def build_app(catalog: Catalog, rec: Recommender, session_idle_s: float = SESSION_IDLE_S, secret: str | None = None,
              hunt_log: HuntLog | None = None, compare: list[str] | tuple[str, ...] = ()):
    """The Gradio Blocks of the shop over one catalog and one recommender (shared, read-only).

    `secret` encrypts what each browser keeps of its visit; the same secret across restarts lets a reload
    after a restart resume too (None: a new one per process). `hunt_log` records ended hunts (None: off);
    `compare` gives each new hunt one of these strategies at random, unless the shopper chose one.
    """
    shop = Shop(catalog, rec, hunt_log, compare)
    with gr.Blocks(title="Visual product recommender") as demo:
        gr.Markdown("## Find your product\nClick the product you like best; each round shows products that look "
                    "like your picks, plus a few new ones.")
        header = gr.Markdown(catalog.summary(), elem_id="catalog")
        state = gr.State(None, time_to_live=session_idle_s, delete_callback=shop.forget)
        saved = gr.BrowserState(None, storage_key=f"product-recommender-{catalog.key}", secret=secret)
        info = gr.Markdown(elem_id="status")
        with gr.Row(equal_height=True):
            box = gr.Textbox(label="Describe what you want", placeholder=search_hint(catalog), scale=4, max_lines=1,
                             elem_id="search", submit_btn=False)
            search_button = gr.Button("Search", elem_id="search-button", scale=1, min_width=90)
        with gr.Row(elem_id="shop-row"):
            products = gr.Gallery(label="Products", columns=5, height="auto", allow_preview=False, scale=3,
                                  object_fit="contain", elem_id="products", interactive=False, buttons=[])
            with gr.Column(scale=1, min_width=240, elem_id="side"):
                target = gr.Image(label="Find this product", visible=False, interactive=False, elem_id="target",
                                  buttons=[])
                with gr.Column(elem_id="product-page"):
                    product_page = gr.HTML(page.product_page(catalog, None), elem_id="product-details")
                    this_is_it = gr.Button("This is it", variant="primary", visible=False, elem_id="this-is-it")
                    new_search = gr.Button("Start a new search", variant="primary", visible=False,
                                           elem_id="new-search")
        with gr.Row():
            restart = gr.Button("Start over", elem_id="start-over")
            hunt = gr.Button("Find a product", elem_id="find-product")
        picks = gr.Gallery(label="Your picks (click one to see it again)", columns=10, height="auto",
                           allow_preview=False, object_fit="contain", elem_id="picks", interactive=False, buttons=[])
        with gr.Accordion("Settings and your results", open=False):
            strategy = gr.Radio(page.strategy_choices(sorted(STRATEGIES)), value=rec.strategy, elem_id="strategy",
                                label="How the next products are chosen (changing it starts over)")
            following = gr.Markdown(elem_id="strategy-note")
            results = gr.Dataframe(headers=page.RESULT_HEADERS, value=[],
                                   interactive=False, label="Your results", elem_id="results")
        if shop.hunt_log.enabled:
            gr.Markdown(HUNT_LOG_NOTE, elem_id="hunt-log-note")
        # Every event sends its outputs in the page's own format (Shop.render), so Gradio postprocesses nothing;
        # a click in a gallery leaves the search box as the shopper typed it (no box output).
        outputs = [state, products, picks, info, target, results, saved, header, strategy, following, product_page,
                   this_is_it, new_search]
        with_box = [*outputs, box]
        fast = {"postprocess": False, "concurrency_limit": None}
        demo.load(shop.load, [saved], with_box, api_name="start", **fast)
        products.select(shop.on_select, [state, saved], outputs, api_name="pick", **fast)
        picks.select(shop.on_view, [state, saved], outputs, api_name="view_pick", **fast)
        this_is_it.click(shop.on_choose, [state, saved], outputs, api_name="this_is_it", **fast)
        new_search.click(shop.start, [strategy, state], with_box, api_name="new_search", **fast)
        restart.click(shop.start, [strategy, state], with_box, api_name="start_over", **fast)
        hunt.click(shop.find_product, [strategy, state], with_box, api_name="find_product", **fast)
        strategy.input(shop.set_strategy, [strategy, state], with_box, api_name="set_strategy", **fast)
        box.submit(shop.on_search, [box, state, saved], with_box, api_name="search", **fast)
        search_button.click(shop.on_search, [box, state, saved], with_box, api_name=False, **fast)

        memory = MemoryKeeper()

        def on_unload(request: gr.Request) -> None:
            forget_session(demo, request)
            memory.soon()

        demo.unload(on_unload)
    return demo


def search_hint(catalog: Catalog) -> str:
    """The search box's placeholder: words this catalog's products are called by (its commonest categories)."""
    counts: dict[str, int] = {}
    for label in catalog.labels[:100_000]:
        word = " ".join(label.lower().split("/")[0].split()[:2])  # "T-shirt/top" -> "t-shirt"
        if word and not word[0].isdigit():
            counts[word] = counts.get(word, 0) + 1
    common = sorted(counts, key=lambda w: (-counts[w], w))[:3] if len(counts) < len(catalog.labels) else []
    return f"e.g. {', '.join(common)} - press Enter" if common else SEARCH_HINT


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, each defaulting to its environment variable; a bad value of either is one `error:` line, exit 2."""
    ap = ArgumentParser(prog="app.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=env("DATASET"), metavar="SRC",
                    help="Hub dataset id or directory saved by upload_ds.py --out (env DATASET); "
                         "default: the built-in demo catalog")
    ap.add_argument("--host", default=env("HOST", env("GRADIO_SERVER_NAME")), help="address to listen on (env HOST)")
    ap.add_argument("--port", type=whole_number(1, 65535, "PORT"),
                    default=env("PORT", env("GRADIO_SERVER_PORT", "7860")), help="port (env PORT, default 7860)")
    ap.add_argument("--share", action="store_true", default=env_flag("SHARE"),
                    help="create a public share link (env SHARE)")
    ap.add_argument("--per-round", type=whole_number(1, 100, "PER_ROUND"), default=env("PER_ROUND", "10"),
                    help="products per round (env PER_ROUND, default 10)")
    ap.add_argument("--similar", type=whole_number(0, 100, "SIMILAR"), default=env("SIMILAR", "5"),
                    help="similar products per round, at most --per-round (env SIMILAR, default 5)")
    ap.add_argument("--strategy", default=env("STRATEGY", "mean"), choices=sorted(STRATEGIES),
                    help="recommendation strategy (env STRATEGY, default mean)")
    ap.add_argument("--demo-size", type=whole_number(1, 70_000, "DEMO_SIZE"), default=env("DEMO_SIZE", "2000"),
                    help="products in the built-in demo catalog (env DEMO_SIZE, default 2000)")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="thumbnails and demo cache (env CACHE_DIR)")
    ap.add_argument("--max-sessions", type=whole_number(1, None, "MAX_SESSIONS"), default=env("MAX_SESSIONS", "1000"),
                    help="browser sessions kept in memory at once; the least recently used beyond it is dropped and "
                         "resumes from the browser's copy (env MAX_SESSIONS, default 1000)")
    ap.add_argument("--threads", type=whole_number(1, 1000, "THREADS"), default=env("THREADS", str(DEFAULT_THREADS)),
                    help="worker threads for shoppers' events; rounds are CPU work, so more threads than cores only "
                         f"add memory (env THREADS, default {DEFAULT_THREADS} here: twice the cores, at least 4)")
    ap.add_argument("--hunt-log", default=env("HUNT_LOG", ""), metavar="PATH",
                    help="where ended hunts are recorded for insights.py, one JSON line each, nothing that identifies "
                         "a person (env HUNT_LOG; default CACHE_DIR/hunts/hunts.jsonl; 'none' turns it off)")
    ap.add_argument("--compare", default=env("COMPARE"), metavar="A,B",
                    help="give each new hunt one of these strategies at random (e.g. mean,bayes), recorded in the "
                         "hunt log so insights.py can compare them on real shoppers; a shopper's own choice in "
                         "Settings wins (env COMPARE)")
    ap.add_argument("--compression", default=env("COMPRESSION", "auto"), choices=["auto", *COMPRESSIONS],
                    help="how rounds scan the catalog: none (float32 rows in memory), sq8 (8-bit codes in memory, "
                         "float32 rows left on disk; the same galleries, ~0.3x the time and a quarter of the memory), "
                         f"auto: sq8 from {AUTO_SQ8_BYTES >> 20} MB of float32 rows, e.g. "
                         f"{AUTO_SQ8_BYTES // (4 * 768):,} products of 768-d (env COMPRESSION, default auto)")
    args = ap.parse_args(argv)
    if args.dataset is not None and not args.dataset.strip():
        ap.error("--dataset is empty: give a Hub dataset id or a folder from upload_ds.py, or omit it for the demo")
    problem = folder_problem(args.cache_dir, "--cache-dir (or CACHE_DIR)")
    if problem:
        ap.error(problem)
    if args.compression not in ("auto", *COMPRESSIONS):
        ap.error(f"COMPRESSION {args.compression!r} is not one of auto, {', '.join(COMPRESSIONS)}")
    if args.similar > args.per_round:
        ap.error(f"--similar ({args.similar}) cannot exceed --per-round ({args.per_round})")
    if args.strategy not in STRATEGIES:  # argparse does not check a default (here: STRATEGY) against choices
        ap.error(f"STRATEGY {args.strategy!r} is not one of {sorted(STRATEGIES)}")
    args.compare = [name.strip() for name in (args.compare or "").split(",") if name.strip()]
    unknown = [name for name in args.compare if name not in STRATEGIES]
    if unknown or len(args.compare) == 1:
        ap.error(f"--compare (or COMPARE) takes two or more of {sorted(STRATEGIES)} separated by commas, got "
                 f"{','.join(args.compare) or 'nothing'}")
    if args.hunt_log.strip().lower() == "none":
        args.hunt_log = None
    else:
        args.hunt_log = args.hunt_log or str(Path(args.cache_dir) / "hunts" / "hunts.jsonl")
        problem = folder_problem(Path(args.hunt_log).expanduser().parent, "--hunt-log (or HUNT_LOG) folder")
        if problem or Path(args.hunt_log).is_dir():
            log.warning("the hunt log cannot be written: %s; the shop goes on without it",
                        problem or f"{args.hunt_log} is a folder")
    return args


def browser_secret(cache_dir: Path) -> str | None:
    """The key for what browsers keep, made once and kept in the cache folder (None if it cannot be kept)."""
    path = cache_dir / "browser-secret"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return path.read_text().strip() or None
    except OSError as exc:
        log.warning("cannot keep the browser-state key in %s (%s): a reload after a restart starts afresh", path, exc)
        return None


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
    catalog = Catalog(ds, name, cache)
    catalog.add_appearance()  # bayes's second pair of eyes, on datasets made without it
    dim = catalog.embeddings[0].shape[1]
    compression = choose_compression(args.compression, catalog.n, dim)
    try:
        rec = Recommender(catalog.embeddings, per_round=args.per_round, similar=args.similar, strategy=args.strategy,
                          compression=compression, views=catalog.views)
    except ValueError as exc:
        raise CatalogError(f"dataset {name}: {exc}") from exc
    catalog.on_hide = rec.hide
    catalog.check_sample()
    why_not = catalog.load_text_encoder() if catalog.has_text else None
    if why_not:
        log.warning("typed words search product names, not meanings: %s", why_not)
    log.info("search box: %s", f"by meaning (text tower of {catalog.model})" if catalog.text_encoder else
             "by words in product names")
    index = (f"8-bit codes ({rec.sq8_index.nbytes / 2**20:,.0f} MB; float32 rows read from disk)" if rec.sq8_index else
             f"float32 ({rec.n * rec.dim * 4 / 2**20:,.0f} MB)")
    log.info("catalog %s: %d products, %d-d embeddings%s; index: %s (--compression %s); ready in %.1f s", name,
             catalog.n, rec.dim, f" ({catalog.model})" if catalog.model else "", index, args.compression,
             time.perf_counter() - t)
    return catalog, rec


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

    def warm_up() -> None:  # what "bayes" sessions compare and the names the search box matches, made before use
        for view in ("embedding", *rec.views):
            belief_rows(rec, view)
        if catalog.text_encoder is None:
            log.info("search box: %d words in product names indexed", len(catalog.words.vocab))

    hunt_log = HuntLog(args.hunt_log)
    log.info("hunt log: %s%s", args.hunt_log or "off", f"; comparing {', '.join(args.compare)}" if args.compare else "")
    demo = build_app(catalog, rec, secret=browser_secret(Path(args.cache_dir)), hunt_log=hunt_log,
                     compare=args.compare)
    log.info("start-up %.1f s; serving %d products", time.perf_counter() - t, catalog.n)
    try:
        demo.queue(default_concurrency_limit=None).launch(server_name=args.host, server_port=args.port,
                                                          share=args.share, state_session_capacity=args.max_sessions,
                                                          css=page.CSS, max_threads=args.threads,
                                                          app_kwargs={"middleware": [Middleware(BodyLimit)]},
                                                          prevent_thread_lock=True)
    except OSError as exc:  # the port was taken between the check and the start
        print(f"error: cannot start the server: {exc}", file=sys.stderr)
        return 2
    # Started once the server answers: on a big catalog this CPU work would starve Gradio's own start-up check
    # ("localhost is not accessible") on a small machine.
    catalog.check_all()
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted="stopped"))
