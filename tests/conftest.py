"""Shared fixtures: offline settings, a tiny random ViT and CLIP saved to disk, and folders of real image files."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Every test gets its own datasets cache, so cached results of one test never leak into another."""
    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small random ViT + ViTImageProcessor saved with save_pretrained (32 px input, 48-d hidden)."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_vit")
    config = ViTConfig(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32, patch_size=8
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


CLIP_WORDS = [
    "red",
    "green",
    "blue",
    "yellow",
    "dress",
    "shirt",
    "sneaker",
    "sneakers",
    "bag",
    "coat",
    "boot",
    "top",
    "trouser",
    "sandal",
    "a",
    "an",
    "the",
    "photo",
    "of",
    "with",
    "and",
]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small random CLIP model + tokenizer over CLIP_WORDS saved to disk (see catalogs.save_clip)."""
    from catalogs import save_clip

    return save_clip(tmp_path_factory.mktemp("tiny_clip"), CLIP_WORDS)


def pattern(w: int, h: int, seed: int) -> np.ndarray:
    """A distinct RGB test picture (gradients + blocks) as uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], axis=-1)
    base = (base + rng.integers(0, 255, size=3)) % 256
    return base.astype(np.uint8)


def write_good_images(folder: Path) -> dict[str, str]:
    """Real image files of several sizes/modes; returns {expected id: mode description}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    made = {}
    Image.fromarray(pattern(64, 48, 1)).save(folder / "rgb.jpg", quality=92)
    made["rgb"] = "RGB JPEG"
    Image.fromarray(pattern(40, 40, 2)).save(folder / "UPPER.JPG")
    made["UPPER"] = "RGB JPEG, upper-case extension"
    rgba = Image.fromarray(pattern(30, 50, 3)).convert("RGBA")
    alpha = np.full((50, 30), 255, np.uint8)
    alpha[:, :10] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "rgba.png")
    made["rgba"] = "RGBA PNG"
    Image.fromarray(pattern(33, 21, 4)).convert("CMYK").save(folder / "cmyk.jpg")
    made["cmyk"] = "CMYK JPEG"
    arr16 = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    Image.fromarray(arr16).save(folder / "gray16.png")
    made["gray16"] = "16-bit grayscale PNG"
    Image.fromarray(pattern(25, 25, 5)).convert("L").save(folder / "sub" / "gray.png")
    made["sub/gray"] = "grayscale PNG in a subfolder"
    Image.fromarray(pattern(36, 24, 6)).convert("P", palette=Image.ADAPTIVE).save(folder / "sub" / "palette.gif")
    made["sub/palette"] = "palette GIF"
    rot = Image.fromarray(pattern(60, 20, 7))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    rot.save(folder / "sub" / "deeper" / "rotated.jpg", exif=exif)
    made["sub/deeper/rotated"] = "EXIF-rotated JPEG"
    Image.fromarray(pattern(120, 90, 8)).save(folder / "big.webp")
    made["big"] = "WebP"
    return made


def write_bad_images(folder: Path) -> dict[str, str]:
    """Broken files; returns {file name: word expected in its skip reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(pattern(200, 200, 9)).save(buf, format="JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    Image.new("1", (10_000, 9_000)).save(folder / "bomb.png")  # 90M pixels > Pillow's 89.5M limit
    return {
        "empty.jpg": "zero-byte",
        "truncated.jpg": "truncated",
        "notes.jpg": "not an image",
        "bomb.png": "decompression-bomb",
    }


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A folder with good and bad image files: (path, good ids, bad names -> reason word)."""
    folder = tmp_path / "products"
    good = write_good_images(folder)
    bad = write_bad_images(folder)
    (folder / "readme.txt").write_text("not an image extension: ignored, not reported")
    return folder, good, bad


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, one per test module (tests/browsing.py); closed with its module, as a
    test that starts Playwright itself cannot run while another Playwright is open."""
    from browsing import chromium

    yield from chromium()
