"""Product images given as http(s) URLs -> local files, for both engines of upload_ds.py.

Several at a time, each with a time limit (for the whole download, not just each read), a size limit, and a few
retries on what can pass (a timeout, a dropped connection, a 5xx, a 429); kept in a cache folder by URL, so a
rerun downloads nothing it already has. A failure is a reason, never an exception: the caller reports it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from intake.folder import check_image

CHUNK = 1 << 16


@dataclass
class DownloadOptions:
    """How images are fetched: seconds per image, bytes per image, retries after the first try, threads."""

    timeout: float = 30.0
    max_bytes: int = 32 << 20
    retries: int = 2
    workers: int = 8
    backoff: float = 0.5  # seconds before the first retry, doubled after each


class DownloadError(Exception):
    """A download that failed; `retry` says whether trying again could help."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


def cache_path(cache_dir: Path, url: str) -> Path:
    """Where the image of `url` is kept: named by a hash of the URL."""
    return cache_dir / hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def fetch(url: str, options: DownloadOptions) -> bytes:
    """The body of `url`, within the time and size limits; DownloadError otherwise."""
    deadline = time.monotonic() + options.timeout
    request = urllib.request.Request(url, headers={"User-Agent": "product-recommender/upload_ds"})
    try:
        with urllib.request.urlopen(request, timeout=options.timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > options.max_bytes:
                raise DownloadError(f"too large: {int(declared):,} bytes > limit {options.max_bytes:,}", retry=False)
            body = bytearray()
            while chunk := response.read(CHUNK):
                body += chunk
                if len(body) > options.max_bytes:
                    raise DownloadError(f"too large: more than {options.max_bytes:,} bytes", retry=False)
                if time.monotonic() > deadline:
                    raise DownloadError(f"timed out after {options.timeout:g} s", retry=True)
            return bytes(body)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} {exc.reason}", retry=exc.code >= 500 or exc.code in (408, 429)) from None
    except TimeoutError:
        raise DownloadError(f"timed out after {options.timeout:g} s", retry=True) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        retry = isinstance(reason, (TimeoutError, ConnectionError, socket.timeout))
        raise DownloadError(f"cannot connect: {reason}", retry=retry) from None
    except (ConnectionError, OSError) as exc:
        raise DownloadError(f"connection failed: {exc}", retry=True) from None
    except ValueError as exc:  # a URL urllib cannot parse
        raise DownloadError(f"bad URL: {exc}", retry=False) from None


def fetch_with_retries(url: str, options: DownloadOptions) -> bytes:
    """`fetch`, tried again (after a growing pause) while the failure is one that can pass; the last failure's
    DownloadError says how many tries it took."""
    for attempt in range(options.retries + 1):
        try:
            return fetch(url, options)
        except DownloadError as exc:
            if not exc.retry or attempt == options.retries:
                raise DownloadError(f"{f' ({attempt + 1} tries)' if attempt else ''}: {exc}", exc.retry) from None
            time.sleep(options.backoff * 2**attempt)
    raise AssertionError("unreachable")


def download(url: str, cache_dir: Path, options: DownloadOptions, max_pixels: int) -> tuple[Path | None, str | None]:
    """(the cached file, None), or (None, why not): fetched once, retried where that can help, checked to be an
    image before it is kept."""
    path = cache_path(cache_dir, url)
    if path.exists():
        return path, None
    try:
        data = fetch_with_retries(url, options)
    except DownloadError as exc:
        return None, f"download failed{exc}"
    reason = check_image(data, max_pixels)
    if reason:
        return None, f"downloaded, but {reason}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a crash never leaves half an image under the final name
    return path, None


def download_all(
    urls: list[str],
    cache_dir: str | os.PathLike,
    options: DownloadOptions | None = None,
    max_pixels: int = 89_478_485,
    progress: bool = True,
) -> dict[str, tuple[Path | None, str | None]]:
    """Each distinct URL -> (its cached file, None) or (None, why it failed), several at a time, one progress bar."""
    from tqdm.auto import tqdm

    options = options or DownloadOptions()
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    distinct = list(dict.fromkeys(urls))
    cached = sum(cache_path(cache, u).exists() for u in distinct)
    results: dict[str, tuple[Path | None, str | None]] = {}
    with (
        ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool,
        tqdm(
            total=len(distinct),
            desc="downloading",
            unit="img",
            disable=not progress or not distinct,
            postfix=f"{cached} cached" if cached else None,
        ) as bar,
    ):
        for url, result in zip(distinct, pool.map(lambda u: download(u, cache, options, max_pixels), distinct)):
            results[url] = result
            bar.update(1)
    return results
