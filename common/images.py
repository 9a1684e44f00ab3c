"""Pictures from anywhere (PIL, path, bytes, a `datasets` Image dict) as clean RGB, and their colour layout.

Shared by the catalog (the shop's side) and embedding (the intake's side), so neither imports the other.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: EXIF orientation applied, transparency composited on white, 16-bit scaled."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit range -> 8-bit
        elif img.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("LA", "La", "PA", "RGBa") or img.mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGB", img.size, (255, 255, 255))
        white.paste(img, mask=img.getchannel("A"))
        return white
    return img if img.mode == "RGB" else img.convert("RGB")


def open_image(src: Image.Image | str | os.PathLike | bytes | dict) -> Image.Image:
    """A PIL image from a PIL image, a path, raw bytes, or a `datasets` Image dict ({'bytes', 'path'})."""
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, dict):
        src = src.get("bytes") or src.get("path")
    if isinstance(src, bytes):
        return Image.open(io.BytesIO(src))
    return Image.open(src)


APPEARANCE_SIZE = 8  # datasets get an `appearance` column: each picture's 8 x 8 colour layout (192 numbers)


def appearance_vectors(images: Sequence, size: int = APPEARANCE_SIZE) -> np.ndarray:
    """Colour layout of each picture: (n, 3 * size * size) float32 in [0, 1], the RGB image (EXIF orientation
    applied, transparency on white, any mode) shrunk to size x size and flattened. What a shopper sees at a
    glance, colour and silhouette, which a semantic embedding only partly keeps."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    out = np.empty((len(images), 3 * size * size), dtype=np.float32)
    for i, src in enumerate(images):
        if src is None:
            raise ValueError(f"image {i} is missing")
        small = to_rgb(open_image(src)).resize((size, size), Image.BOX)
        out[i] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return out
