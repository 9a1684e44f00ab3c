"""The hunt log: one JSON Lines record per ended hunt, for insights.py. No UI imports here.

A record says what a shopper was shown and did, and how the hunt ended, with nothing that identifies a person
(no IP, user agent, cookie or session key; a random hunt id; the time to the minute):

    {"hunt": "3f2a...", "time": "2026-12-01T06:44Z", "catalog": {"name", "rows", "model"}, "strategy": "bayes",
     "strategy_from": "default" | "compare" | "shopper", "target": id or null,
     "rounds": [{"shown": [ids], "pick": id or null, "words": text or null, "matches": n or null}, ...],
     "found": id or null, "ended": "found" | "started_over" | "abandoned"}

A typed search that matched nothing is an entry of its own with "shown": [] (the gallery did not change); the
rounds to find a product are the galleries shown up to the one it was picked from. `HuntLog` is the one writer
of an app: records are written whole, one `write` each, flushed, under one lock; the file rotates at 64 MB
(hunts.jsonl -> hunts.1.jsonl, ...); a full disk or a read-only path is one warning, and the shop keeps serving.
`read_records` streams a log back, skipping (and counting) a torn last line.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("huntlog")
ROTATE_BYTES = 64 << 20
ABANDON_GRACE_S = float(os.environ.get("HUNT_LOG_GRACE_S", "600"))  # a closed tab's hunt waits this long for a reload


def new_hunt_id() -> str:
    """A random hunt id (16 hex digits): it ties a hunt's record together and to nothing else."""
    return secrets.token_hex(8)


