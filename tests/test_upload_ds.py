"""upload_ds.py on real image folders with a tiny real ViT: ids, order, skip report, saved datasets, push path."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import datasets
import numpy as np
import pytest
from conftest import ROOT, write_good_images
from helpers import run_in_process

import upload_ds
from catalog.dataset import embedding_matrix
from embed import ImageEncoder


def run_cli(*args, env=None, timeout=300):
    """Run upload_ds.py as a real process; returns CompletedProcess."""
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "upload_ds.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def test_help():
    res = run_cli("--help")
    assert res.returncode == 0
    for flag in ("--repo", "--model", "--batch-size", "--private", "--out", "--no-push"):
        assert flag in res.stdout


def test_end_to_end_saved_datasets(image_folder, tiny_model, tmp_path):
    folder, good, bad = image_folder
    out = tmp_path / "out"
    res = run_cli(folder, "--repo", "me/shop", "--model", tiny_model, "--batch-size", "3", "--no-push", "--out", out)
    assert res.returncode == 0, res.stderr
    assert f"{len(good)} images kept, {len(bad)} skipped" in res.stdout
    for name, word in bad.items():
        line = next(ln for ln in res.stdout.splitlines() if f"skipped {name}:" in ln)
        assert word in line, line
    assert "readme.txt" not in res.stdout
    assert "summary:" in res.stdout and "images/s" in res.stdout
    assert "reading" in res.stderr and "embedding" in res.stderr  # progress bars

    images = datasets.load_from_disk(str(out / "shop"))
    embs = datasets.load_from_disk(str(out / "shop-embeddings"))
    assert images.column_names == ["image", "id"]
    assert embs.column_names == ["image", "id", "embeddings", "appearance"]
    expected_ids = sorted(good, key=lambda i: i)  # sorted by relative path; ids are paths without extension
    assert list(images["id"]) == list(embs["id"])
    assert sorted(images["id"]) == sorted(good)
    paths = [p for p in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())]
    order = [
        p.relative_to(folder).with_suffix("").as_posix()
        for p in paths
        if p.relative_to(folder).with_suffix("").as_posix() in good
    ]
    assert list(images["id"]) == order and set(order) == set(expected_ids)

    raw = embs.cast_column("image", datasets.Image(decode=False))
    for row in raw:
        assert row["image"]["bytes"], "images must be stored as bytes inside the dataset"
        assert "/" not in (row["image"]["path"] or "")  # no absolute path to this machine's disk
    vecs = embedding_matrix(embs)
    assert vecs.shape == (len(good), 48) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    meta = json.loads(embs.info.description)
    assert meta["model"] == tiny_model and meta["pooling"] == "cls" and meta["dim"] == 48
    assert tiny_model in (out / "shop-embeddings" / "README.md").read_text()

    # the stored vectors are the encoder's vectors of the stored images, one at a time
    enc = ImageEncoder(tiny_model, batch_size=1)
    rot = list(embs["id"]).index("sub/deeper/rotated")
    np.testing.assert_allclose(vecs[rot], enc.embed([embs[rot]["image"]])[0], atol=1e-5)
    stored = raw[rot]["image"]["bytes"]
    assert stored == (folder / "sub" / "deeper" / "rotated.jpg").read_bytes()  # the original file, untouched


def test_ids_stable_across_reruns_and_resume(image_folder, tiny_model, tmp_path):
    folder, good, _ = image_folder
    scan1, _, e1 = upload_ds.build(folder, tiny_model, batch_size=2, progress=False)
    scan2, _, e2 = upload_ds.build(folder, tiny_model, batch_size=2, progress=False)
    assert list(e1["id"]) == list(e2["id"])
    np.testing.assert_array_equal(embedding_matrix(e1), embedding_matrix(e2))


def test_colliding_stems_keep_their_extension(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8), "green").save(tmp_path / "b.png")
    scan = upload_ds.read_images(upload_ds.gather(tmp_path, progress=False), progress=False)
    assert [i for i, _ in scan.images] == ["a.jpg", "a.png", "b"]


@pytest.mark.parametrize("case", ["empty", "missing", "only_bad", "not_images"])
def test_bad_folders_fail_before_model_loads(case, tmp_path, tiny_model, monkeypatch, capsys):
    folder = tmp_path / "imgs"
    if case != "missing":
        folder.mkdir()
    if case == "only_bad":
        (folder / "x.jpg").write_bytes(b"")
        (folder / "y.png").write_text("nope")
    if case == "not_images":
        (folder / "notes.txt").write_text("hello")
    t = time.perf_counter()
    # a model path that does not exist: if it were loaded first, the error would be about the model
    if case == "only_bad":  # images are decoded once the model is found: here one that loads (in this process)
        argv = [folder, "--repo", "me/shop", "--model", tiny_model, "--no-push", "--out", tmp_path]
        res = run_in_process("upload_ds", argv, {}, monkeypatch, capsys)
    else:
        res = run_cli(folder, "--repo", "me/shop", "--model", tmp_path / "no-model", "--no-push", "--out", tmp_path)
    assert res.returncode == 2
    assert "error:" in res.stderr and "no-model" not in res.stderr
    assert {
        "empty": "no image files",
        "missing": "does not exist",
        "only_bad": "could be read",
        "not_images": "no image files",
    }[case] in res.stderr
    if case == "only_bad":
        assert "zero-byte" in res.stderr and "not an image" in res.stderr
    assert time.perf_counter() - t < 30


def test_an_uncached_model_offline_fails_before_any_download_naming_the_shipped_model(tmp_path, monkeypatch, capsys):
    """Issue 32: the README's command offline downloaded every image, then failed on the model, never naming the
    model that ships with the project."""
    from shop_files import PhotoServer, write_csv

    server = PhotoServer(n=2)
    try:
        rows = [{"id": f"p{i}", "image": server.url(f"/p/{i}.png")} for i in range(2)]
        table = write_csv(tmp_path / "t.csv", ["id", "image"], rows)
        argv = ["--products", table, "--repo", "s", "--no-push", "--out", tmp_path, "--model", "someone/uncached-vit"]
        argv.append("--allow-private-urls")  # so only the model check can keep the images from being fetched
        for engine in ("local", "ray"):
            res = run_in_process("upload_ds", [*argv, "--engine", engine], {"HF_HUB_OFFLINE": "1"}, monkeypatch, capsys)
            assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
            assert "someone/uncached-vit" in res.stderr and "--model efficientnet-lite0" in res.stderr
        assert server.hits == {}, "an image was downloaded before the model was found"
    finally:
        server.close()


def test_no_token_fails_before_embedding(image_folder, tmp_path):
    folder, _, _ = image_folder
    env = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0"}
    res = run_cli(folder, "--repo", "me/shop", "--model", tmp_path / "no-model", env=env)
    assert res.returncode == 2
    assert "HF_TOKEN" in res.stderr and "login" in res.stderr
    assert "embedding" not in res.stderr


def test_push_offline_fails_fast_and_hides_token(image_folder, tmp_path):
    folder, _, _ = image_folder
    secret = "hf_SuperSecretTokenValue123"
    t = time.perf_counter()
    res = run_cli(folder, "--repo", "me/shop", env={"HF_TOKEN": secret, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "unavailable" in res.stderr and "--no-push" in res.stderr
    assert secret not in res.stderr + res.stdout
    assert time.perf_counter() - t < 30


def test_push_path_up_to_the_hub_call(image_folder, tiny_model, tmp_path, monkeypatch, capsys):
    folder, good, _ = image_folder
    secret = "hf_AnotherSecret456"
    pushed, cards = [], []
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(upload_ds, "require_hub", lambda what: None)

    def fake_push(self, repo_id, private=None, token=None, **kw):
        pushed.append((repo_id, self.column_names, private, token, len(self)))

    class FakeCard:
        text = "dataset card\n"

        @classmethod
        def load(cls, repo_id, repo_type=None, token=None):
            return cls()

        def push_to_hub(self, repo_id, repo_type=None, token=None):
            cards.append((repo_id, self.text, token))

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "DatasetCard", FakeCard)
    assert upload_ds.main([str(folder), "--repo", "me/shop", "--model", tiny_model, "--private"]) == 0
    assert pushed == [
        ("me/shop", ["image", "id"], True, secret, len(good)),
        ("me/shop-embeddings", ["image", "id", "embeddings", "appearance"], True, secret, len(good)),
    ]
    assert cards[0][0] == "me/shop-embeddings" and tiny_model in cards[0][1]
    out = capsys.readouterr()
    assert "pushed me/shop and me/shop-embeddings" in out.out

    # a failing push reports the error without the token
    def failing_push(self, repo_id, **kw):
        raise RuntimeError(f"401 Unauthorized for token {secret}")

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", failing_push)
    assert upload_ds.main([str(folder), "--repo", "me/shop", "--model", tiny_model]) == 1
    out = capsys.readouterr()
    assert "push to the Hub failed" in out.err and secret not in out.err + out.out


def test_no_push_requires_out(tmp_path):
    res = run_cli(tmp_path, "--repo", "me/shop", "--no-push")
    assert res.returncode == 2 and "--out" in res.stderr


def test_scan_reports_each_reason(image_folder):
    folder, good, bad = image_folder
    scan = upload_ds.read_images(upload_ds.gather(folder, progress=False), progress=False)
    assert sorted(i for i, _ in scan.images) == sorted(good)
    reasons = dict(scan.skipped)
    for name, word in bad.items():
        assert word in reasons[name]


def test_small_pixel_limit_is_configurable(tmp_path):
    write_good_images(tmp_path)
    scan = upload_ds.read_images(upload_ds.gather(tmp_path, progress=False), max_pixels=64 * 48 - 1, progress=False)
    assert "big.webp" in dict(scan.skipped) and "rgb.jpg" in dict(scan.skipped)
    assert "sub/gray.png" not in dict(scan.skipped)
