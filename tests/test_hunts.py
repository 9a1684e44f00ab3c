"""The hunt log and insights.py: records written by the real app (HTTP and Chromium), concurrent sessions, torn
lines, rotation, a path that cannot be written, --hunt-log none; insights on a log with known answers, the 95%
interval's coverage, --compare, and the round trip from evaluate.py --log-to."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from catalogs import make_catalog
from gradio_http import Shopper, gallery_rows, start_app
from helpers import in_threads, wait_for

import insights
from common import huntlog
from common.huntlog import HuntLog, read_records, rounds_to_find

FIELDS = {"hunt", "time", "catalog", "strategy", "strategy_from", "target", "rounds", "found", "ended", "via"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def value(gallery):
    return gallery["value"] if isinstance(gallery, dict) and "value" in gallery else gallery


def records(path) -> list[dict]:
    return list(read_records([path]))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hunts")
    cat = make_catalog(tmp / "catalog", n=60, products=True)
    log = tmp / "log" / "hunts.jsonl"
    env = {
        **os.environ,
        "APP_LOG": str(tmp / "app.log"),
        "CACHE_DIR": str(tmp / "cache"),
        "HUNT_LOG": str(log),
        "HUNT_LOG_GRACE_S": "1",
    }
    proc, url = start_app(["--dataset", str(cat)], env)
    yield url, log
    proc.terminate()
    proc.wait(timeout=20)


def test_found_and_started_over_hunts_over_http(shop):
    url, log = shop
    before = len(records(log)) if log.exists() else 0
    shopper = Shopper(url)
    out = shopper.call("start")
    footer = [c for c in shopper.config["components"] if c.get("props", {}).get("elem_id") == "hunt-log-note"]
    assert footer and "Anonymous hunts" in footer[0]["props"]["value"]
    first = gallery_rows(out[1])
    out = shopper.pick(2, value(out[1])[2])
    second = gallery_rows(out[1])
    out = shopper.pick(0, value(out[1])[0])
    out = shopper.call("this_is_it")
    assert "This is it" in out[3]
    found = wait_for(lambda: records(log)[before:])
    assert len(found) == 1
    rec = found[0]
    assert set(rec) == FIELDS and re.fullmatch(r"[0-9a-f]{16}", rec["hunt"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", rec["time"])
    assert rec["catalog"] == {"id": "catalog", "name": "catalog", "rows": 60, "model": None}
    assert (rec["strategy"], rec["strategy_from"], rec["ended"]) == ("bayes", "default", "found")  # the default
    assert [r["shown"] for r in rec["rounds"]][:2] == [[f"p{r:03d}" for r in first], [f"p{r:03d}" for r in second]]
    assert [r["pick"] for r in rec["rounds"]] == [f"p{first[2]:03d}", f"p{second[0]:03d}", None]
    assert rec["found"] == f"p{second[0]:03d}" and rounds_to_find(rec) == 2
    text = json.dumps(rec)
    assert "127.0.0.1" not in text and shopper.session_hash not in text  # nothing that identifies a person
    # after the find, Start over writes nothing more for that hunt; a hunt with words then starts over
    out = shopper.call("start_over", ["mean", None])
    shopper.call("search", ["xyzzy", None, None])  # matches nothing
    out = shopper.call("search", ["round", None, None])
    out = shopper.pick(1, value(out[1])[1])
    shopper.call("start_over", ["mean", None])
    recs = wait_for(lambda: len(records(log)) >= before + 2 and records(log)[before:])
    assert len(recs) == 2
    over = recs[1]
    assert over["ended"] == "started_over" and over["found"] is None and over["hunt"] != rec["hunt"]
    assert over["rounds"][0]["words"] == "round" and over["rounds"][0]["matches"] == 20
    assert over["rounds"][1] == {"shown": [], "pick": None, "words": "xyzzy", "matches": 0}
    assert over["rounds"][2]["pick"] is not None and len(over["rounds"]) == 4


def test_many_sessions_at_once_write_whole_lines(shop):
    url, log = shop
    before = len(records(log)) if log.exists() else 0
    config = Shopper(url).config

    def hunts(k: int) -> None:
        shopper = Shopper(url, config)
        shopper.call("start")
        for _ in range(10):
            shopper.call("start_over", ["mean", None])  # ends the previous hunt: one record each

    assert in_threads(hunts, 20) == []
    lines = wait_for(lambda: (t := log.read_bytes().splitlines()) and len(t) >= before + 200 and t)
    new = [json.loads(line) for line in lines[before:]]  # every line whole JSON
    assert len(new) == 200 and len({r["hunt"] for r in new}) == 200
    assert all(r["ended"] == "started_over" for r in new)


def test_a_closed_tab_is_an_abandoned_hunt_and_a_reload_is_not(shop):
    from browsing import ARGS, CHROMIUM

    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium not installed")
    url, log = shop
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function(
            "document.querySelectorAll('#products .thumbnail-item img').length === 10", timeout=30_000
        )
        assert "Anonymous hunts" in page.inner_text("#hunt-log-note")
        page.locator("#products .thumbnail-item").nth(0).click()
        page.wait_for_function("document.querySelector('#status')?.innerText.includes('Round 2')", timeout=15_000)
        before = len(records(log))
        page.reload()  # the same hunt goes on: not abandoned
        page.wait_for_function("document.querySelector('#status')?.innerText.includes('Round 2')", timeout=30_000)
        page.locator("#products .thumbnail-item").nth(0).click()
        page.wait_for_function("document.querySelector('#status')?.innerText.includes('Round 3')", timeout=15_000)
        page.wait_for_timeout(2500)  # past the grace period: a reload's closed page must not have been written
        assert len(records(log)) == before
        page.close()
        rec = wait_for(lambda: records(log)[before:])
        browser.close()
    assert len(rec) == 1 and rec[0]["ended"] == "abandoned" and rec[0]["found"] is None
    assert sum(1 for r in rec[0]["rounds"] if r["pick"]) == 2  # both picks, across the reload, in one hunt


def test_compare_draws_strategies_and_the_shopper_choice_wins(tmp_path):
    cat = make_catalog(tmp_path / "catalog", n=40)
    log = tmp_path / "hunts.jsonl"
    env = {**os.environ, "APP_LOG": str(tmp_path / "app.log"), "CACHE_DIR": str(tmp_path / "cache")}
    proc, url = start_app(["--dataset", str(cat), "--hunt-log", str(log), "--compare", "mean,bayes"], env)
    try:
        shopper = Shopper(url)
        shopper.call("start")
        for _ in range(30):
            shopper.call("start_over", [None, None])
        out = shopper.call("set_strategy", ["random", None])
        assert out[8] == "random"
        out = shopper.call("start_over", ["random", None])
        shopper.call("start_over", ["random", None])
        recs = wait_for(lambda: len(records(log)) >= 33 and records(log))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    drawn = recs[:30]
    assert {r["strategy_from"] for r in drawn} == {"compare"}
    assert {r["strategy"] for r in drawn} == {"mean", "bayes"}  # both drawn in 30 hunts (odds 1 in 5e8 not)
    assert [(r["strategy"], r["strategy_from"]) for r in recs[31:33]] == [("random", "shopper")] * 2


def test_hunt_log_none_writes_nothing(tmp_path):
    cat = make_catalog(tmp_path / "catalog", n=30)
    env = {**os.environ, "APP_LOG": str(tmp_path / "app.log"), "CACHE_DIR": str(tmp_path / "cache"), "HUNT_LOG": "none"}
    proc, url = start_app(["--dataset", str(cat)], env)
    try:
        shopper = Shopper(url)
        out = shopper.call("start")
        shopper.pick(0, value(out[1])[0])
        shopper.call("this_is_it")
        shopper.call("start_over", ["mean", None])
        assert not any(c.get("props", {}).get("elem_id") == "hunt-log-note" for c in shopper.config["components"])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert not list(tmp_path.rglob("*.jsonl"))


# ------------------------------------------------------------------------------------------ the log itself
def a_record(i: int, strategy: str = "mean", found: bool = True) -> dict:
    return {
        "hunt": f"{i:016x}",
        "time": "2026-12-01T10:00Z",
        "catalog": {"name": "t", "rows": 9, "model": None},
        "strategy": strategy,
        "strategy_from": "default",
        "target": None,
        "rounds": [{"shown": ["a", "b"], "pick": "a" if found else None, "words": None, "matches": None}],
        "found": "a" if found else None,
        "ended": "found" if found else "abandoned",
    }


def test_torn_lines_rotation_and_an_unwritable_path(tmp_path, caplog):
    path = tmp_path / "hunts.jsonl"
    log = HuntLog(path, rotate_bytes=2_000, grace_s=0)
    for i in range(30):
        log.write(a_record(i))
    assert log.flush(timeout=10)  # written by the log's own thread
    files = sorted(p.name for p in tmp_path.iterdir())
    assert (
        "hunts.1.jsonl" in files
        and "hunts.2.jsonl" in files
        and all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())
    )
    with path.open("ab") as f:
        f.write(json.dumps(a_record(99)).encode()[:50])  # a crash mid-record
    torn = huntlog.Torn()
    got = list(read_records([tmp_path], torn))
    assert [r["hunt"] for r in got] == [f"{i:016x}" for i in range(30)]  # oldest file first, in order
    assert torn.lines == 1
    log.close()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="huntlog"):
        bad = HuntLog(blocker / "hunts.jsonl", grace_s=0)
        for i in range(5):
            bad.write(a_record(i))  # no exception: the shop goes on
        ro = HuntLog("/proc/hunts-test/hunts.jsonl", grace_s=0)
        ro.write(a_record(0))
        assert bad.flush(timeout=10) and ro.flush(timeout=10)
    warnings = [r for r in caplog.records if r.name == "huntlog"]
    assert len(warnings) == 2 and "cannot be written" in warnings[0].getMessage()


def test_a_log_of_two_catalogs_reports_one_catalog(tmp_path, monkeypatch, capsys):
    """Each catalog's default log is a file of its own; insights.py reports one catalog at a time, never mixed."""
    import app

    monkeypatch.delenv("HUNT_LOG", raising=False)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    demo, shop = (app.parse_args(cache + more).hunt_log for more in ([], ["--dataset", "USER/my-shop-embeddings"]))
    assert demo == str(tmp_path / "cache" / "hunts" / "demo.jsonl")
    assert shop == str(tmp_path / "cache" / "hunts" / "USER--my-shop-embeddings.jsonl")
    path = tmp_path / "mixed.jsonl"
    demo_info = {"id": "demo", "name": "demo: Fashion-MNIST (2000)", "rows": 2000, "model": None}
    shop_info = {"id": "USER/my-shop-embeddings", "name": "USER/my-shop-embeddings", "rows": 9, "model": None}
    recs = [{**a_record(i), "catalog": demo_info if i % 3 else shop_info} for i in range(9)]
    recs[0]["rounds"][0]["words"], recs[0]["rounds"][0]["matches"] = "black", 0  # a shop's search only
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))

    def report(*flags: str) -> insights.Insights | str:
        code = insights.main([str(path), "--json", *flags])
        out = capsys.readouterr()
        return json.loads(out.out) if code == 0 else out.err

    assert report("--catalog", "demo")["hunts"] == 6
    shop_only = report("--dataset", "USER/my-shop-embeddings")  # --dataset names the catalog too (no loading)
    assert shop_only["hunts"] == 3 and shop_only["no_match_searches"] == [["black", 1]]
    assert report("--catalog", "demo")["no_match_searches"] == []
    held = report()  # two catalogs, none chosen: one error line listing them
    assert held.startswith("error: ") and held.count("\n") == 1
    assert "demo (6 hunts)" in held and "USER/my-shop-embeddings (3 hunts)" in held
    assert "no hunts of catalog 'other'" in report("--catalog", "other")
    path.write_text("".join(json.dumps(r) + "\n" for r in recs if r["catalog"] is demo_info))
    assert report()["hunts"] == 6  # the log's only catalog