def log_file_name(catalog: str) -> str:
    """The default log's file name for a catalog id (see catalog.catalog_id), safe on any file system: letters,
    digits, '-' and '_' as they are, a Hub id's '/' as '--' ("USER--my-shop-embeddings.jsonl"); any other
    character, or a name cut at 100 characters, adds a hash of the whole id so two catalogs never share a file."""
    safe = catalog.replace("/", "--") if catalog.count("/") == 1 and "--" not in catalog else catalog
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", safe)[:100] or "catalog"
    if cleaned != safe:
        cleaned += "-" + hashlib.sha256(catalog.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{cleaned}.jsonl"


def minute_now() -> str:
    """The UTC time to the minute, as records carry it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def round_entries(
    history: list[list[int]],
    picks: dict[int, int],
    searches: dict[int, list[tuple[str, int | None]]],
    product_id: Callable[[int], str],
) -> list[dict]:
    """The `rounds` of a record: per gallery shown (1-based round r: `history[r-1]`), its pick and the words that
    ended it; a search that matched nothing follows as its own entry with nothing shown. `searches[r]` lists the
    (words, matches) typed during round r, in order; `product_id(row)` names a product."""
    entries = []
    for r, shown in enumerate(history, start=1):
        typed = searches.get(r, [])
        hits = [(w, m) for w, m in typed if m != 0]
        words, matches = hits[-1] if hits else (None, None)
        pick = picks.get(r)
        entries.append(
            {
                "shown": [product_id(row) for row in shown],
                "pick": None if pick is None else product_id(pick),
                "words": words,
                "matches": matches,
            }
        )
        entries += [{"shown": [], "pick": None, "words": w, "matches": 0} for w, m in typed if m == 0]
    return entries


def rounds_to_find(record: dict) -> int | None:
    """The galleries shown up to the one the found product was picked from (None when nothing was found)."""
    if record.get("found") is None:
        return None
    shown = 0
    last_pick = None
    for entry in record.get("rounds") or []:
        if entry.get("shown"):
            shown += 1
            if entry.get("pick") is not None:
                last_pick = shown
    return last_pick


class HuntLog:
    """The one writer of an app's hunt log (path None: off)."""

    def __init__(
        self, path: str | os.PathLike | None, rotate_bytes: int = ROTATE_BYTES, grace_s: float = ABANDON_GRACE_S
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.rotate_bytes = rotate_bytes
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._file = None
        self._warned = False
        self._pending: dict[str, tuple[float, dict]] = {}  # hunt id -> (when to write it, the abandoned record)
        self._live: dict[str, int] = {}  # hunt id -> how many pages hold it
        self.written = 0
        if self.path is not None:
            self._flusher = threading.Thread(target=self._flush_loop, name="hunt-log", daemon=True)
            self._flusher.start()
            atexit.register(self.close)

    @property
    def enabled(self) -> bool:
        """Whether hunts are written at all (no path: logging is off)."""
        return self.path is not None

    def write(self, record: dict) -> None:
        """Append one record, whole and flushed; a failure is one warning (once until writing works again)."""
        if self.path is None:
            return
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._rotate_if_full(len(line))
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open for the app's life
                self._file.write(line)
                self.written += 1
                self._warned = False
            except OSError as exc:
                self._close_file()
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "the hunt log %s cannot be written (%s); the shop goes on without it",
                        self.path,
                        exc.strerror or exc,
                    )

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.rotate_bytes or size == 0:
            return
        self._close_file()
        stem, suffix = self.path.name.split(".", 1) if "." in self.path.name else (self.path.name, "")
        n = 1
        while (self.path.parent / f"{stem}.{n}.{suffix}").exists():
            n += 1
        for k in range(n, 1, -1):  # hunts.1 -> hunts.2, ...: the newest rotated file is always .1
            os.replace(self.path.parent / f"{stem}.{k - 1}.{suffix}", self.path.parent / f"{stem}.{k}.{suffix}")
        os.replace(self.path, self.path.parent / f"{stem}.1.{suffix}")

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    # -- hunts whose tab closed: abandoned, unless a page of the same browser still has it or comes back soon
    def opened(self, hunt_id: str) -> None:
        """A page holds this hunt (a new one, or one a browser brought back after a reload): it is not abandoned."""
        with self._lock:
            self._live[hunt_id] = self._live.get(hunt_id, 0) + 1
            self._pending.pop(hunt_id, None)

    def closed(self, hunt_id: str, record: dict | None) -> None:
        """A page let this hunt go (its tab closed, its session timed out, or it started another hunt). When no
        page holds it any more, `record` (ended: abandoned; None when the hunt was already written) is written
        after the grace period, unless `opened` takes it back first (a reload)."""
        with self._lock:
            left = self._live.get(hunt_id, 0) - 1
            if left > 0:
                self._live[hunt_id] = left
                return
            self._live.pop(hunt_id, None)
            if record is not None and self.path is not None:
                self._pending[hunt_id] = (time.monotonic() + self.grace_s, record)

    def flush_pending(self, everything: bool = False) -> None:
        """Write the abandoned hunts whose grace period is over (all of them with `everything`)."""
        now = time.monotonic()
        with self._lock:
            due = [hunt for hunt, (when, _) in self._pending.items() if everything or when <= now]
            records = [self._pending.pop(hunt)[1] for hunt in due]
        for record in records:
            self.write(record)

    def _flush_loop(self) -> None:
        while True:
            time.sleep(min(30.0, max(0.2, self.grace_s / 4)))
            self.flush_pending()

    def close(self) -> None:
        """Write every pending record and close the file (at exit)."""
        self.flush_pending(everything=True)
        with self._lock:
            self._close_file()


# -------------------------------------------------------------------------------------------- reading
def log_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files of the given logs: a file as it is, a folder's *.jsonl files (rotated ones first, oldest first)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            files = list(p.glob("*.jsonl"))
            out += sorted(files, key=lambda f: (-_rotation(f), f.name))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"hunt log {p} does not exist")
    return out


def _rotation(path: Path) -> int:
    parts = path.name.split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else 0


class Torn:
    """Counts the lines of a log that are not whole records (a crash mid-write leaves at most one)."""

    def __init__(self) -> None:
        self.lines = 0


def read_records(paths: Iterable[str | os.PathLike], torn: Torn | None = None) -> Iterator[dict]:
    """Every record of the logs, streamed line by line; lines that are not a whole JSON object are skipped and
    counted in `torn`."""
    for path in log_files(paths):
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict) or not line.endswith(b"\n") or "hunt" not in record:
                    if line.strip() and torn is not None:
                        torn.lines += 1
                    continue
                yield record
