"""Round logic of the visual product recommender: pure numpy + FAISS, no UI.

A `Recommender` holds the catalog's embeddings in one FAISS index, built once. Each shopper gets a `Session`
from `rec.new_session()`; a session shows `per_round` products a round: the first round at random, then the
`similar` unseen products nearest to the shopper's preference (the mean of the picked products' embeddings)
followed by fresh random ones. No product is ever shown twice in a session.

Seen products are excluded inside the FAISS search with a per-session N-bit bitmap (`IDSelectorBitmap`), so a
round costs one scan of the index and never a Python loop over the catalog. With `compression="sq8"` that scan
reads 8-bit codes (a quarter of the bytes) and still returns the float32 answer (see sq8.py), while the float32
rows stay where they are, e.g. in a memory-mapped file (see rows.py).

That rule is strategy "mean"; "random" (the baseline), "rocchio" and "bayes" (a belief over the wanted product,
galleries chosen to narrow it fastest) plug in the same way: see STRATEGIES.

A shopper may also say what they want: `session.next_round(query=...)` takes a vector in the embedding space
(typed words embedded by a CLIP-family model's text tower), the rows whose text matches typed words, or both as a
pair (vector, rows best first) as the catalog's full-text search gives them. The query stays active until another
replaces it; the round right after it ranks the whole catalog, products already shown included (see
`Session.next_round` for what each strategy makes of it).
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from common.cores import ROUND_THREADS
from common.untrusted import clean_text, whole_list
from engine.bayes import BayesState, BeliefSpaces, strategy_bayes
from engine.faiss_index import FaissIndex
from engine.rows import Bitmap, UnitRows, as_chunks, read_blocks, unit_length
from engine.sq8 import ExactSQ8
from engine.strategy import Choice, Strategy

COMPRESSIONS = ("none", "sq8")
MAX_SAVED_ROUNDS = 1000  # a saved session (e.g. a browser's copy) with more rounds is not restored
MAX_REPLAYED_PICKS = 8  # a restored `bayes` session weighs its latest picks only, so a restore costs about a round
AUTO_SQ8_BYTES = 256 << 20  # "auto" scans 8-bit codes from this many bytes of float32 rows (87k x 768) up


def choose_compression(setting: str | None, n: int, dim: int) -> str | None:
    """The compression for `Recommender`: `setting` itself, or for "auto" sq8 once the float32 rows reach
    AUTO_SQ8_BYTES (from there a float32 round is a scan of 256 MB or more, and sq8 reads a quarter of it; figures:
    docs/benchmarks.md)."""
    if setting == "auto":
        return "sq8" if n * dim * 4 >= AUTO_SQ8_BYTES else None
    return None if setting in (None, "none") else setting


def build_index(embeddings, index_factory: str | None = None) -> tuple[faiss.Index, np.ndarray]:
    """Build the inner-product index over L2-normalised rows; return it and an (N, d) view of the unit rows.

    `embeddings` is an (N, d) array (a memmap is read a block at a time) or a list of such blocks. With the
    exact (default) index the returned matrix is a view into the index's own storage, so the catalog is held
    once. With an approximate `index_factory` string the unit rows are kept beside the index (the index may
    store them compressed), trained on the catalog itself.
    """
    chunks = _checked_chunks(embeddings)
    n, d = sum(len(c) for c in chunks), chunks[0].shape[1]
    if index_factory is None:
        index = faiss.IndexFlatIP(d)
        index.codes.resize(n * d * 4)  # the final size at once: adding block by block would regrow (and copy) it
        unit = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
        for start, block in read_blocks(chunks):
            unit[start : start + len(block)] = block
        index.ntotal = n
        return index, unit
    unit = np.empty((n, d), dtype=np.float32)
    for start, block in read_blocks(chunks):
        unit[start : start + len(block)] = block
    index = faiss.index_factory(d, index_factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(unit)
    index.add(unit)
    return index, unit


def _checked_chunks(embeddings) -> list[np.ndarray]:
    """`rows.as_chunks`, refusing an empty catalog or zero-width rows with a clear ValueError."""
    chunks = as_chunks(embeddings)
    n, d = sum(len(c) for c in chunks), chunks[0].shape[1]
    if n == 0:
        raise ValueError("embeddings is empty (N == 0): a catalog needs at least one product")
    if d == 0:
        raise ValueError("embeddings have dimension 0")
    return chunks


# ---------------------------------------------------------------------------------------------- strategies
# A strategy fills the first slots of a round: given the session (its picks, history, unseen bitmap, query) and
# how many slots it may fill, it returns a `Choice`: unseen rows, best first, and how many of them are look-alikes.
# The session fills the rest of the round with uniform random unseen rows (see engine/strategy.py).


def strategy_mean(session: Session, n: int) -> Choice:
    """The seed's rule: the `n` unseen rows nearest to the exact mean of the picked embeddings (a query vector
    counting as one more pick; word matches first, see `_similar`), all look-alikes."""
    rows = _similar(session, n, _preference(session)) if n > 0 else []
    return Choice(rows, len(rows))


def strategy_random(session: Session, n: int) -> Choice:
    """Brute-force baseline: no similar rows, the whole round is random unseen rows (a query changes nothing)."""
    return Choice([], 0)


ROCCHIO_WEIGHTS = {"alpha": 1.0, "beta": 0.25}


def strategy_rocchio(session: Session, n: int) -> Choice:
    """Rocchio feedback: move toward the picks' mean and away from the mean of products shown but passed over."""
    if n <= 0:
        return Choice([], 0)
    query = _preference(session)
    if query is not None and session.picks:
        unit = session.rec.unit
        alpha = session.params.get("alpha", ROCCHIO_WEIGHTS["alpha"])
        beta = session.params.get("beta", ROCCHIO_WEIGHTS["beta"])
        picked = set(session.picks)
        passed = [row for shown in session.history for row in shown if row not in picked]
        query = alpha * query
        if passed and beta:
            query -= beta * unit[passed].mean(axis=0, dtype=np.float64)
    rows = _similar(session, n, query)
    return Choice(rows, len(rows))


