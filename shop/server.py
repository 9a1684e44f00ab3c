"""What the shop's web server needs beyond Gradio's defaults: a cap on request bodies, Gradio's upload route
refused, a cap on requests in flight, the pictures served by name (no path of the server in any URL), the file
limit raised and accept errors logged once a second, and freed memory given back to the OS. Used by app.py; no
round logic here. (A closed tab's session, forgotten at once, reaches into Gradio's
session store: that is in shop/wire.py, with every other piece of Gradio's internals the shop relies on.)"""

from __future__ import annotations

import gc
import logging
import os
import re
import resource
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]  # an ASGI app: (scope, receive, send)

MAX_REQUEST_BYTES = 1 << 20  # a request body over this is refused (see BodyLimit)
PICTURE_ROUTE = "pictures/"  # where Pictures serves the thumbnail folder's files, by name
PICTURE_NAME = re.compile(r"[a-z]\d+-[0-9a-f]+\.jpg")  # the names Catalog gives its picture files
UPLOAD_PATH = re.compile(r"(?:^|/)(?:gradio_api/)?upload/?$")  # Gradio's upload route (and its older name)


async def answer(send: Callable, status: int, text: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Send a short plain-text response and close the connection."""
    body = text.encode()
    start = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": [*start, *headers]})
    await send({"type": "http.response.body", "body": body})


class NoUploads:
    """ASGI middleware: POSTs to Gradio's upload route get 403 before any of the body is read. The shop has no
    upload component, and the route would keep what strangers post in the temp folder."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Refuse an upload; pass anything else on."""
        if scope["type"] == "http" and scope.get("method") == "POST" and UPLOAD_PATH.search(scope.get("path", "")):
            return await answer(send, 403, "this shop takes no uploads")
        return await self.app(scope, receive, send)


class RequestCap:
    """ASGI middleware: at most `limit` HTTP requests in flight; one more is answered 503 at once (with
    Retry-After), so a crowd of slow clients cannot take every file descriptor from the next shopper."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0  # counted on the event loop's one thread

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on while there is room; 503 otherwise."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            return await answer(send, 503, "the shop is busy; try again in a moment", ((b"retry-after", b"5"),))
        self.active += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active -= 1


class Pictures:
    """ASGI middleware: GET /pictures/NAME answers the file NAME of `folder` (the catalog's thumbnails), so a
    picture's URL names no path of the server. Only the names the catalog gives its files, only regular files."""

    def __init__(self, app: ASGIApp, folder: str | os.PathLike) -> None:
        self.app, self.folder = app, Path(folder)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Serve a picture; pass anything else on."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        head, sep, name = path.rpartition("/" + PICTURE_ROUTE)
        if not sep or "/" in name or head not in ("", scope.get("root_path", "").rstrip("/")):
            return await self.app(scope, receive, send)
        if scope.get("method") not in ("GET", "HEAD"):
            return await answer(send, 405, "pictures are only read")
        file = self.folder / name
        if not PICTURE_NAME.fullmatch(name) or file.is_symlink() or not file.is_file():
            return await answer(send, 404, "no such picture")
        from starlette.responses import FileResponse

        cache = {"cache-control": "public, max-age=3600"}  # a changed picture gets a new name (its key)
        return await FileResponse(file, media_type="image/jpeg", headers=cache)(scope, receive, send)


def raise_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit, so many connections do
    not run it out at the common 1024; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class OncePerSecond(logging.Filter):
    """A logging filter: of the records of a failing accept (asyncio's "socket.accept() out of system resource",
    EMFILE), at most one a second goes through, as one line saying how many were held back; others pass as they
    are. Without it, each refused connection logs a traceback (hundreds of MB in seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.last, self.held = float("-inf"), 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is logged."""
        error = record.exc_info[1] if record.exc_info else None
        if "accept" not in str(record.msg) and not (isinstance(error, OSError) and error.errno in (24, 23)):
            return True
        now = time.monotonic()
        if now - self.last < 1.0:
            self.held += 1
            return False
        held, self.last, self.held = self.held, now, 0
        reason = f": {error}" if error else ""
        record.msg = f"{str(record.msg).splitlines()[0]}{reason}" + (f" ({held} more not logged)" if held else "")
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_accept_errors() -> None:
    """Log repeated accept errors at most once a second (asyncio's and uvicorn's loggers)."""
    for name in ("asyncio", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OncePerSecond) for f in logger.filters):
            logger.addFilter(OncePerSecond())


class BodyLimit:
    """ASGI middleware: a request whose body is over `limit` bytes gets 413, and no more of it is read.

    The app's largest legitimate body is a pick with the browser's saved visit (tens of KB); without a cap,
    a few clients posting 100 MB bodies would grow the server by gigabytes. A body without a declared length
    (chunked) is read up to the limit first, then handed on whole.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on, or refuse it with 413 once its body is over the limit."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        await answer(send, 413, f"request body over {self.limit:,} bytes")


class MemoryKeeper:
    """Gives freed memory back to the OS (glibc): a closed tab's memory leaves the process, not just Python.

    glibc keeps freed heap memory for reuse; after tabs close, `malloc_trim` hands the whole free pages of every
    arena back, at most once per `every_s`. glibc's mmap threshold is left to adapt unless `mmap_threshold` pins
    it: pinned low, every large temporary gets its own mapping, so each round maps, faults in and unmaps them
    again (`bayes` rounds and embedding slower: bench/malloc_bench.py, docs/benchmarks.md). Does nothing where
    libc has no such calls.
    """

    def __init__(self, every_s: float = 5.0, mmap_threshold: int | None = None) -> None:
        import ctypes

        try:
            self._libc = ctypes.CDLL(None)
            self._trim = self._libc.malloc_trim
            if mmap_threshold is not None:
                m_mmap_threshold = -3
                self._libc.mallopt(m_mmap_threshold, mmap_threshold)
        except (OSError, AttributeError):
            self._trim = None
        self.every_s = every_s
        self._pending = threading.Lock()

    def soon(self) -> None:
        """Trim within `every_s` (several closes in that time share one trim)."""
        if self._trim is None or not self._pending.acquire(blocking=False):
            return

        def later() -> None:
            try:
                gc.collect()
                self._trim(0)
            finally:
                self._pending.release()

        timer = threading.Timer(self.every_s, later)
        timer.daemon = True
        timer.start()
