"""Product images given as http(s) URLs -> local files, for both engines of upload_ds.py.

Several at a time (at most `per_host` from one host), each with a deadline that holds inside a read (a server
that trickles a byte a second is cut at it), a size limit, and a few retries on what can pass (a timeout, a
dropped connection, a 5xx, a 429); all of a run within an overall budget, and Ctrl-C cuts every open connection
at once. Only http(s) is fetched, redirects too, and every address a name resolves to is checked before it is
connected: loopback, private, link-local (the cloud metadata address), reserved, multicast and unspecified
addresses are refused unless `allow_private` is set. Connections are direct (proxy variables are not used), so
the address checked is the address connected. Kept in a cache folder by URL, so a rerun downloads nothing it
already has. A failure is a reason, never an exception: the caller reports it.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from intake.folder import check_image

CHUNK = 1 << 16
TICK = 0.1  # seconds between the watchdog's looks at the open connections
ALLOW_HINT = "pass --allow-private-urls to fetch it"


@dataclass
class DownloadOptions:
    """How images are fetched: seconds per image, bytes per image, retries after the first try, threads, the
    seconds for all downloads of a run, downloads at once from one host, and whether private addresses may be
    fetched (a shop on the owner's own network, the tests' local servers)."""

    timeout: float = 30.0
    max_bytes: int = 32 << 20
    retries: int = 2
    workers: int = 8
    backoff: float = 0.5  # seconds before the first retry, doubled after each
    budget: float | None = None  # seconds for the whole run's downloads; None: no overall limit
    per_host: int = 4
    allow_private: bool = False


class DownloadError(Exception):
    """A download that failed; `retry` says whether trying again could help."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class RefusedAddress(OSError):
    """A connection not made: the name resolves to an address that is not public (or nothing was checked)."""


