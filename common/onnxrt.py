"""A torch module exported once to ONNX (cached on disk, verified by hash) and run with ONNX Runtime on the CPU.

`exported` writes `<key>.onnx` under the cache folder (float32, or int8: ONNX Runtime's dynamic quantization of
the matrix products) with a `<key>.json` beside it holding the file's SHA-256; a cached file whose hash differs
(cut off, damaged, replaced) is rebuilt, never trusted. Both files are written atomically (a temporary name, then
`os.replace`). `session` opens it with threads matching the cores this process may use, without spinning (a
spinning pool fights the decoding threads for the same cores). `torch` and `onnxruntime` load only when used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.cores import usable_cores

OPSET = 17
PRECISIONS = ("float32", "int8")
RUNTIMES = ("auto", "torch", "onnx")
# rows per ONNX Runtime call: a batch is fed in slices this size, whose activations stay in the CPU's caches
# (measured on 2 AVX-512 cores, images/s at 8 rows vs 32: ViT-B/16 5.4 vs 4.9, int8 15.8 vs 14.1, EfficientNet-Lite0
# 200 vs 190); the pipeline's batch size still sets how many pictures are decoded ahead
ROWS_PER_RUN = 8
# the least cosine, on the probe, between a runtime's vectors and torch float32's for the runtime to be used
MIN_COSINE = {"float32": 0.9999, "int8": 0.995}


def cache_folder() -> Path:
    """Where exports are kept: CACHE_DIR/onnx (the app's cache folder; default ~/.cache/product-recommender)."""
    root = os.environ.get("CACHE_DIR") or Path.home() / ".cache" / "product-recommender"
    return Path(root).expanduser() / "onnx"


def missing() -> str | None:
    """Why ONNX Runtime cannot be used here (a package not installed), or None when it can."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -r requirements.txt)"
    return None


def export_key(name: str, files: Sequence[Path], module, what: str, precision: str) -> str:
    """A key of everything an export depends on: the model's name and weights (the path, size and time of each of
    its `files`; without files, a hash of every tensor), what is exported, the precision, and the versions of
    torch, onnx and ONNX Runtime and the opset."""
    import onnx
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    for label in (name, what, precision, torch.__version__, onnx.__version__, onnxruntime.__version__, str(OPSET)):
        digest.update(label.encode() + b"\x00")
    for path in sorted(files):
        info = path.stat()
        digest.update(f"{path}:{info.st_size}:{info.st_mtime_ns}\x00".encode())
    if files:
        return digest.hexdigest()[:32]
    for tensor_name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{tensor_name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:32]


def file_hash(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(folder: Path, key: str) -> Path | None:
    """The export `key` under `folder` when its file is whole (its hash is the one recorded), else None."""
    path, stamp = folder / f"{key}.onnx", folder / f"{key}.json"
    try:
        recorded = json.loads(stamp.read_text())["sha256"]
        return path if file_hash(path) == recorded else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def exported(
    module,
    inputs: dict[str, np.ndarray],
    dynamic: dict[str, dict[int, str]],
    key: str,
    precision: str,
    folder: Path | None = None,
) -> tuple[Path, bool]:
    """(path of the ONNX file of `module` for `key`, whether it came from the cache): exported with the legacy
    TorchScript exporter (needs no onnxscript) on example `inputs`, axes in `dynamic` left free, int8 when asked."""
    folder = folder or cache_folder()
    found = cached(folder, key)
    if found is not None:
        return found, True
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
        plain = Path(tmp) / "float32.onnx"
        _export(module, inputs, dynamic, plain)
        made = plain
        if precision == "int8":
            made = Path(tmp) / "int8.onnx"
            _quantize(plain, made)
        stamp = Path(tmp) / "stamp.json"
        stamp.write_text(json.dumps({"sha256": file_hash(made), "precision": precision, "key": key}))
        os.replace(made, folder / f"{key}.onnx")
        os.replace(stamp, folder / f"{key}.json")  # last: until it is there, the file counts as unfinished
    return folder / f"{key}.onnx", False


def _export(module, inputs: dict[str, np.ndarray], dynamic: dict[str, dict[int, str]], path: Path) -> None:
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks, the legacy-exporter notice
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=list(inputs),
            output_names=["features"],
            dynamic_axes={**dynamic, "features": {0: "batch"}},
            opset_version=OPSET,
        )


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the matrix products (weights int8 once; activations scaled on each pass)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session on `path`: `threads` (default: the usable cores) for each operator, no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no notes on unused initialisers
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_in_slices(session, outputs: list[str], inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The session's first output for `inputs`, run ROWS_PER_RUN rows at a time and joined."""
    n, step = len(next(iter(inputs.values()))), ROWS_PER_RUN
    parts = [session.run(outputs, {k: v[i : i + step] for k, v in inputs.items()})[0] for i in range(0, n, step)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The least cosine between matching rows of `a` and `b`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min((a * b).sum(axis=1) / np.maximum(norms, 1e-30)))


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    """`value` when it is one of `choices`, else a ValueError naming them."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value