def test_insights_on_a_hand_made_log(tmp_path):
    path = tmp_path / "h.jsonl"
    recs = []
    rounds = {"mean": [1, 2, 2, 3, 7], "bayes": [1, 1, 2]}
    for strategy, values in rounds.items():
        for k in values:
            entries = [{"shown": [f"x{j}"], "pick": f"x{j}", "words": None, "matches": None} for j in range(k - 1)]
            entries.append({"shown": ["hat", "cap"], "pick": "hat", "words": None, "matches": None})
            recs.append({**a_record(len(recs), strategy), "rounds": entries, "found": "hat"})
    lost = a_record(50, "bayes", found=False)
    lost["rounds"] = [
        {"shown": ["cap", "boot"], "pick": None, "words": "red hat", "matches": 3},
        {"shown": [], "pick": None, "words": "Tiara", "matches": 0},
        {"shown": [], "pick": None, "words": "tiara", "matches": 0},
        {"shown": [], "pick": None, "words": "crown", "matches": 0},
    ]
    recs.append(lost)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"hunt": "torn')
    res = subprocess.run(
        [sys.executable, os.path.join(ROOT, "insights.py"), str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert (s["hunts"], s["found"], s["torn_lines"]) == (9, 8, 1)
    assert s["strategies"]["mean"] == {
        **s["strategies"]["mean"],
        "hunts": 5,
        "found": 5,
        "mean_rounds": 3.0,
        "median_rounds": 2.0,
    }
    assert s["strategies"]["bayes"]["hunts"] == 4 and s["strategies"]["bayes"]["found"] == 3
    assert s["strategies"]["bayes"]["mean_rounds"] == pytest.approx(4 / 3)
    assert s["no_match_searches"] == [["tiara", 2], ["crown", 1]]
    assert s["most_found"] == [["hat", 8]]
    assert s["never_picked"][0] == ["cap", 9] and ["boot", 1] in s["never_picked"]
    assert s["searches_per_hunt"] == pytest.approx(4 / 9)
    text = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "insights.py"),
            str(path),
            "--plot",
            str(tmp_path / "p.png"),
            "--since",
            "2026-12-01",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "9 hunts, 8 found" in text and (tmp_path / "p.png").stat().st_size > 5_000
    later = subprocess.run(
        [sys.executable, os.path.join(ROOT, "insights.py"), str(path), "--json", "--since", "2026-12-02"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert json.loads(later)["hunts"] == 0


def test_the_95_interval_covers_the_true_difference():
    """100 simulated comparisons of two strategies whose rounds differ by a known amount."""
    rng = np.random.default_rng(0)
    covered, told = 0, 0
    for _ in range(100):
        a, b = insights.Rounds(), insights.Rounds()
        for k in 1 + rng.poisson(3.0, 150):
            a.add(int(k))
        for k in 1 + rng.poisson(4.0, 150):
            b.add(int(k))
        c = insights.difference("a", a, "b", b, True)
        covered += c["interval"][0] <= -1.0 <= c["interval"][1]
        told += c["tells"]
    assert covered >= 90 and told >= 90
    small_a, small_b = insights.Rounds(), insights.Rounds()
    for k in (3, 4, 5):
        small_a.add(k)
    for k in (4, 5, 5):
        small_b.add(k)
    c = insights.difference("a", small_a, "b", small_b, True)
    assert not c["tells"] and c["hunts_needed"] > 3  # says how many hunts it would take


def test_evaluate_log_round_trip(tmp_path, capsys):
    import evaluate

    path = tmp_path / "sim.jsonl"
    assert (
        evaluate.main(
            ["--synthetic", "300,16,10", "--strategy", "mean,bayes", "--targets", "40", "--log-to", str(path)]
        )
        == 0
    )
    table = capsys.readouterr().out
    s = insights.gather([str(path)], progress=False).summary()
    for name in ("mean", "bayes"):
        row = re.search(rf"^{name}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", table, re.M)
        mean, median, p90 = map(float, row.groups())
        st = s["strategies"][name]
        assert st["hunts"] == st["found"] == 40
        assert (round(st["mean_rounds"], 2), round(st["median_rounds"], 1), round(st["p90_rounds"], 1)) == (
            mean,
            median,
            p90,
        )


@pytest.mark.slow
def test_a_million_records_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    words = ["red dress", "tiara", "blue shirt"]
    with path.open("w") as f:
        for i in range(1_000_000):
            k = i % 5
            found = "null" if i % 7 == 0 else f'"p{i % 997}"'
            f.write(
                f'{{"hunt":"{i:016x}","time":"2026-12-01T10:00Z","catalog":{{"name":"t","rows":1000,'
                f'"model":null}},"strategy":"{"mean" if i % 2 else "bayes"}","strategy_from":"compare",'
                f'"target":null,"rounds":[{{"shown":["p{i % 1000}","p{(i * 7) % 1000}"],"pick":"p{i % 1000}",'
                f'"words":"{words[k % 3]}","matches":{k % 2}}}' + ',{"shown":["p1"],"pick":null,"words":null,'
                '"matches":null}' * k + f'],"found":{found},"ended":"found"}}\n'
            )
    code = (
        "import resource, subprocess, sys; subprocess.run([sys.executable, sys.argv[1], sys.argv[2], '--json'], "
        "stdout=open(sys.argv[3], 'w'), check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = tmp_path / "out.json"
    res = subprocess.run(
        [sys.executable, "-c", code, os.path.join(ROOT, "insights.py"), str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    peak_mb = int(res.stdout.strip()) / 1024
    s = json.loads(out.read_text())
    assert s["hunts"] == 1_000_000 and s["found"] == 1_000_000 - len(range(0, 1_000_000, 7))
    print(f"insights.py on 1M records ({path.stat().st_size / 2**20:.0f} MB): peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 200


def test_concurrent_writers_in_process(tmp_path):
    """The writer alone, hammered from 20 threads: 2,000 records, 2,000 whole lines."""
    log = HuntLog(tmp_path / "h.jsonl", grace_s=0)
    barrier = threading.Barrier(20)

    def write(k: int) -> None:
        barrier.wait()
        for i in range(100):
            log.write(a_record(k * 1000 + i))

    assert in_threads(write, 20) == []
    assert log.flush(timeout=30) and log.dropped == 0
    lines = (tmp_path / "h.jsonl").read_bytes().splitlines()
    assert len(lines) == 2000 and len({json.loads(line)["hunt"] for line in lines}) == 2000
