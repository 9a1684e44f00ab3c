"""The hunt log and insights.py against what a stranger or a careless owner can do (issue 35, parts 2 and 5): each
test is named after the finding it guards; docs/trust.md says what is checked."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import tracemalloc

import datasets
from catalogs import make_catalog
from helpers import run_in_process

import insights
from common import huntlog
from common.huntlog import HuntLog, bound_record, read_records, round_entries, rounds_to_find


def a_record(i: int, rounds: list | None = None) -> dict:
    return {
        "hunt": f"{i:016x}",
        "time": "2026-12-01T10:00Z",
        "catalog": {"id": "t", "name": "t", "rows": 9, "model": None},
        "strategy": "mean",
        "strategy_from": "default",
        "target": None,
        "rounds": rounds or [{"shown": ["a", "b"], "pick": "a", "words": None, "matches": None}],
        "found": "a",
        "ended": "found",
    }


def in_thread(fn, timeout: float = 20.0):
    """fn() in a thread; fails (instead of hanging the suite) when it has not returned within `timeout`."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still running after {timeout} s"
    return out[0]


# ----------------------------------------------------------------------------- the writer (issue 35, part 2)
def test_fifo_hunt_log_refused_at_start(tmp_path, monkeypatch, capsys):
    """A FIFO, a device or a symlink as --hunt-log is one error line at start; the writer never opens one."""
    fifo, link = tmp_path / "fifo.jsonl", tmp_path / "link.jsonl"
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "elsewhere.jsonl")
    for path, kind in ((fifo, "a FIFO"), ("/dev/null", "a device"), (link, "a symlink")):
        ran = run_in_process("app", ["--hunt-log", path, "--cache-dir", tmp_path], {}, monkeypatch, capsys)
        assert ran.returncode == 2 and ran.stderr.count("\n") == 1, ran.stderr
        assert ran.stderr.startswith(f"error: --hunt-log (or HUNT_LOG): {path} is {kind}, not a regular file")
    # made a FIFO after the start: the writer neither hangs nor follows the symlink
    log, linked = HuntLog(fifo, grace_s=0), HuntLog(link, grace_s=0)
    in_thread(lambda: (log.write(a_record(1)), linked.write(a_record(2))), timeout=2)
    assert log.flush(timeout=5) and linked.flush(timeout=5)
    assert log.written == linked.written == 0 and not (tmp_path / "elsewhere.jsonl").exists()


def test_one_visit_cannot_write_unbounded_records(tmp_path):
    """3,000 no-match searches in one round were one 744 KB line; now a round keeps three, the rest are counted, and
    a visit ending hunt after hunt writes a burst, then one record per VISIT_EVERY_S (the excess counted)."""
    import app
    from catalog.catalog import Catalog
    from recommender import Recommender

    cat = Catalog(datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=30))), "t", tmp_path / "cache")
    rec = Recommender(cat.embeddings, seed=0)
    path = tmp_path / "hunts.jsonl"
    log = HuntLog(path, grace_s=0)
    fns = {f.api_name: f.fn for f in app.build_app(cat, rec, hunt_log=log).fns.values()}
    visit = fns["start"](None)[0]
    for i in range(300):  # each a word no product has
        visit = fns["search"](f"zzyzx{i} " + "q" * 150, visit, None)[0]
    visit = fns["start_over"]("mean", visit)[0]
    assert log.flush(timeout=10)
    first = read_records([path]).__next__()
    missed = [r for r in first["rounds"] if not r["shown"]]
    assert len(missed) == huntlog.MAX_SEARCHES_PER_ROUND and first["cut"] == {"searches": 300 - len(missed)}
    assert len(path.read_bytes()) < 4_000
    for _ in range(huntlog.VISIT_BURST + 20):  # Start over, again and again: one record each, up to the burst
        visit = fns["start_over"]("mean", visit)[0]
    assert log.flush(timeout=10)
    written = len(path.read_bytes().splitlines())
    assert huntlog.VISIT_BURST <= written <= huntlog.VISIT_BURST + 1 and log.over_rate >= 19
    visit.log_budget.tokens = 1  # the time passed: the next record says how many were dropped
    fns["start_over"]("mean", visit)
    assert log.flush(timeout=10)
    last = list(read_records([path]))[-1]
    assert last["cut"]["records"] == log.over_rate


