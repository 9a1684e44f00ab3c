"""Full-text search over every text a product has, on SQLite's FTS5 (in Python's standard library).

    index = TextIndex.open(ds, folder)        # built once per dataset (an on-disk SQLite file), then only read
    found = index.search("black shoes", synonyms)
    found.rows, found.count                   # the matching rows, best first (BM25); how many match

What is searched: title, tags, category/type, brand/vendor, options, attributes, id, description, and any other
text column of a plain table (never links, picture paths or the currency). Ranking is FTS5's BM25 with the
title, tags and category weighing more than the description. Words match as prefixes ("sneak" finds Sneaker),
plural and singular meet (the Porter stemmer: "shoes" ~ "shoe"), and accents fold ("creme" finds Crème). An
owner's synonyms (`read_synonyms`) widen a word: "shoes: sneaker, sandal, ankle boot". Why FTS5 and not tantivy
or a hand-written index: docs/search.md.

Typed text is untrusted: it is cut to MAX_QUERY_WORDS words, and each word reaches FTS5 quoted, as a string, never
as query syntax. Each thread reads through its own read-only connection to the finished (immutable) file: no
lock is shared between shoppers. No UI imports here.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("catalog")
INDEX_VERSION = "fts1"  # in the index file's name: bump when documents or the table are made differently
MAX_QUERY_WORDS = 16  # a pasted paragraph is searched by its first words, not all of them
MAX_FIELD_CHARS = 20_000  # of one field of one product (a description is rarely longer than 5,000)
RANKED = 500  # at most this many matches are ordered by BM25 (its cost grows with the rows it scores; see _by_rank)
HASH_BYTES = 64 << 20  # FTS5's buffer of terms while building: fewer, larger segments (faster) in bounded memory
BATCH = 2000  # products read and written at a time while building (bounded memory)
SYNONYM_FILE_BYTES = 1 << 20
MAX_SYNONYMS = 50  # alternatives per word
# The table's columns, each with the dataset columns it takes its text from and its BM25 weight.
FIELDS: dict[str, tuple[tuple[str, ...], float]] = {
    "title": (("title", "name"), 10.0),
    "tags": (("tags",), 6.0),
    "category": (("category", "label", "type", "product_type"), 6.0),
    "brand": (("brand", "vendor"), 4.0),
    "options": (("options",), 3.0),
    "attributes": (("attributes",), 3.0),
    "id": (("id",), 2.0),
    "other": ((), 1.0),  # every other text column of a plain table
    "description": (("description", "body"), 1.0),
}
NOT_TEXT = re.compile(r"url|link|image|picture|photo|path|src|currency|embedding|appearance", re.IGNORECASE)
NAMES = "{" + " ".join(f for f in FIELDS if f != "description") + "}"  # FTS5's filter: every column but one
_WORD = re.compile(r"[^\W_]+")  # letters and digits, as FTS5's unicode61 tokenizer splits text


def words_of(text: str) -> list[str]:
    """The lower-case words of `text`, in order, as the index splits them ('shoes/red-42' -> shoes, red, 42)."""
    return _WORD.findall(str(text).casefold())


def fold(word: str) -> str:
    """A word without accents and plural ending, to compare synonym keys ('Crèmes' -> 'creme')."""
    word = "".join(c for c in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(c))
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ies"):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


# ---------------------------------------------------------------------------------------------- synonyms
class SynonymError(ValueError):
    """A synonyms file that cannot be read, with the line that is wrong."""


def read_synonyms(path: str | os.PathLike) -> dict[str, list[str]]:
    """An owner's synonyms file: one `word: alternative, other alternative, ...` per line ('#' starts a comment).
    Returns {folded word: alternatives}; a SynonymError names the line that is wrong."""
    path = Path(path)
    try:
        if path.stat().st_size > SYNONYM_FILE_BYTES:
            raise SynonymError(f"{path} is larger than {SYNONYM_FILE_BYTES >> 10} KB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SynonymError(f"cannot read the synonyms file {path}: {exc}") from None
    out: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, rest = line.partition(":")
        keys = words_of(key)
        alternatives = [" ".join(words_of(a)) for a in rest.split(",") if words_of(a)]
        if not sep or len(keys) != 1 or not alternatives:
            raise SynonymError(f"{path} line {number}: write 'word: alternative, another' (one word before ':')")
        have = out.setdefault(fold(keys[0]), [])
        have.extend(a for a in alternatives if a not in have)
        del have[MAX_SYNONYMS:]
    return out


# ---------------------------------------------------------------------------------------------- building
def document_columns(ds: datasets.Dataset) -> dict[str, list[str]]:
    """Which dataset columns feed each field of the index: {field: [columns]} (text columns only)."""
    import datasets

    def is_text(feature) -> bool:
        if isinstance(feature, datasets.ClassLabel):
            return True
        if isinstance(feature, (datasets.Sequence, datasets.List, datasets.LargeList)):
            return is_text(feature.feature)
        return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")

    text = [c for c in ds.column_names if is_text(ds.features[c])]
    out = {name: [c for c in columns if c in text] for name, (columns, _) in FIELDS.items()}
    named = {c for columns in out.values() for c in columns}
    out["other"] = [c for c in text if c not in named and not NOT_TEXT.search(c)]
    return out


def _as_text(value, names: list[str] | None) -> str:
    """One field value as text: lists joined, class labels by name, None as ''."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_as_text(v, names) for v in value)
    if names is not None and isinstance(value, int):
        return names[value] if 0 <= value < len(names) else ""
    return str(value)[:MAX_FIELD_CHARS]


