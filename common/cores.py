"""The CPU cores this process may use, and how many threads OpenBLAS gives a round's matrix products.

A round of `bayes` is a handful of matrix products of a few milliseconds each (the belief update, the gallery's
design). OpenBLAS splits each over every core, and between products its worker threads spin, waiting for the
next. That pays for a lone shopper's round: 10k products take 15 ms on 2 cores against 18 ms on one. On a busy
server (many shoppers: rounds running side by side, or one right after another, with the server's own HTTP work
between) the other cores already have work, and the spinning takes CPU from it (20 shoppers on 10k products:
58 ms of server CPU a `bayes` round with 2 threads always, 40-44 ms as set here; docs/benchmarks.md).
So the engine brackets every round with `ROUND_THREADS.running()`: a round gets every usable core when the server
is quiet (no other round running, none ended in the last QUIET_S), else one thread. An owner's own
OPENBLAS_NUM_THREADS is left as set.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_S = 0.3  # a round this soon after another ended runs on one thread: a shopper looks at a gallery for longer


def usable_cores() -> int:
    """How many CPU cores this process may run on (its affinity mask: a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def openblas_setters() -> list:
    """`openblas_set_num_threads` of each pthreads OpenBLAS loaded (numpy's), found through threadpoolctl and called
    directly: threadpoolctl's own setter obeys only the first thread that called it, and a round runs on whichever
    server thread takes it. Setting a pthreads build's count is one assignment, safe beside a running call; an
    OpenMP build (FAISS's) frees per-thread buffers on a change, and is left alone (a round does not call it)."""
    from threadpoolctl import threadpool_info

    setters = []
    for lib in threadpool_info():
        if lib.get("internal_api") != "openblas" or lib.get("threading_layer") != "pthreads":
            continue
        dll = ctypes.CDLL(lib["filepath"])
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            setter = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
            if setter is not None:
                setters.append(setter)
                break
    return setters


class RoundThreads:
    """Counts the rounds running in this process (OpenBLAS's threads are the process's, shared by every
    recommender in it) and gives each round that starts `cores` threads when the server is quiet, else one."""

    def __init__(self, cores: int | None = None, adapt: bool | None = None, quiet_s: float = QUIET_S) -> None:
        self.cores = cores or usable_cores()
        self.adapt = "OPENBLAS_NUM_THREADS" not in os.environ if adapt is None else adapt
        self.quiet_s = quiet_s
        self.running_now = 0
        self.last_end = -float("inf")  # time.monotonic() when the last round ended
        self.threads: int | None = None  # as last set (None: as OpenBLAS started)
        self._lock = threading.Lock()
        self._blas: list | None = None  # openblas_set_num_threads of each OpenBLAS it sets

    def _set(self, threads: int) -> None:
        if self._blas is None:
            self._blas = openblas_setters()
        for set_threads in self._blas:
            set_threads(threads)
        self.threads = threads

    @contextmanager
    def running(self) -> Iterator[None]:
        """Bracket one round: counted in, OpenBLAS set for it (every core on a quiet server, else one), out."""
        with self._lock:
            self.running_now += 1
            quiet = self.running_now == 1 and time.monotonic() - self.last_end >= self.quiet_s
            want = self.cores if quiet else 1
            if self.adapt and want != self.threads:
                self._set(want)
        try:
            yield
        finally:
            with self._lock:
                self.running_now -= 1
                self.last_end = time.monotonic()


ROUND_THREADS = RoundThreads()
