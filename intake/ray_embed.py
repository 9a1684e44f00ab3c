"""The Ray Data engine of upload_ds.py: the same embedding, spread over a Ray cluster (local, multi-node, GPUs).

Stages: rows (order, id, path or URL) -> `read_and_check` tasks (file bytes, full decode, skip reason) ->
`Embedder` actors (each loads the encoder once; `map_batches` over an actor pool) -> Parquet shards in a work
directory -> one `datasets.Dataset` in the original order. A restarted run reads the shards already written
and sends only the rows they lack; a crashed actor is restarted by Ray and its batch retried.

Used through `python upload_ds.py IMG_DIR --engine ray ...` (or `--products TABLE`: its image URLs are downloaded
before, by download.py); `run()` is the callable form, and reads http(s) URLs itself.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.images import APPEARANCE_SIZE, appearance_vectors
from common.untrusted import display_name
from embed import ImageEncoder
from intake.download import DownloadError, DownloadOptions, fetch_with_retries
from intake.folder import DEFAULT_MAX_PIXELS, check_image

if TYPE_CHECKING:
    import datasets


def read_source(src: str | bytes, allow_private: bool = False) -> bytes:
    """The bytes of a local path (str, or bytes for a name that is not UTF-8), a file:// URL or an http(s) URL
    (fetched by the worker, under download.py's time and size limits, retries and address rules)."""
    src = os.fsdecode(src)
    if src.startswith(("http://", "https://")):
        try:
            return fetch_with_retries(src, DownloadOptions(allow_private=allow_private))
        except DownloadError as exc:
            raise OSError(f"download failed{exc}") from None
    if src.startswith("file://"):
        with urllib.request.urlopen(src, timeout=60) as resp:
            return resp.read()
    return Path(src).read_bytes()


def read_checked(src: str, max_pixels: int, allow_private: bool = False) -> tuple[bytes, str | None]:
    """(the file's bytes, None) when it reads and fully decodes, else (b"", why not)."""
    try:
        data = read_source(src, allow_private)
    except Exception as exc:  # missing, permission, network: reported, never fatal
        return b"", f"unreadable: {type(exc).__name__}: {exc}"
    reason = check_image(data, max_pixels)
    return (b"", reason) if reason else (data, None)


def read_and_check(batch: pa.Table, max_pixels: int, allow_private: bool = False) -> pa.Table:
    """Stage 1 (tasks): read each file and fully decode it, else the row's next images (`next`, if any) in turn;
    a row none of whose images reads keeps empty bytes and the first reason; one that fell back, a note."""
    images, reasons, notes = [], [], []
    nexts = batch.column("next").to_pylist() if "next" in batch.column_names else [None] * batch.num_rows
    for path, more in zip(batch.column("path").to_pylist(), nexts):
        whys: list[str] = []
        for src in map(os.fsdecode, [path, *(more or [])]):
            data, why = read_checked(src, max_pixels, allow_private)
            if why is None:
                break
            whys.append(why)
        name = display_name(os.path.basename(src.rstrip("/"))) if why is None else None
        images.append({"bytes": data, "path": name})
        reasons.append(
            None if why is None else whys[0] if len(whys) == 1 else f"all {len(whys)} images failed: {whys[0]}"
        )
        notes.append(
            f"image 1 failed ({whys[0]}); image {len(whys) + 1} used instead" if why is None and whys else None
        )
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    batch = batch.drop_columns([c for c in ("next",) if c in batch.column_names])  # not kept in the shards
    return (
        batch.append_column("image", pa.array(images, image_type))
        .append_column("reason", pa.array(reasons, pa.string()))
        .append_column("note", pa.array(notes, pa.string()))
    )


class Embedder:
    """Stage 2 (actors): one encoder per actor, loaded once, embedding the good rows of each batch."""

    def __init__(
        self,
        model: str,
        pooling: str,
        batch_size: int,
        use_gpu: bool,
        threads: int,
        runtime: str = "auto",
        precision: str = "float32",
    ) -> None:
        import torch

        torch.set_num_threads(threads)  # the actor's CPU share, so workers do not fight over cores
        device = "cuda" if use_gpu else "cpu"
        self.encoder = ImageEncoder(
            model, batch_size, device, pooling, runtime=runtime, precision=precision, threads=threads
        )
        self.batches = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        self._fault_hooks()
        ok = [r is None for r in batch.column("reason").to_pylist()]
        good = [img["bytes"] for img, keep in zip(batch.column("image").to_pylist(), ok) if keep]
        vectors = self.encoder.embed(good) if good else np.zeros((0, self.encoder.dim), np.float32)
        d = self.encoder.dim
        flat = np.zeros((len(ok), d), dtype=np.float32)
        flat[np.flatnonzero(ok)] = vectors
        emb = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), d, mask=pa.array([not k for k in ok]))
        a = 3 * APPEARANCE_SIZE**2
        looks = np.zeros((len(ok), a), dtype=np.float32)
        looks[np.flatnonzero(ok)] = appearance_vectors(good, APPEARANCE_SIZE) if good else looks[:0]
        appearance = pa.FixedSizeListArray.from_arrays(pa.array(looks.ravel()), a, mask=pa.array([not k for k in ok]))
        self.batches += 1
        return batch.append_column("embeddings", emb).append_column("appearance", appearance)

    def _fault_hooks(self) -> None:
        """Test hooks: crash this worker process once, or fail the whole job, after N batches."""
        crash_after = os.environ.get("RAY_EMBED_CRASH_AFTER")
        marker = os.environ.get("RAY_EMBED_CRASH_MARKER")
        if crash_after and marker and self.batches >= int(crash_after) and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)  # a real worker death, as when a node is lost
        fail_after = os.environ.get("RAY_EMBED_FAIL_AFTER")
        if fail_after and self.batches >= int(fail_after):
            raise RuntimeError("job failure injected by RAY_EMBED_FAIL_AFTER")


