"""ONNX Runtime beside torch (issue 34): auto picks it when its vectors agree, the export is cached and rebuilt
when damaged, int8 is refused when it strays, resumed uploads never mix precisions, and datasets say which."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern
from PIL import Image

import upload_ds
from catalog.catalog import Catalog
from catalog.dataset import embedding_matrix
from common.onnxrt import ROWS_PER_RUN, file_hash
from embed import ImageEncoder, TextEncoder, embed_dataset


def pictures(n: int = 6) -> list[Image.Image]:
    return [Image.fromarray(pattern(40 + 7 * i, 30 + 5 * i, i)) for i in range(n)]


def least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


@pytest.mark.slow
def test_auto_runs_efficientnet_on_onnx_runtime_with_torchs_vectors(tmp_path, capfd):
    auto = ImageEncoder("efficientnet-lite0", batch_size=4, cache_dir=tmp_path)
    said = capfd.readouterr().err
    assert auto.runtime == "onnx" and auto.precision == "float32"
    assert "efficientnet-lite0 runs on ONNX Runtime float32" in said and "export made" in said
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1
    torch_enc = ImageEncoder("efficientnet-lite0", batch_size=4, runtime="torch", cache_dir=tmp_path)
    assert torch_enc.runtime == "torch" and "runs on torch float32 (asked for)" in capfd.readouterr().err
    images = pictures()
    assert least_cosine(auto.embed(images), torch_enc.embed(images)) >= 0.9999
    assert auto.describe()["runtime"] == "onnx" and torch_enc.describe()["runtime"] == "torch"


def test_auto_runs_a_local_vit_on_onnx_runtime_and_reuses_its_export(tiny_model, tmp_path, capfd):
    auto = ImageEncoder(tiny_model, batch_size=4, cache_dir=tmp_path)
    again = ImageEncoder(tiny_model, batch_size=4, cache_dir=tmp_path)
    said = capfd.readouterr().err
    assert auto.runtime == again.runtime == "onnx" and "export made" in said and "export cached" in said
    mean = ImageEncoder(tiny_model, batch_size=4, pooling="mean", cache_dir=tmp_path)
    assert mean.runtime == "onnx" and len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # another graph
    images = pictures(9)
    torch_vectors = ImageEncoder(tiny_model, batch_size=4, runtime="torch").embed(images)
    assert least_cosine(auto.embed(images), torch_vectors) >= 0.9999
    assert least_cosine(mean.embed(images), torch_vectors) < 0.99  # not the CLS export reused


def test_onnx_runtime_runs_a_batch_in_slices_with_the_vectors_of_one_picture_at_a_time(
    tiny_model, tmp_path, monkeypatch
):
    import onnxruntime

    enc = ImageEncoder(tiny_model, batch_size=32, cache_dir=tmp_path)
    sizes, run = [], onnxruntime.InferenceSession.run

    def counted(self, outputs, feed, *args, **kwargs):
        sizes.append(len(next(iter(feed.values()))))
        return run(self, outputs, feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", counted)
    images = pictures(ROWS_PER_RUN * 2 + 3)
    whole = enc.embed(images)
    assert sizes == [ROWS_PER_RUN, ROWS_PER_RUN, 3]  # one batch of the pipeline, fed to the model in slices
    one_by_one = np.concatenate([enc.embed([image]) for image in images])
    assert whole.shape == one_by_one.shape and least_cosine(whole, one_by_one) >= 0.9999


def test_a_damaged_cached_export_is_rebuilt(tiny_model, tmp_path, capfd):
    import onnx
    from onnx import numpy_helper

    ImageEncoder(tiny_model, cache_dir=tmp_path)
    (path,) = (tmp_path / "onnx").glob("*.onnx")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut off: its hash differs
    capfd.readouterr()
    rebuilt = ImageEncoder(tiny_model, cache_dir=tmp_path)
    assert rebuilt.runtime == "onnx" and "export made" in capfd.readouterr().err
    # changed weights under a rewritten hash: the probe catches it, and the file is made again
    graph = onnx.load(str(path))
    for init in graph.graph.initializer:
        if init.dims and len(init.dims) == 2:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * -3.0, init.name))
    onnx.save(graph, str(path))
    stamp = path.with_suffix(".json")
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "sha256": file_hash(path)}))
    images = pictures()
    again = ImageEncoder(tiny_model, cache_dir=tmp_path)
    assert again.runtime == "onnx" and "export made" in capfd.readouterr().err
    expected = ImageEncoder(tiny_model, runtime="torch").embed(images)
    assert least_cosine(again.embed(images), expected) >= 0.9999


def quantization_breaker(tiny_model: str, folder: Path) -> str:
    """The tiny ViT with, in every block, one input channel of the MLP held at zero and weights 10,000 times the
    others on it: float32 ignores them (0 x w = 0), but int8's one scale per matrix then rounds the others to 0."""
    import torch
    from transformers import AutoImageProcessor, ViTModel

    model = ViTModel.from_pretrained(tiny_model, add_pooling_layer=False)
    with torch.no_grad():
        for layer in model.layers:
            layer.layernorm_after.weight[0] = 0
            layer.layernorm_after.bias[0] = 0
            layer.mlp.fc1.weight[:, 0] = 1e4
    model.save_pretrained(folder)
    AutoImageProcessor.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


