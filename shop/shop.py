"""The shop's event handlers: one method per event of the page, over one catalog and one recommender.

What an event changes is the shopper's own Visit (shop/visit.py); `Shop.render` turns a visit into the page's
outputs, in the page's own format (shop/wire.py). app.py lays out the page and wires each event to one of these.
"""

from __future__ import annotations

import random

import gradio as gr

from catalog.catalog import MAX_QUERY_CHARS, Catalog, markdown_text
from common.huntlog import HuntLog, minute_now, round_entries
from common.untrusted import clean_text
from engine.bayes import view_weights
from recommender import STRATEGIES, Recommender, Session
from shop import page
from shop.visit import Visit, restore_visit
from shop.wire import clicked_row, file_data, gallery_data, page_root, picture_url

KEEP, SKIP = object(), object()  # Shop.render's `box`: not an output of the event / an output left as it is


SEARCH_HINT = "e.g. sneaker, red dress, shoes/42 - press Enter"


HUNT_LOG_NOTE = "Anonymous hunts (the products shown and picked, and typed words; nothing about you) are recorded to " \
    "improve this shop."


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


def search_hint(catalog: Catalog) -> str:
    """The search box's placeholder: words this catalog's products are called by (its commonest categories)."""
    counts: dict[str, int] = {}
    for label in catalog.labels[:100_000]:
        word = " ".join(label.lower().split("/")[0].split()[:2])  # "T-shirt/top" -> "t-shirt"
        if word and not word[0].isdigit():
            counts[word] = counts.get(word, 0) + 1
    common = sorted(counts, key=lambda w: (-counts[w], w))[:3] if len(counts) < len(catalog.labels) else []
    return f"e.g. {', '.join(common)} - press Enter" if common else SEARCH_HINT
