"""upload_ds.py --engine ray on a local Ray cluster: same dataset as the default engine, resume, worker crash."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading

import datasets
import numpy as np
import pytest
from conftest import ROOT

from catalog.dataset import embedding_matrix

pytest.importorskip("ray", reason="ray is not installed (pip install -r requirements-ray.txt): ray engine not tested")


def upload(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, str(ROOT / "upload_ds.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})},
    )


def skipped_lines(stdout: str) -> list[str]:
    return sorted(line.strip() for line in stdout.splitlines() if line.strip().startswith("skipped "))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model):
    """The default engine's output on the test folder."""
    from conftest import write_bad_images, write_good_images

    tmp = tmp_path_factory.mktemp("ray_ref")
    folder = tmp / "imgs"
    write_good_images(folder)
    write_bad_images(folder)
    from PIL import Image

    Image.new("RGB", (20, 16), "orange").save(folder / os.fsdecode(b"caf\xe9.png"))  # a name that is not UTF-8
    res = upload(
        folder,
        "--repo",
        "me/shop",
        "--model",
        tiny_model,
        "--batch-size",
        "2",
        "--no-push",
        "--out",
        tmp / "out",
        env={"HF_DATASETS_CACHE": str(tmp / "cache")},
    )
    assert res.returncode == 0, res.stderr
    return folder, datasets.load_from_disk(str(tmp / "out" / "shop-embeddings")), skipped_lines(res.stdout)


def assert_same(ds, ref):
    assert list(ds["id"]) == list(ref["id"])
    np.testing.assert_allclose(embedding_matrix(ds), embedding_matrix(ref), atol=1e-5)
    np.testing.assert_allclose(embedding_matrix(ds, "appearance"), embedding_matrix(ref, "appearance"), atol=1e-6)
    raw = ds.cast_column("image", datasets.Image(decode=False))
    ref_raw = ref.cast_column("image", datasets.Image(decode=False))
    assert [r["image"]["bytes"] for r in raw] == [r["image"]["bytes"] for r in ref_raw]


@pytest.mark.slow
def test_ray_engine_equals_default_engine(reference, tiny_model, tmp_path):
    folder, ref, ref_skips = reference
    res = upload(
        folder,
        "--repo",
        "me/shop",
        "--model",
        tiny_model,
        "--batch-size",
        "2",
        "--no-push",
        "--out",
        tmp_path / "out",
        "--engine",
        "ray",
        "--num-workers",
        "2",
        "--work-dir",
        tmp_path / "work",
    )
    assert res.returncode == 0, res.stderr
    assert skipped_lines(res.stdout) == ref_skips and len(ref_skips) == 4
    assert "caf\\xe9" in ref["id"]
    embs = datasets.load_from_disk(str(tmp_path / "out" / "shop-embeddings"))
    images = datasets.load_from_disk(str(tmp_path / "out" / "shop"))
    assert images.column_names == ["image", "id"]
    assert embs.column_names == ["image", "id", "embeddings", "appearance"]
    assert_same(embs, ref)
    assert '"model"' in embs.info.description and tiny_model in embs.info.description


@pytest.mark.slow
def test_restart_after_failure_does_not_redo_finished_shards(reference, tiny_model, tmp_path):
    folder, ref, _ = reference
    args = [
        folder,
        "--repo",
        "me/shop",
        "--model",
        tiny_model,
        "--batch-size",
        "2",
        "--no-push",
        "--out",
        tmp_path / "out",
        "--engine",
        "ray",
        "--num-workers",
        "1",
        "--shard-size",
        "2",
        "--work-dir",
        tmp_path / "work",
    ]
    failed = upload(*args, env={"RAY_EMBED_FAIL_AFTER": "3"})
    assert failed.returncode != 0
    written = list((tmp_path / "work").glob("*.parquet"))
    assert written, "the shards finished before the failure must be on disk"
    res = upload(*args)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("ray engine: 14 images"))
    already = int(line.split(",")[1].split()[0])
    assert 0 < already < 14, line
    assert_same(datasets.load_from_disk(str(tmp_path / "out" / "shop-embeddings")), ref)


