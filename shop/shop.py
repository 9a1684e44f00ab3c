"""The shop's event handlers: one method per event of the page, over one catalog and one recommender.

What an event changes is the shopper's own Visit (shop/visit.py). Every handler answers the same way
(`Shop.answer`): `settle` drops what cannot be shown and makes the pictures, then `render` turns the visit, reading
only, into a `View` of the page's outputs in the page's own format (shop/wire.py). app.py lays out the page and
wires each event to one of these.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields

import gradio as gr

from catalog.catalog import MAX_QUERY_CHARS, Catalog, markdown_text
from common.huntlog import HuntLog, minute_now, round_entries
from common.untrusted import clean_text
from engine.bayes import view_weights
from recommender import STRATEGIES, Recommender, Session
from shop import page
from shop.visit import Visit, restore_visit
from shop.wire import (
    clicked_row,
    event_value,
    file_data,
    file_route,
    gallery_data,
    page_root,
    picture_url,
    skip,
    table_data,
    update,
)

ENDED_KEPT = 65_536  # ids of hunts ended lately: a replayed visit cannot end one of them again in the log
KEEP, SKIP = object(), object()  # Shop.render's `box`: not an output of the event / an output left as it is


@dataclass(frozen=True)
class View:
    """One event's outputs, each in the page's own format (shop/wire.py). The fields' order IS the order of the
    page's outputs: build_app wires the components of these names (OUTPUTS), in this order."""

    state: Visit  # the gr.State
    products: list[dict] | dict  # the round's gallery
    picks: list[dict]  # the shopper's picks, a gallery
    info: str  # the status line (Markdown)
    target: dict | None  # the picture of the product to find
    results: dict  # the results table
    saved: dict  # what the browser keeps (gr.BrowserState)
    header: str  # the catalog line (Markdown)
    strategy: str  # the Settings radio
    following: str  # the Settings line on what `bayes` follows (Markdown)
    product_page: str  # HTML
    this_is_it: str | dict  # the button
    new_search: str | dict  # the button
    box: object = KEEP  # the search box's text, or a skip; KEEP: the box is no output of this event

    def outputs(self) -> tuple:
        """The values in the order of the event's outputs (the box left out when it is none of them)."""
        values = tuple(getattr(self, name) for name in OUTPUTS)
        return values[:-1] if self.box is KEEP else values


OUTPUTS = tuple(f.name for f in fields(View))  # the page's outputs, by component name, in order; "box" last


SEARCH_HINT = "e.g. sneaker, red dress"
HINT_CHARS = 26  # the search box's placeholder fits a phone's box (about 190 px)


HUNT_LOG_NOTE = (
    "Anonymous hunts (the products shown and picked, and typed words; nothing about you) are recorded to "
    "improve this shop."
)


