"""A visit only the server could have written (issue 35, part 1): each test is named after a finding of the
hostile probe. A saved visit is signed by the server (shop/visit.py); a forged or altered one is refused whole,
so the hunt log records only what the server showed and saw picked."""

from __future__ import annotations

import json
import os
import stat
import threading

import datasets
import gradio as gr
import pytest
from catalogs import make_catalog

from common.huntlog import HuntLog, read_records


@pytest.fixture(scope="module")
def catalog_and_rec(tmp_path_factory):
    from catalog.catalog import Catalog
    from recommender import Recommender

    tmp = tmp_path_factory.mktemp("trust_visit")
    path = make_catalog(tmp / "cat", n=40)
    catalog = Catalog(datasets.load_from_disk(str(path)), "t", tmp / "cache")
    rec = Recommender(catalog.embeddings, seed=0)
    catalog.on_hide = rec.hide
    return catalog, rec


def a_shop(catalog_and_rec, log_path, key: bytes | None = None, compare=()):
    """The page's handlers (shop/shop.py) over the shared catalog, writing the hunt log at `log_path`."""
    from shop.shop import Shop

    catalog, rec = catalog_and_rec
    return Shop(catalog, rec, HuntLog(log_path, grace_s=0, sync=True), compare, key)  # records read at once


def records(path) -> list[dict]:
    return list(read_records([path])) if path.exists() else []


def click(shop, visit, saved, row):
    """A click on `row` in the round's gallery (its place in the gallery, its picture the page's own)."""
    shown = visit.session.shown if visit is not None else saved["history"][-1]
    index = shown.index(row)
    item = {"image": {"path": shop.catalog.thumb(row)}}
    return shop.on_select(visit, saved, gr.SelectData(None, {"index": index, "value": item}))[0]


def test_forged_viewing_then_this_is_it_writes_no_found_record(catalog_and_rec, tmp_path):
    """Finding: a visit claiming `viewing` of a product it was never shown, then *This is it*, wrote "found"."""
    log = tmp_path / "hunts.jsonl"
    shop = a_shop(catalog_and_rec, log)
    visit = shop.start()[0]
    saved = visit.saved(shop.catalog, shop.key)
    never_shown = next(row for row in range(shop.catalog.n) if row not in visit.session.seen)
    forged = {**saved, "viewing": never_shown}  # the signature is the server's, of other fields
    after = shop.on_choose(None, forged)[0]
    assert after.chosen is None and after.session.round == 1 and after.hunt != visit.hunt  # a fresh visit
    shop.hunt_log.close()
    assert [r for r in records(log) if r["ended"] == "found"] == []
    # the server's own visit of a pick, sent back, is taken: This is it records what was shown and picked
    pick = visit.session.shown[2]
    picked = click(shop, visit, None, pick)
    done = shop.on_choose(None, picked.saved(shop.catalog, shop.key))[0]
    assert done.chosen == pick
    shop.hunt_log.close()
    (found,) = [r for r in records(log) if r["ended"] == "found"]
    assert found["found"] == shop.catalog.product_id(pick) and found["hunt"] == visit.hunt and found["via"] == "page"


def test_forged_target_with_compare_writes_no_found_record(catalog_and_rec, tmp_path):
    """Finding: a forged `target` with `strategy_from: "compare"` wrote "bayes found in 1 round" as often as
    wanted."""
    log = tmp_path / "hunts.jsonl"
    shop = a_shop(catalog_and_rec, log)
    visit = shop.start("bayes")[0]
    saved = visit.saved(shop.catalog, shop.key)
    row = visit.session.shown[0]
    for _ in range(3):
        forged = {**saved, "target": row, "strategy_from": "compare"}
        after = click(shop, None, forged, row)
        assert after.target is None and after.found_in is None
    shop.hunt_log.close()
    assert [r for r in records(log) if r["ended"] == "found"] == []
    # a real Find a product, its visit sent back twice after the target was on show: one found record, not two
    hunt = shop.find_product("mean")[0]
    kept = hunt.saved(shop.catalog, shop.key)
    target = hunt.target
    while target not in hunt.session.shown:
        kept = hunt.saved(shop.catalog, shop.key)
        hunt = click(shop, hunt, None, next(r for r in hunt.session.shown if r != target))
    kept = hunt.saved(shop.catalog, shop.key)
    for _ in range(2):
        assert click(shop, None, kept, target).found_in is not None
    shop.hunt_log.close()
    found = [r for r in records(log) if r["ended"] == "found"]
    assert [r["hunt"] for r in found] == [hunt.hunt] and found[0]["target"] == shop.catalog.product_id(target)