@pytest.mark.slow
def test_worker_crash_still_yields_a_complete_dataset(reference, tiny_model, tmp_path):
    folder, ref, ref_skips = reference
    marker = tmp_path / "crashed"
    res = upload(
        folder,
        "--repo",
        "me/shop",
        "--model",
        tiny_model,
        "--batch-size",
        "2",
        "--no-push",
        "--out",
        tmp_path / "out",
        "--engine",
        "ray",
        "--num-workers",
        "2",
        "--shard-size",
        "2",
        "--work-dir",
        tmp_path / "work",
        env={"RAY_EMBED_CRASH_AFTER": "1", "RAY_EMBED_CRASH_MARKER": str(marker)},
    )
    assert res.returncode == 0, res.stderr
    assert marker.exists(), "the injected worker crash did not happen"
    assert skipped_lines(res.stdout) == ref_skips
    assert_same(datasets.load_from_disk(str(tmp_path / "out" / "shop-embeddings")), ref)


@pytest.mark.slow
def test_product_table_with_files_and_urls(reference, tiny_model, tmp_path):
    """A product table (files and URLs, a title and a price) on both engines: the same rows, vectors and columns."""
    folder, ref, _ = reference
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outs = {}
    try:
        port = server.server_address[1]
        table = tmp_path / "products.csv"
        table.write_text(
            "id,path,title,price\n"
            f"a,{folder / 'rgb.jpg'},Apple,1.5\n"
            f"b,http://127.0.0.1:{port}/sub/gray.png,Berry,2\n"
            f"c,{folder / 'missing.jpg'},Cherry,3\n"
            f"d,http://127.0.0.1:{port}/notes.jpg,Date,4\n"
        )
        for engine in ("local", "ray"):
            extra = ["--num-workers", "1", "--work-dir", tmp_path / "work"] if engine == "ray" else []
            res = upload(
                "--manifest" if engine == "ray" else "--products",
                table,
                "--repo",
                "me/shop",
                "--model",
                tiny_model,
                "--no-push",
                "--out",
                tmp_path / engine,
                "--allow-private-urls",
                "--engine",
                engine,
                *extra,
            )
            assert res.returncode == 0, res.stderr
            assert "unreadable" in res.stdout and "missing.jpg" in res.stdout and "not an image" in res.stdout
            outs[engine] = [
                datasets.load_from_disk(str(tmp_path / engine / name)) for name in ("shop", "shop-embeddings")
            ]
    finally:
        server.shutdown()
    for (images, embs), (ref_images, ref_embs) in [(outs["ray"], outs["local"])]:
        assert images.features == ref_images.features and embs.features == ref_embs.features
        assert images.column_names == ["image", "id", "title", "price"]
        assert list(embs["id"]) == ["a", "b"] and embs["title"] == ["Apple", "Berry"] and embs["price"] == [1.5, 2.0]
        np.testing.assert_allclose(embedding_matrix(embs), embedding_matrix(ref_embs), atol=1e-5)
    ref_ids = list(ref["id"])
    np.testing.assert_allclose(
        embedding_matrix(outs["ray"][1]),
        embedding_matrix(ref)[[ref_ids.index("rgb"), ref_ids.index("sub/gray")]],
        atol=1e-5,
    )


def test_work_dir_needs_ray_engine(tmp_path):
    (tmp_path / "m.csv").write_text("path\nx.jpg\n")
    res = upload(
        "--manifest",
        tmp_path / "m.csv",
        "--repo",
        "me/shop",
        "--no-push",
        "--out",
        tmp_path,
        "--work-dir",
        tmp_path / "w",
    )
    assert res.returncode == 2 and "--engine ray" in res.stderr


@pytest.mark.slow
def test_ray_engine_with_a_clip_model_writes_image_features_and_the_text_flag(tiny_clip, tmp_path):
    import json

    from PIL import Image

    from embed import ImageEncoder

    folder = tmp_path / "imgs"
    folder.mkdir()
    colours = ["red", "green", "blue", "yellow", "white"]
    for c in colours:
        Image.new("RGB", (30, 20), c).save(folder / f"{c}.png")
    res = upload(
        folder,
        "--repo",
        "me/clip",
        "--model",
        tiny_clip,
        "--no-push",
        "--out",
        tmp_path / "out",
        "--engine",
        "ray",
        "--num-workers",
        "1",
        "--work-dir",
        tmp_path / "work",
    )
    assert res.returncode == 0, res.stderr
    embs = datasets.load_from_disk(str(tmp_path / "out" / "clip-embeddings"))
    meta = json.loads(embs.info.description)
    assert meta["text"] is True and meta["pooling"] == "image_features" and meta["dim"] == 16
    assert "text tower" in (tmp_path / "out" / "clip-embeddings" / "README.md").read_text()
    expected = ImageEncoder(tiny_clip).embed([Image.open(folder / f"{c}.png") for c in embs["id"]])
    np.testing.assert_allclose(embedding_matrix(embs), expected, atol=1e-5)