def address_problem(ip: str) -> str | None:
    """Why the IP address `ip` (v4 or v6) is not one to fetch from without --allow-private-urls, or None."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    kinds = ("loopback", "link-local", "unspecified", "multicast", "reserved", "private")
    for kind in kinds:
        if getattr(addr, f"is_{kind.replace('-', '_')}"):
            return f"{ip} is a {kind} address"
    return None if addr.is_global else f"{ip} is not a public address"


def cache_path(cache_dir: Path, url: str) -> Path:
    """Where the image of `url` is kept: named by a hash of the URL."""
    return cache_dir / hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:40]


class Run:
    """One run's downloads: its options, the end of its budget, its open attempts (each cut at its deadline by a
    watchdog thread, all of them at once by `stop`), and a semaphore per host. Use it as a context manager."""

    def __init__(self, options: DownloadOptions) -> None:
        self.options = options
        self.end = time.monotonic() + options.budget if options.budget else float("inf")
        self.stopped = threading.Event()
        self.tls = ssl.create_default_context()
        self._attempts: set[Attempt] = set()
        self._hosts: dict[str, threading.Semaphore] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def __enter__(self) -> Run:
        threading.Thread(target=self._watch, name="download-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()

    def stop(self) -> None:
        """Ctrl-C: cut every open connection now and start nothing more."""
        self.stopped.set()
        self._cut_overdue()

    def check(self) -> None:
        """A DownloadError when nothing more may start: the run was stopped or its budget ran out."""
        if self.stopped.is_set():
            raise DownloadError("interrupted", retry=False)
        if time.monotonic() >= self.end:
            raise DownloadError(self.budget_reason(), retry=False)

    def budget_reason(self) -> str:
        """The report's words for a download the budget left no time for."""
        return f"the download budget (--download-budget {self.options.budget:g} s) ran out"

    @contextmanager
    def host_slot(self, url: str) -> Iterator[None]:
        """Hold one of the `per_host` download slots of the URL's host for the block (waiting while all are taken)."""
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        with self._lock:
            slots = self._hosts.setdefault(host, threading.Semaphore(max(1, self.options.per_host)))
        while not slots.acquire(timeout=TICK):
            self.check()
        try:
            yield
        finally:
            slots.release()

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """One try at one URL, watched until the block ends: its deadline is the timeout or the budget's end."""
        now = time.monotonic()
        attempt = Attempt(self, min(now + self.options.timeout, self.end))
        with self._lock:
            self._attempts.add(attempt)
        try:
            yield attempt
        finally:
            with self._lock:
                self._attempts.discard(attempt)

    def _watch(self) -> None:
        while not self._closed.wait(TICK):
            self._cut_overdue()

    def _cut_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            attempts = list(self._attempts)
        for attempt in attempts:
            if attempt.cut is None and (self.stopped.is_set() or now >= attempt.deadline):
                if self.stopped.is_set():
                    attempt.cut = "interrupted"
                elif now >= self.end:
                    attempt.cut = self.budget_reason()
                else:
                    attempt.cut, attempt.cut_retry = f"timed out after {self.options.timeout:g} s", True
                for sock in list(attempt.socks):
                    with suppress(OSError):  # a blocked recv returns at once; closed sockets are left as they are
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Attempt:
    """One try at one URL: its deadline, the sockets it opened (redirects open more), and why it was cut, if it was."""

    def __init__(self, run: Run, deadline: float) -> None:
        self.run, self.deadline = run, deadline
        self.socks: list[socket.socket] = []
        self.cut: str | None = None
        self.cut_retry = False

    def left(self) -> float:
        """Seconds until the deadline, but no more than one read's timeout (at least a moment)."""
        return max(0.001, min(self.run.options.timeout, self.deadline - time.monotonic()))

    def failed(self) -> None:
        """Raise the reason it was cut, if it was (a cut read ends like a closed connection)."""
        if self.cut is not None:
            raise DownloadError(self.cut, retry=self.cut_retry)

    def open_socket(self, address: tuple[str, int], timeout: object = None, source: object = None) -> socket.socket:
        """A connection to (host, port): every address the name resolves to checked first, then the first that
        answers; http.client calls it for every connection of this try, redirects included."""
        host, port = address
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        if not self.run.options.allow_private:
            for *_, sockaddr in infos:
                problem = address_problem(sockaddr[0])
                if problem:
                    raise RefusedAddress(f"{host}: {problem}; {ALLOW_HINT}")
        last: OSError = OSError(f"{host} has no address")
        for family, kind, proto, _, sockaddr in infos:
            self.failed()
            sock = socket.socket(family, kind, proto)
            self.socks.append(sock)
            try:
                sock.settimeout(self.left())
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last

    def read_timeout(self) -> None:
        """Set the next read's timeout to what is left before the deadline."""
        for sock in self.socks[-1:]:
            with suppress(OSError):
                sock.settimeout(self.left())


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, *, attempt: Attempt, **kwargs: object) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = attempt.open_socket