# ------------------------------------------------------------------------------------------------------ UI
class Shop:
    """The page's event handlers over one catalog and one recommender (shared, read-only); what an event changes
    is the shopper's own Visit. `build_app` lays out the page and wires each event to one of these."""

    def __init__(
        self,
        catalog: Catalog,
        rec: Recommender,
        hunt_log: HuntLog | None = None,
        compare: list[str] | tuple[str, ...] = (),
        key: bytes | None = None,
    ) -> None:
        """`key` signs the visits this shop hands out (shop/visit.py; None: a new key for this process)."""
        self.catalog, self.rec = catalog, rec
        self.key = key or secrets.token_bytes(32)
        self.hunt_log = hunt_log or HuntLog(None)
        self._ended: OrderedDict[str, None] = OrderedDict()  # the latest ENDED_KEPT hunt ids written as ended
        self._ended_lock = threading.Lock()
        self.compare = [name for name in compare if name in STRATEGIES]  # each new hunt draws one of these
        self._draw = random.Random()  # which strategy a hunt gets under --compare (not the shopper's galleries)
        self.catalog_info = {"id": catalog.id, "name": catalog.name, "rows": catalog.n, "model": catalog.model}

    # -- the hunt log
    def hunt_record(self, visit: Visit, ended: str, via: str = "page") -> dict:
        """The hunt log's record of `visit` (see huntlog.py): what was shown, picked and typed, how it ended, and
        whether on the page or through the API (`via`)."""
        session, product_id = visit.session, self.catalog.product_id
        picks = dict(zip(session.pick_rounds, session.picks))
        found = visit.chosen
        if visit.target is not None and visit.found_in is not None:
            found = picks[visit.found_in] = visit.target  # clicking the target ends the hunt without a next round
        elif found is not None and visit.found_in not in picks:  # chosen from the last gallery (the API's /found)
            picks[visit.found_in] = found
        return {
            "hunt": visit.hunt,
            "time": minute_now(),
            "catalog": self.catalog_info,
            "strategy": session.strategy,
            "strategy_from": visit.strategy_from,
            "target": None if visit.target is None else product_id(visit.target),
            "rounds": [  # words an API caller sent before any gallery, then each gallery's entries
                *({"shown": [], "pick": None, "words": w, "matches": m} for w, m in visit.searches.get(0, [])),
                *round_entries(session.history, picks, visit.searches, product_id),
            ],
            "found": None if found is None else product_id(found),
            "ended": ended,
            "via": via,
        }

    def log_end(self, visit: Visit, ended: str, via: str = "page") -> None:
        """Write the hunt's record once, when it ends; a hunt this process saw end lately is not written again
        (a visit saved before its end and sent back later is the server's own, signature and all)."""
        if visit.logged:
            return
        visit.logged = True
        with self._ended_lock:
            if visit.hunt in self._ended:
                return
            self._ended[visit.hunt] = None
            if len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        self.hunt_log.write(self.hunt_record(visit, ended, via), visit.log_budget)

    def forget(self, visit: object) -> None:
        """A page let its visit go (tab closed, session timed out): its hunt, if not ended, is abandoned."""
        if isinstance(visit, Visit):
            self.hunt_log.closed(visit.hunt, None if visit.logged else self.hunt_record(visit, "abandoned"))

    def resume(self, saved: object) -> Visit | None:
        """The visit a browser kept (see `restore_visit`), its hunt held again by this page."""
        visit = restore_visit(saved, self.catalog, self.rec, self.key)
        if visit is not None:
            self.hunt_log.opened(visit.hunt)
        return visit

    # -- an event's answer: settle, then render
    def answer(self, visit: Visit, box: object = KEEP) -> tuple:
        """An event's outputs: the visit settled (`settle`), then rendered (`render`, which only reads it); the page
        shows those from now on, and the visit's note, shown once, is gone."""
        self.settle(visit)
        view = self.render(visit, box)
        visit.page.update(self.visibility(visit))
        visit.note = ""
        return view.outputs()

    def settle(self, visit: Visit) -> None:
        """Ready `visit` for `render`, so it only reads: products of the round whose picture cannot be made leave it
        (the catalog hides them from every shopper; fresh ones take their places, a few tries at most, then the
        round goes short), and the pictures and the results table the page shows are made."""
        session, catalog = visit.session, self.catalog
        pictures = self.round_pictures(session)
        for row in (*session.picks, visit.target):
            if row is not None and row not in pictures:
                pictures[row] = catalog.showable(row)
        visit.pictures = {row: path for row, path in pictures.items() if path is not None}
        on_page = visit.on_page
        visit.page_picture = catalog.page_picture(on_page) if on_page is not None else None
        made = visit.page.get("results rows")  # made again only when a result was added (results only grow): a
        if made is None or made[0] != len(visit.results):  # round need not read up to 500 products' titles
            visit.page["results rows"] = (len(visit.results), page.results_rows(catalog, visit.results))

    def round_pictures(self, session: Session) -> dict[int, str | None]:
        """The round's thumbnails by row: products whose picture cannot be made leave the round (the catalog hides
        them from every shopper; fresh ones take their places, a few tries at most, then the round goes short)."""
        for _ in range(5):
            pictures = {row: self.catalog.showable(row) for row in session.shown}
            bad = [row for row, path in pictures.items() if path is None]
            if not bad:
                break
            session.hide(bad)
        return pictures

    def render(self, visit: Visit, box: object = KEEP) -> View:
        """The page's outputs for a settled `visit` (see `settle`), in the page's own format (shop/wire.py); it reads
        the visit and changes nothing. `box`: the search box's text, SKIP to leave it as the shopper typed, KEEP
        when it is no output of the event. Events run with postprocess=False: no Gradio processing per output, and
        an output whose visibility changes is sent as an update (the one case that makes Gradio rebuild it)."""
        session, root, pictures, catalog = visit.session, visit.root, visit.pictures, self.catalog
        rows = [row for row in session.shown if row in pictures]
        n_like = sum(row in pictures for row in session.shown[: session.n_similar])
        marked = bool(session.picks) or (bool(visit.words) and session.strategy != "random")
        again = {row for row, before in zip(session.shown, session.shown_before()) if before}
        words = bool(visit.words) and not session.picks and session.query_rows is not None
        captions = page.captions(catalog, rows, n_like, marked, again, session.matching(rows) if words else None)
        gallery = zip([picture_url(root, pictures[row]) for row in rows], captions)
        picks = [(picture_url(root, pictures[row]), catalog.caption(row)) for row in session.picks if row in pictures]
        line = page.status_line(catalog, visit)
        shows = self.visibility(visit)

        def shown(name: str, value: object) -> object:
            return value if visit.page.get(name) == shows[name] else update(value, shows[name])

        target = pictures.get(visit.target) if visit.target is not None else None
        picture = file_route(visit.page_picture) if visit.page_picture else None
        return View(
            state=visit,
            products=shown("products", gallery_data(list(gallery))),
            picks=gallery_data(picks),
            info=f"**{markdown_text(visit.note)}** {line}" if visit.note else line,
            target=shown("target", file_data(root, target)),
            results=table_data(page.RESULT_HEADERS, visit.page["results rows"][1]),
            saved=visit.saved(catalog, self.key),
            header=catalog.summary(),
            strategy=session.strategy,
            following=page.following_text(view_weights(session)) if session.strategy == "bayes" else "",
            product_page=page.product_page(
                catalog,
                visit.on_page,
                visit.found_in if visit.chosen is not None else None,
                picture,
                page.in_shop(visit),
            ),
            this_is_it=shown("this_is_it", "This is it"),
            new_search=shown("new_search", "Start a new search"),
            box=skip() if box is SKIP else box,
        )

    @staticmethod
    def visibility(visit: Visit) -> dict[str, bool]:
        """Whether the page shows each output that comes and goes: the round until a product is chosen, the target
        while hunting one (if its picture can be shown), "This is it" under a product on the page while shopping,
        "Start a new search" once a product is chosen."""
        return {
            "products": visit.chosen is None,
            "target": visit.target is not None and visit.target in visit.pictures,
            "this_is_it": visit.on_page is not None and not visit.ended and visit.target is None,
            "new_search": visit.chosen is not None,
        }

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
            visit.root, visit.page, visit.log_budget = old.root, old.page, old.log_budget
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

    def load(self, saved: object, request: gr.Request | None = None) -> tuple:
        """A page (re)load: resume what this browser saved, or start a new visit."""
        visit = self.at(self.resume(saved), request)
        if visit is None:
            return self.answer(self.at(self.new_visit(None, None, hunt=False), request), box="")
        return self.answer(visit, box=visit.words or "")

    def start(
        self, strategy: str | None = None, visit: Visit | None = None, request: gr.Request | None = None
    ) -> tuple:
        """Start over (or a new search): a new hunt that keeps the shopper's results."""
        return self.answer(self.at(self.new_visit(strategy, visit, hunt=False), request), box="")

    def set_strategy(
        self, strategy: str | None = None, visit: Visit | None = None, request: gr.Request | None = None
    ) -> tuple:
        """The shopper chose a strategy in Settings: a new hunt with it, and their choice kept for the next ones."""
        return self.answer(self.at(self.new_visit(strategy, visit, hunt=False, by_shopper=True), request), box="")

    def find_product(
        self, strategy: str | None = None, visit: Visit | None = None, request: gr.Request | None = None
    ) -> tuple:
        """ "Find a product": a new hunt for a random product shown beside the gallery."""
        return self.answer(self.at(self.new_visit(strategy, visit, hunt=True), request), box="")

    def on_search(self, text: object, visit: Visit | None, saved: object, request: gr.Request | None = None) -> tuple:
        """The shopper typed words and pressed Enter (or Search)."""
        visit = self.current(visit, saved, request)
        with visit.lock:
            return self.search(visit, clean_text(text, MAX_QUERY_CHARS * 4))

    def current(self, visit: Visit | None, saved: object, request: gr.Request | None = None) -> Visit:
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

    def search(self, visit: Visit, text: str) -> tuple:
        """Typed words steer the next round like a pick: it shows the products that match first, seen before or
        not (see `Session.next_round`); a miss says so and changes nothing; an empty box clears."""
        session = visit.session
        if visit.ended:
            return self.answer(visit, box=SKIP)
        found = self.catalog.find(text)
        if found.query is None:
            if not found.text and visit.words:
                session.set_query(None)
                visit.words, visit.search_by, visit.note = None, "", "Search cleared."
            else:
                visit.note = found.message
                if found.search_by:  # words that matched nothing: the shop would like to know
                    visit.searches.setdefault(session.round, []).append((found.text, 0))
            return self.answer(visit, box=SKIP)
        try:
            session.next_round(query=found.query)
        except ValueError as exc:  # e.g. a text tower whose vectors do not fit the catalog: say it, change nothing
            visit.note = f"Search failed: {exc}"
            return self.answer(visit, box=SKIP)
        matches = None if found.rows is None else found.matches  # None: by meaning alone
        visit.searches.setdefault(session.round - 1, []).append((found.text, matches))
        visit.words, visit.search_by = found.text, found.search_by
        return self.answer(visit, box=found.text)

    def on_select(
        self, visit: Visit | None, saved: object, evt: gr.SelectData, request: gr.Request | None = None
    ) -> tuple:
        """A click in the round's gallery: the product picked (see `pick`)."""
        if visit is None:  # the server let this session's state go (idle, or a restart): the browser has it
            visit = self.at(self.resume(saved), request)
            if visit is None:
                return self.answer(self.at(self.new_visit(None, None, hunt=False), request))
        with visit.lock:  # a double click sends two events at once; the second sees the first's result
            return self.pick(visit, evt)

    def pick(self, visit: Visit, evt: gr.SelectData) -> tuple:
        """A pick: the next round, or the hunt's end when it is the target; a stale or out-of-range click is ignored."""
        session = visit.session
        row = clicked_row(session.shown, evt)
        if row is None or visit.ended:
            return self.answer(visit)  # out of range, a stale gallery, or the hunt is over: ignore
        visit.viewing = row
        if visit.target is not None and row == visit.target:
            visit.found_in = session.round
            visit.results.append(
                {"strategy": session.strategy, "rounds": session.round, "product": row, "how": "target"}
            )
            self.log_end(visit, "found")
            return self.answer(visit)
        session.next_round(pick=row)
        return self.answer(visit)

    def on_view(
        self, visit: Visit | None, saved: object, evt: gr.SelectData, request: gr.Request | None = None
    ) -> tuple:
        """A click in *Your picks*: that product on the product page; no round is spent."""
        visit = self.current(visit, saved, request)
        with visit.lock:
            row = clicked_row(visit.session.picks, evt)
            if row is not None and visit.chosen is None:
                visit.viewing = row
            return self.answer(visit)

    def on_choose(self, visit: Visit | None, saved: object, request: gr.Request | None = None) -> tuple:
        """ "This is it": the product on the page ends the hunt, recorded with the rounds it took."""
        visit = self.current(visit, saved, request)
        with visit.lock:
            self.choose(visit, "chosen")
            return self.answer(visit)

    def on_shop(
        self, visit: Visit | None, saved: object, evt: gr.EventData, request: gr.Request | None = None
    ) -> tuple:
        """*View in shop* followed: like "This is it", the product on the page ends the hunt as found. The browser
        only says which product's link it followed; the hunt ends when that is the product this visit's page shows
        (else the click was on a page the shopper no longer sees, and changes nothing)."""
        visit = self.current(visit, saved, request)
        with visit.lock:
            row = visit.viewing
            if (
                row is not None
                and self.catalog.product(row)["url"]
                and event_value(evt, "product") == self.catalog.product_id(row)
            ):
                self.choose(visit, "shop")
            return self.answer(visit)

    def choose(self, visit: Visit, how: str) -> None:
        """The product on the page ends a hunt without a target (by `how`: "chosen" or "shop"), recorded with the
        rounds it took and written to the hunt log; nothing when there is none or the hunt has ended."""
        session = visit.session
        if visit.viewing is not None and not visit.ended and visit.target is None:
            visit.chosen, visit.found_in = visit.viewing, max(1, session.round - 1)
            visit.results.append(
                {"strategy": session.strategy, "rounds": visit.found_in, "product": visit.chosen, "how": how}
            )
            self.log_end(visit, "found")


def search_hint(catalog: Catalog) -> str:
    """The search box's placeholder: words this catalog's products are called by (its commonest categories)."""
    counts: dict[str, int] = {}
    for label in catalog.labels[:100_000]:
        word = " ".join(label.lower().split("/")[0].split()[:2])  # "T-shirt/top" -> "t-shirt"
        if word and not word[0].isdigit():
            counts[word] = counts.get(word, 0) + 1
    common = sorted(counts, key=lambda w: (-counts[w], w))[:3] if len(counts) < len(catalog.labels) else []
    while common and len(f"e.g. {', '.join(common)}") > HINT_CHARS:
        common.pop()
    return f"e.g. {', '.join(common)}" if common else SEARCH_HINT
