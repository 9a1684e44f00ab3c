"""Typed search (issues 12, 31, 32): CLIP-family text towers, full-text search over every product text (SQLite
FTS5, synonyms), and queries steering the rounds, products already shown included."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import datasets
import numpy as np
import pytest
from catalogs import make_catalog
from conftest import ROOT, pattern
from gradio_http import gallery_captions
from helpers import seen_before
from PIL import Image

from catalog.catalog import Catalog
from catalog.dataset import embedding_matrix, load_dataset_source
from catalog.fulltext import MAX_QUERY_WORDS, SynonymError, TextIndex, read_synonyms, words_of
from embed import ImageEncoder, TextEncoder, model_has_text
from recommender import Recommender


# ------------------------------------------------------------------------------------------ text towers
def test_clip_encoders_share_a_space(tiny_clip, tiny_model):
    import torch
    from transformers import AutoModel

    image_enc, text_enc = ImageEncoder(tiny_clip, batch_size=2), TextEncoder(tiny_clip, precision="int8")
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
    # int8 matrix products on CPU (faster), close to the float32 tower
    exact = TextEncoder(tiny_clip)
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
    assert found.search_by == "words and meaning" and found.text == "red dress" and found.vector.shape == (16,)
    ids = np.asarray(load_dataset_source(str(path))["id"])
    assert all("dress" in i for i in ids[found.rows]) and found.matches == 12  # "dress/3.png": its id's words
    x = embedding_matrix(load_dataset_source(str(path)))
    rec = Recommender(x, per_round=6, similar=3, seed=0)
    for strategy in ("mean", "rocchio"):
        both = rec.new_session(seed=1, strategy=strategy)
        both.next_round()
        rows = both.next_round(query=found.query)  # the words' matches first, ranked with their meaning
        assert all("dress" in i for i in ids[rows[:3]]) and both.n_similar == 3
        session = rec.new_session(seed=1, strategy=strategy)
        first = session.next_round()
        rows = session.next_round(query=found.vector)
        unseen = np.setdiff1d(np.arange(rec.n), first)
        brute = unseen[np.argsort(-(x[unseen] @ found.vector), kind="stable")][:3]
        assert rows[:3] == brute.tolist() and session.n_similar == 3 and not set(rows) & set(first)
        # a pick then counts beside the text, as one more pick in the preference
        if strategy == "mean":
            pick = rows[4]
            nxt = session.next_round(pick=pick)
            pref = (x[pick] + found.vector) / 2
            unseen = np.setdiff1d(np.arange(rec.n), first + rows)
            assert nxt[:3] == unseen[np.argsort(-(x[unseen] @ pref), kind="stable")][:3].tolist()


def test_app_loads_the_text_tower_of_a_clip_catalog(clip_shop, tmp_path, monkeypatch):
    import app

    path, _ = clip_shop
    args = app.parse_args(["--dataset", str(path), "--cache-dir", str(tmp_path)])
    catalog, rec = app.prepare(args)
    assert catalog.text_encoder is not None and catalog.find("sneaker").search_by == "words and meaning"
    assert catalog.find("zzz").search_by == "meaning" and catalog.find("zzz").rows is None
    # the model folder gone: the shop still serves, searching names, and says why in one line
    ds = load_dataset_source(str(path))
    ds.info.description = json.dumps({**json.loads(ds.info.description), "model": str(tmp_path / "gone")})
    moved = Catalog(ds, "moved", tmp_path)
    why = moved.load_text_encoder()
    assert why and "gone" in why and "\n" not in why
    assert moved.text_encoder is None and moved.find("sneaker").search_by == "words"


# ------------------------------------------------------------------------------------------ full-text search
def shop_texts() -> datasets.Dataset:
    """A small shop's products with every kind of text a product has (no pictures: the index reads text only)."""
    return datasets.Dataset.from_dict(
        {
            "id": [f"sku-{i}" for i in range(9)],
            "title": [
                "Silk Wave Wig",
                "Crème Body Wave",
                "Running Shoe",
                "Canvas Tote",
                "Sandal Breeze",
                "Rocco",
                "Sneaker Dash",
                "Wool Coat",
                "Plain Cap",
            ],
            "tags": [["women", "wig"], ["men"], ["sport"], ["women", "bag"], [], [], [], ["winter"], None],
            "category": ["Wigs", "Hair", "Footwear", "Bags", "Sandal", "Ankle boot", "Sneaker", "Coat", "Hats"],
            "brand": ["Lumen", "Lumen", "Acme", "Acme", "Acme", "Acme", "Acme", "Nord", "Nord"],
            "description": [
                "Soft waves for every day.",
                "Dark as night, a rich crème for curls. Black tea extract.",
                "Light and quick on long runs.",
                "Roomy enough for a day at the beach.",
                "Open and airy.",
                "A leather boot that stops at the ankle.",
                "Bright and fast.",
                "Warm, with a belt.",
                "",
            ],
            "options": ["Length: 12in, 14in", "", "Size: 40, 41, 42", "Color: Sand, Navy", "", "", "", "", None],
            "attributes": ["Color: Natural Black\nTexture: Straight", "", "", "", "", "", "", "", None],
            "material": ["", "", "mesh", "cotton", "", "", "", "", ""],  # a plain table's own column
            "url": ["https://shop.example/black-wig", *[f"https://shop.example/p{i}" for i in range(1, 9)]],
            "currency": ["EUR"] * 9,
            "price": [10.0 * i for i in range(9)],
        }
    )