def finished_orders(work: Path) -> set[int]:
    """Row orders already in complete Parquet shards; unreadable (half-written) shards are removed."""
    done: set[int] = set()
    for f in sorted(work.glob("*.parquet")):
        try:
            done.update(pq.read_table(f, columns=["order"]).column("order").to_pylist())
        except Exception:  # a shard cut off by a crash: its rows are simply done again
            f.unlink()
    return done


@dataclass
class RayOptions:
    """How the ray engine embeds: the model, the batch and shard sizes, and the cluster it runs on."""

    model: str
    pooling: str = "cls"
    batch_size: int = 32
    num_workers: int = 2
    gpus_per_worker: float = 0
    ray_address: str | None = None  # None: start a local cluster
    max_pixels: int = DEFAULT_MAX_PIXELS
    shard_size: int = 64  # images per read task and Parquet shard
    cpus_per_worker: float | None = None  # None: the local cores shared among the workers
    allow_private_urls: bool = False  # workers may fetch URLs on loopback/private addresses (see download.py)
    runtime: str = "auto"  # what runs the model: torch, onnx (ONNX Runtime), auto (ONNX Runtime where it agrees)
    precision: str = "float32"  # or int8 (refused where its vectors stray from float32's)


def run(
    rows: list[tuple[str, str]],
    work_dir: str | os.PathLike,
    options: RayOptions,
    log: Callable[[str], object] = print,
    alternates: dict[str, list[str]] | None = None,
) -> tuple[datasets.Dataset, list[tuple[str, str]], list[tuple[str, str]]]:
    """Embed `rows` (id, source) on Ray, a row's `alternates` (by id) tried when its source cannot be read;
    returns (embeddings dataset in row order, [(source, reason)] skipped, [(source, note)] fallen back)."""
    import ray

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    done = finished_orders(work)
    # paths travel as bytes (os.fsencode): Arrow strings must be UTF-8, file names need not be
    more = alternates or {}
    todo = [
        {"order": i, "id": ident, "path": os.fsencode(src), "next": [os.fsencode(a) for a in more.get(ident, [])]}
        for i, (ident, src) in enumerate(rows)
        if i not in done
    ]
    log(f"ray engine: {len(rows)} images, {len(done)} already in {work}, {len(todo)} to do")
    if todo:
        cpus_per_worker = worker_cpus(options)
        started_here = not ray.is_initialized()
        if started_here:
            start_ray(options, cpus_per_worker)
        try:
            t = time.perf_counter()
            embed_rows(todo, work, options, cpus_per_worker)
            log(f"ray engine: {len(todo)} images in {time.perf_counter() - t:.1f} s with {options.num_workers} workers")
        finally:
            if started_here:
                ray.shutdown()
    return assemble(work, len(rows))