def _preference(session: Session) -> np.ndarray | None:
    """The mean of the picked rows and the query vector (as one more pick), or None with neither."""
    parts = []
    if session.picks:
        parts.append(session.rec.unit[session.picks].sum(axis=0, dtype=np.float64))
    if session.query_vector is not None:
        parts.append(session.query_vector.astype(np.float64))
    if not parts:
        return None
    return np.sum(parts, axis=0) / (len(session.picks) + (session.query_vector is not None))


def _similar(session: Session, n: int, preference: np.ndarray | None) -> list[int]:
    """The similar slots: the `n` unseen rows nearest to `preference`; while the query's word matches have unseen
    rows, those come first: the nearest of them to `preference` (the picks, the typed meaning), or while there is
    none, the best by the search's own ranking (a pair query) or else random ones."""
    among = session.unseen_matches()
    if among is None or among.size == 0:
        return [] if preference is None else session.search(preference, n)
    if preference is None and session.query_rank is not None:  # the search's own order (BM25), best first
        rank = session.query_rank
        return rank[session.unseen.has_each(rank)][:n].tolist()
    if preference is None:
        return session.rng.choice(among, min(n, among.size), replace=False).tolist()
    rows = session.search(preference, n, among=among)
    if len(rows) < n:  # fewer unseen matches than slots: the nearest of the rest fill them
        taken = set(rows)
        rows += [r for r in session.search(preference, n) if r not in taken][: n - len(rows)]
    return rows


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (  # the sentences are the shopper's (Settings)
        Strategy(
            "mean",
            strategy_mean,
            "similar",
            "the five products closest to the average of your picks, plus five new ones (the seed's rule).",
        ),
        Strategy("random", strategy_random, "none", "ten products at random: the baseline to compare the others with."),
        Strategy(
            "rocchio",
            strategy_rocchio,
            "similar",
            "like mean, and it also moves away from the products you passed over.",
        ),
        Strategy(
            "bayes",
            strategy_bayes,
            "all",
            "keeps a belief over what you want and shows the products that narrow it down fastest.",
        ),
    )
}