@pytest.fixture(scope="module")
def texts_index(tmp_path_factory) -> TextIndex:
    return TextIndex.open(shop_texts(), tmp_path_factory.mktemp("search"))


def found(index: TextIndex, text: str, synonyms: dict | None = None) -> set[int]:
    return set(index.search(text, synonyms).rows.tolist())


def test_every_text_of_a_product_is_searched(texts_index):
    """A metafield colour, a tag, a description word, a variant option, a plain table's column, the id; and never
    a link, a price or the currency."""
    assert found(texts_index, "black") == {0, 1}  # the attribute "Color: Natural Black"; row 1's description
    assert found(texts_index, "women") == {0, 3}  # a tag
    assert found(texts_index, "beach") == {3}  # a word of a description
    assert found(texts_index, "navy") == {3} and found(texts_index, "14in") == {0}  # variant options
    assert found(texts_index, "cotton") == {3} and found(texts_index, "acme") == {2, 3, 4, 5, 6}  # a column; brand
    assert found(texts_index, "hats") == {8} and found(texts_index, "sku-7") == {7}  # category; id
    assert found(texts_index, "example") == found(texts_index, "https") == found(texts_index, "eur") == set()
    assert found(texts_index, "20") == set()  # a price is not a word of the product


def test_search_matches_plurals_prefixes_and_accents(texts_index):
    assert found(texts_index, "shoes") == {2} and found(texts_index, "shoe") == {2}  # plural and singular
    assert found(texts_index, "waves") == {0, 1} and found(texts_index, "wigs") == {0}
    assert found(texts_index, "sneak") == {6} and found(texts_index, "SNEAKERS") == {6}  # prefix; case
    assert found(texts_index, "creme") == {1} and found(texts_index, "CRÈMES") == {1}  # accents folded
    assert found(texts_index, "boots") == {5}  # "boot" in its description, "Ankle boot" its category


def test_several_words_rank_and_fall_back(texts_index, monkeypatch):
    assert texts_index.search("black wig").rows.tolist() == [0]  # all the words
    assert found(texts_index, "black zzz") == {0, 1}  # a word no product has is left out
    assert found(texts_index, "wig navy black") == {0}  # none has all: those having the most of them
    assert texts_index.search("zzz").count == 0 and texts_index.search("zzz").words == []
    # BM25: a word in the title weighs more than the same word in a description
    assert texts_index.search("wave").rows.tolist()[:2] in ([0, 1], [1, 0])
    assert texts_index.search("ankle").rows.tolist() == [5]
    # more matches than BM25 orders: those with the word in a name column first (ranked while few), then the rest
    from catalog import fulltext

    monkeypatch.setattr(fulltext, "RANKED", 1)
    assert texts_index.search("black").rows.tolist() == [0, 1]  # an attribute (a name column), a description
    assert texts_index.search("acme").rows.tolist() == [2, 3, 4, 5, 6]  # many in names: catalog order


def test_typed_text_is_never_query_syntax(texts_index):
    """Untrusted text: FTS5 operators, quotes and column filters are words like any other; long text is cut."""
    for text in ('"', '" OR 1=1 --', "black*", "NEAR(black wig)", "title: black", "black AND NOT wig", "{title}:x"):
        rows = texts_index.search(text).rows  # never an error
        assert set(rows.tolist()) <= set(range(9))
    assert found(texts_index, "title: black") == {0, 1} and found(texts_index, "NOT black") == {0, 1}
    assert found(texts_index, "black " + "zzz " * 5000) == {0, 1}
    assert words_of("shoes/red-42.JPG") == ["shoes", "red", "42", "jpg"] and MAX_QUERY_WORDS == 16
    assert texts_index.search("").count == 0 and texts_index.search("!!! ...").count == 0


