"""embed.py: image conversion, the encoder on a real (tiny) ViT, and resumable dataset embedding."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern, write_good_images
from PIL import Image

import embed
from catalog.dataset import embedding_matrix
from common.hubcheck import HubUnavailableError
from common.images import to_rgb
from embed import ImageEncoder, embed_dataset


def test_rgba_and_la_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    out = to_rgb(rgba)
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255)  # transparent -> white, not black
    assert out.getpixel((0, 0)) == (255, 0, 0)
    la = Image.new("LA", (2, 2), (0, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_composited_on_white():
    p = Image.new("P", (3, 3), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0
    out = to_rgb(p)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (0, 255, 0)


def test_cmyk_16bit_gray_and_palette_to_rgb(tmp_path):
    cmyk = Image.new("RGB", (4, 4), (200, 30, 60)).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg")
    out = to_rgb(Image.open(tmp_path / "c.jpg"))
    assert out.mode == "RGB" and np.allclose(out.getpixel((2, 2)), (200, 30, 60), atol=12)
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    g16 = Image.open(tmp_path / "g16.png")
    assert g16.mode.startswith("I")
    assert [to_rgb(g16).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    assert to_rgb(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)
    pal = Image.new("RGB", (2, 2), (10, 100, 200)).convert("P", palette=Image.ADAPTIVE)
    assert np.allclose(to_rgb(pal).getpixel((0, 0)), (10, 100, 200), atol=4)


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(pattern(60, 20, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif)
    assert Image.open(tmp_path / "r.jpg").size == (60, 20)
    assert to_rgb(Image.open(tmp_path / "r.jpg")).size == (20, 60)


def test_encoder_shape_norm_and_attributes(tiny_model, tmp_path):
    enc = ImageEncoder(tiny_model, batch_size=4)
    assert enc.model_name == tiny_model and enc.dim == 48
    imgs = [Image.fromarray(pattern(30 + i, 20 + 2 * i, i)) for i in range(7)]
    vecs = enc.embed(imgs)
    assert vecs.shape == (7, 48) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert not np.allclose(vecs[0], vecs[1])  # different pictures, different vectors
    assert enc.embed([]).shape == (0, 48)


def test_batched_equals_one_at_a_time(tiny_model, tmp_path):
    write_good_images(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    batched = ImageEncoder(tiny_model, batch_size=4).embed(files)
    single = np.concatenate([ImageEncoder(tiny_model, batch_size=1).embed([f]) for f in files])
    assert batched.shape == (len(files), 48)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_cls_is_default_and_mean_pooling_differs(tiny_model):
    import torch
    from transformers import AutoImageProcessor, AutoModel

    img = Image.fromarray(pattern(32, 32, 3))
    cls = ImageEncoder(tiny_model).embed([img])[0]
    mean = ImageEncoder(tiny_model, pooling="mean").embed([img])[0]
    model, proc = AutoModel.from_pretrained(tiny_model), AutoImageProcessor.from_pretrained(tiny_model)
    with torch.no_grad():
        hidden = model(**proc(images=[img], return_tensors="pt")).last_hidden_state[0]
    ref = hidden[0].numpy() / np.linalg.norm(hidden[0].numpy())
    np.testing.assert_allclose(cls, ref, atol=1e-5)
    assert not np.allclose(cls, mean, atol=1e-3)
    with pytest.raises(ValueError, match="pooling"):
        ImageEncoder(tiny_model, pooling="max")


def test_offline_hub_model_fails_fast_with_clear_message():
    t = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="local model directory"):
        ImageEncoder("google/vit-base-patch16-224")
    assert time.perf_counter() - t < 10


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="127.0.0.1:9"):
        ImageEncoder("someone/some-model-that-is-not-cached")
    assert time.perf_counter() - t < 10


def _image_ds(n: int):
    import datasets

    imgs = [Image.fromarray(pattern(20 + i % 5, 24, i)) for i in range(n)]

    def gen(count):
        for i, im in enumerate(imgs[:count]):
            yield {"image": im, "id": f"p{i}"}

    feats = datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    return datasets.Dataset.from_generator(gen, features=feats, gen_kwargs={"count": n}, fingerprint=f"imgs{n}")


class CountingEncoder(ImageEncoder):
    """The real encoder, counting images embedded and optionally crashing after `fail_after` batches."""

    def __init__(self, *a, fail_after: int | None = None, **kw):
        super().__init__(*a, **kw)
        self.calls, self.images, self.fail_after = 0, 0, fail_after

    def embed(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.images += len(images)
        return super().embed(images)


def test_embed_dataset_adds_column_with_map(tiny_model):
    ds = _image_ds(10)
    enc = ImageEncoder(tiny_model)
    out = embed_dataset(ds, enc, batch_size=4, shard_size=4, progress=False)
    assert out.column_names == ["image", "id", "embeddings", "appearance"]
    vecs = embedding_matrix(out)
    assert vecs.shape == (10, 48) and vecs.dtype == np.float32
    looks = embedding_matrix(out, "appearance")  # the same pictures' colour layouts, made alongside
    np.testing.assert_allclose(looks, embed.appearance_vectors(ds["image"]), atol=1e-6)
    assert embed_dataset(ds, enc, progress=False, appearance_size=None).column_names[-1] == "embeddings"
    np.testing.assert_allclose(vecs, enc.embed(list(ds["image"])), atol=1e-5)
    assert list(out["id"]) == list(ds["id"])
    with pytest.raises(ValueError, match="no 'picture' column"):
        embed_dataset(ds, enc, image_column="picture")


def test_interrupted_run_resumes_without_redoing_batches(tiny_model, tmp_path):
    ds = _image_ds(20)
    crashing = CountingEncoder(tiny_model, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(ds, crashing, batch_size=4, shard_size=4, checkpoint_dir=tmp_path / "ck", progress=False)
    assert crashing.images == 12  # three shards of 4 written before the crash
    assert len(list((tmp_path / "ck").glob("shard-*.arrow"))) == 3
    resumed = CountingEncoder(tiny_model)
    out = embed_dataset(ds, resumed, batch_size=4, shard_size=4, checkpoint_dir=tmp_path / "ck", progress=False)
    assert resumed.images == 8  # only the two shards not done yet
    fresh = embed_dataset(
        ds, ImageEncoder(tiny_model), batch_size=4, shard_size=4, progress=False, checkpoint_dir=tmp_path / "fresh"
    )
    np.testing.assert_allclose(embedding_matrix(out), embedding_matrix(fresh), atol=1e-6)


def test_resume_is_automatic_for_cached_datasets(tiny_model):
    ds = _image_ds(12)
    assert ds.cache_files  # built through from_generator, so it lives in the datasets cache
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(ds, CountingEncoder(tiny_model, fail_after=1), batch_size=4, shard_size=4, progress=False)
    again = CountingEncoder(tiny_model)
    embed_dataset(ds, again, batch_size=4, shard_size=4, progress=False)
    assert again.images == 8


def test_checkpoint_of_another_model_is_not_reused(tiny_model, tmp_path):
    ds = _image_ds(8)
    embed_dataset(
        ds, ImageEncoder(tiny_model), batch_size=4, shard_size=4, checkpoint_dir=tmp_path / "ck", progress=False
    )
    other = CountingEncoder(tiny_model, pooling="mean")
    with pytest.warns(UserWarning, match="another run"):
        embed_dataset(ds, other, batch_size=4, shard_size=4, checkpoint_dir=tmp_path / "ck", progress=False)
    assert other.images == 8


def test_embed_module_has_no_ui_or_cli_imports():
    src = Path(embed.__file__).read_text()
    assert "gradio" not in src and "import upload_ds" not in src and "import recommender" not in src


def test_appearance_vectors_of_known_pictures(tmp_path):
    from common.images import appearance_vectors

    red = Image.new("RGB", (40, 20), (255, 0, 0))
    clear = Image.new("RGBA", (16, 16), (0, 0, 255, 0))  # fully transparent: white
    half = Image.new("RGB", (16, 16), (0, 0, 0))
    half.paste((255, 255, 255), (0, 0, 16, 8))  # top half white
    exif = half.copy()
    info = exif.getexif()
    info[0x0112] = 3  # rotated 180 degrees: shown with the white half at the bottom
    exif.save(tmp_path / "rotated.jpg", exif=info)
    v = appearance_vectors([red, clear, half, str(tmp_path / "rotated.jpg"), red.convert("L")], size=2)
    assert v.shape == (5, 12) and v.dtype == np.float32
    np.testing.assert_allclose(v[0], [1, 0, 0] * 4)
    np.testing.assert_allclose(v[1], [1] * 12)
    np.testing.assert_allclose(v[2], [1] * 6 + [0] * 6)
    np.testing.assert_allclose(v[3], [0] * 6 + [1] * 6, atol=0.05)  # EXIF orientation applied
    assert np.ptp(v[4]) == 0  # grey
    with pytest.raises(ValueError, match="size"):
        appearance_vectors([red], size=0)
