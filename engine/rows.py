"""The catalog's embedding rows where they already are: in memory, in an `np.memmap`, or in a dataset's Arrow file.

A catalog of 10M x 768 float32 rows is 31 GB: more than this machine's memory, so the rows are read where they
lie, a block at a time, and never copied whole. `read_blocks` walks them in bounded blocks; `UnitRows` hands out
unit-length rows by index, normalised as they are read; `drop_pages` lets the kernel take back the pages of a
file-mapped block once it has been read (they stay in the page cache, but leave this process's RSS).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np

CHUNK_ROWS = 65536  # most rows validated/normalised/added at a time
CHUNK_BYTES = 16 << 20  # and at most this many bytes of float32 a block, bounding the temporary copies


def check_and_normalise(block: np.ndarray, offset: int = 0) -> np.ndarray:
    """Return float32 unit rows of `block`; a zero/NaN/inf row is a ValueError naming its row index."""
    block = np.asarray(block, dtype=np.float32)
    finite = np.isfinite(block).all(axis=1)
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(block, axis=1)
    odd = np.flatnonzero(finite & ((norms == 0) | ~np.isfinite(norms)))
    if odd.size:  # the square of a very large or very small row over- or underflows: measure it scaled
        block = block.copy()
        peak = np.abs(block[odd]).max(axis=1, keepdims=True)
        block[odd] = block[odd] / np.where(peak > 0, peak, 1)
        norms[odd] = np.linalg.norm(block[odd], axis=1)
    bad = np.flatnonzero(~finite | (norms == 0))
    if bad.size:
        row = int(bad[0]) + offset
        what = "NaN or inf" if not finite[bad[0]] else "all zeros"
        raise ValueError(f"embedding row {row} is invalid: {what}")
    return block / norms[:, None]


def unit_length(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Each row of `x` divided by its L2 norm (a row of zeros stays zeros); in place with `out=x`."""
    return np.divide(x, np.maximum(np.linalg.norm(x, axis=1), 1e-12)[:, None], out=out)


def as_chunks(embeddings) -> list[np.ndarray]:
    """The embeddings as a list of 2-D arrays of one width: one array (or memmap), or a dataset's Arrow blocks."""
    if isinstance(embeddings, UnitRows):
        return embeddings.chunks
    if isinstance(embeddings, (list, tuple)) and embeddings and all(hasattr(c, "shape") for c in embeddings):
        chunks = list(embeddings)
    else:
        chunks = [np.asarray(embeddings)]
    for c in chunks:
        if c.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D (N, d) array, got shape {c.shape}")
    if len({c.shape[1] for c in chunks}) > 1:
        raise ValueError(f"embedding blocks differ in width: {sorted({c.shape[1] for c in chunks})}")
    return chunks


# ---------------------------------------------------------------------------------------------- page release
_MADV_SEQUENTIAL = 2
_MADV_DONTNEED = 4
_PAGE = 4096
try:
    _madvise = ctypes.CDLL(None, use_errno=True).madvise
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
except (OSError, AttributeError):  # not Linux/glibc: pages are simply left to the kernel
    _madvise = None