def test_synonyms_widen_a_word(texts_index, tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_text("# the shop's words\nShoes: sneaker, sandal, ankle boot\n\nhat: cap  # comment\n")
    synonyms = read_synonyms(path)
    assert synonyms == {"shoe": ["sneaker", "sandal", "ankle boot"], "hat": ["cap"]}
    rows = texts_index.search("shoes", synonyms).rows.tolist()
    assert rows[0] == 2 and set(rows) == {2, 4, 5, 6}  # the word itself first, then its synonyms
    assert found(texts_index, "shoe", synonyms) == {2, 4, 5, 6} and found(texts_index, "hats", synonyms) == {8}
    assert found(texts_index, "ankle", synonyms) == {5} and found(texts_index, "boots", synonyms) == {5}
    for bad in ("shoes sneaker\n", "two words: x\n", ": x\n", "shoes:\n"):
        path.write_text("ok: fine\n" + bad)
        with pytest.raises(SynonymError, match="line 2"):
            read_synonyms(path)
    with pytest.raises(SynonymError, match="cannot read"):
        read_synonyms(tmp_path / "missing.txt")


def test_the_index_is_built_once_and_read_from_any_thread(tmp_path):
    """Kept in the cache folder under the dataset's fingerprint (written whole: no half file is ever there); a
    second open reads it; shoppers' threads search at once, each through its own read-only connection."""
    from concurrent.futures import ThreadPoolExecutor

    ds = shop_texts()
    first = TextIndex.open(ds, tmp_path)
    (path,) = tmp_path.glob("*.sqlite")
    assert ds._fingerprint in path.name and not list(tmp_path.glob(".*"))
    stamp = path.stat().st_mtime_ns
    again = TextIndex.open(ds, tmp_path)
    assert again.path == first.path and path.stat().st_mtime_ns == stamp
    words = ["black", "women", "shoes", "creme", "beach"] * 20
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda w: found(again, w), words))
    assert answers == [found(first, w) for w in words]
    with pytest.raises(sqlite3.OperationalError):  # read-only: a connection cannot change the index
        first._connection().execute("INSERT INTO docs(rowid, title) VALUES (99, 'x')")


def test_the_demo_synonyms_find_its_shoes(demo, tmp_path):
    import app

    ds, cats = demo
    catalog = Catalog(ds, "demo", tmp_path)
    catalog.synonyms = app.parse_args([]).synonym_words  # the demo's own file, by default
    shoes = catalog.find("shoes")
    assert shoes.search_by == "words" and set(cats[shoes.rows]) == {"Sneaker", "Sandal", "Ankle boot"}
    assert shoes.matches == np.isin(cats, ["Sneaker", "Sandal", "Ankle boot"]).sum()
    assert set(cats[catalog.find("jumper").rows]) == {"Pullover"}
    assert set(cats[catalog.find("trousers").rows]) == {"Trouser"}
    assert app.parse_args(["--dataset", "x/y"]).synonym_words == {}  # a shop's own: none unless given
    # the cache folder cleared under the app: a thread without a connection yet builds the index again
    from concurrent.futures import ThreadPoolExecutor

    catalog.search_index.path.unlink()
    with ThreadPoolExecutor(1) as pool:
        again = pool.submit(catalog.find, "shoes").result()
    assert again.matches == shoes.matches and catalog.search_index.path.exists()


