"""Reading a shop's datasets: where they come from, what they say about themselves, their pictures and vectors.

    load_dataset_source(SRC) -> a `datasets.Dataset` (a folder saved by upload_ds.py --out, or a Hub id)
    embedding_matrix(ds)     -> the (N, d) float32 embeddings, read from Arrow without per-row Python work
    picture_source(value)    -> a picture's bytes or its checked file (never outside the dataset's folder)

No UI imports; the catalog (catalog.py), evaluate.py and the demo read datasets through here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.hubcheck import HubUnavailableError, require_hub
from common.untrusted import UnsafePath, file_stamp, inside, read_regular_file

if TYPE_CHECKING:
    import datasets


class CatalogError(ValueError):
    """The dataset cannot be used as a catalog (missing, unreachable, wrong columns, bad embeddings, no images)."""


def load_dataset_source(src: str) -> datasets.Dataset:
    """A local folder from `save_to_disk` (load_from_disk) or a Hub dataset id (load_dataset, split train)."""
    import datasets

    path = Path(src).expanduser()
    if path.is_file():
        raise CatalogError(
            f"{src} is a file; give the folder that upload_ds.py --out (save_to_disk) wrote, "
            "or a Hub dataset id USER/NAME"
        )
    if path.is_dir():
        if _saved_without_rows(path):  # load_from_disk fails on these with "list index out of range"
            raise CatalogError(f"dataset {src} has no rows")
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise CatalogError(f"{src} is not a dataset saved with save_to_disk: {exc}") from exc
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise CatalogError(f"{src} has splits {list(ds)} but no 'train' split")
            ds = ds["train"]
        return ds
    if path.exists():
        raise CatalogError(f"{src} is neither a folder nor a file")
    if src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise CatalogError(f"{src} is neither an existing directory nor a Hub dataset id (USER/NAME)")
    try:
        require_hub(f"loading the dataset {src!r}")
        return datasets.load_dataset(src, split="train")
    except HubUnavailableError as exc:
        raise CatalogError(str(exc)) from exc
    except Exception as exc:
        raise CatalogError(f"could not load the Hub dataset {src!r}: {exc}") from exc


def _saved_without_rows(path: Path) -> bool:
    """Whether `path` is a dataset that save_to_disk wrote with no data files (a 0-row dataset)."""
    try:
        return json.loads((path / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def dataset_meta(ds: datasets.Dataset) -> dict:
    """What upload_ds.py / the demo recorded in the dataset's info (model, pooling, dim, text...); {} if nothing
    readable is there."""
    try:
        meta = json.loads(ds.info.description or "{}")
    except (ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def name_column(ds: datasets.Dataset, col: str) -> list[str]:
    """A column of product names as strings ("" for missing; class labels by their names)."""
    import datasets

    feature, values = ds.features[col], ds[col]
    if isinstance(feature, datasets.ClassLabel):
        values = [feature.int2str(v) if v is not None and v >= 0 else "" for v in values]
    return ["" if v is None else str(v) for v in values]


def dataset_folder(ds: datasets.Dataset) -> Path | None:
    """The folder a dataset was loaded from (for image paths relative to it), or None."""
    files = getattr(ds, "cache_files", None) or []
    return Path(files[0]["filename"]).parent if files else None


def picture_source(value: bytes | str | dict | None, base_dir: Path | None) -> tuple[bytes | Path, str]:
    """A picture as a dataset stores it (bytes, or a path relative to the dataset's folder) -> (the bytes or a
    checked file, a key that changes when the picture does).

    A path is read only when it resolves (symlinks followed) inside `base_dir` and names a regular file: never a
    file elsewhere on this machine, a FIFO or a device (UnsafePath otherwise).
    """
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return data, hashlib.blake2b(data, digest_size=8).hexdigest()
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise ValueError("no image stored")
    if base_dir is None:
        raise UnsafePath("the image is a path, and the dataset has no folder to read it from")
    path = inside(base_dir, value)
    size, mtime, inode = file_stamp(path)
    stamp = f"{path}|{size}|{mtime}|{inode}".encode(errors="surrogateescape")
    return path, hashlib.blake2b(stamp, digest_size=8).hexdigest()


def picture_data(source: bytes | Path) -> bytes:
    """The bytes of a picture `picture_source` gave: as they are, or read from its checked file."""
    return source if isinstance(source, bytes) else read_regular_file(source)


def picture_bytes(ds: datasets.Dataset, image_column: str = "image") -> datasets.Dataset:
    """The dataset's pictures column alone, every picture as stored bytes: paths are read under the rule of
    `picture_source` (inside the dataset's folder); one that cannot be read is a ValueError naming its row."""
    import datasets

    pictures = ds.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    if not sum(chunk.field("bytes").null_count for chunk in pictures.data.column(image_column).chunks):
        return pictures  # every picture is stored in the dataset itself
    base = dataset_folder(ds)

    def read(batch: dict, rows: list[int]) -> dict:
        out = []
        for row, value in zip(rows, batch[image_column]):
            try:
                out.append({"bytes": picture_data(picture_source(value, base)[0]), "path": None})
            except (ValueError, OSError) as exc:
                raise ValueError(f"the picture of row {row} cannot be read: {exc}") from None
        return {image_column: out}

    return pictures.map(read, batched=True, with_indices=True, features=pictures.features, keep_in_memory=True)


# ------------------------------------------------------------------------------------ dataset readers
def embedding_blocks(ds: datasets.Dataset, column: str = "embeddings") -> list[np.ndarray]:
    """The dataset's embeddings as (rows, d) arrays, one per Arrow block, viewing the (memory-mapped) Arrow data
    where it can: a saved dataset's float32 embeddings are then never copied into memory.

    Raises ValueError for a missing, ragged (rows of different lengths), null or non-numeric column.
    """
    import pyarrow as pa

    if column not in ds.column_names:
        raise ValueError(f"dataset has no {column!r} column (columns: {ds.column_names})")
    if ds._indices is not None:
        ds = ds.flatten_indices()
    col = ds.data.column(column)
    kind = col.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise ValueError(f"column {column!r} must hold lists of numbers, got {kind}")
    if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise ValueError(f"column {column!r} must hold numbers, got lists of {kind.value_type}")
    if col.null_count:
        raise ValueError(f"column {column!r} has {col.null_count} missing rows")
    d, first, out = None, 0, []
    for chunk in col.chunks:
        if not len(chunk):
            continue
        values = chunk.flatten()
        if pa.types.is_fixed_size_list(kind):
            lengths = np.full(len(chunk), kind.list_size)
        else:
            lengths = np.diff(np.asarray(chunk.offsets))
        d = int(lengths[0]) if d is None else d
        if (lengths != d).any():
            bad = int(np.flatnonzero(lengths != d)[0])
            raise ValueError(f"column {column!r} is ragged: row 0 has {d} values, row {first + bad} has {lengths[bad]}")
        if values.null_count:
            raise ValueError(f"column {column!r} has missing values inside its vectors")
        out.append(values.to_numpy(zero_copy_only=False).reshape(len(chunk), d))
        first += len(chunk)
    return out


def dataset_views(ds: datasets.Dataset) -> dict[str, np.ndarray]:
    """The dataset's other per-product views for `Recommender(views=...)`: its `appearance` column when it has one
    (datasets made before that column have none)."""
    return {"appearance": embedding_matrix(ds, "appearance")} if "appearance" in ds.column_names else {}


def embedding_matrix(ds: datasets.Dataset, column: str = "embeddings") -> np.ndarray:
    """The (N, d) float32 matrix of a dataset's embeddings column, read from Arrow without per-row Python work.

    Raises ValueError for a missing, ragged (rows of different lengths), null or non-numeric column.
    """
    blocks = embedding_blocks(ds, column)
    if not blocks:
        return np.zeros((0, 0), dtype=np.float32)
    matrix = np.empty((sum(len(b) for b in blocks), blocks[0].shape[1]), dtype=np.float32)
    start = 0
    for b in blocks:
        matrix[start : start + len(b)] = b
        start += len(b)
    return matrix
