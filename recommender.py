"""Round logic of the visual product recommender: pure numpy + FAISS, no UI.

A `Recommender` holds the catalog's embeddings in one FAISS index, built once. Each shopper gets a `Session`
from `rec.new_session()`; a session shows `per_round` products a round: the first round at random, then the
`similar` unseen products nearest to the shopper's preference (the mean of the picked products' embeddings)
followed by fresh random ones. No product is ever shown twice in a session.

Seen products are excluded inside the FAISS search with a per-session N-bit bitmap (`IDSelectorBitmap`), so a
round costs one scan of the index and never a Python loop over the catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import faiss
import numpy as np

CHUNK_ROWS = 65536  # rows validated/normalised/added at a time, bounding the temporary copy


def _check_and_normalise(block: np.ndarray, offset: int) -> np.ndarray:
    """Return float32 unit rows of `block`; a zero/NaN/inf row is a ValueError naming its row index."""
    block = np.asarray(block, dtype=np.float32)
    finite = np.isfinite(block).all(axis=1)
    norms = np.linalg.norm(block, axis=1)
    bad = np.flatnonzero(~finite | (norms == 0) | ~np.isfinite(norms))
    if bad.size:
        row = int(bad[0]) + offset
        what = "NaN or inf" if not finite[bad[0]] else "zero (or overflowing) norm"
        raise ValueError(f"embedding row {row} is invalid: {what}")
    return block / norms[:, None]


def build_index(embeddings: np.ndarray, index_factory: str | None = None) -> tuple[faiss.Index, np.ndarray]:
    """Build the inner-product index over L2-normalised rows; return it and an (N, d) view of the unit rows.

    With the exact (default) index the returned matrix is a view into the index's own storage, so the catalog
    is held once. With an approximate `index_factory` string the unit rows are kept beside the index (the index
    may store them compressed), trained on the catalog itself.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (N, d) array, got shape {embeddings.shape}")
    n, d = embeddings.shape
    if n == 0:
        raise ValueError("embeddings is empty (N == 0): a catalog needs at least one product")
    if d == 0:
        raise ValueError("embeddings have dimension 0")
    if index_factory is None:
        index = faiss.IndexFlatIP(d)
        for start in range(0, n, CHUNK_ROWS):
            index.add(_check_and_normalise(embeddings[start : start + CHUNK_ROWS], start))
        unit = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
        return index, unit
    unit = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, CHUNK_ROWS):
        unit[start : start + CHUNK_ROWS] = _check_and_normalise(embeddings[start : start + CHUNK_ROWS], start)
    index = faiss.index_factory(d, index_factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(unit)
    index.add(unit)
    return index, unit


def _search_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """SearchParameters of the type this index accepts, keeping its own nprobe / efSearch."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


# ---------------------------------------------------------------------------------------------- strategies
# A strategy decides the "similar" part of a round: given the session (its picks, history and unseen bitmap)
# and how many rows it may fill, it returns unseen row indices, best first. The session fills the rest of the
# round with uniform random unseen rows. Strategies that need memory keep it in `session.state`.


def strategy_mean(session: Session, n: int) -> list[int]:
    """The seed's rule: the `n` unseen rows nearest to the exact mean of the picked embeddings."""
    if n <= 0 or not session.picks:
        return []
    query = session.rec.unit[session.picks].mean(axis=0, dtype=np.float64)
    return session.search(query, n)


def strategy_random(session: Session, n: int) -> list[int]:
    """Brute-force baseline: no similar rows, the whole round is random unseen rows."""
    return []


STRATEGIES: dict[str, tuple[Callable[[Session, int], list[int]], bool]] = {
    # name: (function, whether it fills the `similar` slots; False means the whole round is random)
    "mean": (strategy_mean, True),
    "random": (strategy_random, False),
}


def register_strategy(name: str, fn: Callable[[Session, int], list[int]], uses_similar: bool = True) -> None:
    """Add a strategy under `name` so `Recommender(..., strategy=name)` can use it."""
    STRATEGIES[name] = (fn, uses_similar)


# ----------------------------------------------------------------------------------------------- recommender
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
    ) -> None:
        if per_round < 1:
            raise ValueError(f"per_round must be at least 1, got {per_round}")
        if similar < 0 or similar > per_round:
            raise ValueError(f"similar must be between 0 and per_round ({per_round}), got {similar}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        self.per_round = per_round
        self.similar = similar
        self.strategy = strategy
        self.index_factory = index_factory
        self.index, self.unit = build_index(embeddings, index_factory)
        self.n, self.dim = self.unit.shape
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None and nprobe is not None:
            ivf.nprobe = nprobe
        self._seeds = np.random.SeedSequence(seed)
        self._seed_lock = threading.Lock()

    def new_session(self, seed: int | None = None) -> Session:
        """Start a shopper session; same `seed` -> same rounds, None -> drawn from the recommender's seed."""
        if seed is None:
            with self._seed_lock:
                (child,) = self._seeds.spawn(1)
            return Session(self, np.random.default_rng(child))
        return Session(self, np.random.default_rng(seed))


class Session:
    """One shopper's state: picks, rounds shown and an N-bit bitmap of unseen rows. Not shared across shoppers."""

    def __init__(self, rec: Recommender, rng: np.random.Generator) -> None:
        self.rec = rec
        self.rng = rng
        self.picks: list[int] = []
        self.history: list[list[int]] = []  # every round shown, in order
        self.shown: list[int] = []  # the current round
        self.n_similar = 0  # how many of `shown` (at its front) came from the strategy
        self.state: dict = {}  # strategy-owned memory
        self.n_seen = 0
        n = rec.n
        self._unseen_bits = np.zeros((n + 7) // 8, dtype=np.uint8)
        self._unseen_bits[: n // 8] = 0xFF
        if n % 8:
            self._unseen_bits[n // 8] = (1 << (n % 8)) - 1
        self._selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(self._unseen_bits))
        self._params = _search_params(rec.index, self._selector)

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
        """Rows not shown yet."""
        return self.rec.n - self.n_seen

    @property
    def exhausted(self) -> bool:
        """True once every product of the catalog has been shown."""
        return self.n_seen >= self.rec.n

    def is_seen(self, row: int) -> bool:
        """Whether `row` has been shown in this session."""
        return not (self._unseen_bits[row >> 3] >> (row & 7)) & 1

    def search(self, query: np.ndarray, k: int) -> list[int]:
        """The `k` unseen rows with the highest inner product with `query`, best first (exact on a flat index)."""
        k = min(k, self.remaining)
        if k <= 0:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        _, ids = self.rec.index.search(query, k, params=self._params)
        return [int(i) for i in ids[0] if i >= 0]

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
        unseen = np.flatnonzero(np.unpackbits(self._unseen_bits, bitorder="little")[: self.rec.n])
        if taken:
            unseen = unseen[~np.isin(unseen, np.fromiter(taken, dtype=np.int64))]
        return [int(r) for r in self.rng.choice(unseen, size=k, replace=False)]

    def _mark_seen(self, rows: list[int]) -> None:
        for row in rows:
            self._unseen_bits[row >> 3] &= ~np.uint8(1 << (row & 7))
        self.n_seen += len(rows)

    def next_round(self, pick: int | None = None) -> list[int]:
        """Record `pick` (a row of the current round) and return the next round's rows; [] once exhausted."""
        if pick is not None:
            pick = int(pick)
            if pick not in self.shown:
                raise ValueError(f"pick {pick} is not one of the products of the current round {self.shown}")
            self.picks.append(pick)
        rec = self.rec
        fn, uses_similar = STRATEGIES[rec.strategy]
        n_similar = min(rec.similar if uses_similar else 0, self.remaining)
        similar = fn(self, n_similar)[:n_similar]
        rest = self.random_unseen(rec.per_round - len(similar), exclude=set(similar))
        rows = similar + rest
        self._mark_seen(rows)
        self.shown = rows
        self.n_similar = len(similar)
        if rows:
            self.history.append(rows)
        return list(rows)