def test_a_bad_synonyms_file_is_one_error_line(tmp_path, capsys):
    import app

    bad = tmp_path / "syn.txt"
    bad.write_text("shoes sneaker\n")
    with pytest.raises(SystemExit) as exit_:
        app.parse_args(["--synonyms", str(bad)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("error:") == 1 and "line 1" in err, err


# ------------------------------------------------------------------------------------------ seen products again
def test_a_search_brings_back_products_already_shown(demo):
    """The round after a new search ranks the whole catalog: a match shown before comes again (counted once as
    seen), never in the random slots; the next rounds keep the no-repeat rule; a browser's copy restores."""
    ds, cats = demo
    rec = Recommender(embedding_matrix(ds), seed=0)
    for strategy in ("mean", "rocchio", "bayes"):
        session = rec.new_session(seed=7, strategy=strategy)
        first = session.next_round()
        second = session.next_round(pick=first[0])
        target = second[-1]  # a random product of the round: look-alike or not, it was shown
        seen = session.n_seen
        rows = session.next_round(query=(None, np.array([target], dtype=np.int64)))
        assert target in rows and len(set(rows)) == len(rows) == 10, (strategy, rows)
        assert session.n_seen == seen + 9 and session.search_rounds == [3]
        assert session.shown_before() == [row in first + second for row in rows]
        # a match shown before never fills a random slot: only the matches' own slots bring it back
        many = np.array(first + second, dtype=np.int64)
        again = session.next_round(query=(None, many))
        assert set(again) & set(many) and all(r in many for r in again if r in first + second + rows)
        nxt = session.next_round(pick=again[0])  # no new search: no product of this pass comes again
        assert not set(nxt) & set(first + second + rows + again)
        restored = rec.restore_session(json.loads(json.dumps(session.to_dict())))
        assert restored.n_seen == session.n_seen and restored.search_rounds == session.search_rounds
        assert (restored.unseen_mask() == session.unseen_mask()).all()
    # a forged history showing a product twice outside a search's round is refused
    saved = rec.new_session(seed=1).to_dict()
    saved["history"] = [[1, 2], [2, 3]]
    with pytest.raises(ValueError, match="two rounds"):
        rec.restore_session(saved)
    saved["search_rounds"] = [2]
    assert rec.restore_session(saved).n_seen == 3


def test_a_search_that_begins_a_new_pass_brings_its_match_back():
    """20 products, two rounds: every product has been shown, so the search's round begins a new pass. The one
    product the words match comes back in it for every strategy (bayes once left it out in most sessions: the
    words' weight was made for a uniform belief, far below the look-alikes of a pick)."""
    x = np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32)
    rec = Recommender(x / np.linalg.norm(x, axis=1, keepdims=True), seed=0)
    for strategy in ("mean", "rocchio", "bayes"):
        for seed in range(20):
            session = rec.new_session(seed=seed, strategy=strategy)
            first = session.next_round()
            session.next_round(pick=first[0])
            rows = session.next_round(query=(None, np.array([first[7]], dtype=np.int64)))
            assert session.passes == 1 and rows[0] == first[7], (strategy, seed, first, rows)


def test_searching_a_shown_product_in_the_shop_brings_it_back(tmp_path):
    """Through the shop: the words of a product already shown bring it back into the gallery, marked as a match
    and as seen before, and the status says how many products match."""
    from catalog.catalog import Catalog as ShopCatalog
    from shop.shop import Shop

    path = make_catalog(tmp_path / "cat", n=30, products=True)
    catalog = ShopCatalog(load_dataset_source(str(path)), "lamps", tmp_path)
    rec = Recommender(catalog.embeddings, seed=0)
    shop = Shop(catalog, rec)
    visit = shop.new_visit("mean", None, hunt=False)
    first = list(visit.session.shown)
    row = next(r for r in first if r != 1)
    title = catalog.product(row)["title"]  # e.g. "Box lamp no. 7": only that product has all its words
    out = shop.search(visit, title)
    rows, captions, status = visit.session.shown, gallery_captions(out[1]), out[3]
    assert row in rows and f"1 product matches '{title}'" in status.replace("\\", ""), status
    assert captions[rows.index(row)].startswith("★ ") and seen_before(captions[rows.index(row)]), captions
    assert sum(c.startswith("★") for c in captions) == 1  # no other tile claims to match
    out = shop.search(visit, "round lamp")
    matches = [r for r in range(30) if r % 3 == 0]  # "Round lamp no. N" for every third row (row 3's title is long)
    assert "10 products match 'round lamp'" in out[3] and set(visit.session.shown[:5]) <= set(matches)
    stars = {r for r, c in zip(visit.session.shown, gallery_captions(out[1])) if c.startswith("★")}
    assert stars == set(visit.session.shown) & set(matches)


@pytest.fixture(scope="module")
def demo():
    from catalog.demo import load_demo_catalog

    ds = load_demo_catalog(size=300)
    return ds, np.asarray(ds["category"])


def test_word_search_on_the_demo_fills_the_similar_slots(demo, tmp_path):
    ds, cats = demo
    catalog = Catalog(ds, "demo", tmp_path)
    found = catalog.find("sneaker")
    assert found.search_by == "words" and set(cats[found.rows]) == {"Sneaker"}
    assert found.matches == (cats == "Sneaker").sum()
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
        assert f.query is None or f.search_by == "words"


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
    assert "types its target's category (search by words)" in res.stdout
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