def worker_cpus(options: RayOptions) -> float:
    """The CPUs an embedding actor takes: as the options say, else 1 on a cluster, else the local cores shared."""
    if options.cpus_per_worker is not None:
        return options.cpus_per_worker
    return 1.0 if options.ray_address else max(1.0, (os.cpu_count() or 1) // options.num_workers)


def start_ray(options: RayOptions, cpus_per_worker: float) -> None:
    """Join the Ray cluster at `options.ray_address`, sending it this project's code, or start a local one."""
    import ray

    address = options.ray_address
    # Local cluster: one logical CPU more than the actors take, for the light read and write tasks.
    local_cpus = None if address else int(max(os.cpu_count() or 1, options.num_workers * cpus_per_worker)) + 1
    code = {
        "working_dir": str(Path(__file__).resolve().parent.parent),
        "excludes": [".venv", ".git", "tests", "bench", "data", "*.png"],
    }
    ray.init(
        address=address,
        num_cpus=local_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=code if address else None,
    )


def embed_rows(todo: list[dict], work: Path, options: RayOptions, cpus_per_worker: float) -> None:
    """The stages over `todo`: read and check (tasks), embed (an actor pool), written as Parquet shards in `work`."""
    import ray

    o = options
    ds = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // o.shard_size)))
    ds = ds.map_batches(
        read_and_check,
        batch_format="pyarrow",
        batch_size=o.shard_size,
        fn_kwargs={"max_pixels": o.max_pixels, "allow_private": o.allow_private_urls},
        num_cpus=0.25,
    )
    ds = ds.map_batches(
        Embedder,
        batch_format="pyarrow",
        batch_size=o.batch_size,
        fn_constructor_kwargs={
            "model": o.model,
            "pooling": o.pooling,
            "batch_size": o.batch_size,
            "use_gpu": o.gpus_per_worker > 0,
            "threads": max(1, int(cpus_per_worker)),
            "runtime": o.runtime,
            "precision": o.precision,
        },
        compute=ray.data.ActorPoolStrategy(size=o.num_workers),
        num_cpus=cpus_per_worker,
        num_gpus=o.gpus_per_worker or None,
        max_restarts=-1,
        max_task_retries=-1,
    )
    ds.write_parquet(str(work), min_rows_per_file=o.shard_size, ray_remote_args={"num_cpus": 0.25})


def assemble(work: Path, n_rows: int) -> tuple[datasets.Dataset, list[tuple[str, str]], list[tuple[str, str]]]:
    """The shards as one `datasets.Dataset` (image, id, embeddings) in row order, the skip list and the notes."""
    import datasets

    table = pa.concat_tables([pq.read_table(f) for f in sorted(work.glob("*.parquet"))], promote_options="default")
    table = table.sort_by("order")
    orders = table.column("order").to_numpy()
    keep = np.concatenate([[True], orders[1:] != orders[:-1]]) if len(orders) else np.zeros(0, bool)
    table = table.filter(pa.array(keep))  # a retried batch that was written twice counts once
    if table.num_rows != n_rows:
        raise RuntimeError(f"ray engine: {table.num_rows} of {n_rows} rows in {work}; run again to finish")
    reasons = table.column("reason").to_pylist()
    paths = [os.fsdecode(path) for path in table.column("path").to_pylist()]
    skipped = [(path, r) for path, r in zip(paths, reasons) if r is not None]
    written = table.column("note").to_pylist() if "note" in table.column_names else [None] * len(paths)
    notes = [(path, note) for path, note in zip(paths, written) if note is not None]
    good = table.filter(pa.array([r is None for r in reasons]))
    dim = good.schema.field("embeddings").type.list_size
    a = good.schema.field("appearance").type.list_size
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "id": datasets.Value("string"),
            "embeddings": datasets.List(datasets.Value("float32"), length=dim),
            "appearance": datasets.List(datasets.Value("float32"), length=a),
        }
    )
    emb = pa.table(
        {
            "image": good.column("image"),
            "id": good.column("id"),
            "embeddings": good.column("embeddings"),
            "appearance": good.column("appearance"),
        }
    )
    return datasets.Dataset(emb.cast(features.arrow_schema)), skipped, notes