def test_a_foreign_hunt_id_is_refused_and_its_hunt_still_ends_abandoned(catalog_and_rec, tmp_path):
    """Finding: a visit could carry another visitor's hunt id (and suppress that visitor's abandoned record)."""
    log = tmp_path / "hunts.jsonl"
    shop = a_shop(catalog_and_rec, log)
    theirs, mine = shop.start()[0], shop.start()[0]
    forged = {**mine.saved(shop.catalog, shop.key), "hunt": theirs.hunt}
    taken = shop.load(forged)[0]
    assert taken.hunt not in (theirs.hunt, mine.hunt)  # refused whole: a fresh visit with a hunt id of its own
    shop.forget(theirs)  # their tab closes
    shop.hunt_log.flush_pending(everything=True)
    shop.hunt_log.close()
    assert [r["ended"] for r in records(log) if r["hunt"] == theirs.hunt] == ["abandoned"]


def test_a_tampered_signature_is_refused_whole(catalog_and_rec, tmp_path):
    """Finding: the saved visit was checked for shape but not for origin."""
    from shop.visit import checked_visit, restore_visit

    shop = a_shop(catalog_and_rec, None)
    visit = shop.start()[0]
    visit = click(shop, visit, None, visit.session.shown[4])
    saved = json.loads(json.dumps(visit.saved(shop.catalog, shop.key)))  # as a browser keeps it
    again = restore_visit(saved, shop.catalog, shop.rec, shop.key)
    assert again.session.history == visit.session.history and again.hunt == visit.hunt
    flipped = saved["sig"][:-1] + ("0" if saved["sig"][-1] != "0" else "1")
    for bad in (
        {**saved, "sig": flipped},
        {k: v for k, v in saved.items() if k != "sig"},
        {**saved, "picks": saved["picks"][:0], "pick_rounds": []},  # a field changed under the server's signature
        {**saved, "extra": 1},
        {**saved, "sig": saved["sig"].upper()},
    ):
        with pytest.raises(ValueError, match="signature"):
            checked_visit(bad, shop.catalog, shop.rec, shop.key)
        fresh = shop.load(bad)[0]
        assert fresh.session.round == 1 and fresh.session.picks == []
    other_key = a_shop(catalog_and_rec, None).key
    assert restore_visit(saved, shop.catalog, shop.rec, other_key) is None  # another server's key


def test_the_visit_secret_file_is_mode_0600_made_once_atomically(tmp_path, monkeypatch):
    """Finding: the key of what browsers keep is sent to every visitor, so a server-only secret signs visits."""
    from shop.visit import KEY_FILE, browser_key, visit_key

    monkeypatch.delenv("VISIT_SECRET", raising=False)
    cache = tmp_path / "cache"
    keys = []
    threads = [threading.Thread(target=lambda: keys.append(visit_key(cache))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = cache / KEY_FILE
    assert len(set(keys)) == 1 and len(keys[0]) == 64  # eight makers at once: one key, read whole by all
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in cache.iterdir()) == [KEY_FILE]  # no half-written file left beside it
    assert visit_key(cache) == keys[0]  # kept across restarts
    assert keys[0].decode() not in browser_key(keys[0])  # what Gradio sends to pages is not the key
    (tmp_path / "file").write_text("x")
    assert len(visit_key(tmp_path / "file")) == 32  # cannot be kept: a warning, and a key for this process


def test_visit_secret_is_shared_by_two_app_instances(catalog_and_rec, tmp_path, monkeypatch):
    """Several replicas of a shop: with VISIT_SECRET, a visit one wrote is taken by the other; without, not."""
    import app
    from shop.visit import restore_visit, visit_key

    catalog, rec = catalog_and_rec

    def two_apps():
        demos = [app.build_app(catalog, rec, key=visit_key(tmp_path / name)) for name in ("a", "b")]
        return [{f.api_name: f.fn for f in demo.fns.values()} for demo in demos]

    monkeypatch.setenv("VISIT_SECRET", "x" * 40)
    one, other = two_apps()
    saved = one["start"](None)[6]
    resumed = other["start"](saved)[0]
    assert resumed.session.history == [saved["history"][0]] and resumed.hunt == saved["hunt"]
    monkeypatch.delenv("VISIT_SECRET")
    one, other = two_apps()
    saved = one["start"](None)[6]
    assert other["start"](saved)[0].hunt != saved["hunt"]  # each its own key: refused, a fresh visit
    assert restore_visit(saved, catalog, rec, visit_key(tmp_path / "a")) is not None
