"""Nothing from outside is trusted (issue 21): a test per finding of the hostile probe, numbered as there.

1 a dataset's paths lead outside its folder · 2 forged saved state changes what others see · 3 --overwrite
deletes what it did not write · 4 a FIFO among the pictures · 5 lone surrogates and huge numbers · 6 costly
forged state and huge bodies · 7 evaluate reads pictures from the wrong folder · 8 tracebacks and accepted
nonsense. Last: a hostile dataset served to forging HTTP and Chromium clients, and a fresh shopper after them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import requests
from catalogs import make_catalog
from conftest import pattern
from gradio_http import Shopper, gallery_rows, start_app, thumb_row
from helpers import play_to_end, run_in_process
from PIL import Image
from test_hostile import in_process_shop, make_folder, one_error, run, value

N = 30
BAD = {0: "outside", 1: "absolute", 2: "outside", 3: "regular file", 4: "outside", 5: "outside"}


def hostile_catalog(tmp: Path) -> tuple[Path, Path]:
    """A saved dataset of N path-string pictures whose rows 0-5 must never be read: a picture outside the folder
    by `..`, by an absolute path, by a symlink out, a FIFO inside, a symlink to a device, `..` through a subfolder.
    Returns (dataset folder, the outside picture)."""
    secret = tmp / "secret.png"
    Image.fromarray(pattern(40, 40, 99)).save(secret)
    paths = {
        0: "../secret.png",
        1: str(secret),
        2: "files/link.png",
        3: "files/fifo.png",
        4: "files/dev.png",
        5: "files/../../secret.png",
    }
    folder = make_catalog(tmp / "shop", n=N, as_paths=True, paths=paths)
    (folder / "files" / "link.png").symlink_to(secret)
    os.mkfifo(folder / "files" / "fifo.png")
    (folder / "files" / "dev.png").symlink_to("/dev/zero")
    return folder, secret


def catalog_of(folder: Path, cache: Path):
    from catalog.catalog import Catalog

    return Catalog(datasets.load_from_disk(str(folder)), "shop", cache)


def in_thread(fn, timeout: float = 30):
    """Run `fn` in a thread; fail (instead of hanging the suite) when it does not return within `timeout`."""
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"{fn} blocked for more than {timeout} s"
    return out.get("value")


# --------------------------------------------------------------------------- 1. paths outside the dataset
def test_dataset_paths_never_leave_the_dataset_folder(tmp_path):
    folder, secret = hostile_catalog(tmp_path)
    catalog = catalog_of(folder, tmp_path / "cache")
    in_thread(lambda: catalog.check_all(background=False))
    assert set(catalog.hidden) == set(BAD)
    for row, word in BAD.items():
        assert word in catalog.hidden[row], (row, catalog.hidden[row])
    thumbs = {thumb_row(p) for p in catalog.thumb_dir.glob("r*.jpg")}
    assert thumbs == set(range(len(BAD), N))  # no thumbnail of anything outside, so none to fetch
    assert "(6 left out" in catalog.summary()


def test_a_changed_picture_gets_a_new_thumbnail(tmp_path):
    folder = make_catalog(tmp_path / "shop", n=6, as_paths=True)
    catalog = catalog_of(folder, tmp_path / "cache")
    first = catalog.thumb(2)
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(folder / "files" / "p2.png")  # the shop changes it
    second = catalog.thumb(2)
    assert second != first and thumb_row(second) == 2
    assert np.asarray(Image.open(second)).max() < 30 < np.asarray(Image.open(first)).max()
    assert catalog.thumb(2) == second  # and it is made once


# ------------------------------------------------------------------------------ 2. forged saved state
def forged_states(key: str, n: int) -> list:
    """Saved visits a client can send: each must be refused whole, changing nothing."""
    base = {
        "catalog": key,
        "strategy": "mean",
        "history": [[3, 4]],
        "picks": [],
        "pick_rounds": [],
        "n_similar": 0,
        "target": None,
        "found_in": None,
        "results": [],
        "search": None,
    }
    return [
        {**base, "target": True},  # a bool is an int to Python: it hid row 1 from every shopper
        {**base, "target": 5, "found_in": True},
        {**base, "target": n},
        {**base, "strategy": ["mean"]},  # unhashable
        {**base, "results": [{"strategy": ["x"], "rounds": 1}]},
        {**base, "results": [{"strategy": "mean", "rounds": 10**30}]},  # no JSON encoder takes it back
        {**base, "results": [{"strategy": "mean", "rounds": True}]},
        {**base, "results": [{"strategy": "mean", "rounds": 1}] * 501},
        {**base, "n_similar": True},
        {**base, "history": [[True, 4]]},
        {**base, "picks": [3], "pick_rounds": [True]},
        {**base, "search": ["sneaker"]},
        {**base, "history": [[i] for i in range(1001)]},  # more rounds than a restore may replay
        {**base, "viewing": True},
        {**base, "viewing": n},
        {**base, "chosen": 3},  # a find without its rounds
        {**base, "chosen": -1, "found_in": 1},
        {**base, "chosen": 3, "found_in": 10**30},
        {**base, "results": [{"strategy": "mean", "rounds": 1, "product": n}]},
        {**base, "results": [{"strategy": "mean", "rounds": 1, "product": 2, "how": "<script>"}]},
    ]


def test_forged_saved_state_is_refused_whole_and_changes_nothing_shared(tmp_path):
    catalog, rec, fns = in_process_shop(tmp_path, n=40)
    for forged in forged_states(catalog.key, catalog.n):
        visit = fns["start"](forged)[0]
        assert visit.session.round == 1 and visit.session.picks == [] and visit.target is None, forged
        assert visit.results == [], forged
        assert rec.n_hidden == 0 and not catalog.hidden, forged  # nothing hidden from anyone
        json.dumps(visit.saved(catalog, b"k" * 32))
    assert sorted(play_to_end(rec.new_session(seed=1))) == list(range(40))


# ------------------------------------------------------------------------------ 3. --overwrite and --out
def test_overwrite_replaces_only_datasets_this_project_wrote(tmp_path, tiny_model):
    out = tmp_path / "home"
    (out / "Documents").mkdir(parents=True)
    (out / "Documents" / "taxes.txt").write_text("keep me")
    other = out / "other-embeddings"
    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(other))  # a dataset, but not one of ours
    folder = make_folder(tmp_path / "img", 3)
    for repo in ("me/Documents", "me/other"):
        res = run(
            "upload_ds.py", folder, "--repo", repo, "--model", tiny_model, "--no-push", "--out", out, "--overwrite"
        )
        assert "not a dataset that upload_ds.py wrote" in one_error(res) and "embedding:" not in res.stderr
    assert (out / "Documents" / "taxes.txt").read_text() == "keep me"
    assert list(datasets.load_from_disk(str(other))["x"]) == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == ["Documents", "other-embeddings"]


def test_a_second_run_into_the_same_out_says_who_holds_it(tmp_path, tiny_model):
    from common.saving import out_lock

    out = tmp_path / "out"
    out.mkdir()
    with out_lock(out, "shop"):
        res = run(
            "upload_ds.py",
            make_folder(tmp_path / "img", 3),
            "--repo",
            "me/shop",
            "--model",
            tiny_model,
            "--no-push",
            "--out",
            out,
        )
    line = one_error(res)
    assert f"pid {os.getpid()}" in line and "embedding:" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == []  # the lock file goes with the lock


def test_a_failed_overwrite_keeps_the_old_pair(tmp_path, monkeypatch):
    import upload_ds

    out = tmp_path / "out"
    out.mkdir()
    names = ["shop", "shop-embeddings"]
    pair = [datasets.Dataset.from_dict({"id": ["a"]}), datasets.Dataset.from_dict({"id": ["a"], "v": [1]})]
    pair[1].info.description = json.dumps({"model": "m", "pooling": "cls", "dim": 1})
    upload_ds.save_outputs(*pair, out, names)
    new = [datasets.Dataset.from_dict({"id": ["b"]}), datasets.Dataset.from_dict({"id": ["b"], "v": [2]})]
    new[1].info.description = pair[1].info.description

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(new[1], "save_to_disk", disk_full)
    with pytest.raises(OSError):
        upload_ds.save_outputs(*new, out, names)
    assert [datasets.load_from_disk(str(out / n))["id"] for n in names] == [["a"], ["a"]]  # both old, together
    assert sorted(p.name for p in out.iterdir()) == names  # the half-written pair is gone


# ------------------------------------------------------------------------------------ 4. a FIFO picture
def test_a_fifo_among_the_first_pictures_never_blocks(tmp_path):
    folder, _ = hostile_catalog(tmp_path)
    catalog = catalog_of(folder, tmp_path / "cache")
    in_thread(lambda: catalog.check_sample(k=N))  # every row, the FIFO's among them, before serving
    assert "not a regular file" in catalog.hidden[3]


# ---------------------------------------------------------------------- 5 and 6 over HTTP: a running app
@pytest.fixture(scope="module")
def hostile_shop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    folder, secret = hostile_catalog(tmp)
    env = {**os.environ, "APP_LOG": str(tmp / "app.log"), "CACHE_DIR": str(tmp / "cache")}
    proc, url = start_app(["--dataset", str(folder)], env)
    yield url, folder, secret, proc
    proc.terminate()
    proc.wait(timeout=20)


def server_rss(proc) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text()).group(1)) * 1024


def test_lone_surrogates_and_huge_numbers_break_no_later_response(hostile_shop):
    url = hostile_shop[0]
    shopper = Shopper(url)
    out = shopper.call("start")
    out = shopper.call("search", ["\udcff round", None, None])  # a lone surrogate, as browser JS can send
    assert "\ufffd round" in out[3] or "round" in out[3]
    out = shopper.pick(0, value(out[1])[0])  # a later response of the session still works
    assert "Round 3" in out[3] and gallery_rows(out[1])
    saved = out[6]
    json.dumps(saved)
    huge = {**saved, "results": [{"strategy": "mean", "rounds": 10**30}]}
    fresh = Shopper(url).call("start", [huge])  # refused: a fresh visit, not a broken one
    assert "Round 1" in fresh[3] and value(fresh[2]) == [] and len(gallery_rows(fresh[1])) == 10


def test_request_bodies_are_capped(hostile_shop):
    url, _, _, proc = hostile_shop
    before = server_rss(proc)
    join = f"{url}/gradio_api/queue/join"
    big = b"{" + b" " * (20 << 20) + b"}"
    for _ in range(8):
        r = requests.post(join, data=big, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413
    chunks = (b" " * (1 << 20) for _ in range(20))  # no length declared: counted as it arrives
    try:
        r = requests.post(join, data=chunks, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413
    except requests.ConnectionError:
        pass  # the server may close before the client has sent it all
    assert server_rss(proc) - before < 60 << 20
    assert len(gallery_rows(Shopper(url).call("start")[1])) == 10


def test_a_forged_long_history_is_refused_or_replays_only_the_latest_picks(tmp_path, monkeypatch):
    import recommender
    from engine import bayes

    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    rec = recommender.Recommender(x, seed=0, strategy="bayes")
    rows = np.random.default_rng(1).permutation(3000)
    history = [rows[i * 3 : i * 3 + 3].tolist() for i in range(recommender.MAX_SAVED_ROUNDS)]
    saved = {
        "strategy": "bayes",
        "history": history,
        "picks": [r[0] for r in history],
        "pick_rounds": list(range(1, len(history) + 1)),
        "n_similar": 0,
    }
    with pytest.raises(ValueError, match="at most"):
        rec.restore_session({**saved, "history": history + [[rows[-1]]]})
    session = rec.restore_session(saved)
    calls = []
    real = bayes.belief_rows
    monkeypatch.setattr(bayes, "belief_rows", lambda *a: calls.append(1) or real(*a))
    session.next_round()
    assert len(calls) <= recommender.MAX_REPLAYED_PICKS + 2  # one per weighed pick and view, + the design's
    fresh = rec.new_session(seed=3)
    for _ in range(30):
        shown = fresh.next_round() if fresh.round == 0 else fresh.next_round(pick=fresh.shown[0])
    calls.clear()
    restored = rec.restore_session(fresh.to_dict())
    restored.next_round(pick=restored.shown[0])
    assert len(calls) <= recommender.MAX_REPLAYED_PICKS + 2 and shown


# ----------------------------------------------------------------- 7. evaluate reads the dataset's pictures
def test_pixels_perception_reads_pictures_inside_the_dataset_folder(tmp_path, monkeypatch):
    import evaluate
    from common.images import appearance_vectors

    folder = make_catalog(tmp_path / "shop", n=8, as_paths=True)
    decoy = tmp_path / "elsewhere"
    (decoy / "files").mkdir(parents=True)
    for i in range(8):  # the same relative names in the current folder, other pictures
        Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(decoy / "files" / f"p{i}.png")
    monkeypatch.chdir(decoy)
    ds = datasets.load_from_disk(str(folder))
    seen = evaluate.perception("pixels", None, ds)
    truth = evaluate.unit_rows(
        appearance_vectors([folder / f"files/p{i}.png" for i in range(8)], evaluate.PIXELS_SIZE), centre=True
    )
    np.testing.assert_allclose(seen, truth, atol=1e-6)
    escaped = make_catalog(tmp_path / "bad", n=4, as_paths=True, paths={1: "../elsewhere/files/p1.png"})
    with pytest.raises(ValueError, match="row 1.*outside"):
        evaluate.perception("pixels", None, datasets.load_from_disk(str(escaped)))


# ------------------------------------------------------------------ 8. one error line, before the work
def nan_catalog(tmp: Path) -> Path:
    path = make_catalog(tmp / "nan", n=10)
    ds = datasets.load_from_disk(str(path))
    emb = np.array(ds["embeddings"])
    emb[4, 0] = np.nan
    out = tmp / "nan2"
    ds.remove_columns("embeddings").add_column("embeddings", emb.tolist()).save_to_disk(str(out))
    return out


@pytest.mark.parametrize(
    "args",
    [
        ["--cache-dir", "{tmp}/f"],
        ["--cache-dir", "{tmp}/f/c"],
        ["--dataset", ""],
        ["--cache-dir", "/proc/no-such/cache"],
    ],
    ids=["cache-file", "cache-under-file", "empty-dataset", "cache-unwritable"],
)
def test_bad_app_settings_are_one_error_line(args, tmp_path, capsys):
    """Checked when the flags are read, before any catalog loads (in-process: the same parser app.py runs)."""
    import app

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as stop:
        app.parse_args([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("error:") == 1 and len(err.strip().splitlines()) == 1
    assert ("is a file" in err) + ("under a file" in err) + ("--dataset is empty" in err) + ("not writable" in err)


@pytest.mark.parametrize(
    "case",
    [
        "cache-unwritable",
        "model-not-a-model",
        "nan-row",
        "unknown-model",
        "temperature-0",
        "temperature-nan",
        "temperature-negative",
        "epsilon-2",
        "noise-inf",
        "no-strategy",
        "plot-nowhere",
    ],
)
def test_bad_settings_are_one_error_line_before_the_work(case, tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    synthetic = ["--synthetic", "200,8,4", "--targets", "5"]
    script, args, word = {
        "cache-unwritable": ("evaluate.py", [*synthetic, "--cache-dir", "/proc/no-such/cache"], "not writable"),
        "model-not-a-model": (
            "upload_ds.py",
            [make_folder(tmp_path / "i", 2), "--repo", "me/s", "--no-push", "--out", tmp_path / "o", "--model", "/etc"],
            "no config.json",
        ),
        "nan-row": ("evaluate.py", ["--dataset", nan_catalog(tmp_path), "--targets", "3"], "row 4"),
        "unknown-model": (
            "evaluate.py",
            ["--dataset", make_catalog(tmp_path / "c", n=10), "--targets", "2", "--perceive", "model:does-not-exist"],
            "cannot load the model",
        ),
        "temperature-0": ("evaluate.py", [*synthetic, "--temperature", "0"], "--temperature"),
        "temperature-nan": ("evaluate.py", [*synthetic, "--temperature", "nan"], "--temperature"),
        "temperature-negative": ("evaluate.py", [*synthetic, "--temperature", "-1"], "--temperature"),
        "epsilon-2": ("evaluate.py", [*synthetic, "--epsilon", "2"], "--epsilon"),
        "noise-inf": ("evaluate.py", [*synthetic, "--perceive", "noise:inf"], "finite"),
        "no-strategy": ("evaluate.py", [*synthetic, "--strategy", ","], "strategy"),
        "plot-nowhere": ("evaluate.py", [*synthetic, "--plot", "/nonexistent/x.png"], "does not exist"),
    }[case]
    t = time.perf_counter()
    env = {"CACHE_DIR": str(tmp_path / "cache")}
    if case in ("temperature-0", "model-not-a-model"):  # through the real command line
        res = run(script, *args, env=env, timeout=120)
    else:
        res = run_in_process(script.removesuffix(".py"), args, env, monkeypatch, capsys)
    assert word in one_error(res), res.stderr
    assert "shopper perceives" not in res.stdout and "embedding:" not in res.stderr  # nothing ran first
    assert time.perf_counter() - t < 60


def test_a_full_datasets_cache_is_one_error_line(tmp_path, monkeypatch, capsys):
    import upload_ds

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache" / "shard.arrow"))

    monkeypatch.setattr(upload_ds, "embed_all", full)
    code = upload_ds.main(
        [str(make_folder(tmp_path / "i", 2)), "--repo", "me/s", "--no-push", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "No space left" in err and "resume" in err


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_very_large_or_small_vectors_normalise_like_any_other(scale):
    from recommender import Recommender

    x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    plain, scaled = Recommender(x, seed=0), Recommender(x * np.float32(scale), seed=0)
    np.testing.assert_allclose(scaled.unit[:], plain.unit[:], rtol=1e-5, atol=1e-6)
    a, b = plain.new_session(seed=1), scaled.new_session(seed=1)
    assert a.next_round() == b.next_round() and a.next_round(pick=a.shown[0]) == b.next_round(pick=b.shown[0])
    with pytest.raises(ValueError, match="row 3 is invalid: all zeros"):
        Recommender(np.where(np.arange(200)[:, None] == 3, 0, x))


# ------------------------------------------------- all of it at once: forging clients, then a fresh shopper
def forge_from_chromium(url: str) -> None:
    """A hostile page script: forged saved state and odd text posted as the page would, then a reload with junk
    in the browser's storage. The page must keep showing a full gallery."""
    from browsing import ARGS, CHROMIUM

    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not installed at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url)
        full = "document.querySelectorAll('#products .thumbnail-item img').length === 10"
        page.wait_for_function(full, timeout=30_000)
        config = page.evaluate("fetch('/config').then(r => r.json())")
        key = next(c["props"].get("storage_key") for c in config["components"] if c["props"].get("storage_key"))
        dep = next(d for d in config["dependencies"] if d["api_name"] == "start")
        statuses = page.evaluate(
            """async ([dep, states]) => {
            const out = [];
            for (const s of states) {
                const r = await fetch('/gradio_api/queue/join', {method: 'POST', headers: {'content-type':
                    'application/json'}, body: JSON.stringify({data: [s], fn_index: dep, trigger_id: null,
                    session_hash: Math.random().toString(36).slice(2)})});
                out.push(r.status);
            }
            return out;
        }""",
            [dep["id"], [{"catalog": "x", "target": True}, {"search": "\udcff"}, "junk"]],
        )
        assert all(s == 200 for s in statuses)
        page.evaluate('([k]) => { localStorage.setItem(k, \'{"target": true, "history": [[1e30]]}\'); }', [key])
        page.reload()
        page.wait_for_function(full, timeout=30_000)
        page.locator("#products .thumbnail-item").nth(0).click()
        page.wait_for_function("document.querySelector('#status').innerText.includes('Round 2')", timeout=15_000)
        page.wait_for_function(full, timeout=15_000)
        assert not dialogs
        browser.close()


def test_forging_clients_leave_every_shopper_s_gallery_complete(hostile_shop):
    url, folder, secret, _ = hostile_shop
    header = Shopper(url).call("start")[7]
    assert "shop" in header and str(folder.parent) not in header  # the catalog's name, not where it lives
    assert requests.get(f"{url}/gradio_api/file={secret}", timeout=10).status_code != 200
    # forged by an HTTP client: every saved visit of the list above, odd words, a stale click
    key = Shopper(url).call("start")[6]["catalog"]
    for forged in forged_states(key, N):
        for api in ("start", "pick"):
            tab = Shopper(url)
            out = tab.call(
                api,
                [forged] if api == "start" else [None, forged],
                event_data={"index": 1, "value": None} if api == "pick" else None,
            )
            assert len(gallery_rows(out[1])) == 10 and "Round 1" in out[3]
    forge_from_chromium(url)
    # a fresh shopper plays to the end and sees every product that can be shown, once
    tab = Shopper(url)
    out = tab.call("start")
    seen = gallery_rows(out[1])
    while len(seen) < N - len(BAD):  # then the next round would show them again
        out = tab.pick(0, value(out[1])[0])
        seen += gallery_rows(out[1])
    assert sorted(seen) == list(range(len(BAD), N))
