"""What the shop's web server needs beyond Gradio's defaults: a cap on request bodies, and freed memory given back
to the OS. Used by app.py; no round logic here. (A closed tab's session, forgotten at once, reaches into Gradio's
session store: that is in shop/wire.py, with every other piece of Gradio's internals the shop relies on.)"""

from __future__ import annotations

import gc
import threading
from collections.abc import Awaitable, Callable

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]  # an ASGI app: (scope, receive, send)

MAX_REQUEST_BYTES = 1 << 20  # a request body over this is refused (see BodyLimit)


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
        text = f"request body over {self.limit:,} bytes".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(text)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": text})


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
