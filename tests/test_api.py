"""The hunt as an API (issue 33): /recommend, /product and /found called with gradio_client (and @gradio/client
from Node) against one running app; the caller carries the whole hunt in its signed visit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from catalogs import make_catalog
from gradio_client import Client
from gradio_http import start_app
from helpers import wait_for

from common.huntlog import read_records

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "tests" / "js"
SECRET = "api-test-secret-" + "0123456789abcdef" * 2  # the app's VISIT_SECRET, so a test can sign a visit too
N = 220  # products: a hunt of 20 rounds of 10 sees 200 of them, none twice


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """(url, hunt log path, catalog key): one app for the module, with a hunt log and a known VISIT_SECRET."""
    tmp = tmp_path_factory.mktemp("api")
    cat = make_catalog(tmp / "cat", n=N, products=True)
    log = tmp / "hunts.jsonl"
    env = {
        **os.environ,
        "APP_LOG": str(tmp / "app.log"),
        "CACHE_DIR": str(tmp / "cache"),
        "HUNT_LOG": str(log),
        "VISIT_SECRET": SECRET,
    }
    proc, url = start_app(["--dataset", str(cat)], env)
    try:
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def recommend(client: Client, visit: str = "", pick: str = "", words: str = "", strategy: str = "") -> dict:
    return client.predict(visit=visit, pick=pick, words=words, strategy=strategy, api_name="/recommend")


def python_example(URL: str) -> tuple[dict, dict]:  # noqa: N803 - the name docs/api.md's example uses
    # --- the Python example of docs/api.md, from here (a whole hunt with gradio_client)
    from gradio_client import Client

    client = Client(URL, verbose=False)
    # A new hunt (empty visit), then 20 rounds, each picking one product of the gallery by its id.
    answer = client.predict(visit="", pick="", words="", strategy="", api_name="/recommend")
    for _ in range(20):
        liked = answer["products"][3]
        answer = client.predict(visit=answer["visit"], pick=liked["id"], words="", strategy="", api_name="/recommend")
    product = client.predict(id=answer["products"][0]["id"], api_name="/product")
    done = client.predict(visit=answer["visit"], id=product["id"], api_name="/found")
    print(product["title"], product["price"], product["currency"], "found in", done["rounds"], "rounds")
    # --- to here
    return answer, done


@pytest.mark.slow  # 21 calls through gradio_client: 6-11 s on a busy 2-core machine
def test_a_hunt_of_20_rounds_by_product_ids_never_repeats_and_is_logged(api):
    url, log = api
    answer, done = python_example(url)
    visit = json.loads(answer["visit"])
    shown = [row for rows in visit["history"] for row in rows]
    assert answer["round"] == 21 and len(shown) == 210 and len(set(shown)) == 210  # no product twice
    assert (answer["seen"], answer["total"]) == (210, N)
    ids = [p["id"] for p in answer["products"]]
    assert len(ids) == 10 and all(re.fullmatch(r"p\d{3}", i) for i in ids)
    assert set(answer["products"][0]) == {"id", "title", "price", "currency", "url", "image"}
    assert done["found"] == ids[0] and done["rounds"] == 21
    record = wait_for(lambda: [r for r in records(log) if r["hunt"] == visit["hunt"]], timeout=10)[0]
    assert (record["via"], record["ended"], record["found"]) == ("api", "found", ids[0])
    assert [r["pick"] for r in record["rounds"]][:20] == [f"p{row:03d}" for row in visit["picks"]]
    assert record["rounds"][20]["pick"] == ids[0] and record["rounds"][20]["shown"] == ids


def test_words_search_and_images_fetch(api):
    url, log = api
    client = Client(url, verbose=False)
    answer = recommend(client, words="wedge")
    titles = [p["title"] for p in answer["products"]]
    assert answer["round"] == 1 and sum("Wedge" in t for t in titles) >= 5 and answer["note"] == ""
    missed = recommend(client, answer["visit"], words="xyzzy")
    assert "No product matches" in missed["note"] and missed["round"] == 1  # nothing changes but the note
    ids = ids_of(missed)
    done = client.predict(visit=missed["visit"], id=ids[1], api_name="/found")
    hunt = json.loads(done["visit"])["hunt"]
    (record,) = wait_for(lambda: [r for r in records(log) if r["hunt"] == hunt], timeout=10)
    wedge, first, miss = record["rounds"]  # the words before any gallery, the gallery, the miss typed on it
    assert wedge["shown"] == [] and wedge["words"] == "wedge" and wedge["matches"] > 5
    assert first == {"shown": ids, "pick": ids[1], "words": None, "matches": None}
    assert miss == {"shown": [], "pick": None, "words": "xyzzy", "matches": 0}
    assert (record["found"], record["via"], done["rounds"]) == (ids[1], "api", 1)
    for product in answer["products"][:3]:
        assert product["image"].startswith(url + "/")
        got = requests.get(product["image"], timeout=10)
        assert got.status_code == 200 and got.headers["content-type"].startswith("image/") and got.content
    linked = next(p for p in answer["products"] if p["url"])  # (p002's link is unsafe: dropped)
    page = client.predict(id=linked["id"], api_name="/product")
    assert page["description"] and page["url"] == linked["url"] and page["price"] == linked["price"] > 0
    assert requests.get(page["image"], timeout=10).headers["content-type"].startswith("image/")


def test_picture_urls_follow_the_address_the_call_came_to(api):
    """Behind a proxy (its forwarded host and scheme), over plain HTTP: the pictures' URLs are the caller's."""
    url, _ = api
    proxy = {"X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"}
    call = f"{url}/gradio_api/call/recommend"
    posted = requests.post(call, json={"data": ["", "", "", ""]}, headers=proxy, timeout=30)
    stream = requests.get(f"{call}/{posted.json()['event_id']}", headers=proxy, timeout=30)
    answer = json.loads(stream.text.split("event: complete\ndata: ", 1)[1].splitlines()[0])[0]
    images = [p["image"] for p in answer["products"]]
    assert len(images) == 10 and all(i.startswith("https://shop.example/") for i in images)


def test_forged_or_foreign_catalog_visits_are_refused(api):
    from shop.visit import signature

    url, _ = api
    client = Client(url, verbose=False)
    answer = recommend(client)
    visit = json.loads(answer["visit"])
    pick = answer["products"][0]["id"]
    body = {k: v for k, v in visit.items() if k != "sig"}
    foreign = {**body, "catalog": "another-shop-1"}
    forged = [
        ({**visit, "history": [visit["history"][0][::-1]]}, "signature"),
        ({**visit, "sig": "0" * 64}, "signature"),
        (body, "signature"),
        ({**foreign, "sig": signature(foreign, SECRET.encode())}, "another catalog"),
    ]
    for bad, why in forged:
        with pytest.raises(Exception, match=f"visit refused: .*{why}"):
            recommend(client, json.dumps(bad), pick)
    for junk in ("garbage", "[" * 5000, json.dumps([1, 2])):
        with pytest.raises(Exception, match="visit refused"):
            recommend(client, junk)
    with pytest.raises(Exception, match="visit refused"):
        client.predict(visit="{}", id=pick, api_name="/found")
    huge = requests.post(f"{url}/gradio_api/call/recommend", json={"data": ["x" * (2 << 20), "", "", ""]}, timeout=30)
    assert huge.status_code == 413  # the page's body limit holds for the API too


def test_unknown_ids_and_strategies_are_clear_errors(api):
    url, _ = api
    client = Client(url, verbose=False)
    answer = recommend(client)
    for bad in ("p999", "", "<script>", "x" * 5000):
        with pytest.raises(Exception, match="no product with id"):
            client.predict(id=bad, api_name="/product")
    unseen = next(f"p{i:03d}" for i in range(N) if f"p{i:03d}" not in {p["id"] for p in answer["products"]})
    with pytest.raises(Exception, match="not a product of the last gallery"):
        recommend(client, answer["visit"], unseen)
    with pytest.raises(Exception, match="not a product of this hunt"):
        client.predict(visit=answer["visit"], id=unseen, api_name="/found")
    with pytest.raises(Exception, match="unknown strategy"):
        recommend(client, strategy="magic")
    assert json.loads(recommend(client, strategy="bayes")["visit"])["strategy"] == "bayes"


def test_a_visit_from_one_client_is_continued_by_another_connection(api):
    url, _ = api
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    answer = recommend(first)
    pick = answer["products"][2]["id"]
    after = recommend(second, answer["visit"], pick)
    visit = json.loads(after["visit"])
    assert after["round"] == 2 and visit["picks"] == [int(pick[1:])]
    assert not {p["id"] for p in after["products"]} & {p["id"] for p in answer["products"]}
    done = first.predict(visit=after["visit"], id=pick, api_name="/found")  # a product picked before
    assert done["found"] == pick and done["rounds"] == 1
    with pytest.raises(Exception, match="ended"):
        recommend(second, done["visit"], after["products"][0]["id"])


def test_two_interleaved_callers_never_see_each_others_products(api):
    url, _ = api
    client = Client(url, verbose=False)
    answers = [recommend(client), recommend(client)]
    galleries: list[list[list[str]]] = [[ids_of(a)] for a in answers]
    for _ in range(6):
        for k in (0, 1):
            pick = answers[k]["products"][k + 4]["id"]
            answers[k] = recommend(client, answers[k]["visit"], pick)
            galleries[k].append(ids_of(answers[k]))
    for k in (0, 1):
        visit = json.loads(answers[k]["visit"])
        assert [[f"p{row:03d}" for row in rows] for rows in visit["history"]] == galleries[k]  # only its own
        flat = [i for rows in galleries[k] for i in rows]
        assert len(flat) == len(set(flat)) == 70
    assert json.loads(answers[0]["visit"])["hunt"] != json.loads(answers[1]["visit"])["hunt"]


def test_the_api_page_lists_the_api_and_no_page_event(api):
    url, _ = api
    info = requests.get(f"{url}/gradio_api/info", timeout=10).json()
    assert sorted(info["named_endpoints"]) == ["/found", "/product", "/recommend"]
    params = [p["parameter_name"] for p in info["named_endpoints"]["/recommend"]["parameters"]]
    assert params == ["visit", "pick", "words", "strategy"]
    assert info["unnamed_endpoints"] == {}


@pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed: the JavaScript example cannot run")
def test_the_javascript_example_runs_with_gradio_client_from_npm(api):
    url, log = api
    if not (JS / "node_modules" / "@gradio" / "client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)
    ran = subprocess.run(["node", "hunt.mjs", url], cwd=JS, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["round"] == 4 and out["seen"] == 40 and len(set(out["ids"])) == 10
    assert out["found"] == out["ids"][0] and out["rounds"] == 4 and out["title"]
    assert requests.get(out["image"], timeout=10).status_code == 200


def test_docs_show_the_examples_the_tests_run():
    import inspect

    docs = (ROOT / "docs" / "api.md").read_text()
    source = inspect.getsource(python_example)
    python = source.split("# --- the Python example of docs/api.md, from here (a whole hunt with gradio_client)\n")[1]
    python = python.split("    # --- to here")[0]
    assert "\n".join(line[4:] for line in python.splitlines()) in docs
    assert (JS / "hunt.mjs").read_text().strip() in docs


# ------------------------------------------------------------------------------------------------ helpers
def ids_of(answer: dict) -> list[str]:
    return [p["id"] for p in answer["products"]]


def records(log: Path) -> list[dict]:
    return list(read_records([log])) if log.exists() else []
