"""demo.py: the built-in Fashion-MNIST catalog with the pretrained EfficientNet-Lite0, from both sources."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from gradio_http import Shopper, gallery_captions, start_app

from catalog import demo
from catalog.dataset import embedding_matrix
from catalog.demo import category_precision_at_k
from embed import ImageEncoder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_cache")


@pytest.fixture(scope="module")
def catalog500(cache):
    return demo.load_demo_catalog(size=500, cache_dir=cache, source="subset", progress=False)


@pytest.mark.slow
def test_catalog_columns_balance_and_embeddings(catalog500):
    ds = catalog500
    assert ds.column_names == ["image", "id", "category", "title", "embeddings", "appearance"]
    assert len(ds) == 500 and len(set(ds["id"])) == 500
    counts = {c: list(ds["category"]).count(c) for c in demo.CATEGORIES}
    assert set(counts.values()) == {50}
    assert ds[0]["image"].size == (224, 224)
    vecs = embedding_matrix(ds)
    assert vecs.shape == (500, 1280) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_deterministic_and_cached(catalog500, cache, tmp_path, monkeypatch):
    again = demo.load_demo_catalog(size=20, cache_dir=tmp_path, source="subset", progress=False)
    twice = demo.load_demo_catalog(size=20, cache_dir=tmp_path / "other", source="subset", progress=False)
    assert list(twice["id"]) == list(again["id"])
    np.testing.assert_allclose(embedding_matrix(twice), embedding_matrix(again), atol=1e-5)

    def no_model(*a, **k):
        raise AssertionError("the cached catalog must not be embedded again")

    monkeypatch.setattr("embed.ImageEncoder.__init__", no_model)
    t = time.perf_counter()
    cached = demo.load_demo_catalog(size=500, cache_dir=cache, source="subset", progress=False)
    assert time.perf_counter() - t < 10 and list(cached["id"]) == list(catalog500["id"])


@pytest.mark.skipif(not demo.debian_available(), reason="Debian dataset-fashion-mnist not installed")
def test_debian_source_gives_the_same_products_as_the_subset():
    name, images, labels, index = demo.load_source("debian")
    assert name == "debian" and images.shape == (70000, 28, 28) and len(labels) == 70000
    sname, simages, slabels, sindex = demo.load_source("subset")
    d_rows = demo.balanced_order(labels, index, 300)
    s_rows = demo.balanced_order(slabels, sindex, 300)
    np.testing.assert_array_equal(index[d_rows], sindex[s_rows])
    np.testing.assert_array_equal(images[d_rows], simages[s_rows])
    big = demo.balanced_order(labels, index, 70000)
    assert len(set(big.tolist())) == 70000


def test_debian_catalog_loads(tmp_path):
    if not demo.debian_available():
        pytest.skip("Debian dataset-fashion-mnist not installed: only the shipped subset was tested")
    ds = demo.load_demo_catalog(size=30, cache_dir=tmp_path, source="debian", progress=False)
    assert len(ds) == 30 and (tmp_path / "demo-debian-30-efficientnet-lite0-v4").exists()


def test_subset_size_limit_is_clear(tmp_path):
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        demo.load_demo_catalog(size=2500, cache_dir=tmp_path, source="subset", progress=False)
    with pytest.raises(ValueError, match="at least 1"):
        demo.load_demo_catalog(size=0, cache_dir=tmp_path)


def test_efficientnet_backend_interface():
    enc = ImageEncoder("efficientnet-lite0", batch_size=4)
    assert enc.model_name == "efficientnet-lite0" and enc.dim == 1280
    _, images, _, _ = demo.load_source("subset")
    vecs = enc.embed([demo.product_photo(images[i], 28) for i in range(6)])
    assert vecs.shape == (6, 1280) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_pretrained_weights_beat_random_weights(catalog500):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    labels = np.asarray(catalog500["category"])
    pretrained = category_precision_at_k(embedding_matrix(catalog500), labels)
    torch.manual_seed(0)
    enc = ImageEncoder("efficientnet-lite0", batch_size=16, runtime="torch")
    enc.model.load_state_dict(EfficientNet.from_name("efficientnet-lite0").state_dict())  # same network, random weights
    _, images, lab, index = demo.load_source("subset")
    rows = demo.balanced_order(lab, index, 500)
    random_vecs = enc.embed([demo.product_photo(images[r], 28) for r in rows])
    random_p5 = category_precision_at_k(random_vecs, lab[rows])
    print(f"category precision@5: pretrained {pretrained:.3f}, random weights {random_p5:.3f}")
    assert pretrained >= 0.65 and pretrained > random_p5 + 0.1


def test_app_with_no_arguments_serves_the_demo(catalog500, cache, tmp_path):
    env = {
        **os.environ,
        "CACHE_DIR": str(cache),
        "DEMO_SIZE": "500",
        "APP_LOG": str(tmp_path / "app.log"),
        "FASHION_MNIST_DIR": str(tmp_path / "no-debian"),
    }  # force the shipped subset, cached above
    t = time.perf_counter()
    proc, url = start_app([], env)
    try:
        started = time.perf_counter() - t
        gallery = Shopper(url).call("start")[1]
        items = gallery["value"] if isinstance(gallery, dict) else gallery
        assert len(items) == 10
        assert all(any(c in cap for c in demo.CATEGORIES) for cap in gallery_captions(gallery))
        assert started < 30, f"cold start from cache took {started:.1f} s"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
