"""The hunt log: one JSON Lines record per ended hunt, for insights.py. No UI imports here.

A record says what a shopper was shown and did, and how the hunt ended, with nothing that identifies a person
(no IP, user agent, cookie or session key; a random hunt id; the time to the minute):

    {"hunt": "3f2a...", "time": "2026-12-01T06:44Z", "catalog": {"id", "name", "rows", "model"},
     "strategy": "bayes", "strategy_from": "default" | "compare" | "shopper", "target": id or null,
     "rounds": [{"shown": [ids], "pick": id or null, "words": text or null, "matches": n or null}, ...],
     "found": id or null, "ended": "found" | "started_over" | "abandoned", "cut": {...} (only when cut)}

A typed search that matched nothing is an entry of its own with "shown": [] (the gallery did not change); the
rounds to find a product are the galleries shown up to the one it was picked from. Bounded: a record keeps a few
missed searches per round and at most MAX_RECORD_BYTES (what was cut is counted in its "cut"), a visit writes at
most a burst of records and then one per VISIT_EVERY_S (`RecordBudget`). `HuntLog` is the one writer of an app:
`write` queues a line (a full queue drops and counts, so a request never waits on the disk) and one thread writes
each whole, flushed; the log is opened without following a symlink or waiting on a FIFO, and only a regular file
is written; the writer follows the path across another process's rotation; the file rotates at 64 MB
(hunts.jsonl -> hunts.1.jsonl, ...) and rotated files beyond HUNT_LOG_KEEP are removed; a full disk or a
read-only path is one warning, and the shop keeps serving. `read_records` streams a log back in bounded reads,
skipping (and counting) torn lines and lines too long to be a record.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("huntlog")
ROTATE_BYTES = 64 << 20
KEEP_ROTATED = 10  # rotated files kept beside the log (HUNT_LOG_KEEP): 64 MB each; older ones are removed
MAX_RECORD_BYTES = 256 << 10  # a record's line at most (the oldest galleries are cut, and counted, beyond it)
MAX_SEARCHES_PER_ROUND = 3  # searches that matched nothing kept per round (the rest cut, counted)
MAX_WORDS_CHARS = 200  # typed words kept per search
QUEUE_BYTES = 8 << 20  # records waiting for the writer thread; beyond it a record is dropped and counted
VISIT_BURST, VISIT_EVERY_S = 60, 5.0  # a visit writes 60 records at once at most, then one per 5 s
MAX_LINE_BYTES = 1 << 20  # a line longer than this is not a record: skipped as torn, never held whole
ABANDON_GRACE_S = float(os.environ.get("HUNT_LOG_GRACE_S", "600"))  # a closed tab's hunt waits this long for a reload


def keep_rotated() -> int:
    """HUNT_LOG_KEEP (rotated files kept), or KEEP_ROTATED when unset or not a whole number >= 0 (app.py checks
    it at start)."""
    try:
        return max(0, int(os.environ.get("HUNT_LOG_KEEP") or KEEP_ROTATED))
    except ValueError:
        return KEEP_ROTATED


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
    """The galleries shown up to the one the found product was picked from (None when nothing was found), the
    galleries cut from a long record (its "cut") counted too."""
    if record.get("found") is None:
        return None
    cut = record.get("cut")
    shown = cut.get("rounds") if isinstance(cut, dict) and type(cut.get("rounds")) is int else 0
    last_pick = None
    for entry in record.get("rounds") or []:
        if entry.get("shown"):
            shown += 1
            if entry.get("pick") is not None:
                last_pick = shown
    return last_pick


def path_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be a hunt log (it is there and is not a regular file: a FIFO would hang the writer, a
    device or a symlink would send records elsewhere), or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be looked at: {exc.strerror or exc}"
    kinds = (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    )
    for check, kind in kinds:
        if check(mode):
            return f"{path} is {kind}, not a regular file"
    return None


def bound_record(record: dict) -> dict:
    """`record` cut to size: at most MAX_SEARCHES_PER_ROUND searches that matched nothing per round, words cut to
    MAX_WORDS_CHARS, and the oldest galleries left out while the line would pass MAX_RECORD_BYTES; what was cut is
    counted in its "cut" ({"searches": n, "rounds": m}; rounds_to_find adds the rounds cut)."""
    rounds = record.get("rounds")
    if not isinstance(rounds, list):
        return record
    kept, searches, run = [], 0, 0
    for entry in rounds:
        missed = isinstance(entry, dict) and not entry.get("shown")
        run = run + 1 if missed else 0
        if run > MAX_SEARCHES_PER_ROUND:
            searches += 1
            continue
        if isinstance(entry, dict) and isinstance(entry.get("words"), str) and len(entry["words"]) > MAX_WORDS_CHARS:
            entry = {**entry, "words": entry["words"][:MAX_WORDS_CHARS]}
        kept.append(entry)
    sizes = [len(_line(entry)) for entry in kept]
    total, first, galleries = len(_line({**record, "rounds": []})) + 64 + sum(sizes), 0, 0
    while first < len(kept) - 1 and (total > MAX_RECORD_BYTES or not _shown(kept[first])):
        if total <= MAX_RECORD_BYTES and galleries == 0:
            break  # nothing cut yet: a leading search stays (only a cut gallery's searches go with it)
        total -= sizes[first]
        galleries += _shown(kept[first])
        searches += not _shown(kept[first])
        first += 1
    if not searches and not galleries and len(kept) == len(rounds) and all(a is b for a, b in zip(kept, rounds)):
        return record
    cut = dict(record.get("cut") or {}) if isinstance(record.get("cut"), dict) else {}
    for key, n in (("searches", searches), ("rounds", galleries)):
        if n:
            cut[key] = int(cut.get(key) or 0) + n
    return {**record, "rounds": kept[first:], **({"cut": cut} if cut else {})}


def _shown(entry: object) -> bool:
    return isinstance(entry, dict) and bool(entry.get("shown"))


def _line(record: object) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")


class RecordBudget:
    """How many records one visit may still write: a burst, then one every `every_s` seconds; the records it could
    not write are counted (the visit's next record says how many, in its "cut")."""

    def __init__(self, burst: int = VISIT_BURST, every_s: float = VISIT_EVERY_S) -> None:
        self.burst, self.every_s = burst, every_s
        self.tokens, self.at = float(burst), time.monotonic()
        self.dropped = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Spend one record if the visit has one left (False: the record is dropped and counted)."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) / self.every_s)
            self.at = now
            if self.tokens < 1:
                self.dropped += 1
                return False
            self.tokens -= 1
            return True

    def owed(self) -> int:
        """The records dropped since the last one written (and forget them: the next record carries the count)."""
        with self._lock:
            n, self.dropped = self.dropped, 0
            return n


class HuntLog:
    """The one writer of an app's hunt log (path None: off). `write` only queues a line (bounded by bytes; a full
    queue drops and counts); one background thread writes them, so a slow or stuck disk never holds a request."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        rotate_bytes: int = ROTATE_BYTES,
        grace_s: float = ABANDON_GRACE_S,
        keep: int | None = None,
        queue_bytes: int = QUEUE_BYTES,
        sync: bool = False,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.rotate_bytes = rotate_bytes
        self.grace_s = grace_s
        self.keep = keep_rotated() if keep is None else keep  # rotated files kept (HUNT_LOG_KEEP); older removed
        self.queue_bytes = queue_bytes
        self.sync = sync  # written in the caller's thread: a batch command (evaluate.py) or an in-process test
        self._lock = threading.Lock()  # the file, and the hunts held by pages
        self._file = None
        self._warned = False
        self._pending: dict[str, tuple[float, dict]] = {}  # hunt id -> (when to write it, the abandoned record)
        self._live: dict[str, int] = {}  # hunt id -> how many pages hold it
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes queued, and lines queued or being written
        self._unwritten = 0
        self._ready = threading.Condition()
        self.written = 0
        self.dropped = 0  # records dropped: the queue was full (the disk too slow), or a visit over its rate
        self.over_rate = 0
        self._said: set[str] = set()  # what the app log was told once
        if self.path is not None and not sync:
            threading.Thread(target=self._write_loop, name="hunt-log-writer", daemon=True).start()
        if self.path is not None:
            threading.Thread(target=self._flush_loop, name="hunt-log", daemon=True).start()
            atexit.register(self.close)

    @property
    def enabled(self) -> bool:
        """Whether hunts are written at all (no path: logging is off)."""
        return self.path is not None

    def write(self, record: dict, budget: RecordBudget | None = None) -> None:
        """Queue one record (cut to size, see bound_record), written whole and flushed by the writer thread; a
        visit's `budget` caps its rate. Never blocks a request: a full queue drops the record and counts it."""
        if self.path is None:
            return
        if budget is not None:
            if not budget.take():
                self.over_rate += 1
                self._say_once(
                    "rate",
                    "a visit ends hunts faster than %d at once and one per %.0f s; its further records are dropped "
                    "and counted (in its next record)",
                    budget.burst,
                    budget.every_s,
                )
                return
            owed = budget.owed()
            if owed:
                record = {**record, "cut": {**(record.get("cut") or {}), "records": owed}}
        line = _line(bound_record(record))
        if self.sync:
            self._write_line(line)
            return
        with self._ready:
            if self._queue and self._queued + len(line) > self.queue_bytes:
                self.dropped += 1
                self._say_once("full", "the hunt log's queue is full (the disk is slow); records are dropped")
                return
            self._queue.append(line)
            self._queued += len(line)
            self._unwritten += 1
            self._ready.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is written (or failed); False when `timeout` ran out first."""
        with self._ready:
            return self._ready.wait_for(lambda: self._unwritten == 0, timeout)

    def _say_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning(message, *args)

    def _write_loop(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._queue)
                line = self._queue.popleft()
            try:
                self._write_line(line)
            finally:
                with self._ready:
                    self._queued -= len(line)
                    self._unwritten -= 1
                    self._ready.notify_all()

    def _write_line(self, line: bytes) -> None:
        """Append one line, whole: the file followed across another process's rotation, rotated when full; a
        failure is one warning (once until writing works again)."""
        with self._lock:
            try:
                self._follow()
                self._rotate_if_full(len(line))
                if self._file is None:
                    self._file = self._open()
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

    def _open(self) -> io.FileIO:
        """The log opened for appending: never through a symlink, never waiting on a FIFO (non-blocking), and
        only a regular file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        return io.FileIO(fd, "ab", closefd=True)

    def _follow(self) -> None:
        """Close the file when the path no longer leads to it (another process rotated or removed it): the next
        line goes to the file now at the path."""
        if self._file is None:
            return
        try:
            now = os.lstat(self.path)
        except FileNotFoundError:
            now = None
        held = os.fstat(self._file.fileno())
        if now is None or (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev):
            self._close_file()

    def _rotated(self, k: int) -> Path:
        """The k-th rotated file (hunts.jsonl -> hunts.1.jsonl; the higher, the older)."""
        name = self.path.name
        stem, suffix = (name[: -len(".jsonl")], ".jsonl") if name.endswith(".jsonl") else (name, "")
        return self.path.parent / f"{stem}.{k}{suffix}"

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = os.fstat(self._file.fileno()).st_size if self._file is not None else self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.rotate_bytes or size == 0:
            return
        self._close_file()
        n = 1
        while self._rotated(n).exists() and n <= self.keep:
            n += 1
        for k in range(n, 1, -1):  # hunts.1 -> hunts.2, ...: the newest rotated file is always .1
            if self._rotated(k - 1).exists():
                os.replace(self._rotated(k - 1), self._rotated(k))
        os.replace(self.path, self._rotated(1))
        k = self.keep + 1
        while self._rotated(k).exists() or self._rotated(k + 1).exists():  # beyond HUNT_LOG_KEEP: removed
            with contextlib.suppress(FileNotFoundError):
                self._rotated(k).unlink()
            k += 1

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
        """Write every pending and queued record and close the file (at exit)."""
        self.flush_pending(everything=True)
        self.flush(timeout=30)
        with self._lock:
            self._close_file()


# -------------------------------------------------------------------------------------------- reading
def log_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files of the given logs: a file as it is, a folder's *.jsonl files (rotated ones first, oldest first).
    Only regular files are logs: a FIFO, a device (/dev/zero) or a socket is a ValueError saying so."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            files = [f for f in p.glob("*.jsonl") if not f.is_dir()]
            out += sorted(files, key=lambda f: (-_rotation(f), f.name))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"hunt log {p} does not exist")
    for f in out:
        if not f.is_file():
            raise ValueError(f"hunt log {f} is not a regular file (a FIFO, a device or a socket is never read)")
    return out


