"""A shopper's visit: the state one browser page holds (its recommender session, the product on its product page,
how its hunt ended, its results), what the browser (or an API caller) keeps of it, signed by the server, and the
checked restore of what comes back. No UI imports here: the handlers (shop/shop.py, shop/api.py) change a visit;
this file says what one is.

A saved visit carries `sig`, an HMAC-SHA256 of the rest under the server's visit key (`visit_key`: VISIT_SECRET,
or a key made once in the cache folder). Only the server can write a visit that restores: one whose signature
fails is refused whole, so what the hunt log records (what was shown, picked, the target, the hunt id) is what
the server itself showed and saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from catalog.catalog import MAX_QUERY_CHARS, Catalog
from common.huntlog import RecordBudget, new_hunt_id
from common.untrusted import whole
from recommender import STRATEGIES, Recommender, Session

log = logging.getLogger("app")
MAX_RESULTS = 500  # results kept per shopper
MAX_SAVED_SEARCHES = 50  # the latest typed searches a saved visit keeps for the hunt log (round, words, matches)
HUNT_ID = re.compile(r"[0-9a-f]{16}")
STRATEGY_FROM = ("default", "compare", "shopper")
SIG = re.compile(r"[0-9a-f]{64}")
SIGNED_AS = b"product-recommender visit 1\n"  # what a signature is of, so no other signed text passes for a visit
KEY_FILE = "visit-secret"  # in the cache folder: the visit key, made once (mode 0600)
MIN_SECRET_CHARS = 32  # VISIT_SECRET shorter than this is refused at start


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
    log_budget: RecordBudget = field(default_factory=RecordBudget)  # the records this page may still write
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

    def saved(self, catalog: Catalog, key: bytes) -> dict:
        """What the shopper's browser (or an API caller) keeps so a reload resumes here: plain JSON data, signed
        with the server's visit `key` (see `signature`)."""
        body = {
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
            "searches": [
                [r, words[:MAX_QUERY_CHARS], matches]
                for r, typed in sorted(self.searches.items())
                for words, matches in typed
            ][-MAX_SAVED_SEARCHES:],
        }
        return {**body, "sig": signature(body, key)}


# ------------------------------------------------------------------------------------------ the signature
def signature(body: dict, key: bytes) -> str:
    """The HMAC-SHA256 (hex) of a saved visit's fields under `key`, over their canonical JSON (keys sorted, ASCII),
    so the same fields give the same signature after any JSON round trip (a browser's, an API caller's)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hmac.new(key, SIGNED_AS + text.encode("ascii"), hashlib.sha256).hexdigest()


def verified(saved: dict, key: bytes) -> dict:
    """The fields of a saved visit whose signature is the server's, else a ValueError (checked before any field)."""
    sig = saved.get("sig")
    if not isinstance(sig, str) or not SIG.fullmatch(sig):
        raise ValueError("it carries no signature of this server")
    body = {name: value for name, value in saved.items() if name != "sig"}
    try:
        expected = signature(body, key)
    except (TypeError, ValueError, RecursionError):  # not JSON data (NaN, nesting too deep): not ours
        raise ValueError("its signature does not match: it was not written by this server") from None
    if not hmac.compare_digest(sig, expected):
        raise ValueError("its signature does not match: it was not written by this server")
    return body


def visit_key(cache_dir: Path) -> bytes:
    """The server's key for signing visits: VISIT_SECRET when set (the same on every replica of a shop), else a
    random key made once in the cache folder (mode 0600, written whole before it appears under its name), else,
    when it cannot be kept there, a new one for this process (with a warning: visits then end with a restart)."""
    secret = os.environ.get("VISIT_SECRET", "")
    if secret:
        return secret.encode("utf-8")
    path = Path(cache_dir) / KEY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            made = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".visit-secret-", delete=False)  # noqa: SIM115
            try:
                with made:  # mkstemp files are mode 0600
                    made.write(secrets.token_hex(32).encode("ascii"))
                with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the key
                    os.link(made.name, path)
            finally:
                os.unlink(made.name)
        return read_key(path)
    except (OSError, ValueError) as exc:
        log.warning("cannot keep the visit key in %s (%s): saved visits end with a restart", path, exc)
        return secrets.token_bytes(32)