def test_a_record_is_capped_in_bytes_and_its_rounds_still_count():
    """A hunt of 5,000 galleries (each id 40 characters) is cut to MAX_RECORD_BYTES, oldest galleries first;
    rounds_to_find is the same as the whole record's."""
    history = [[(r * 10 + k) for k in range(10)] for r in range(5000)]
    searches = {r: [("no such thing", 0)] * 5 for r in range(1, 5001, 7)}
    rounds = round_entries(history, {5000: history[-1][3], 10: history[9][0]}, searches, lambda row: f"{row:040d}")
    whole = {**a_record(1, rounds), "found": f"{history[-1][3]:040d}"}
    cut = bound_record(whole)
    line = json.dumps(cut, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(line) <= huntlog.MAX_RECORD_BYTES and cut["cut"]["rounds"] > 4000
    assert rounds_to_find(cut) == rounds_to_find(whole) == 5000
    kept = [r for r in cut["rounds"] if not r["shown"]]
    assert cut["cut"]["searches"] + len(kept) == sum(len(v) for v in searches.values())
    assert bound_record(a_record(2)) == a_record(2)  # a usual record is left as it is


def test_rotated_logs_pruned(tmp_path, monkeypatch):
    """Rotated files were never removed; now at most HUNT_LOG_KEEP are kept, the newest."""
    monkeypatch.setenv("HUNT_LOG_KEEP", "2")
    log = HuntLog(tmp_path / "hunts.jsonl", rotate_bytes=2_000, grace_s=0)
    for i in range(100):
        log.write(a_record(i))
    assert log.flush(timeout=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hunts.1.jsonl", "hunts.2.jsonl", "hunts.jsonl"]
    assert [r["hunt"] for r in read_records([tmp_path])][-1] == f"{99:016x}"


def test_the_writer_follows_another_process_rotation(tmp_path):
    """After another process rotated the log, one app kept appending to hunts.1.jsonl; now it reopens the path."""
    path = tmp_path / "hunts.jsonl"
    log = HuntLog(path, grace_s=0)
    log.write(a_record(1))
    assert log.flush(timeout=5)
    os.replace(path, tmp_path / "hunts.1.jsonl")  # what another app's rotation does
    log.write(a_record(2))
    assert log.flush(timeout=5)
    assert [r["hunt"] for r in read_records([path])] == [f"{2:016x}"]
    assert [r["hunt"] for r in read_records([tmp_path / "hunts.1.jsonl"])] == [f"{1:016x}"]


def test_writing_never_blocks_a_request(tmp_path, caplog):
    """A stuck disk held every request behind the log's lock; now `write` only queues: a full queue drops the
    record, counts it and says so once in the app's log."""
    log = HuntLog(tmp_path / "hunts.jsonl", grace_s=0, queue_bytes=20_000)
    with caplog.at_level(logging.WARNING, logger="huntlog"):
        with log._lock:  # the writer thread is stuck in the middle of a write
            took = time.perf_counter()
            in_thread(lambda: [log.write(a_record(i)) for i in range(500)], timeout=5)
            took = time.perf_counter() - took
        assert log.flush(timeout=10)
    assert log.dropped > 400 and log.written == 500 - log.dropped, (log.dropped, log.written)
    assert took < 5 and sum("queue is full" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------- insights.py (issue 35, part 5)
def test_dev_zero_insights_bounded(tmp_path, monkeypatch, capsys):
    """/dev/zero grew insights.py to 10 GB and a FIFO hung it: each is now one error line; a 96 MB line of NULs
    in a real file is skipped as torn in bounded reads, never held whole."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):
        ran = in_thread(lambda p=path: run_in_process("insights", [p], {}, monkeypatch, capsys), timeout=20)
        assert ran.returncode == 2 and ran.stderr.startswith("error: hunt log") and ran.stderr.count("\n") == 1
    big = tmp_path / "nul.jsonl"
    with big.open("wb") as f:
        f.truncate(96 << 20)  # a sparse file: 96 MB of NULs, no newline
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + json.dumps(a_record(1)).encode() + b"\n")
    tracemalloc.start()
    try:
        s = insights.gather([str(big)], progress=False).summary()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s["hunts"] == 1 and s["torn_lines"] == 1
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MB"


WRONG_SHAPES = [
    {"rounds": ["not an entry"]},
    {"rounds": [{"shown": {"a": 1}, "pick": None}]},
    {"rounds": [{"shown": ["a"], "pick": ["a"]}]},
    {"rounds": [{"shown": [], "words": 7, "matches": 0}]},
    {"found": {"id": "a"}},
    {"rounds": [{"shown": [["a"]], "pick": None}]},
    {"cut": "many"},
    {"rounds": [{"shown": [], "words": "x", "matches": "0"}]},
]


def test_wrongly_shaped_records_count_as_torn(tmp_path, monkeypatch, capsys):
    """Six wrongly shaped records ended in a traceback; each now counts as torn, the good record is reported."""
    path = tmp_path / "h.jsonl"
    lines = [json.dumps({**a_record(i), **bad}) for i, bad in enumerate(WRONG_SHAPES)]
    lines += [json.dumps(a_record(99)), "[" * 100_000, '"just a string"']
    path.write_text("\n".join(lines) + "\n")
    ran = run_in_process("insights", [path, "--json"], {}, monkeypatch, capsys)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr
    s = json.loads(ran.stdout)
    assert s["hunts"] == 1 and s["torn_lines"] == len(WRONG_SHAPES) + 2


def test_plot_to_a_folder_is_an_error(tmp_path, monkeypatch, capsys):
    """--plot given a folder wrote a .png beside it under the folder's name; now it is one error line."""
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(a_record(1)) + "\n")
    (tmp_path / "plots").mkdir()
    ran = run_in_process("insights", [path, "--plot", tmp_path / "plots"], {}, monkeypatch, capsys)
    assert ran.returncode == 2 and ran.stderr.startswith("error: --plot") and "is a folder" in ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.jsonl", "plots"]
