"""Small real catalogs for app tests (PNG product images in a saved dataset, embeddings from their pixels), and
random CLIP models saved the way a Hub model is (for the tests and bench/search_bench.py)."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
from PIL import Image


def make_catalog(
    path: Path,
    n: int = 60,
    seed: int = 0,
    size: int = 48,
    dim: int = 192,
    bad_rows: tuple[int, ...] = (),
    as_paths: bool = False,
    appearance: bool = False,
    paths: dict[int, str] | None = None,
    products: bool = False,
) -> Path:
    """Save a dataset of `n` coloured-shape PNGs with ids, categories and pixel-derived unit embeddings.

    The first 192 dimensions come from the picture's 8x8 colour thumbnail; `dim` > 192 pads with noise.
    `bad_rows` get a PNG cut off half way (undecodable); `as_paths` stores each image as a PNG file beside the
    dataset and the image column as plain relative path strings (a bad row's file is missing). `appearance` adds
    the column upload_ds.py writes: each picture's 8x8 colour layout. `paths` (with `as_paths`) stores other
    path strings for some rows (e.g. ones that lead outside the folder). `products` adds a shop's columns: title,
    price, currency, brand, description, url (row 1's title is a script-bearing string, row 2's url unsafe).
    """
    rng = np.random.default_rng(seed)
    images, ids, cats, embs = [], [], [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        colour = rng.integers(0, 256, size=3)
        shape = i % 3
        mask = (
            ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 3) ** 2)
            if shape == 0
            else (abs(xx - size / 2) < size / 3) & (abs(yy - size / 2) < size / 4)
            if shape == 1
            else (xx > yy)
        )
        arr = np.full((size, size, 3), 255, np.uint8)
        arr[mask] = colour
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        data = buf.getvalue()[: len(buf.getvalue()) // 2] if i in bad_rows else buf.getvalue()
        if as_paths:
            (path / "files").mkdir(parents=True, exist_ok=True)
            if i not in bad_rows:
                (path / "files" / f"p{i}.png").write_bytes(data)
            images.append((paths or {}).get(i, f"files/p{i}.png"))
        else:
            images.append({"bytes": data, "path": f"p{i}.png"})
        ids.append(f"p{i:03d}")
        cats.append(["round", "box", "wedge"][shape])
        small = np.asarray(Image.fromarray(arr).resize((8, 8)), dtype=np.float32).ravel() / 255 - 0.5
        if dim > small.size:
            small = np.concatenate([small, 0.05 * rng.standard_normal(dim - small.size).astype(np.float32)])
        embs.append(small[:dim] / np.linalg.norm(small[:dim]))
    features = datasets.Features(
        {
            "image": datasets.Value("string") if as_paths else datasets.Image(),
            "id": datasets.Value("string"),
            "category": datasets.Value("string"),
            "embeddings": datasets.List(datasets.Value("float32"), length=dim),
        }
    )
    columns = {"image": images, "id": ids, "category": cats, "embeddings": embs}
    if products:
        columns.update(product_columns(n))
        for name, kind in (
            ("title", "string"),
            ("price", "float64"),
            ("currency", "string"),
            ("brand", "string"),
            ("description", "string"),
            ("url", "string"),
        ):
            features[name] = datasets.Value(kind)
    if appearance:
        from common.images import APPEARANCE_SIZE, appearance_vectors

        pictures = [im["bytes"] if isinstance(im, dict) else path / im for im in images]
        columns["appearance"] = appearance_vectors(pictures)
        features["appearance"] = datasets.List(datasets.Value("float32"), length=3 * APPEARANCE_SIZE**2)
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(path))
    return path


XSS_TITLE = "<img src=x onerror=alert(1)>"


def product_columns(n: int) -> dict[str, list]:
    """Shop columns for `n` products: titles (one long, one script-bearing), prices, links (one unsafe)."""
    shapes = ["Round", "Box", "Wedge"]
    titles = [f"{shapes[i % 3]} lamp no. {i}" for i in range(n)]
    titles[1] = XSS_TITLE
    titles[3] = "A remarkably long product title that goes on and on about a lamp no. 3"
    urls = [f"https://shop.example/products/p{i:03d}" for i in range(n)]
    urls[2] = "javascript:alert(2)"
    return {
        "title": titles,
        "price": [round(5 + 7.25 * i, 2) for i in range(n)],
        "currency": ["EUR"] * n,
        "brand": ["Acme" if i % 2 else "Lumen" for i in range(n)],
        "description": [
            f"A {shapes[i % 3].lower()} lamp.\n<b>Not bold</b> & plain text.{LONG * (i % 5 == 4)}" for i in range(n)
        ],
        "url": urls,
    }


LONG = " Hand-finished in a small workshop." * 12 + " The last words of a long description."  # folds under "more"


def save_clip(path: Path, words: list[str], full_size: bool = False) -> str:
    """A random CLIP (image and text towers in one space) with a word-level tokenizer trained on `words` by the
    `tokenizers` library, all saved with save_pretrained: tiny (16-d space, 32 px images, 16 tokens), or with
    `full_size` of ViT-B/32's sizes (text: 12 layers, 512 wide, 77 tokens)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [" ".join(words)], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"])
    )
    bos, eos = tok.token_to_id("[BOS]"), tok.token_to_id("[EOS]")
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", bos), ("[EOS]", eos)]
    )
    max_tokens = 77 if full_size else 16
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_tokens,
    ).save_pretrained(path)
    ids = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": tok.token_to_id("[PAD]")}
    torch.manual_seed(0)
    if full_size:
        config = CLIPConfig(text_config={**ids, "vocab_size": 49408})
        processor = CLIPImageProcessor()
    else:
        small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        config = CLIPConfig(
            text_config={**ids, **small, "vocab_size": tok.get_vocab_size(), "max_position_embeddings": max_tokens},
            vision_config={**small, "image_size": 32, "patch_size": 8},
            projection_dim=16,
        )
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPModel(config).save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)