def _documents(ds: datasets.Dataset, columns: dict[str, list[str]]):
    """(row, field texts...) per product, read BATCH rows at a time."""
    import datasets

    used = [c for cs in columns.values() for c in cs]
    labels = {}
    for c in used:
        feature = ds.features[c]
        feature = getattr(feature, "feature", feature)
        labels[c] = feature.names if isinstance(feature, datasets.ClassLabel) else None
    if not used:
        yield from ((row, *([""] * len(FIELDS))) for row in range(len(ds)))
        return
    row = 0
    for batch in ds.select_columns(used).iter(batch_size=BATCH):
        for i in range(len(batch[used[0]])):
            yield (
                row,
                *(
                    " \n ".join(_as_text(batch[c][i], labels[c]) for c in columns[name])[: 4 * MAX_FIELD_CHARS]
                    for name in FIELDS
                ),
            )
            row += 1


def build_index(ds: datasets.Dataset, path: Path) -> None:
    """Write the FTS5 index of `ds`'s products to `path`, atomically (built beside it, then moved in place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    columns = document_columns(ds)
    con = sqlite3.connect(tmp, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(
            f"CREATE VIRTUAL TABLE docs USING fts5({', '.join(FIELDS)}, content='', "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )
        for key, value in (("automerge", 0), ("hashsize", HASH_BYTES)):  # merged once, by 'optimize' below
            con.execute("INSERT INTO docs(docs, rank) VALUES(?, ?)", (key, value))
        con.execute("BEGIN")
        placeholders = ", ".join("?" * (len(FIELDS) + 1))
        con.executemany(
            f"INSERT INTO docs(rowid, {', '.join(FIELDS)}) VALUES ({placeholders})", _documents(ds, columns)
        )
        con.execute("INSERT INTO docs(docs) VALUES('optimize')")
        con.execute("COMMIT")
    finally:
        con.close()
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- searching
@dataclass
class Found:
    """A search's answer: the matching rows, best first; how many; the query words that matched something."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    words: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.rows.size)


def _term(word: str) -> str:
    """A query word or phrase as FTS5 reads it: quoted (never syntax); a single word of 3+ letters as a prefix."""
    quoted = '"' + word.replace('"', '""') + '"'
    return quoted + "*" if " " not in word and len(word) >= 3 else quoted


WEIGHTS = ", ".join(str(weight) for _, weight in FIELDS.values())


