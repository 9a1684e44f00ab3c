"""Exact inner-product search from 8-bit codes: a quarter of the bytes of float32 per scan, the float32 answer.

Each dimension j of the unit rows is cut into 255 equal steps between its smallest and largest value over the
whole catalog, so a row's code c (one byte a dimension) puts every x_j within half a step of its centre
x^_j = lo_j + (c_j + 0.5) * step_j. The query is cut too: w_j = q_j * step_j is rounded to a whole multiple u_j
of lam = max|w| / 127, so FAISS scores every row with its integer kernel (QT_8bit_direct_signed), sum_j u_j *
(c_j - 128), exactly. From those numbers,

    <q, x> = a0 + lam * S(x) + sum_j r_j (c_j - 127.5) + <q, x - x^>        (r = w - lam * u, a0 a constant)

so |<q, x> - (a0 + lam * S(x))| <= eps(q): the two sums are bounded dimension by dimension (half a step; at most
127.5 codes away from the middle) and, tighter where it is, by Cauchy-Schwarz with the largest such norms
measured over the catalog at build time; the float32 rounding of the exact score adds its own bound. A search
takes the m best rows by code, scores them exactly with FAISS's float32 kernel, and is done when the k-th exact
score beats the m-th code score by more than eps: no row left out can reach it. Otherwise m grows and it scans
again. Ties are broken toward the lower row, as FAISS's flat index does.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

from engine.rows import CHUNK_ROWS, UnitRows, read_blocks

SHARD_MIN_ROWS = 1 << 18  # below this, one thread scans all the codes; above, the scan is split over threads
FIRST_CANDIDATES = 64  # fewest rows taken by code in a first scan, beyond k
GROWTH = 8  # how much the candidate count grows when the first scan could not prove its answer
_U32 = 2.0**-24  # float32 unit roundoff


def _codes(
    block: np.ndarray, lo: np.ndarray, inv_step: np.ndarray, step: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Codes of float32 unit rows (0..255; FAISS's signed layout reads them as c - 128), computed in float32, and
    the block's largest ||x - x^|| and ||c - 127.5|| (float32 sums: callers add their rounding margins)."""
    t = (block - lo) * inv_step
    np.floor(t, out=t)
    np.clip(t, 0, 255, out=t)
    codes = t.astype(np.uint8)
    mid = t - 127.5
    mid_norm = float(np.sqrt(np.einsum("ij,ij->i", mid, mid)).max())
    t += 0.5
    t *= step
    t += lo
    np.subtract(block, t, out=t)
    return codes, float(np.sqrt(np.einsum("ij,ij->i", t, t)).max()), mid_norm