def file_spans(arrays: Sequence[np.ndarray]) -> list[tuple[str, int, int] | None]:
    """For each array lying wholly in one read-only or shared file mapping: (path, inode, offset of its first
    byte in the file); None for anything else (anonymous or privately written memory, whose pages must be kept)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return [None] * len(arrays)
    maps: list[list] = []  # [lo, hi, path, inode, file offset - address]
    for line in sorted(lines, key=lambda ln: int(ln.split("-", 1)[0], 16)):
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[4] == "0" or not (parts[1][3] == "s" or parts[1][1] != "w"):
            continue
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        entry = [lo, hi, parts[5].strip(), int(parts[4]), int(parts[2], 16) - lo]
        if maps and maps[-1][1] == lo and maps[-1][2:] == entry[2:]:  # one mapping split by madvise
            maps[-1][1] = hi
        else:
            maps.append(entry)
    out: list[tuple[str, int, int] | None] = []
    for a in arrays:
        lo = a.__array_interface__["data"][0] if a.size else 0
        hit = next((m for m in maps if a.size and m[0] <= lo and lo + a.nbytes <= m[1]), None)
        out.append((hit[2], hit[3], lo + hit[4]) if hit else None)
    return out


def file_mapped(arrays: Sequence[np.ndarray]) -> list[bool]:
    """For each array: does it lie wholly in a read-only or shared file mapping (dropping its pages loses nothing)?"""
    return [span is not None for span in file_spans(arrays)]


def _advise(block: np.ndarray, advice: int, whole_pages: bool) -> None:
    if _madvise is None or not block.size:
        return
    lo = block.__array_interface__["data"][0]
    start = -(-lo // _PAGE) * _PAGE if whole_pages else lo // _PAGE * _PAGE
    end = (lo + block.nbytes) // _PAGE * _PAGE if whole_pages else -(-(lo + block.nbytes) // _PAGE) * _PAGE
    if end > start:
        _madvise(start, end - start, advice)


def drop_pages(block: np.ndarray) -> None:
    """Let the kernel unmap the whole pages of a file-mapped block (call only where `file_mapped` said True)."""
    _advise(block, _MADV_DONTNEED, whole_pages=True)


def read_blocks(chunks: Sequence[np.ndarray], rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, float32 unit rows) over all rows in order, `rows` (at most CHUNK_BYTES) at a time, each validated;
    a file-mapped block's pages are dropped once it has been read, so a pass over a big file leaves RSS flat."""
    offset = 0
    rows = max(1, min(rows, CHUNK_BYTES // (4 * max(chunks[0].shape[1], 1))))
    for chunk, mapped in zip(chunks, file_mapped(chunks)):
        if mapped:
            _advise(chunk, _MADV_SEQUENTIAL, whole_pages=False)
        for start in range(0, len(chunk), rows):
            block = chunk[start : start + rows]
            yield offset + start, check_and_normalise(block, offset + start)
            if mapped:
                drop_pages(block)
        offset += len(chunk)


class UnitRows:
    """Unit-length float32 rows of (N, d) embeddings that stay where they are; index it like an array to read rows.

    `rows[i]`, `rows[a:b]` and `rows[list_or_array]` return new float32 arrays, normalised exactly as a block of
    `check_and_normalise` would be (row by row, so the same numbers whatever else is read with them). Rows of a
    file-mapped array (np.memmap, a dataset's Arrow file) are read from the file itself, so serving for days does
    not creep the RSS up to the file's size.
    """

    def __init__(self, embeddings) -> None:
        self.chunks = as_chunks(embeddings)
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        self.shape = (int(self.starts[-1]), int(self.chunks[0].shape[1]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self._files = [self._open(chunk, span) for chunk, span in zip(self.chunks, file_spans(self.chunks))]

    @staticmethod
    def _open(chunk: np.ndarray, span: tuple[str, int, int] | None) -> tuple[int, int] | None:
        """(fd, file offset) to read a file-mapped chunk's rows with pread, or None to read it through memory."""
        if span is None or not chunk.flags.c_contiguous:
            return None
        path, inode, offset = span
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # e.g. the file was replaced or unlinked since it was mapped
            return None
        if os.fstat(fd).st_ino != inode:
            os.close(fd)
            return None
        return fd, offset

    def __del__(self) -> None:
        for f in getattr(self, "_files", []):
            if f is not None:
                os.close(f[0])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            return self._gather(np.array([key], dtype=np.int64))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self._gather(np.arange(start, stop, step))
            return self._range(start, stop)
        return self._gather(np.asarray(key, dtype=np.int64).ravel()).reshape(*np.shape(key), self.shape[1])

    def _range(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop, read through the mapping (a pass: sequential), whose pages are then dropped."""
        parts = []
        for i, chunk in enumerate(self.chunks):
            lo, hi = max(start, self.starts[i]), min(stop, self.starts[i + 1])
            if lo < hi:
                block = chunk[lo - self.starts[i] : hi - self.starts[i]]
                parts.append(np.array(block))
                if self._files[i] is not None:
                    drop_pages(block)
        if not parts:
            return np.zeros((0, self.shape[1]), np.float32)
        return check_and_normalise(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Rows by index: a file-backed chunk's rows are read with pread, so serving never maps the file in.

        (Reading them through the mapping would map whole large folios, ~2 MB of RSS per 3 KB row.)
        """
        n = self.shape[0]
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range [0, {n})")
        rows = np.where(rows < 0, rows + n, rows)
        raw = np.empty((rows.size, self.shape[1]), dtype=self.chunks[0].dtype)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for c in np.unique(which):
            at = np.flatnonzero(which == c)
            local = rows[at] - self.starts[c]
            chunk, source = self.chunks[c], self._files[c]
            if source is None:
                raw[at] = chunk[local]
                continue
            fd, offset = source
            row_bytes = chunk.strides[0]
            for i, r in zip(at.tolist(), local.tolist()):
                if os.preadv(fd, [raw[i].view(np.uint8)], offset + r * row_bytes) != row_bytes:
                    raise OSError(f"short read of embedding row {r + self.starts[c]}")
        return check_and_normalise(raw)

    def scores(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of the float32 `query` with unit rows `rows`, by FAISS's own kernel (bit for bit what
        a flat FAISS index would report for them)."""
        block = np.ascontiguousarray(self[rows])
        query = np.ascontiguousarray(query, dtype=np.float32).ravel()
        out = np.empty(len(block), dtype=np.float32)
        ids = np.arange(len(block), dtype=np.int64)
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(out),
            faiss.swig_ptr(query),
            faiss.swig_ptr(block),
            faiss.swig_ptr(ids),
            self.shape[1],
            1,
            len(block),
        )
        return out


class Bitmap:
    """A set of catalog rows as n bits, little-endian within each byte: the layout of FAISS's IDSelectorBitmap, so
    a scan skips the rows whose bit is clear without a Python loop. `bits` is the uint8 array itself."""

    def __init__(self, n: int, bits: np.ndarray | None = None) -> None:
        self.n = n
        if bits is None:  # every row in the set
            bits = np.zeros((n + 7) // 8, dtype=np.uint8)
            bits[: n // 8] = 0xFF
            if n % 8:
                bits[n // 8] = (1 << (n % 8)) - 1
        self.bits = bits

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Bitmap:
        """The rows where the (n,) bool `mask` is True."""
        return cls(len(mask), np.packbits(mask, bitorder="little"))

    def copy(self) -> Bitmap:
        return Bitmap(self.n, self.bits.copy())

    def has(self, row: int) -> bool:
        """Whether `row` is in the set."""
        return bool((self.bits[row >> 3] >> (row & 7)) & 1)

    def has_each(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) bool: which of the int64 `rows` are in the set."""
        return (self.bits[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1 == 1

    def remove(self, rows) -> None:
        """Take `rows` (ints, or an int64 array of distinct rows) out of the set."""
        if isinstance(rows, np.ndarray):
            np.bitwise_and.at(self.bits, rows >> 3, ~(np.uint8(1) << (rows & 7).astype(np.uint8)))
            return
        for row in rows:
            self.bits[row >> 3] &= ~np.uint8(1 << (row & 7))

    def add(self, rows: np.ndarray) -> None:
        """Put the int64 `rows` (distinct) into the set."""
        np.bitwise_or.at(self.bits, rows >> 3, np.uint8(1) << (rows & 7).astype(np.uint8))

    def mask(self) -> np.ndarray:
        """(n,) bool: True for the rows in the set."""
        return np.unpackbits(self.bits, bitorder="little", count=self.n).astype(bool)