class TextIndex:
    """The FTS5 index of one catalog, read-only; one SQLite connection per thread that searches."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.search("")  # opens this thread's connection: a missing or broken file fails here, not in a round

    @classmethod
    def open(cls, ds: datasets.Dataset, folder: str | os.PathLike) -> TextIndex:
        """The index of `ds`, built into `folder` the first time (named by the dataset's fingerprint)."""
        path = Path(folder) / f"{ds._fingerprint}-{len(ds)}-{INDEX_VERSION}.sqlite"
        if not path.exists():
            t = time.perf_counter()
            build_index(ds, path)
            log.info(
                "search index of %d products built in %.1f s (%.1f MB): %s",
                len(ds),
                time.perf_counter() - t,
                path.stat().st_size / 2**20,
                path,
            )
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            uri = f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1"
            con = self._local.con = sqlite3.connect(uri, uri=True)
            con.execute("PRAGMA mmap_size=268435456")  # pages shared by every thread's connection
        return con

    def _rows(self, expression: str) -> np.ndarray:
        """Every row matching the FTS5 `expression`, in catalog order (read as one string: no Python object per row)."""
        sql = "SELECT group_concat(rowid, ' ') FROM docs WHERE docs MATCH ?"
        (text,) = self._connection().execute(sql, (expression,)).fetchone()
        return np.fromstring(text, sep=" ", dtype=np.int64) if text else np.zeros(0, dtype=np.int64)

    def _best(self, expression: str) -> np.ndarray:
        """The RANKED rows matching `expression` with the best BM25 (title, tags and category weigh most)."""
        sql = f"SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs, {WEIGHTS}) LIMIT {RANKED}"
        return np.array([r for (r,) in self._connection().execute(sql, (expression,))], dtype=np.int64)

    def search(self, text: str, synonyms: dict[str, list[str]] | None = None) -> Found:
        """The products matching `text`'s words (each word, or one of its synonyms; prefixes, stems, folded
        accents), best first: those with the words themselves by BM25, then those with synonyms only. Without a
        product having all the words, those having the most of them."""
        words = list(dict.fromkeys(words_of(text)))[:MAX_QUERY_WORDS]
        if not words:
            self._connection()
            return Found()
        widened = {w: [_term(w), *(_term(a) for a in (synonyms or {}).get(fold(w), []))] for w in words}
        literal = {w: _term(w) for w in words}
        wide = {w: f"({' OR '.join(terms)})" for w, terms in widened.items()}
        found = self._ranked(literal, wide, words)
        if found.size or len(words) == 1:
            return Found(found, words if found.size else [])
        sets = {w: self._rows(wide[w]) for w in words}
        hits = [w for w in words if sets[w].size]  # the words that match anything
        found = self._ranked(literal, wide, hits)
        if found.size or len(hits) < 2:
            return Found(found, hits if found.size else [])
        rows, counts = np.unique(np.concatenate([sets[w] for w in hits]), return_counts=True)
        most = rows[counts == counts.max()]  # no product has them all: those having the most of them, best first
        found = self._ranked(literal, wide, hits, " OR ")
        return Found(found[np.isin(found, most)], hits)

    def _ranked(self, literal: dict, wide: dict, words: list[str], join: str = " AND ") -> np.ndarray:
        """Rows matching `words` joined by `join`: those with the words themselves first, then those found through
        synonyms; within each, the RANKED best by BM25 first and the rest in catalog order."""
        if not words:
            return np.zeros(0, dtype=np.int64)
        parts = [self._by_rank(join.join(literal[w] for w in words))]
        if any(wide[w] != f"({literal[w]})" for w in words):
            parts.append(self._by_rank(join.join(wide[w] for w in words)))
        rows = np.concatenate(parts)
        if len(parts) > 1 and parts[0].size:
            _, first = np.unique(rows, return_index=True)
            rows = rows[np.sort(first)]
        return rows

    def _by_rank(self, expression: str) -> np.ndarray:
        """Rows matching the FTS5 `expression`, best first. BM25 scores every row it orders (a few microseconds
        each), so it orders at most RANKED: all matches when there are no more; else those with the words in a
        name column (title, tags, category...) when there are no more, then the rest; else all in catalog order
        (the strategy then orders them by what the shopper picks)."""
        every = self._rows(expression)
        if every.size <= 1:
            return every
        if every.size <= RANKED:
            return self._best(expression)
        names = f"{NAMES} : ({expression})"
        (count,) = self._connection().execute("SELECT count(*) FROM docs WHERE docs MATCH ?", (names,)).fetchone()
        if not count or count > RANKED:
            return every
        best = self._best(names)
        return np.concatenate([best, every[~np.isin(every, best)]])
