"""Small helpers the tests share: shoppers in threads, and a session played to its end."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_threads(fn: Callable[[int], object], n: int) -> list[BaseException]:
    """Run fn(0) .. fn(n - 1) in n threads at once; returns what they raised (nothing: an empty list)."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            fn(k)
        except Exception as exc:  # noqa: BLE001 - handed back to the test, which asserts there is none
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def play_to_end(session, pick: Callable[[list[int]], int] = lambda shown: shown[0]) -> list[int]:
    """Every product a recommender session shows, round after round, clicking `pick(shown)`, until none is left."""
    shown = session.next_round()
    seen = list(shown)
    while shown:
        shown = session.next_round(pick=pick(shown))
        seen += shown
    return seen
