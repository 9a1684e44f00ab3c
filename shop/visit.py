"""A shopper's visit: the state one browser page holds (its recommender session, the product on its product page,
how its hunt ended, its results), what the browser keeps of it, and the checked restore of what a browser sends
back. No UI imports here: the handlers (shop/shop.py) change a visit; this file says what one is.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

from catalog.catalog import Catalog
from common.huntlog import new_hunt_id
from common.untrusted import whole
from recommender import STRATEGIES, Recommender, Session

log = logging.getLogger("app")
MAX_RESULTS = 500  # results kept per shopper
HUNT_ID = re.compile(r"[0-9a-f]{16}")
STRATEGY_FROM = ("default", "compare", "shopper")


@dataclass
class Visit:
    """One browser session's state: the recommender session, the product on the product page, and how the hunt
    ended ("This is it", or the target of "Find a product" found), with the shopper's results."""

    session: Session
    target: int | None = None  # the product to find, in "Find a product" mode
    found_in: int | None = None  # rounds it took, once found or chosen
    results: list[dict] = field(default_factory=list)  # the shopper's own hunts, newest last
    words: str | None = None  # the active search text, and how it searches ("meaning" or "names")
    search_by: str = ""
    viewing: int | None = None  # the product on the product page (the last pick, or one opened from the picks)
    chosen: int | None = None  # the product the shopper said "This is it" to
    hunt: str = field(default_factory=new_hunt_id)  # the hunt log's id of this hunt
    strategy_from: str = "default"  # who chose the strategy: "default", "compare" (drawn at random) or "shopper"
    searches: dict[int, list[tuple[str, int | None]]] = field(default_factory=dict)  # round -> (words, matches)
    logged: bool = False  # its record is in the hunt log
    root: str | None = None  # this page's public root URL, for the pictures' URLs (None: send files)
    page: dict = field(default_factory=dict)  # what this browser page shows now (see Shop.answer)
    pictures: dict[int, str] = field(default_factory=dict)  # row -> thumbnail of what the page shows (Shop.settle)
    page_picture: str | None = None  # the product page's picture file (made by Shop.settle)
    note: str = ""  # a line for the shopper, shown once (e.g. "No product matches 'xyz'.")
    lock: threading.Lock = field(default_factory=threading.Lock)  # one event at a time per browser session

    @property
    def ended(self) -> bool:
        """Whether the hunt is over (found or chosen): clicks in the gallery then change nothing."""
        return self.found_in is not None

    @property
    def on_page(self) -> int | None:
        """The product on the product page: the one chosen, else the one viewed; none while hunting a target."""
        if self.target is not None and not self.ended:
            return None
        return self.chosen if self.chosen is not None else self.viewing

    def saved(self, catalog: Catalog) -> dict:
        """What the shopper's browser keeps (gr.BrowserState) so a reload resumes here: plain JSON data."""
        return {
            "catalog": catalog.key,
            **self.session.to_dict(),
            "target": self.target,
            "found_in": self.found_in,
            "results": self.results[-MAX_RESULTS:],
            "search": self.words,
            "viewing": self.viewing,
            "chosen": self.chosen,
            "hunt": self.hunt,
            "strategy_from": self.strategy_from,
        }


def restore_visit(saved: object, catalog: Catalog, rec: Recommender) -> Visit | None:
    """The Visit a browser saved, or None when there is none, it is of another catalog, or it does not check out.

    What a browser sends is untrusted: every field is checked for type and range before anything is built, and
    the restore is all or nothing; it builds this visit only, never changing what another shopper sees.
    """
    if not isinstance(saved, dict) or saved.get("catalog") != catalog.key:
        return None
    try:
        session = rec.restore_session(saved)
        target, viewing, chosen = (
            optional_row(saved.get(key), catalog.n, key) for key in ("target", "viewing", "chosen")
        )
        found_in = saved.get("found_in")
        if found_in is not None:
            if target is None and chosen is None:
                raise ValueError("found_in without a target or a chosen product")
            found_in = whole(found_in, 1, max(1, session.round), "found_in")
        elif chosen is not None:
            raise ValueError("chosen without found_in")
        results = saved_results(saved.get("results"), catalog.n)
        text = saved.get("search")
        if text is not None and not isinstance(text, str):
            raise ValueError("search must be text")
        hunt, strategy_from = saved.get("hunt", new_hunt_id()), saved.get("strategy_from", "default")
        if not isinstance(hunt, str) or not HUNT_ID.fullmatch(hunt):
            raise ValueError("hunt must be 16 hex digits")
        if strategy_from not in STRATEGY_FROM:
            raise ValueError(f"strategy_from must be one of {STRATEGY_FROM}")
    except ValueError as exc:
        log.info("a browser's saved session was not restored: %s", exc)
        return None
    if target is not None and rec.is_hidden(target):  # its image has since turned out unreadable
        target, found_in = None, None if chosen is None else found_in
    visit = Visit(
        session,
        target=target,
        found_in=found_in,
        results=results,
        viewing=viewing,
        chosen=chosen,
        hunt=hunt,
        strategy_from=strategy_from,
        logged=found_in is not None,
    )
    if text:  # the words were saved, not their rows or vector: found again here
        found = catalog.find(text)
        if found.query is not None:
            session.set_query(found.query)
            visit.words, visit.search_by = found.text, found.search_by
    return visit


def optional_row(value: object, n: int, what: str) -> int | None:
    """A saved catalog row, or None."""
    return None if value is None else whole(value, 0, n - 1, what)


def saved_results(results: object, n: int) -> list[dict]:
    """A browser's saved results, checked: at most MAX_RESULTS of {strategy, rounds[, product, how]}."""
    if results is None:
        return []
    if not isinstance(results, list) or len(results) > MAX_RESULTS:
        raise ValueError(f"results must be a list of at most {MAX_RESULTS}")
    out = []
    for r in results:
        strategy = r.get("strategy") if isinstance(r, dict) else None
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError("results are not a list of {strategy, rounds}")
        rounds = r.get("rounds")
        result = {"strategy": strategy, "rounds": None if rounds is None else whole(rounds, 1, n, "rounds")}
        if r.get("product") is not None:
            result["product"] = whole(r["product"], 0, n - 1, "product")
        if r.get("how") is not None:
            if r["how"] not in ("chosen", "target"):
                raise ValueError("a result's how must be 'chosen' or 'target'")
            result["how"] = r["how"]
        out.append(result)
    return out