class _TLSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, attempt: Attempt, **kwargs: object) -> None:
        super().__init__(host, **kwargs)
        self._attempt = attempt
        self._create_connection = attempt.open_socket

    def connect(self) -> None:
        super().connect()
        self._attempt.socks.append(self.sock)  # the TLS socket that replaced the plain one


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__()
        self.attempt = attempt

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Connection, attempt=self.attempt), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__(context=attempt.run.tls)
        self.attempt = attempt

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TLSConnection, attempt=self.attempt), req, context=self._context)


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 (urllib's signature)
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise DownloadError(f"redirected to a {scheme}: address, refused (only http and https are followed)", False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(attempt: Attempt) -> urllib.request.OpenerDirector:
    """An opener for one try: http(s) only, direct (no proxy), every connection through `attempt.open_socket`."""
    director = urllib.request.OpenerDirector()
    for handler in (
        _HTTP(attempt),
        _HTTPS(attempt),
        _Redirects(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        director.add_handler(handler)
    return director


def read_body(response: http.client.HTTPResponse, attempt: Attempt) -> bytes:
    """The body, a read at a time, each read bounded by what is left before the deadline and the size limit."""
    max_bytes = attempt.run.options.max_bytes
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadError(f"too large: {int(declared):,} bytes > limit {max_bytes:,}", retry=False)
    body = bytearray()
    while True:
        attempt.read_timeout()
        chunk = response.read1(CHUNK)  # whatever one read brings: a trickle cannot hold it past the deadline
        attempt.failed()
        if not chunk:
            break
        body += chunk
        if len(body) > max_bytes:
            raise DownloadError(f"too large: more than {max_bytes:,} bytes", retry=False)
        if time.monotonic() > attempt.deadline:
            raise DownloadError(f"timed out after {attempt.run.options.timeout:g} s", retry=True)
    if response.length:  # the server closed before the length it announced
        raise DownloadError(f"connection closed after {len(body):,} bytes", retry=True)
    return bytes(body)


def fetch(url: str, run: Run) -> bytes:
    """The body of `url`, within the time and size limits and the address rules; DownloadError otherwise."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"not an http(s) address ({scheme or 'no scheme'})", retry=False)
    run.check()
    request = urllib.request.Request(url, headers={"User-Agent": "product-recommender/upload_ds"})
    with run.host_slot(url), run.attempt() as attempt:
        try:
            with opener(attempt).open(request, timeout=attempt.left()) as response:
                return read_body(response, attempt)
        except DownloadError:
            raise
        except urllib.error.HTTPError as exc:
            attempt.failed()
            retry = exc.code >= 500 or exc.code in (408, 429)
            raise DownloadError(f"HTTP {exc.code} {exc.reason}", retry=retry) from None
        except urllib.error.URLError as exc:
            attempt.failed()
            reason = exc.reason
            if isinstance(reason, RefusedAddress):
                raise DownloadError(f"refused: {reason}", retry=False) from None
            if isinstance(reason, TimeoutError):
                raise DownloadError(f"timed out after {run.options.timeout:g} s", retry=True) from None
            raise DownloadError(f"cannot connect: {reason}", retry=isinstance(reason, ConnectionError)) from None
        except TimeoutError:
            attempt.failed()
            raise DownloadError(f"timed out after {run.options.timeout:g} s", retry=True) from None
        except (OSError, http.client.HTTPException) as exc:
            attempt.failed()
            raise DownloadError(f"connection failed: {type(exc).__name__}: {exc}", retry=True) from None
        except ValueError as exc:  # a URL urllib cannot parse
            raise DownloadError(f"bad URL: {exc}", retry=False) from None


def fetch_with_retries(url: str, options: DownloadOptions, run: Run | None = None) -> bytes:
    """`fetch`, tried again (after a growing pause) while the failure is one that can pass; the last failure's
    DownloadError says how many tries it took. Without a `run`, one is made for this URL alone."""
    if run is None:
        with Run(options) as own:
            return fetch_with_retries(url, options, own)
    for attempt in range(options.retries + 1):
        try:
            return fetch(url, run)
        except DownloadError as exc:
            if not exc.retry or attempt == options.retries:
                raise DownloadError(f"{f' ({attempt + 1} tries)' if attempt else ''}: {exc}", exc.retry) from None
            run.stopped.wait(min(options.backoff * 2**attempt, max(0.0, run.end - time.monotonic())))
    raise AssertionError("unreachable")


def download(url: str, cache_dir: Path, run: Run, max_pixels: int) -> tuple[Path | None, str | None]:
    """(the cached file, None), or (None, why not): fetched once, retried where that can help, checked to be an
    image before it is kept."""
    path = cache_path(cache_dir, url)
    if path.exists():
        return path, None
    try:
        data = fetch_with_retries(url, run.options, run)
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
    """Each distinct URL -> (its cached file, None) or (None, why it failed), several at a time, one progress bar.
    Ctrl-C cuts every open connection and returns at once (KeyboardInterrupt); what the budget left no time for
    is (None, the reason)."""
    from tqdm.auto import tqdm

    options = options or DownloadOptions()
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    distinct = list(dict.fromkeys(urls))
    cached = sum(cache_path(cache, u).exists() for u in distinct)
    results: dict[str, tuple[Path | None, str | None]] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, options.workers))
    bar = tqdm(
        total=len(distinct),
        desc="downloading",
        unit="img",
        disable=not progress or not distinct,
        postfix=f"{cached} cached" if cached else None,
    )
    with Run(options) as run, bar:
        try:
            futures = {pool.submit(download, u, cache, run, max_pixels): u for u in distinct}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            run.stop()  # the workers' reads return now; none of the queued downloads starts
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    pool.shutdown()
    return {u: results[u] for u in distinct}