# ----------------------------------------------------------------------------------------------- recommender
def prepare_views(views: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Each view as float32 rows centred on the view's catalog mean and L2-normalised (a row at the mean stays 0).

    A view that is not (n, d) numbers, or has NaN/inf, is a ValueError naming it.
    """
    out = {}
    for name, view in views.items():
        if name == "embedding":
            raise ValueError("view name 'embedding' is taken by the catalog's embeddings")
        try:
            x = np.array(view, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"view {name!r} is not a matrix of numbers: {exc}") from exc
        if x.ndim != 2 or x.shape[0] != n or x.shape[1] == 0:
            raise ValueError(f"view {name!r} must have shape ({n}, d) like the embeddings, got {x.shape}")
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            raise ValueError(f"view {name!r} row {int(bad[0])} has NaN or inf")
        x -= x.mean(axis=0, dtype=np.float64).astype(np.float32)
        unit_length(x, out=x)
        out[name] = x
    return out


class Recommender:
    """The catalog's index plus the round rule; cheap to share between any number of shopper sessions."""

    def __init__(
        self,
        embeddings: np.ndarray,
        per_round: int = 10,
        similar: int = 5,
        strategy: str = "mean",
        seed: int | None = None,
        index_factory: str | None = None,
        nprobe: int | None = None,
        compression: str | None = None,
        threads: int | None = None,
        views: dict[str, np.ndarray] | None = None,
    ) -> None:
        """`embeddings`: (N, d) array, memmap or list of blocks (e.g. a dataset's Arrow blocks), normalised here.

        `compression`: None / "none" scans float32 rows held in the index; "sq8" scans 8-bit codes and re-ranks
        against the float32 rows, which are only read, never copied (same results, see sq8.py). `threads`:
        how many parts the sq8 scan is split into (default: the CPU count from 262,144 rows up). `views`: other
        per-product features, name -> (N, d_v) (e.g. "appearance", a colour layout), each centred on its catalog
        mean and L2-normalised here; strategies may weigh them (see `prepare_views`).
        """
        if per_round < 1:
            raise ValueError(f"per_round must be at least 1, got {per_round}")
        if similar < 0 or similar > per_round:
            raise ValueError(f"similar must be between 0 and per_round ({per_round}), got {similar}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        self.per_round = per_round
        self.similar = similar
        self.strategy = strategy
        compression = None if compression in (None, "none") else compression
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; choose from {COMPRESSIONS}")
        if compression is not None and index_factory is not None:
            raise ValueError("compression and index_factory cannot be combined: sq8 is exact, an index_factory not")
        self.index_factory = index_factory
        self.compression = compression
        self.sq8_index: ExactSQ8 | None = None  # the 8-bit codes' exact index (compression "sq8")
        self.index: FaissIndex | ExactSQ8  # what rounds search, either way with `search(query, k, bits, available)`
        if compression == "sq8":
            self.unit = UnitRows(_checked_chunks(embeddings))
            self.index = self.sq8_index = ExactSQ8(self.unit, threads)  # reads (and so validates) every row
        else:
            index, self.unit = build_index(embeddings, index_factory)
            self.index = FaissIndex(index, self.unit)
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None and nprobe is not None:
                ivf.nprobe = nprobe
        self.n, self.dim = self.unit.shape
        self.views = prepare_views(views or {}, self.n)
        self._seeds = np.random.SeedSequence(seed)
        self._lock = threading.Lock()  # for drawing session seeds and reading/changing the availability bitmap
        self.available = Bitmap(self.n)  # rows a new session may show: `hide` takes rows out
        self.n_hidden = 0  # rows hidden from every session (e.g. their picture cannot be shown)
        self.belief_spaces = BeliefSpaces(self)  # what `bayes` sessions compare, made once per view

    def hide(self, rows) -> int:
        """Never show `rows` in sessions started from now on (e.g. products whose image cannot be shown).

        Returns how many of them were not hidden already. Live sessions are told with `Session.hide`.
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64).ravel())
        if rows.size and (rows[0] < 0 or rows[-1] >= self.n):
            raise ValueError(f"rows to hide must be in [0, {self.n}), got {rows[0]}..{rows[-1]}")
        with self._lock:
            new = rows[self.available.has_each(rows)]
            self.available.remove(new)
            self.n_hidden += int(new.size)
        return int(new.size)

    def is_hidden(self, row: int) -> bool:
        """Whether `row` is kept out of new sessions."""
        return not self.available.has(row)

    def new_session(self, seed: int | None = None, strategy: str | None = None, **params) -> Session:
        """Start a shopper session; same `seed` -> same rounds, None -> drawn from the recommender's seed.

        `strategy` overrides the recommender's for this session; `params` tune it (e.g. temperature=0.05).
        """
        strategy = strategy or self.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        if seed is None:
            with self._lock:
                (seed,) = self._seeds.spawn(1)
        return Session(self, np.random.default_rng(seed), strategy, params)

    def restore_session(self, saved: dict, seed: int | None = None, **params) -> Session:
        """A session in the state `Session.to_dict()` saved (e.g. kept by the shopper's browser over a reload).

        The saved data is checked as untrusted input: a ValueError says what is wrong with it. Strategy tuning
        (`params`) is the caller's, never the saved data's.
        """
        if not isinstance(saved, dict):
            raise ValueError("a saved session must be a dict")
        strategy = saved.get("strategy")
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {clean_text(repr(strategy), 40)}")
        history = saved.get("history")
        if not isinstance(history, list) or len(history) > MAX_SAVED_ROUNDS:
            raise ValueError(f"history must be a list of at most {MAX_SAVED_ROUNDS} rounds")
        if any(not isinstance(r, list) or not 1 <= len(r) <= self.per_round for r in history):
            raise ValueError(f"every round must show 1 to {self.per_round} products")
        history = [whole_list(r, 0, self.n - 1, f"round {i + 1}", self.per_round) for i, r in enumerate(history)]
        searched = whole_list(saved.get("search_rounds", []), 1, max(1, len(history)), "search_rounds", len(history))
        pass_start, passes = self._passes(history, set(searched))
        flat = list(dict.fromkeys(row for r in history[pass_start:] for row in r))  # a search may show one again
        picks = whole_list(saved.get("picks"), 0, self.n - 1, "picks", len(history))
        pick_rounds = whole_list(saved.get("pick_rounds"), 1, len(history), "pick_rounds", len(history))
        if len(picks) != len(pick_rounds) or pick_rounds != sorted(set(pick_rounds)):
            raise ValueError("picks and pick_rounds must pair up, one pick per round at most, in order")
        if any(pick not in history[r - 1] for pick, r in zip(picks, pick_rounds)):
            raise ValueError("a pick is not a product of the round it was picked from")
        n_similar = saved.get("n_similar", 0)
        if not isinstance(n_similar, int) or isinstance(n_similar, bool):
            raise ValueError("n_similar must be a whole number")
        picked_last = bool(pick_rounds) and pick_rounds[-1] == len(history)  # that pick found nothing more to show
        session = self.new_session(seed=seed, strategy=strategy, **params)
        session.pass_start, session.passes = pass_start, passes
        session.n_hidden -= sum(1 for row in flat if session.is_seen(row))  # hidden since, but shown then
        session._mark_seen(flat)
        session.history, session.picks, session.pick_rounds = history, picks, pick_rounds
        session.search_rounds = sorted(set(searched))
        session.shown = [] if picked_last or not history else list(history[-1])
        session.n_similar = min(max(n_similar, 0), len(session.shown))
        if len(picks) > MAX_REPLAYED_PICKS:  # a restore weighs only the latest picks again: its cost stays a round's
            session.weigh_picks_from = pick_rounds[-MAX_REPLAYED_PICKS]
        return session

    def _passes(self, history: list[list[int]], searched: set[int]) -> tuple[int, int]:
        """The round (0-based) a saved history's current pass began, and how many passes ended before it: a
        product may come again only once every product that can be shown has been shown, or in a round right
        after a typed search (`searched`, 1-based; a ValueError otherwise, as for any forged history)."""
        start, passes, seen = 0, 0, set()
        for i, rows in enumerate(history):
            if len(set(rows)) != len(rows):
                raise ValueError(f"round {i + 1} shows a product twice")
            if seen.isdisjoint(rows):
                seen.update(rows)
                continue
            if sum(1 for row in seen if not self.is_hidden(row)) >= self.n - self.n_hidden:
                start, passes, seen = i, passes + 1, set(rows)
            elif i + 1 in searched:
                seen.update(rows)
            else:
                raise ValueError("a product appears in two rounds before every product was shown")
        return start, passes


class Session:
    """One shopper's state: picks, rounds shown and an N-bit bitmap of unseen rows. Not shared across shoppers."""

    def __init__(self, rec: Recommender, rng: np.random.Generator, strategy: str, params: dict) -> None:
        self.rec = rec
        self.rng = rng
        self.strategy = strategy
        self.params = params
        self.pick_rounds: list[int] = []  # the round (1-based) each pick was made from
        self.picks: list[int] = []
        self.history: list[list[int]] = []  # every round shown, in order
        self.shown: list[int] = []  # the current round
        self.n_similar = 0  # how many of `shown` (at its front) are look-alikes, from the strategy
        self.bayes: BayesState | None = None  # what the `bayes` strategy remembers
        self.n_seen = 0  # rows shown to the shopper
        self.query_vector: np.ndarray | None = None  # the active query: a unit vector in the embedding space,
        self.query_rows: np.ndarray | None = None  # and/or the rows whose words matched (sorted, unique),
        self.query_rank: np.ndarray | None = None  # those rows best first, when the query ranks them (a pair)
        self.search_rounds: list[int] = []  # rounds (1-based) right after a search that showed a product again
        self.revived = np.zeros(0, dtype=np.int64)  # matches shown before, unseen again for a search's round
        self.query_serial = 0  # bumped by every new query, so strategies know when to redo their query work
        self.weigh_picks_from = 0  # picks of rounds before this one are not weighed again (a restore sets it)
        self.pass_start = 0  # the round (0-based) the current pass began: every product was shown before it
        self.passes = 0  # how many times every product has been shown
        self.hidden_here: set[int] = set()  # rows hidden from this session alone (out of every later pass too)
        self.unseen: Bitmap  # the rows that may still be shown (the FAISS selector reads its bits)
        self.n_hidden: int  # rows never to be shown: hidden from every session, or from this one
        self._all_unseen()

    @property
    def round(self) -> int:
        """Number of rounds shown so far (1 after the first round)."""
        return len(self.history)

    @property
    def seen(self) -> set[int]:
        """Every row shown in this session."""
        return {row for shown in self.history for row in shown}

    @property
    def remaining(self) -> int:
        """Rows that may still be shown."""
        return self.rec.n - self.n_seen - self.n_hidden

    @property
    def exhausted(self) -> bool:
        """True once every product of the catalog that can be shown has been shown."""
        return self.remaining <= 0

    def unseen_mask(self) -> np.ndarray:
        """(N,) bool: the rows that may still be shown."""
        return self.unseen.mask()

    def pick_in_round(self, round_no: int) -> int | None:
        """The row picked from round `round_no` (1-based), or None when that round got no pick."""
        if round_no in self.pick_rounds:
            return self.picks[self.pick_rounds.index(round_no)]
        return None

    def is_seen(self, row: int) -> bool:
        """Whether `row` has been shown in this session."""
        return not self.unseen.has(row)

    def search(self, query: np.ndarray, k: int, among: np.ndarray | None = None) -> list[int]:
        """The `k` unseen rows with the highest inner product with `query`, best first, ties to the lower row;
        with `among` (unseen rows, e.g. word matches), only rows from it.

        Exact on the flat index and with sq8 (both give the same rows); approximate with an index_factory.
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if among is not None:
            k = min(k, len(among))
            if k <= 0:
                return []
            if len(among) * 4 <= self.rec.n:  # a few: score just them
                scores = self.rec.index.scores(query, among)
                return among[np.lexsort((among, -scores))][:k].tolist()
            mask = np.zeros(self.rec.n, dtype=bool)  # a large share of the catalog: a scan with a bitmap of them
            mask[among] = True
            return self._search_bits(query, k, Bitmap.of_mask(mask).bits, len(among))
        return self._search_bits(query, min(k, self.remaining), self.unseen.bits, self.remaining)

    def _search_bits(self, query: np.ndarray, k: int, bits: np.ndarray, available: int) -> list[int]:
        """`search` among the rows whose bit is set in `bits` (`available` of them)."""
        if k <= 0:
            return []
        _, ids = self.rec.index.search(query, k, bits, available)
        return ids.tolist()

    def unseen_matches(self) -> np.ndarray | None:
        """The active word query's rows not shown yet (None without a word query)."""
        if self.query_rows is None:
            return None
        rows = self.query_rows
        return rows[self.unseen.has_each(rows)]

    def match_count(self) -> int | None:
        """How many products the active word query matches that can be shown (None without a word query)."""
        if self.query_rows is None:
            return None
        with self.rec._lock:
            return int(self.rec.available.has_each(self.query_rows).sum())

    def matching(self, rows: list[int]) -> set[int]:
        """Those of `rows` that the active word query matches."""
        if self.query_rows is None or not rows:
            return set()
        rows = np.asarray(rows, dtype=np.int64)
        return set(rows[np.isin(rows, self.query_rows)].tolist())

    def checked_query(self, query) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(unit vector, sorted unique rows, rows best first) for `query`, None for what it lacks; a ValueError
        saying what is wrong.

        A vector: float numbers, shape (d,) or (1, d), finite, not all zero. Rows: whole numbers in [0, N), at
        least one (a list/tuple of ints, or an integer array): a set, unranked. A pair (vector or None, integer
        array or None), one of them at least: both, the rows ranked best first (a catalog's full-text search).
        """
        if isinstance(query, tuple) and len(query) == 2 and all(p is None or isinstance(p, np.ndarray) for p in query):
            vector, ranked = query
            if vector is None and ranked is None:
                raise ValueError("a query pair needs a vector or rows")
            if ranked is not None and (ranked.dtype.kind not in "iu" or ranked.ndim != 1):
                raise ValueError("a query pair's rows are a 1-d array of row numbers")
            vector = None if vector is None else self._checked_one(vector)[0]
            rows = None if ranked is None else self._checked_one(ranked)[1]
            if ranked is not None:
                _, first = np.unique(ranked, return_index=True)
                ranked = ranked[np.sort(first)].astype(np.int64)  # each row once, at its best place
            return vector, rows, ranked
        return (*self._checked_one(query), None)

    def _checked_one(self, query) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(unit vector, None) or (None, sorted unique rows) for a vector or rows (see `checked_query`)."""
        if isinstance(query, (list, tuple)):
            if query and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in query):
                query = np.asarray(query, dtype=np.int64)
            else:
                try:
                    query = np.asarray(query, dtype=np.float64)
                except (TypeError, ValueError):
                    raise ValueError("a query is a vector of numbers or a list of row numbers") from None
        if not isinstance(query, np.ndarray) or query.dtype.kind not in "iuf":
            raise ValueError("a query is a vector of numbers or a list of row numbers")
        if query.dtype.kind in "iu":
            rows = np.unique(query.ravel().astype(np.int64))
            if rows.size == 0:
                raise ValueError("a row query needs at least one row")
            if rows[0] < 0 or rows[-1] >= self.rec.n:
                raise ValueError(f"query rows must be in [0, {self.rec.n}), got {rows[0]}..{rows[-1]}")
            return None, rows
        vector = query.astype(np.float64).ravel()
        if query.ndim > 2 or (query.ndim == 2 and query.shape[0] != 1) or vector.size != self.rec.dim:
            raise ValueError(
                f"a query vector must have {self.rec.dim} numbers (the embedding's dimension), got shape {query.shape}"
            )
        if not np.isfinite(vector).all():
            raise ValueError("a query vector has NaN or inf")
        norm = float(np.linalg.norm(vector))
        if norm == 0:
            raise ValueError("a query vector is all zeros")
        return (vector / norm).astype(np.float32), None

    def set_query(self, query) -> None:
        """Make `query` the active one (see `next_round`), replacing any; None clears it. Checked first: a bad
        query is a ValueError and the session stays as it was."""
        self._activate(*((None, None, None) if query is None else self.checked_query(query)))

    def _activate(self, vector: np.ndarray | None, rows: np.ndarray | None, ranked: np.ndarray | None) -> None:
        self.query_vector, self.query_rows, self.query_rank = vector, rows, ranked
        self.query_serial += 1

    def _revive(self) -> np.ndarray:
        """The active word query's matches shown earlier in this pass made unseen again, for the round of a new
        search only (a typed search ranks the whole catalog, products already shown included)."""
        if self.query_rows is None or self.round == self.pass_start:
            return np.zeros(0, dtype=np.int64)
        shown = np.fromiter({row for rows in self.history[self.pass_start :] for row in rows}, dtype=np.int64)
        rows = self.query_rows[np.isin(self.query_rows, shown)]
        with self.rec._lock:
            rows = rows[self.rec.available.has_each(rows)]
        rows = rows[~np.isin(rows, np.fromiter(self.hidden_here, dtype=np.int64))]
        self.unseen.add(rows)
        self.n_seen -= int(rows.size)
        return rows

    def random_unseen(self, k: int, exclude: set[int] | None = None) -> list[int]:
        """`k` distinct rows drawn uniformly from the unseen rows not in `exclude`."""
        exclude = exclude or set()
        available = self.remaining - len(exclude)
        k = min(k, available)
        if k <= 0:
            return []
        out: list[int] = []
        taken = set(exclude)
        if available * 4 >= self.rec.n:
            # Rejection sampling: each draw lands on an available row with probability >= 1/4.
            while len(out) < k:
                for row in self.rng.integers(0, self.rec.n, size=2 * (k - len(out)) + 4).tolist():
                    if not self.is_seen(row) and row not in taken:
                        out.append(row)
                        taken.add(row)
                        if len(out) == k:
                            break
            return out
        # Few rows left (> 3/4 of the catalog seen): list them; amortised O(per_round) per round overall.
        unseen = np.flatnonzero(self.unseen_mask())
        if taken:
            unseen = unseen[~np.isin(unseen, np.fromiter(taken, dtype=np.int64))]
        return [int(r) for r in self.rng.choice(unseen, size=k, replace=False)]

    def shown_before(self) -> list[bool]:
        """For each product of the current round: whether an earlier round showed it too (a later pass)."""
        again = self.pass_start or (self.search_rounds and self.search_rounds[-1] == self.round)
        earlier = {row for rows in self.history[:-1] for row in rows} if again else set()
        return [row in earlier for row in self.shown]

    def _all_unseen(self) -> None:
        """Every row the recommender may show is unseen again (a new session, or a new pass)."""
        with self.rec._lock:
            self.unseen = self.rec.available.copy()
            self.n_hidden = self.rec.n_hidden

    def _new_pass(self) -> None:
        """Every product has been shown: they may all be shown again, once each, the strategy's closest first.

        The seed's rule (no product twice) then holds within each pass. `bayes` starts a new belief from the
        picks (its old one had ruled out every product shown), weighing the latest MAX_REPLAYED_PICKS of them."""
        self._all_unseen()
        gone = [row for row in self.hidden_here if self.unseen.has(row)]
        self.unseen.remove(gone)
        self.n_hidden += len(gone)
        self.n_seen = 0
        self.pass_start = len(self.history)
        self.passes += 1
        self.bayes = None
        recent = self.pick_rounds[-MAX_REPLAYED_PICKS:]
        self.weigh_picks_from = recent[0] if len(self.pick_rounds) > MAX_REPLAYED_PICKS else 0

    def _mark_seen(self, rows: list[int]) -> None:
        self.unseen.remove(rows)
        self.n_seen += len(rows)

    def hide(self, rows) -> list[int]:
        """Never show `rows` again (e.g. their image turned out unreadable); returns the round as it is now.

        Hidden rows of the current round leave it and fresh random unseen rows take their places at its end,
        so the gallery stays full; the current round's history entry is updated to what the shopper will see.
        """
        rows = {int(r) for r in rows}
        self.hidden_here.update(r for r in rows if 0 <= r < self.rec.n)
        gone = [r for r in self.shown if r in rows]
        unseen = [r for r in rows - set(gone) if 0 <= r < self.rec.n and not self.is_seen(r)]
        self.unseen.remove(unseen)
        self.n_hidden += len(unseen) + len(gone)
        if gone:
            self.n_seen -= len(gone)
            self.n_similar -= sum(1 for r in self.shown[: self.n_similar] if r in rows)
            kept = [r for r in self.shown if r not in rows]
            fresh = self.random_unseen(len(gone), exclude=set(kept))
            self._mark_seen(fresh)
            self.shown = kept + fresh
            if self.history:
                if self.shown:
                    self.history[-1] = list(self.shown)
                else:
                    self.history.pop()
        return list(self.shown)

    def to_dict(self) -> dict:
        """What `Recommender.restore_session` needs to rebuild this session: JSON-ready plain data."""
        return {
            "strategy": self.strategy,
            "history": [list(r) for r in self.history],
            "picks": list(self.picks),
            "pick_rounds": list(self.pick_rounds),
            "n_similar": self.n_similar,
            "search_rounds": list(self.search_rounds),
        }

    def next_round(self, pick: int | None = None, query=None) -> list[int]:
        """Record `pick` (a row of the current round) and, if given, make `query` the active query; return the
        next round's rows ([] once exhausted).

        `query` is a vector in the embedding space (e.g. typed words embedded by a CLIP-family text tower), a
        list/array of rows (products whose words match), or both as a pair (vector or None, rows best first: see
        `checked_query`); it stays active until replaced. "mean" and "rocchio" count a vector as one more pick in
        the preference, and fill the similar slots from the row matches first (see `_similar`); "bayes" takes it
        as evidence in its belief (see `_query_evidence`); "random" ignores it. The round right after a new query
        ranks the whole catalog: matches shown earlier in this pass count as unseen for it (`_revive`, they carry
        the seen-before mark), never in its random products; other rounds never repeat a product of the pass.
        A bad pick or query is a ValueError that leaves the session unchanged. OpenBLAS gives the round every core
        on a quiet server, one thread on a busy one (common/cores.py).
        """
        with ROUND_THREADS.running():
            return self._next_round(pick, query)

    def _next_round(self, pick: int | None, query) -> list[int]:
        if pick is not None:
            pick = int(pick)
            if pick not in self.shown:
                raise ValueError(f"pick {pick} is not one of the products of the current round {self.shown}")
        checked = self.checked_query(query) if query is not None else None  # before any change
        if pick is not None:
            self.picks.append(pick)
            self.pick_rounds.append(self.round)
        if checked is not None:
            self._activate(*checked)
        if self.remaining <= 0 and self.history:
            self._new_pass()
        if checked is not None:
            self.revived = self._revive()
        rec, strategy = self.rec, STRATEGIES[self.strategy]
        n_slots = min(strategy.n_slots(rec.per_round, rec.similar), self.remaining)
        choice = strategy.choose(self, n_slots)
        similar = choice.rows[:n_slots]
        revived, self.revived = set(self.revived.tolist()), self.revived[:0]
        rest = self.random_unseen(rec.per_round - len(similar), exclude=set(similar) | revived)
        rows = similar + rest
        self._mark_seen(rows)
        self._mark_seen([row for row in revived if row not in set(rows)])  # not shown again: still seen
        if revived & set(rows):
            self.search_rounds.append(self.round + 1)
        self.shown = rows
        self.n_similar = min(choice.n_alike, len(similar))
        if rows:
            self.history.append(rows)
        return list(rows)