def _rotation(path: Path) -> int:
    parts = path.name.split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else 0


class Torn:
    """Counts the lines of a log that are not whole records (a crash mid-write leaves at most one)."""

    def __init__(self) -> None:
        self.lines = 0


def open_log(path: str | os.PathLike) -> io.BufferedReader:
    """A log file opened for reading: without waiting on a FIFO put there after it was checked, and only a
    regular file (a ValueError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"hunt log {path} is not a regular file (a FIFO, a device or a socket is never read)")
    return os.fdopen(fd, "rb")


def bounded_lines(f: io.BufferedReader, cap: int = MAX_LINE_BYTES) -> Iterator[bytes | None]:
    """The lines of `f`, each read in at most `cap` + 1 bytes: a longer line is skipped in chunks of that size and
    given as None, so a line of any length (a gigabyte of NULs) never sits in memory whole."""
    while line := f.readline(cap + 1):
        if len(line) > cap and not line.endswith(b"\n"):
            while (rest := f.readline(cap + 1)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def read_records(paths: Iterable[str | os.PathLike], torn: Torn | None = None) -> Iterator[dict]:
    """Every record of the logs, streamed line by line in bounded reads; lines that are not a whole JSON object
    (torn, or longer than MAX_LINE_BYTES) are skipped and counted in `torn`."""
    for path in log_files(paths):
        with open_log(path) as f:
            for line in bounded_lines(f):
                try:
                    record = json.loads(line) if line is not None else None
                except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond the parser
                    record = None
                if not isinstance(record, dict) or not line.endswith(b"\n") or "hunt" not in record:
                    if (line is None or line.strip()) and torn is not None:
                        torn.lines += 1
                    continue
                yield record