def test_int8_is_used_where_its_probe_holds_and_refused_where_not(tiny_model, tmp_path):
    int8 = ImageEncoder(tiny_model, precision="int8", cache_dir=tmp_path)
    assert int8.runtime == "onnx" and int8.probe_cosine >= 0.995 and int8.describe()["precision"] == "int8"
    images = pictures()
    assert least_cosine(int8.embed(images), ImageEncoder(tiny_model, runtime="torch").embed(images)) >= 0.99
    breaker = quantization_breaker(tiny_model, tmp_path / "breaker")
    assert ImageEncoder(breaker, cache_dir=tmp_path).runtime == "onnx"  # float32 is fine
    for runtime in ("auto", "torch"):
        with pytest.raises(ValueError, match=r"int8 refused for .*breaker.*least cosine 0\.\d+.*0\.995 needed"):
            ImageEncoder(breaker, precision="int8", runtime=runtime, cache_dir=tmp_path)


def image_ds(n: int):
    import datasets

    return datasets.Dataset.from_dict(
        {"image": pictures(n), "id": [f"p{i}" for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")}),
    )


class Interrupted(ImageEncoder):
    """The real encoder, stopping after `calls` calls and counting the images it embedded."""

    def __init__(self, *args, calls: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.left, self.images = calls, 0

    def embed(self, images):
        if self.left is not None and self.left <= 0:
            raise KeyboardInterrupt("stopped")
        self.left = None if self.left is None else self.left - 1
        self.images += len(images)
        return super().embed(images)


def test_resuming_keeps_float32_shards_of_either_runtime_and_never_mixes_int8(tiny_model, tmp_path):
    ds, ck = image_ds(12), tmp_path / "ck"

    def run(encoder):
        return embed_dataset(ds, encoder, batch_size=4, shard_size=4, checkpoint_dir=ck, progress=False)

    with pytest.raises(KeyboardInterrupt):
        run(Interrupted(tiny_model, calls=1, cache_dir=tmp_path))  # ONNX Runtime float32: the first of 3 shards
    on_torch = Interrupted(tiny_model, runtime="torch", calls=1)
    with pytest.raises(KeyboardInterrupt):
        run(on_torch)
    assert on_torch.images == 4  # the first shard (ONNX Runtime's) kept, the second made by torch
    int8 = Interrupted(tiny_model, precision="int8", cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="another run"):
        out = run(int8)
    assert int8.images == 12  # the float32 shards thrown away, not mixed with int8 ones
    assert least_cosine(embedding_matrix(out), ImageEncoder(tiny_model, runtime="torch").embed(ds["image"])) > 0.99


def test_upload_records_runtime_and_precision_in_info_and_card(tiny_model, tmp_path, capsys):
    folder = tmp_path / "shop"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(pattern(30, 30, i)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    argv = [str(folder), "--repo", "shop", "--no-push", "--out", str(out), "--model", tiny_model]
    assert upload_ds.main([*argv, "--runtime", "onnx", "--precision", "int8"]) == 0
    meta = json.loads((out / "shop-embeddings" / "dataset_info.json").read_text())["description"]
    assert json.loads(meta)["runtime"] == "onnx" and json.loads(meta)["precision"] == "int8"
    card = (out / "shop-embeddings" / "README.md").read_text()
    assert "ONNX Runtime" in card and "int8" in card
    assert "int8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        upload_ds.parse_args([*argv, "--precision", "float16"])
    assert "--precision" in capsys.readouterr().err


def test_the_catalog_refuses_a_text_tower_of_another_precision(tiny_clip, tmp_path):
    vectors = ImageEncoder(tiny_clip, precision="int8", cache_dir=tmp_path)
    ds = image_ds(3)
    ds = ds.add_column("embeddings", [list(v) for v in vectors.embed(list(ds["image"]))])
    ds.info.description = json.dumps(vectors.describe())
    catalog = Catalog(ds, "clip", tmp_path)
    assert catalog.precision == "int8"
    text = TextEncoder(tiny_clip, cache_dir=tmp_path)  # float32, ONNX Runtime: words of any length
    words = ["red dress", "sneaker", "a red dress with a bag and a coat", ""]
    assert text.runtime == "onnx" and text.precision == "float32"
    assert least_cosine(text.embed(words), TextEncoder(tiny_clip, runtime="torch").embed(words)) >= 0.9999
    why = catalog.load_text_encoder(text)
    assert "float32" in why and "int8" in why and "\n" not in why and catalog.text_encoder is None
    assert catalog.load_text_encoder() is None and catalog.text_encoder.precision == "int8"


def test_the_commands_take_runtime_and_precision_from_flags_or_the_environment(monkeypatch, capsys):
    import evaluate

    monkeypatch.setenv("PRECISION", "int8")
    args = evaluate.parse_args(["--dataset", "demo", "--runtime", "torch"])
    assert (args.runtime, args.precision) == ("torch", "int8")
    args = upload_ds.parse_args(["img", "--repo", "shop", "--no-push", "--out", "out", "--precision", "float32"])
    assert (args.runtime, args.precision) == ("auto", "float32")
    monkeypatch.setenv("RUNTIME", "gpu")
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--dataset", "demo"])
    assert "RUNTIME" in capsys.readouterr().err
