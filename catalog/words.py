"""Word search over product names: "sneak" finds "Sneaker", "shoes/red-42" has the words shoes, red and 42.

    index = WordIndex(["shoes/red-42", "Sneaker", ...])   # built once: sorted words, each with its rows
    index.match("red sneakers")                          # -> rows matching the most query words, or none

Used by the app and evaluate.py on catalogs whose model has no text tower (and as "names" search on any): the
words come from each product's id, label and category. Matching is case-insensitive on word prefixes; a query
word that prefixes no word is also tried without a plural ending ("dresses" -> "dress"). A product matches when
it has the most query words of any product (all of them when some product has all). No UI imports here.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+")  # letters and digits; '_', '-', '/', '.', spaces... separate words
MAX_QUERY_WORDS = 16  # a pasted paragraph is searched by its first words, not all of them


def words_of(text: str) -> list[str]:
    """The lower-case words of `text`, in order (case-folded, so 'Straße' and 'STRASSE' meet)."""
    return _WORD.findall(str(text).casefold())


class WordIndex:
    """Rows by word: the sorted vocabulary, and for each word the rows that have it (one CSR array)."""

    def __init__(self, texts: Iterable[str | Sequence[str]]) -> None:
        """`texts`: per product, one string or several (e.g. its id, label and category)."""
        postings: dict[str, list[int]] = {}
        n = 0
        for row, text in enumerate(texts):
            parts = [text] if isinstance(text, str) else text
            for word in {w for part in parts for w in words_of(part)}:
                postings.setdefault(word, []).append(row)
            n = row + 1
        self.n = n
        self.vocab = sorted(postings)
        lengths = np.fromiter((len(postings[w]) for w in self.vocab), dtype=np.int64, count=len(self.vocab))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.rows = np.fromiter(
            (r for w in self.vocab for r in postings[w]), dtype=np.int32, count=int(self.offsets[-1])
        )

    def prefixed(self, prefix: str) -> np.ndarray:
        """Rows having a word that starts with `prefix` (sorted, unique)."""
        lo = bisect_left(self.vocab, prefix)
        hi = bisect_left(self.vocab, prefix + "\U0010ffff", lo)
        if lo == hi:
            return np.zeros(0, dtype=np.int64)
        rows = self.rows[self.offsets[lo] : self.offsets[hi]]
        return np.unique(rows).astype(np.int64) if hi - lo > 1 else rows.astype(np.int64)

    def lookup(self, word: str) -> np.ndarray:
        """Rows for one query word: its prefix matches, else those of its singular ("sneakers", "dresses")."""
        for form in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
            if len(form) >= 2 or form == word:
                rows = self.prefixed(form)
                if rows.size:
                    return rows
        return np.zeros(0, dtype=np.int64)

    def match(self, query: str) -> tuple[np.ndarray, list[str]]:
        """(rows that have the most of the query's words, the query words found in some product).

        No words, or no word found: (empty, []). Words of the query beyond MAX_QUERY_WORDS are ignored.
        """
        words = list(dict.fromkeys(words_of(query)))[:MAX_QUERY_WORDS]
        hits = [(w, self.lookup(w)) for w in words]
        hits = [(w, rows) for w, rows in hits if rows.size]
        if not hits:
            return np.zeros(0, dtype=np.int64), []
        if len(hits) == 1:
            return hits[0][1], [hits[0][0]]
        rows, counts = np.unique(np.concatenate([rows for _, rows in hits]), return_counts=True)
        return rows[counts == counts.max()], [w for w, _ in hits]