class ExactSQ8:
    """8-bit codes of N unit rows, split in shards scanned in parallel; `search` returns the exact float32 top-k."""

    def __init__(self, rows: UnitRows, threads: int | None = None) -> None:
        n, d = rows.shape
        self.rows, self.n, self.dim = rows, n, d
        lo = np.full(d, np.inf, dtype=np.float32)
        hi = np.full(d, -np.inf, dtype=np.float32)
        for _, block in read_blocks(rows.chunks):  # pass 1: each dimension's range over the whole catalog
            np.minimum(lo, block.min(axis=0), out=lo)
            np.maximum(hi, block.max(axis=0), out=hi)
        self.lo = lo.astype(np.float64)
        self.step = (hi.astype(np.float64) - self.lo) / 255
        self.maxabs = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
        if threads is None:
            threads = (os.cpu_count() or 1) if n >= SHARD_MIN_ROWS else 1
        self.starts = sorted({n * i // max(threads, 1) // 8 * 8 for i in range(max(threads, 1))})  # bitmap bytes
        stops = self.starts[1:] + [n]
        self.shards = []
        views = []
        for start, stop in zip(self.starts, stops):
            index = faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
            )
            index.codes.resize((stop - start) * d)  # written in place below: no growing copies
            index.ntotal = stop - start
            self.shards.append(index)
            views.append((start, stop, faiss.rev_swig_ptr(index.codes.data(), (stop - start) * d).reshape(-1, d)))
        err_norm = mid_norm = 0.0
        lo32, step32 = lo, self.step.astype(np.float32)
        inv32 = np.divide(1, self.step, out=np.zeros(d), where=self.step > 0).astype(np.float32)
        for offset, block in read_blocks(rows.chunks, CHUNK_ROWS // 16):  # pass 2: codes, written in place
            codes, block_err, block_mid = _codes(block, lo32, inv32, step32)
            err_norm, mid_norm = max(err_norm, block_err), max(mid_norm, block_mid)
            for start, stop, view in views:
                a, b = max(offset, start), min(offset + len(block), stop)
                if a < b:
                    view[a - start : b - start] = codes[a - offset : b - offset]
        # The codes came from float32 arithmetic: a value within ~1e-5 of a step's edge may land in the next
        # step, and the norms were summed in float32. Widen each measure by more than those roundings can reach:
        # the step's float32 rounding over 255.5 steps, 8 roundings of |x| a component, d * u in a sum.
        self.half_step = self.step / 2 * (1 + 1e-3)  # per dimension: |x_j - x^_j| <= half_step_j
        slack = 255.5 * float(np.linalg.norm(step32.astype(np.float64) - self.step)) + np.sqrt(d) * 8 * _U32 * float(
            self.maxabs.max()
        )
        self.err_norm = err_norm * (1 + 2 * d * _U32) + slack  # largest ||x - x^|| over the catalog
        self.mid_norm = mid_norm * (1 + 2 * d * _U32)  # largest ||c - 127.5|| over the catalog
        self._pool = ThreadPoolExecutor(len(self.shards)) if len(self.shards) > 1 else None
        self.scans = 0  # scans made, and searches answered: their ratio says how often a first scan fell short
        self.searches = 0
        self._needed = 0  # running estimate of the candidates a search needs (sizes the first scan)
        self._count_lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of codes held in memory."""
        return self.n * self.dim

    def _query(self, q: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """(integer query for FAISS, lam, a0 offset, eps bound) of a float32 query."""
        q64 = q.astype(np.float64)
        w = q64 * self.step
        lam = float(np.abs(w).max()) / 127
        u = np.rint(w / lam) if lam > 0 else np.zeros_like(w)
        r = w - lam * u
        a0 = float(q64 @ self.lo + 128.5 * w.sum() - 0.5 * r.sum())
        abs_q = np.abs(q64)
        err_q = min(127.5 * float(np.abs(r).sum()), float(np.linalg.norm(r)) * self.mid_norm)
        err_x = min(float(abs_q @ self.half_step), float(np.linalg.norm(q64)) * self.err_norm)
        gamma = self.dim * _U32 / (1 - self.dim * _U32)
        err_f32 = gamma * float(abs_q @ self.maxabs)  # the float32 exact score's own rounding
        eps = (err_q + err_x + err_f32) * (1 + 1e-6) + 1e-9 * (1 + abs(a0) + float(abs_q.sum()))
        return u.astype(np.float32).reshape(1, -1), lam, a0, eps

    def _scan(self, u: np.ndarray, m: int, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The m best rows by code among those whose bit is set (integer scores, best first, ids global)."""

        def one(i: int) -> tuple[np.ndarray, np.ndarray]:
            start = self.starts[i]
            view = bits[start // 8 :]
            sel = faiss.IDSelectorBitmap(self.shards[i].ntotal, faiss.swig_ptr(view))
            scores, ids = self.shards[i].search(u, m, params=faiss.SearchParameters(sel=sel))
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep] + start

        parts = list(self._pool.map(one, range(len(self.shards)))) if self._pool else [one(0)]
        scores = np.concatenate([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        order = np.lexsort((ids, -scores))[:m]
        return scores[order], ids[order]

    def scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact float32 inner products of `q` with the unit rows `rows` (to rank a few rows without a scan)."""
        return self.rows.scores(q, rows)

    def search(self, q: np.ndarray, k: int, bits: np.ndarray, available: int) -> tuple[np.ndarray, np.ndarray]:
        """(float32 scores, rows) of the k rows with set bits nearest `q`: the flat float32 index's answer (best
        first, ties to the lower row), as `FaissIndex.search` (faiss_index.py) gives it, from a quarter of the bytes."""
        q = np.ascontiguousarray(q, dtype=np.float32).ravel()
        k = min(k, available)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        u, lam, a0, eps = self._query(q)
        m = min(available, k + max(FIRST_CANDIDATES, 2 * self._needed))
        scans = 0
        while True:
            scans += 1
            code_scores, ids = self._scan(u, m, bits)
            exact = self.rows.scores(q, ids)
            order = np.lexsort((ids, -exact))[:k]
            kth = float(exact[order[-1]]) if len(order) else np.inf
            if len(ids) >= available or kth > a0 + lam * float(code_scores[-1]) + eps or m >= available:
                break
            m = min(available, m * GROWTH)
        # how many candidates this query really needed: the next first scan takes about twice that
        needed = int(np.count_nonzero(a0 + lam * code_scores.astype(np.float64) + eps >= kth))
        with self._count_lock:
            self.scans += scans
            self.searches += 1
            self._needed = int(0.8 * self._needed + 0.2 * needed)
        return exact[order], ids[order]
