"""Typed search (issue 12): CLIP-family text towers, word search in names, and queries steering the rounds."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
from catalogs import make_catalog
from conftest import ROOT, pattern
from PIL import Image

from catalog.catalog import Catalog
from catalog.dataset import embedding_matrix, load_dataset_source
from catalog.words import MAX_QUERY_WORDS, WordIndex, words_of
from embed import ImageEncoder, TextEncoder, model_has_text
from recommender import Recommender


# ------------------------------------------------------------------------------------------ text towers
def test_clip_encoders_share_a_space(tiny_clip, tiny_model):
    import torch
    from transformers import AutoModel

    image_enc, text_enc = ImageEncoder(tiny_clip, batch_size=2), TextEncoder(tiny_clip)
    assert image_enc.has_text and image_enc.dim == text_enc.dim == 16
    assert not ImageEncoder(tiny_model).has_text
    assert model_has_text(tiny_clip) and not model_has_text(tiny_model) and not model_has_text("efficientnet-lite0")
    assert image_enc.describe()["text"] is True and image_enc.describe()["pooling"] == "image_features"
    pictures = [Image.fromarray(pattern(40, 30, i)) for i in range(3)]
    vectors = image_enc.embed(pictures)
    # the image features of the model itself (projection included), not a vision tower's CLS token
    model = AutoModel.from_pretrained(tiny_clip).eval()
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=image_enc.preprocess(pictures))
    expected = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=1).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    texts = text_enc.embed(["red dress", "sneaker", "!!!", "red " * 5000, ""])
    assert texts.shape == (5, 16) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])
    np.testing.assert_allclose(text_enc.embed(["red dress"])[0], texts[0], atol=1e-6)  # batch-independent
    # int8 linear layers on CPU (faster), close to the float32 tower
    exact = TextEncoder(tiny_clip, quantize=False)
    assert text_enc.quantized and not exact.quantized
    cos = (exact.embed(["red dress", "sneaker"]) * texts[:2]).sum(axis=1)
    assert (cos > 0.98).all(), cos
    with pytest.raises(ValueError, match="no text tower"):
        TextEncoder(tiny_model)


@pytest.fixture(scope="module")
def clip_shop(tmp_path_factory, tiny_clip):
    """A folder of product pictures made into datasets by upload_ds.py with the tiny CLIP (default engine)."""
    tmp = tmp_path_factory.mktemp("clip_shop")
    folder = tmp / "products"
    for kind in ("dress", "sneaker"):
        (folder / kind).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(pattern(40 + i, 36, i + (0 if kind == "dress" else 50))).save(folder / kind / f"{i}.png")
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "upload_ds.py"),
            str(folder),
            "--repo",
            "me/clipshop",
            "--model",
            tiny_clip,
            "--no-push",
            "--out",
            str(tmp / "out"),
            "--batch-size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    return tmp / "out" / "clipshop-embeddings", res.stdout


def test_upload_ds_with_clip_writes_image_features_and_the_text_flag(clip_shop, tiny_clip):
    path, stdout = clip_shop
    ds = load_dataset_source(str(path))
    meta = json.loads(ds.info.description)
    assert meta["text"] is True and meta["pooling"] == "image_features" and meta["dim"] == 16
    assert "search by meaning" in stdout
    card = (path / "README.md").read_text()
    assert "share a space with" in card and "text tower" in card
    x = embedding_matrix(ds)
    enc = ImageEncoder(tiny_clip)
    rows = [0, len(ds) - 1]
    np.testing.assert_allclose(x[rows], enc.embed([ds[r]["image"] for r in rows]), atol=1e-5)


def test_first_round_after_a_typed_query_is_the_nearest_to_the_text(clip_shop, tmp_path):
    path, _ = clip_shop
    catalog = Catalog(load_dataset_source(str(path)), "clip", tmp_path)
    assert catalog.load_text_encoder() is None and catalog.text_encoder is not None
    found = catalog.find("  red   dress ")
    assert found.search_by == "meaning" and found.text == "red dress" and found.query.shape == (16,)
    x = embedding_matrix(load_dataset_source(str(path)))
    rec = Recommender(x, per_round=6, similar=3, seed=0)
    for strategy in ("mean", "rocchio"):
        session = rec.new_session(seed=1, strategy=strategy)
        first = session.next_round()
        rows = session.next_round(query=found.query)
        unseen = np.setdiff1d(np.arange(rec.n), first)
        brute = unseen[np.argsort(-(x[unseen] @ found.query), kind="stable")][:3]
        assert rows[:3] == brute.tolist() and session.n_similar == 3 and not set(rows) & set(first)
        # a pick then counts beside the text, as one more pick in the preference
        if strategy == "mean":
            pick = rows[4]
            nxt = session.next_round(pick=pick)
            pref = (x[pick] + found.query) / 2
            unseen = np.setdiff1d(np.arange(rec.n), first + rows)
            assert nxt[:3] == unseen[np.argsort(-(x[unseen] @ pref), kind="stable")][:3].tolist()


def test_app_loads_the_text_tower_of_a_clip_catalog(clip_shop, tmp_path, monkeypatch):
    import app

    path, _ = clip_shop
    args = app.parse_args(["--dataset", str(path), "--cache-dir", str(tmp_path)])
    catalog, rec = app.prepare(args)
    assert catalog.text_encoder is not None and catalog.find("sneaker").search_by == "meaning"
    # the model folder gone: the shop still serves, searching names, and says why in one line
    ds = load_dataset_source(str(path))
    ds.info.description = json.dumps({**json.loads(ds.info.description), "model": str(tmp_path / "gone")})
    moved = Catalog(ds, "moved", tmp_path)
    why = moved.load_text_encoder()
    assert why and "gone" in why and "\n" not in why
    assert moved.text_encoder is None and moved.find("sneaker").search_by == "names"


# ------------------------------------------------------------------------------------------ word search
def test_word_index_prefixes_case_plurals_and_separators():
    index = WordIndex(
        [["shoes/red-42", "Sneaker"], ["T-shirt/top"], ["Ankle boot", "boots_blue"], ["Dress"], ["Straße"], []]
    )
    assert words_of("shoes/red-42.JPG") == ["shoes", "red", "42", "jpg"]
    assert index.match("sneak")[0].tolist() == [0] and index.match("SNEAKERS")[0].tolist() == [0]
    assert index.match("42")[0].tolist() == [0] and index.match("red shoes")[0].tolist() == [0]
    assert index.match("dresses")[0].tolist() == [3] and index.match("t-shirt")[0].tolist() == [1]
    assert index.match("boot")[0].tolist() == [2] and index.match("blue")[0].tolist() == [2]
    assert index.match("STRASSE")[0].tolist() == [4]
    # the most query words win; words found are reported
    rows, used = index.match("red sneaker dress")
    assert rows.tolist() == [0] and used == ["red", "sneaker", "dress"]
    assert index.match("xyz")[0].size == 0 and index.match("xyz")[1] == []
    assert index.match("!!! ...")[0].size == 0 and index.match("")[0].size == 0
    long = "red " * 10_000
    assert index.match(long)[0].tolist() == [0]
    assert len(words_of(" ".join(f"w{i}" for i in range(100)))) == 100 and MAX_QUERY_WORDS == 16


def test_word_index_at_100k_products_answers_every_word():
    """Every word of a query narrows the rows (a prefix of a word matches); built once over 100k products.
    Its speed is bench/search_bench.py's to print, not a test's to assert."""
    texts = [[f"prod-{i:06d}", ["Sneaker", "Dress", "Coat", "Bag"][i % 4], f"brand{i % 97}"] for i in range(100_000)]
    index = WordIndex(texts)
    rows, _ = index.match("sneaker brand5")
    assert set(rows.tolist()) == {i for i in range(100_000) if i % 4 == 0 and str(i % 97).startswith("5")}


@pytest.fixture(scope="module")
def demo():
    from catalog.demo import load_demo_catalog

    ds = load_demo_catalog(size=300)
    return ds, np.asarray(ds["category"])


def test_word_search_on_the_demo_fills_the_similar_slots(demo, tmp_path):
    ds, cats = demo
    catalog = Catalog(ds, "demo", tmp_path)
    found = catalog.find("sneaker")
    assert found.search_by == "names" and set(cats[found.query]) == {"Sneaker"}
    assert len(found.query) == (cats == "Sneaker").sum()
    rec = Recommender(embedding_matrix(ds), seed=0)
    x = rec.unit
    session = rec.new_session(seed=3)
    rows = session.next_round(query=found.query)
    assert all(cats[r] == "Sneaker" for r in rows[:5]) and session.n_similar == 5
    others = [r for r in range(rec.n) if cats[r] != "Sneaker"]
    assert sum(cats[r] != "Sneaker" for r in rows[5:]) >= 3  # random products: ~90% of the catalog is not one
    assert len(set(rows)) == 10 and set(rows[5:]) <= set(range(rec.n)) and others
    # after a pick: the nearest unseen sneakers to the pick, and never a repeat
    pick = rows[7]
    nxt = session.next_round(pick=pick)
    sneakers = np.setdiff1d(np.flatnonzero(cats == "Sneaker"), rows)
    assert nxt[:5] == sneakers[np.argsort(-(x[sneakers] @ x[pick]), kind="stable")][:5].tolist()
    assert not set(nxt) & set(rows)
    # a miss changes nothing
    miss = catalog.find("xyz")
    assert miss.query is None and miss.message == "No product matches 'xyz'."
    for bad in ("", "   ", "!!! ???", "a" * 10_000):
        f = catalog.find(bad)
        assert f.query is None or f.search_by == "names"


def test_row_matches_run_out_then_the_preference_fills(demo):
    ds, cats = demo
    rec = Recommender(embedding_matrix(ds), seed=0)
    few = np.flatnonzero(cats == "Bag")[:3]
    session = rec.new_session(seed=1)
    rows = session.next_round(query=few)
    assert set(rows[:3]) == set(few.tolist())
    pick = rows[0]
    nxt = session.next_round(pick=pick)  # no unseen match is left: the nearest to the picks fill the slots
    unseen = np.setdiff1d(np.arange(rec.n), rows)
    assert nxt[:5] == unseen[np.argsort(-(rec.unit[unseen] @ rec.unit[pick]), kind="stable")][:5].tolist()


def test_row_search_among_many_matches_uses_the_scan(demo):
    """A word query matching most of the catalog searches with a bitmap scan: same rows as scoring them."""
    ds, cats = demo
    x = embedding_matrix(ds)
    for compression in (None, "sq8"):
        rec = Recommender(x, seed=0, compression=compression)
        many = np.flatnonzero(cats != "Bag")
        session = rec.new_session(seed=2)
        rows = session.next_round(query=many)
        nxt = session.next_round(pick=rows[0])
        cand = np.setdiff1d(many, rows)
        unit = np.asarray(rec.unit[np.arange(rec.n)])
        assert nxt[:5] == cand[np.lexsort((cand, -(unit[cand] @ unit[rows[0]])))][:5].tolist()


def test_bayes_takes_a_query_as_evidence(demo):
    ds, cats = demo
    rec = Recommender(embedding_matrix(ds), seed=0, strategy="bayes")
    sneakers = np.flatnonzero(cats == "Sneaker")
    plain = rec.new_session(seed=4).next_round()
    typed = rec.new_session(seed=4)
    rows = typed.next_round(query=sneakers)
    assert sum(cats[r] == "Sneaker" for r in rows) >= 7 > sum(cats[r] == "Sneaker" for r in plain)
    assert typed.n_similar >= 1 and len(set(rows)) == 10
    # a vector: the products nearest to it become the likely ones (starred, first)
    q = rec.unit[sneakers[0]] + 0.01
    vec = rec.new_session(seed=5)
    rows = vec.next_round(query=q)
    order = np.argsort(-(rec.unit @ (q / np.linalg.norm(q))))
    assert rows[0] in order[:10].tolist() and vec.n_similar >= 1


def test_bayes_query_vector_in_a_projected_belief(monkeypatch):
    """On a big catalog bayes compares in a PCA projection: the query vector is projected with it."""
    from engine import bayes
    from evaluate import synthetic_catalog

    monkeypatch.setattr(bayes, "BAYES_EXACT_BUDGET", 1000)
    monkeypatch.setattr(bayes, "BAYES_DIM", 8)
    x = synthetic_catalog(400, 32, 10, seed=3)
    rec = Recommender(x, seed=0, strategy="bayes")
    target = 123
    session = rec.new_session(seed=1)
    rows = session.next_round(query=x[target])
    assert bayes._query_evidence(session).shape == (400,)
    assert int(np.argmax(bayes._query_evidence(session))) == target
    assert target in rows and session.n_similar >= 1


def test_a_bad_query_leaves_the_session_unchanged(demo):
    ds, _ = demo
    for strategy in ("mean", "rocchio", "bayes"):
        rec = Recommender(embedding_matrix(ds), seed=0)
        session, twin = rec.new_session(seed=9, strategy=strategy), rec.new_session(seed=9, strategy=strategy)
        first, _ = session.next_round(query=[1, 2, 3]), twin.next_round(query=[1, 2, 3])
        bad = [
            np.zeros(rec.dim + 1),
            np.full(rec.dim, np.nan),
            np.zeros(rec.dim),
            [rec.n],
            [-1],
            [],
            "red",
            np.zeros((2, rec.dim)),
            [0.5, "x"],
        ]
        for query in bad:
            before = (session.to_dict(), session.query_serial, session.query_rows.tolist())
            with pytest.raises(ValueError):
                session.next_round(pick=first[0], query=query)
            assert (session.to_dict(), session.query_serial, session.query_rows.tolist()) == before
        assert session.next_round(pick=first[0]) == twin.next_round(pick=first[0])


def test_random_strategy_ignores_a_query(demo):
    ds, cats = demo
    rec = Recommender(embedding_matrix(ds), seed=0, strategy="random")
    a = rec.new_session(seed=1).next_round(query=np.flatnonzero(cats == "Sneaker"))
    assert a == rec.new_session(seed=1).next_round()


# ------------------------------------------------------------------------------------------ evaluate.py
def test_cli_typed_category_reports_with_and_without(tmp_path):
    cat = make_catalog(tmp_path / "cat", n=90)
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "--dataset",
            str(cat),
            "--strategy",
            "mean,bayes",
            "--targets",
            "15",
            "--typed",
            "category",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert "types its target's category (search by names)" in res.stdout
    lines = {
        line.split()[0] + (" +typed" if "+typed" in line else ""): float(line.split()[2 if "+typed" in line else 1])
        for line in res.stdout.splitlines()
        if line.startswith(("mean", "bayes"))
    }
    assert set(lines) == {"mean", "mean +typed", "bayes", "bayes +typed"}
    assert lines["mean +typed"] < lines["mean"]
    bad = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--synthetic", "50,4,2", "--typed", "category"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "no 'category' column" in bad.stderr


def test_typed_queries_by_meaning_on_a_clip_catalog(clip_shop):
    from evaluate import typed_queries

    path, _ = clip_shop
    ds = load_dataset_source(str(path))
    ds = ds.add_column("category", ["dress" if "dress" in i else "sneaker" for i in ds["id"]])
    queries, kind = typed_queries(ds, np.arange(3))
    assert kind == "meaning" and all(q.shape == (16,) for q in queries.values())
    assert isinstance(ds.features["category"], datasets.Value)