def read_key(path: Path) -> bytes:
    """The key in `path`: a regular file of 64 hex digits (anything else is a ValueError)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size > 1024:
        raise ValueError(f"{path.name} is not a key file")
    text = path.read_bytes().strip()
    if len(text) < MIN_SECRET_CHARS:
        raise ValueError(f"{path.name} is too short to be a key")
    return text


def browser_key(key: bytes) -> str:
    """The key Gradio encrypts the browser's copy with (gr.BrowserState sends it to every page, so it is made from
    the visit key one way: knowing it tells nothing of the visit key)."""
    return hmac.new(key, b"browser-state", hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------------- the restore
def restore_visit(saved: object, catalog: Catalog, rec: Recommender, key: bytes) -> Visit | None:
    """The Visit a browser saved, or None when there is none or it does not check out (see `checked_visit`)."""
    try:
        return checked_visit(saved, catalog, rec, key)
    except ValueError as exc:
        log.info("a saved visit was not restored: %s", exc)
        return None


def checked_visit(saved: object, catalog: Catalog, rec: Recommender, key: bytes) -> Visit:
    """The Visit that `saved` holds; a ValueError saying why not (not a visit, not signed by this server, of
    another catalog, a field that does not check out).

    What a browser or an API caller sends is untrusted: its signature is checked first, then every field for type
    and range before anything is built (a second line of defence), and the restore is all or nothing; it builds
    this visit only, never changing what another shopper sees.
    """
    if not isinstance(saved, dict):
        raise ValueError("a visit is a JSON object")
    saved = verified(saved, key)
    if saved.get("catalog") != catalog.key:
        raise ValueError("it is a visit of another catalog")
    return _restored(saved, catalog, rec)


def _restored(saved: dict, catalog: Catalog, rec: Recommender) -> Visit:
    """`checked_visit` once the signature holds: every field checked, then the Visit built."""
    session = rec.restore_session(saved)
    target, viewing, chosen = (
        optional_row(saved.get(name), catalog.n, name) for name in ("target", "viewing", "chosen")
    )
    seen = session.seen
    if any(row is not None and row not in seen for row in (viewing, chosen)):
        raise ValueError("the product on the page was never shown in this hunt")
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
    hunt, strategy_from = saved.get("hunt"), saved.get("strategy_from", "default")
    if not isinstance(hunt, str) or not HUNT_ID.fullmatch(hunt):
        raise ValueError("hunt must be 16 hex digits")
    if strategy_from not in STRATEGY_FROM:
        raise ValueError(f"strategy_from must be one of {STRATEGY_FROM}")
    searches = saved_searches(saved.get("searches"), session.round, catalog.n)
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
        searches=searches,
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


def saved_searches(searches: object, rounds: int, n: int) -> dict[int, list[tuple[str, int | None]]]:
    """A saved visit's typed searches, checked: at most MAX_SAVED_SEARCHES of [round, words, matches or null]."""
    if searches is None:
        return {}
    if not isinstance(searches, list) or len(searches) > MAX_SAVED_SEARCHES:
        raise ValueError(f"searches must be a list of at most {MAX_SAVED_SEARCHES}")
    out: dict[int, list[tuple[str, int | None]]] = {}
    for entry in searches:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[1], str):
            raise ValueError("searches are not a list of [round, words, matches]")
        r, words, matches = whole(entry[0], 0, rounds, "a search's round"), entry[1][:MAX_QUERY_CHARS], entry[2]
        out.setdefault(r, []).append((words, None if matches is None else whole(matches, 0, n, "a search's matches")))
    return out


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
            if r["how"] not in ("chosen", "shop", "target"):
                raise ValueError("a result's how must be 'chosen', 'shop' or 'target'")
            result["how"] = r["how"]
        out.append(result)
    return out
