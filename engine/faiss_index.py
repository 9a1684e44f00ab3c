"""A FAISS index over the float32 unit rows, searched like `ExactSQ8` (sq8.py): `search(query, k, bits, available)`.

So a session searches the same way whichever the recommender holds: the flat index (exact) or an `index_factory`
one (approximate), each row kept or skipped by its bit in a per-search bitmap (FAISS's `IDSelectorBitmap`).
"""

from __future__ import annotations

import faiss
import numpy as np


def search_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """SearchParameters of the type this index accepts, keeping its own nprobe / efSearch."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


class FaissIndex:
    """A FAISS inner-product index and the (N, d) unit rows it was built from, with ExactSQ8's search methods."""

    def __init__(self, index: faiss.Index, unit: np.ndarray) -> None:
        self.index, self.unit, self.n = index, unit, len(unit)

    def search(self, q: np.ndarray, k: int, bits: np.ndarray, available: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 scores, rows) of the k rows with set bits nearest `q`, best first, ties to the lower row."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
        k = min(k, available)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        selector = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))  # kept alive while `params` points to it
        params = search_params(self.index, selector)
        m = min(k + 1, available)  # one more, to see whether the k-th place is tied
        while True:
            scores, ids = self.index.search(q, m, params=params)
            keep = ids[0] >= 0
            scores, ids = scores[0][keep], ids[0][keep]
            # FAISS's heap settles a tie at the k-th place by scan order; widen until the tie is all in hand
            if len(ids) <= k or scores[-1] < scores[k - 1] or m >= available:
                break
            m = min(m * 4, available)
        order = np.lexsort((ids, -scores))[:k]
        return scores[order], ids[order]

    def scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of `q` with the unit rows `rows` (to rank a few rows without a scan)."""
        return self.unit[rows] @ np.ravel(q)
