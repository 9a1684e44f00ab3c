"""app.py served for real on a local port, driven over Gradio's HTTP API as a browser would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import datasets
import pytest
import requests
from catalogs import make_catalog, product_columns
from gradio_http import ROOT, Shopper, gallery_captions, gallery_rows, start_app
from helpers import caption_parts, in_threads, run_in_process, seen_before

from catalog.catalog import price_text

N = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    cat = make_catalog(tmp / "catalog", n=N, appearance=True, products=True)
    env = {**os.environ, "APP_LOG": str(tmp / "app.log"), "CACHE_DIR": str(tmp / "cache"), "LOCALE": "de_DE"}
    proc, url = start_app(["--dataset", str(cat), "--strategy", "mean"], env)  # 5 alike + 5 new a round
    yield url, tmp
    proc.terminate()
    proc.wait(timeout=20)


def value(gallery):
    return gallery["value"] if isinstance(gallery, dict) and "value" in gallery else gallery


def test_page_and_thumbnails(server):
    url, tmp = server
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    shopper = Shopper(url)
    _, gallery, picks, status, *_ = shopper.call("start")
    items = value(gallery)
    assert len(items) == 10 and len(set(gallery_rows(gallery))) == 10
    assert not any(c[0] in "★✦" for c in gallery_captions(gallery))  # no marks before the first pick
    facts = product_columns(N)
    for row, caption in zip(gallery_rows(gallery), gallery_captions(gallery)):  # the title, the price below it
        title, price = caption_parts(caption)
        assert facts["title"][row].startswith(title.rstrip("…"))
        assert price == price_text(facts["price"][row], "EUR", "de_DE")  # as the shop's --locale writes it
    assert value(picks) == [] and "Round 1" in status and f"10 of {N} products seen" in status
    img = requests.get(items[0]["image"]["url"], timeout=10)
    assert img.status_code == 200 and img.headers["content-type"].startswith("image/")
    from io import BytesIO

    from PIL import Image

    thumb = Image.open(BytesIO(img.content))
    assert max(thumb.size) == 256  # the 48 px pictures enlarged (smoothly) to the tile size
    assert "products" in (tmp / "app.log").read_text()  # start-up logged with the catalog size


def test_rounds_matches_first_and_picks_grow(server):
    url, _ = server
    shopper = Shopper(url)
    gallery = shopper.call("start")[1]
    seen = set(gallery_rows(gallery))
    picked = []
    for r in range(4):
        index = (r * 3) % 10
        picked.append(gallery_rows(gallery)[index])
        _, gallery, picks, status, *_ = shopper.pick(index, value(gallery)[index])
        rows = gallery_rows(gallery)
        assert len(rows) == 10 and not seen & set(rows), "a product was shown twice"
        seen |= set(rows)
        caps = gallery_captions(gallery)
        assert all(c.startswith("★ ") for c in caps[:5]) and all(c.startswith("✦ ") for c in caps[5:])
        assert gallery_rows(picks) == picked
        assert f"Round {r + 2}" in status and f"{len(seen)} of {N}" in status


def test_same_position_twice_in_a_row(server):
    url, _ = server
    shopper = Shopper(url)
    g1 = shopper.call("start")[1]
    g2 = shopper.pick(2, value(g1)[2])[1]
    _, g3, picks, status, *_ = shopper.pick(2, value(g2)[2])
    assert gallery_rows(picks) == [gallery_rows(g1)[2], gallery_rows(g2)[2]]
    assert "Round 3" in status and not set(gallery_rows(g3)) & set(gallery_rows(g2))


def test_stale_and_out_of_range_clicks_are_ignored(server):
    url, _ = server
    shopper = Shopper(url)
    g1 = shopper.call("start")[1]
    g2 = shopper.pick(0, value(g1)[0])[1]
    # a late click on the previous gallery's item 4 (the page had already moved on)
    _, g_same, picks, status, *_ = shopper.pick(4, value(g1)[4])
    assert gallery_rows(g_same) == gallery_rows(g2) and "Round 2" in status and len(value(picks)) == 1
    _, g_same, picks, status, *_ = shopper.pick(99)
    assert gallery_rows(g_same) == gallery_rows(g2) and "Round 2" in status
    _, g_same, _, status, *_ = shopper.pick(-1)
    assert "Round 2" in status


def test_exhaustion_and_start_over(server):
    url, _ = server
    shopper = Shopper(url)
    gallery = shopper.call("start")[1]
    shown = list(gallery_rows(gallery))
    for _ in range(N // 10 - 1):
        gallery = shopper.pick(0, value(gallery)[0])[1]
        shown += gallery_rows(gallery)
    assert sorted(shown) == list(range(N))
    _, gallery, picks, status, *_ = shopper.pick(0, value(gallery)[0])  # never a dead end: they come again
    assert len(value(gallery)) == 10 and f"seen all {N} products" in status and len(value(picks)) == N // 10
    caps = gallery_captions(gallery)
    assert all(c.startswith("★ ") and seen_before(c) for c in caps[:5]), caps
    assert all(c.startswith("✦ ") and seen_before(c) for c in caps[5:]), caps
    _, gallery, picks, status, *_ = shopper.call("start_over")
    assert len(value(gallery)) == 10 and value(picks) == [] and "Round 1" in status


def test_concurrent_shoppers_stay_isolated(server):
    url, _ = server
    results = {}

    def shop(k: int) -> None:
        shopper = Shopper(url)
        gallery = shopper.call("start")[1]
        seen, picked = set(gallery_rows(gallery)), []
        for r in range(4):
            i = (k + r) % 10
            picked.append(gallery_rows(gallery)[i])
            _, gallery, picks, _, *_ = shopper.pick(i, value(gallery)[i])
            rows = gallery_rows(gallery)
            assert not seen & set(rows)
            seen |= set(rows)
            assert gallery_rows(picks) == picked, "another shopper's picks leaked in"
        results[k] = picked

    errors = in_threads(shop, 6)
    assert not errors, errors
    assert len(results) == 6


def run_app(*args, timeout=60):
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ},
    )
    return res, time.perf_counter() - t


def save(tmp, name, columns, features=None):
    path = tmp / name
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("case", ["no_embeddings", "no_image", "ragged", "text", "nan", "missing_dir", "hub_offline"])
def test_bad_datasets_give_one_clear_error(case, tmp_path, monkeypatch, capsys):
    from PIL import Image

    img = Image.new("RGB", (8, 8), "red")
    if case == "no_embeddings":
        src = save(tmp_path, case, {"image": [img], "id": ["a"]})
        word = "no 'embeddings' column"
    elif case == "no_image":
        src = save(tmp_path, case, {"id": ["a"], "embeddings": [[1.0, 0.0]]})
        word = "no 'image' column"
    elif case == "ragged":
        src = save(tmp_path, case, {"image": [img, img], "embeddings": [[1.0, 0.0], [1.0, 0.0, 2.0]]})
        word = "ragged"
    elif case == "text":
        src = save(tmp_path, case, {"image": [img], "embeddings": [["a", "b"]]})
        word = "numbers"
    elif case == "nan":
        src = save(tmp_path, case, {"image": [img, img], "embeddings": [[1.0, 0.0], [float("nan"), 1.0]]})
        word = "row 1"
    elif case == "missing_dir":
        src = tmp_path / "nowhere"
        word = "neither an existing directory"
    else:
        src = "someone/not-cached-embeddings"
        word = "unavailable"
    t = time.perf_counter()
    if case in ("ragged", "hub_offline"):  # through the real command line
        res, _ = run_app("--dataset", src)
    else:
        res = run_in_process("app", ["--dataset", src, "--cache-dir", tmp_path / "cache"], {}, monkeypatch, capsys)
    seconds = time.perf_counter() - t
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and word in errors[0], res.stderr
    assert seconds < 30


def test_help():
    res, _ = run_app("--help")
    assert res.returncode == 0
    for flag in ("--dataset", "--host", "--port", "--share", "--per-round", "--similar", "--demo-size"):
        assert flag in res.stdout


def test_small_load_run(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import load_bench

    result = load_bench.run(products=400, shoppers=8, rounds=5, dim=64, tmp=tmp_path)
    assert result["errors"] == 0 and result["repeats"] == 0 and result["leaks"] == 0
    assert len(result["latencies_ms"]) == 40 and 0 < result["server_cpu_ms"] < 1000 and result["rounds_per_s"] > 0


def test_strategy_setting_changes_the_rounds(server):
    url, _ = server
    shopper = Shopper(url)
    shopper.call("start")
    _, gallery, picks, status, *_ = shopper.call("set_strategy", ["bayes", None])
    assert "Round 1" in status and value(picks) == []
    out = shopper.pick(1, value(gallery)[1])
    gallery, status, captions = out[1], out[3], gallery_captions(out[1])
    assert len(gallery_rows(gallery)) == 10 and all(c[0] in "★✦" for c in captions)
    stars = [c[0] == "★" for c in captions]
    assert stars == sorted(stars, reverse=True)  # likely targets first, then the ones that explore
    assert "bayes" not in status and "Following" not in status  # strategies are for Settings
    assert out[8] == "bayes" and re.search(r"Following: (embedding|appearance) \d+%", out[9])
    _, gallery, *_ = shopper.call("set_strategy", ["random", None])
    _, gallery, *_ = shopper.pick(1, value(gallery)[1])
    assert all(c.startswith("✦ ") for c in gallery_captions(gallery))


def test_find_a_product_mode_counts_rounds(server):
    import json
    import re

    url, _ = server
    shopper = Shopper(url)
    shopper.call("start")
    for strategy in ("bayes", "mean"):
        _, gallery, _, status, target, table, *_ = shopper.call("find_product", [strategy, None])
        target_row = int(re.search(r"r(\d+)-[0-9a-f]+\.jpg", json.dumps(target)).group(1))
        assert "Find the product" in status
        for rounds in range(1, N // 10 + 1):  # noqa: B007 - read after the loop
            rows = gallery_rows(gallery)
            if target_row in rows:
                i = rows.index(target_row)
                _, gallery, _, status, target, table, *_ = shopper.pick(i, value(gallery)[i])
                break
            # click what looks most like the target: the first (most similar) product
            _, gallery, _, status, target, table, *_ = shopper.pick(0, value(gallery)[0])
        assert f"Found it in {rounds} round" in status
        data = table["data"] if isinstance(table, dict) else table
        assert [rounds, strategy] in [list(r)[2:] for r in data]
        # after finding, further clicks change nothing
        again = shopper.pick(0, value(gallery)[0])
        assert again[3] == status


def test_double_click_in_one_session_advances_once(tmp_path):
    """Two events of one browser session at once (a double click): one round advances, no error."""
    import gradio as gr

    import app
    from catalog.catalog import Catalog
    from recommender import Recommender

    catalog = Catalog(datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=50))), "t", tmp_path)
    rec = Recommender(catalog.embeddings, seed=0)
    demo = app.build_app(catalog, rec)
    fns = {f.api_name: f.fn for f in demo.fns.values()}
    visit = fns["start"](None)[0]
    slow = visit.session.next_round

    def next_round_slowly(*a, **k):
        time.sleep(0.2)  # widen the window in which a second click could slip in
        return slow(*a, **k)

    visit.session.next_round = next_round_slowly
    item = {"image": {"path": catalog.thumb(visit.session.shown[3])}, "caption": ""}
    outs, errors = [], []

    def click():
        try:
            outs.append(fns["pick"](visit, None, gr.SelectData(None, {"index": 3, "value": item})))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(outs) == 2
    assert visit.session.round == 2 and len(visit.session.picks) == 1


def test_search_box_steers_the_gallery_and_handles_bad_queries(server):
    url, _ = server
    shopper = Shopper(url)
    start = shopper.call("start")
    assert start[13] == ""  # the search box, empty
    before = gallery_rows(start[1])
    out = shopper.call("search", ["  Round  ", None, None])
    gallery, status, saved, box = out[1], out[3], out[6], out[13]
    rows, caps = gallery_rows(gallery), gallery_captions(gallery)
    assert len(rows) == 10 and box == "Round"
    assert all(r % 3 == 0 for r in set(rows) & set(before))  # a round one shown before may come again
    assert all(r % 3 == 0 and c.startswith("★ ") for r, c in zip(rows[:5], caps)), caps  # the round ones
    assert all(seen_before(c) == (r in before) for r, c in zip(rows[:5], caps)), caps
    assert "Round 2" in status and "20 products match 'Round'" in status and saved["search"] == "Round"
    # a miss says so and changes nothing
    _, same, _, status, *_ = shopper.call("search", ["xyz", None, None])
    assert gallery_rows(same) == rows and "No product matches 'xyz'" in status and "Round 2" in status
    # junk is handled without an error, and changes nothing
    for junk in ("!!! ???", "x" * 10_000, "🙂" * 300):
        _, same, _, status, *_ = shopper.call("search", [junk, None, None])
        assert gallery_rows(same) == rows and "Round 2" in status
    # a pick keeps the words: the nearest unseen products of that kind come first
    out = shopper.pick(7, value(gallery)[7])
    assert all(r % 3 == 0 for r in gallery_rows(out[1])[:5]), gallery_captions(out[1])
    assert "20 products match 'Round'" in out[3]
    # a reload finds the words again from what the browser kept
    reloaded = Shopper(url).call("start", [out[6]])
    assert "20 products match 'Round'" in reloaded[3] and reloaded[13] == "Round"
    # the server let the session go (idle, restart): a search resumes from the browser's copy, then steers
    resumed = Shopper(url).call("search", ["wedge", None, out[6]])
    assert gallery_rows(resumed[2]) == gallery_rows(out[2]) and "products match 'wedge'" in resumed[3]
    assert all(r % 3 == 2 for r in gallery_rows(resumed[1])[:5])  # the wedges
    # an empty box clears the words; Start over clears the box
    _, _, _, status, *_ = shopper.call("search", ["", None, None])
    assert "Search cleared" in status and "Searching" not in status
    shopper.call("search", ["wedge", None, None])
    fresh = shopper.call("start_over", ["mean", None])
    assert fresh[13] == "" and "Searching" not in fresh[3] and "Round 1" in fresh[3]


def test_a_pick_sends_plain_values_in_the_pages_format(server):
    """The cost of a round cannot creep back: after the first round, a pick's response carries no component
    update and no skip (either makes Gradio rebuild a component and its config per event), and the galleries
    carry picture URLs (no per-event file handling) that name no path of the server."""
    url, _ = server
    shopper = Shopper(url)
    out = shopper.call("start")
    out = shopper.pick(0, value(out[1])[0])
    out = shopper.pick(1, value(out[1])[1])
    raw = shopper.raw
    assert [v for v in raw if isinstance(v, dict) and "__type__" in v] == []
    for gallery in (raw[1], raw[2]):  # the products and the picks
        assert isinstance(gallery, list) and gallery
        assert all(item["image"]["path"].startswith(f"{url}/pictures/r") for item in gallery)
    assert len(gallery_rows(out[1])) == 10 and "Round 3" in out[3]


def test_a_handler_settles_the_visit_and_render_only_reads_it(tmp_path):
    """Products that cannot be shown leave the round in `Shop.settle`, before anything is rendered; `Shop.render`
    then changes nothing (the visit, the catalog, what the page shows), and gives the same View each time."""
    import json

    from catalog.catalog import Catalog
    from recommender import Recommender
    from shop.shop import OUTPUTS, Shop, View

    bad = set(range(0, 40, 3))
    path = make_catalog(tmp_path / "cat", n=40, bad_rows=tuple(bad))
    catalog = Catalog(datasets.load_from_disk(str(path)), "t", tmp_path)
    rec = Recommender(catalog.embeddings, seed=0)
    catalog.on_hide = rec.hide
    shop = Shop(catalog, rec)
    visit = shop.new_visit(None, None, hunt=False)  # nothing checked yet: its round holds some of the bad rows
    assert bad & set(visit.session.shown)
    visit.note = "a line shown once"
    shop.settle(visit)
    assert len(visit.session.shown) == 10 and not bad & set(visit.session.shown) and bad & set(catalog.hidden)

    def snapshot() -> str:
        return json.dumps(
            [visit.session.to_dict(), visit.page, visit.pictures, visit.note, sorted(catalog.hidden)], default=str
        )

    before = snapshot()
    view = shop.render(visit)
    assert snapshot() == before and shop.render(visit) == view and isinstance(view, View)
    assert tuple(View.__dataclass_fields__) == OUTPUTS and len(view.outputs()) == 13  # no box: not an output
    assert view.outputs()[0] is visit and "a line shown once" in view.info
    out = shop.answer(visit, box="")
    assert len(out) == 14 and out[13] == "" and visit.note == ""  # the note is shown once


def test_shop_name_heads_the_page_and_names_the_tab(tmp_path):
    """--shop-name (SHOP_NAME) is the tab's title and the page's heading, as text; by default the catalog's own
    name without the upload's "-embeddings" suffix, never a folder path."""
    import app
    from catalog.catalog import Catalog, shop_title
    from recommender import Recommender

    assert shop_title("USER/my-shop-embeddings") == "my-shop" and shop_title("my-shop") == "my-shop"
    catalog = Catalog(datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=20))), "boots-embeddings", tmp_path)
    rec = Recommender(catalog.embeddings, seed=0)
    default = app.build_app(catalog, rec)
    assert default.title == "boots"
    named = app.build_app(catalog, rec, shop_name="Ada's *Shoes*")
    heading = next(b.value for b in named.blocks.values() if getattr(b, "elem_id", None) == "shop-name")
    assert named.title == "Ada's *Shoes*" and heading.startswith("## Ada's \\*Shoes\\*")
    assert app.parse_args(["--shop-name", "Ada's Shoes"]).shop_name == "Ada's Shoes"
    assert app.parse_args([]).strategy == "bayes" and app.parse_args(["--strategy", "mean"]).strategy == "mean"


