"""The hunt as an API: /recommend, /product and /found, for a storefront calling the shop from Python or
JavaScript with Gradio's own clients (docs/api.md).

The caller carries the whole hunt in `visit`, the same signed visit a browser keeps (shop/visit.py), as JSON text:
each call restores it (checked like the browser's: one bad field, or a signature that is not this server's, and
it is refused with a clear error), acts, and hands back the next one. So any server process (any replica sharing
VISIT_SECRET) answers any call, and the server holds nothing per caller between calls. The rules are the page's
own: the recommender shows no product twice until every one was shown, the request body limit (shop/server.py)
holds for these routes too, every input is checked, and a found hunt is written to the hunt log the page's way,
with "via": "api".
"""

from __future__ import annotations

import json

import gradio as gr

from catalog.catalog import MAX_QUERY_CHARS
from common.untrusted import clean_text
from recommender import STRATEGIES
from shop.server import MAX_REQUEST_BYTES
from shop.shop import Shop
from shop.visit import Visit, checked_visit
from shop.wire import page_root, picture_url

MAX_ID_CHARS = 1000  # a product id longer than this is no id of the catalog


class Api:
    """The API's handlers over one Shop (its catalog, recommender, visit key and hunt log); no state of its own."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def recommend(
        self, visit: str = "", pick: str = "", words: str = "", strategy: str = "", request: gr.Request = None
    ) -> dict:
        """The next gallery of a hunt. `visit`: the last answer's visit (empty: a new hunt); `pick`: the id of the
        product liked best in the last gallery (or empty); `words`: what the shopper typed (or empty; an empty
        `words` keeps the last search); `strategy`: for a new hunt, a strategy name (empty: the shop's default).
        Answers {"visit", "round", "seen", "total", "note", "products": [{"id", "title", "price", "currency",
        "url", "image"}]}."""
        shop = self.shop
        strategy = clean_text(strategy, 40).strip()
        if strategy and strategy not in STRATEGIES:
            raise gr.Error(f"unknown strategy {strategy!r}: one of {', '.join(sorted(STRATEGIES))}, or empty")
        hunt = self.restored(visit)
        if hunt is None:
            if text(pick):
                raise gr.Error("a pick needs the visit of the gallery it was picked from")
            chosen, strategy_from = shop.strategy_for(strategy or None, None, by_shopper=False)
            hunt = Visit(shop.rec.new_session(strategy=chosen), strategy_from=strategy_from)
        elif strategy and strategy != hunt.session.strategy:
            raise gr.Error(f"this hunt runs {hunt.session.strategy}: send an empty visit to start one with {strategy}")
        elif hunt.ended:
            raise gr.Error("this hunt has ended (found): send an empty visit to start a new one")
        session = hunt.session
        row = self.in_gallery(hunt, text(pick)) if text(pick) else None
        query, note = self.search(hunt, clean_text(words, MAX_QUERY_CHARS * 4))
        if session.round == 0 or row is not None or query is not None:
            try:
                session.next_round(pick=row, query=None if query is None else query[2])
            except ValueError as exc:  # e.g. a text tower whose vectors do not fit the catalog
                raise gr.Error(f"search failed: {exc}") from None
            if row is not None:
                hunt.viewing = row
            if query is not None:
                hunt.searches.setdefault(session.round - 1, []).append(query[:2])
                hunt.words = query[0]
        return {
            "visit": self.saved(hunt),
            "round": session.round,
            "seen": session.n_seen,
            "total": session.n_seen + session.remaining,
            "note": note,
            "products": self.gallery(hunt, page_root(request)),
        }

    def product(self, id: str, request: gr.Request = None) -> dict:  # noqa: A002 - the API's own parameter name
        """A product's facts: {"id", "title", "description", "brand", "category", "price", "currency", "url",
        "image"}; an id that is no product of the catalog is an error."""
        catalog = self.shop.catalog
        row = catalog.row_of(text(id)) if text(id) else None
        if row is None or self.shop.rec.is_hidden(row):
            raise gr.Error(f"no product with id {clean_text(id, 80)!r} in this shop")
        facts = catalog.product(row)
        picture = catalog.page_picture(row)
        root = page_root(request)
        return {
            **{name: facts.get(name) for name in ("title", "description", "brand", "category", "price", "currency")},
            "id": catalog.product_id(row),
            "url": facts["url"],
            "image": picture_url(root, picture) if picture and root else None,
        }

    def found(self, visit: str, id: str, request: gr.Request = None) -> dict:  # noqa: A002
        """The hunt ends with product `id` found (a product of the last gallery, or one picked before), written
        to the hunt log like *This is it*. Answers {"visit", "found", "rounds"}."""
        hunt = self.restored(visit)
        if hunt is None:
            raise gr.Error("/found needs the visit of the hunt it ends")
        if hunt.ended:
            raise gr.Error("this hunt has ended already")
        session = hunt.session
        wanted = text(id)
        row = next((r for r in session.shown if self.shop.catalog.product_id(r) == wanted), None)
        rounds = session.round
        if row is None:
            picks = zip(session.picks, session.pick_rounds)
            picked = [(r, n) for r, n in picks if self.shop.catalog.product_id(r) == wanted]
            if not picked:
                raise gr.Error(f"{clean_text(id, 80)!r} is not a product of this hunt's last gallery or picks")
            row, rounds = picked[-1]
        hunt.viewing, hunt.chosen, hunt.found_in = row, row, rounds
        hunt.results.append({"strategy": session.strategy, "rounds": rounds, "product": row, "how": "chosen"})
        self.shop.log_end(hunt, "found", via="api")
        return {"visit": self.saved(hunt), "found": self.shop.catalog.product_id(row), "rounds": rounds}

    # -- the pieces
    def restored(self, visit: object) -> Visit | None:
        """The caller's visit, checked (None when empty); a gr.Error saying why it is refused."""
        visit = text(visit, MAX_REQUEST_BYTES)
        if not visit.strip():
            return None
        try:
            saved = json.loads(visit)
        except (ValueError, RecursionError):
            raise gr.Error("visit refused: it is not the JSON text an answer of this API gave") from None
        try:
            return checked_visit(saved, self.shop.catalog, self.shop.rec, self.shop.key)
        except ValueError as exc:
            raise gr.Error(f"visit refused: {exc}") from None

    def in_gallery(self, hunt: Visit, product_id: str) -> int:
        """The row of `product_id` in the hunt's last gallery; a gr.Error when it is not there."""
        for row in hunt.session.shown:
            if self.shop.catalog.product_id(row) == product_id:
                return row
        raise gr.Error(f"pick {clean_text(product_id, 80)!r} is not a product of the last gallery")

    def search(self, hunt: Visit, words: str) -> tuple[tuple | None, str]:
        """What typed `words` do to the next round, as the page's search box: ((the query, words, matches) or None,
        a note for the caller). Words that match nothing are noted (and kept for the hunt log) and change nothing;
        no words keep the last search."""
        if not words.strip():
            return None, ""
        catalog, session = self.shop.catalog, hunt.session
        found = catalog.find(words)
        if found.query is None:
            if found.search_by:  # words that matched nothing: the shop would like to know
                hunt.searches.setdefault(session.round, []).append((found.text, 0))
            return None, found.message
        matches = None if found.rows is None else found.matches  # None: by meaning alone
        hunt.search_by = found.search_by
        return (found.text, matches, found.query), ""

    def gallery(self, hunt: Visit, root: str | None) -> list[dict]:
        """The products of the hunt's round, each with its facts and its picture's absolute URL."""
        catalog = self.shop.catalog
        pictures = self.shop.round_pictures(hunt.session)
        out = []
        for row in hunt.session.shown:
            if pictures.get(row) is None:
                continue
            facts = catalog.product(row)
            out.append(
                {
                    "id": catalog.product_id(row),
                    "title": facts["title"],
                    "price": facts["price"],
                    "currency": facts["currency"],
                    "url": facts["url"],
                    "image": picture_url(root, pictures[row]) if root else None,
                }
            )
        return out

    def saved(self, hunt: Visit) -> str:
        """The visit to hand back: the signed saved visit as compact JSON text."""
        return json.dumps(hunt.saved(self.shop.catalog, self.shop.key), separators=(",", ":"))


def text(value: object, max_chars: int = MAX_ID_CHARS) -> str:
    """A caller's text argument as clean text ('' for anything else), cut to `max_chars`."""
    return clean_text(value, max_chars)


def add_api(shop: Shop) -> Api:
    """Declare the API's endpoints in the Blocks being built (their names, arguments and docstrings make the
    app's "Use via API" page)."""
    api = Api(shop)
    for fn, name in ((api.recommend, "recommend"), (api.product, "product"), (api.found, "found")):
        gr.api(fn, api_name=name, concurrency_limit=None)
    return api