def test_a_long_description_reads_in_full_under_more():
    from shop.page import DESCRIPTION_LEAD, description_html

    short = description_html("A lamp <b>.")
    assert short == '<p class="pp-desc">A lamp &lt;b&gt;.</p>'
    text = "word " * 200 + "the end"
    folded = description_html(text)
    first, rest = folded.split("<summary>more</summary>")
    assert "<details" in first and len(first) < DESCRIPTION_LEAD + 80 and "the end" in rest
    read = re.sub(r"<[^>]+>", " ", folded.replace("<summary>more</summary>", "")).replace("…", " ")
    assert " ".join(read.split()) == " ".join(text.split())  # every word, once


def test_view_in_shop_ends_the_hunt_only_for_the_product_on_the_page(tmp_path):
    """*View in shop* ends the hunt as found (one hunt log record) only when the product its link names is the one
    this visit's page shows: a click on a stale page, a forged or odd value, a page with no product change nothing."""
    import gradio as gr

    from catalog.catalog import Catalog
    from common.huntlog import HuntLog, read_records
    from recommender import Recommender
    from shop.shop import Shop

    catalog = Catalog(datasets.load_from_disk(str(make_catalog(tmp_path / "cat", n=30, products=True))), "t", tmp_path)
    log = tmp_path / "hunts.jsonl"
    shop = Shop(catalog, Recommender(catalog.embeddings, seed=0), HuntLog(str(log), sync=True))  # read at once
    visit = shop.new_visit(None, None, hunt=False)
    shop.on_shop(visit, None, gr.EventData(None, {"product": "p000"}))  # no product on the page yet
    row = next(r for r in visit.session.shown if r != 2)  # row 2's link is unsafe: it has none
    shop.pick(visit, gr.SelectData(None, {"index": visit.session.shown.index(row), "value": None}))
    other = catalog.product_id(next(r for r in range(30) if r != row))
    for claim in (other, None, 5, ["p000"], "x" * 5000):
        shop.on_shop(visit, None, gr.EventData(None, {"product": claim}))
        assert not visit.ended and not log.exists()
    shop.on_shop(visit, None, gr.EventData(None, {"product": catalog.product_id(row)}))
    assert visit.chosen == row and visit.found_in == 1 and visit.results[-1]["how"] == "shop"
    records = list(read_records([log]))
    assert [(r["ended"], r["found"]) for r in records] == [("found", catalog.product_id(row))]
