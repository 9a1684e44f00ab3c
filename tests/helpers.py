"""Small helpers the tests share: shoppers in threads, and a session played to its end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from recommender import Session


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


def play_to_end(session: Session, pick: Callable[[list[int]], int] = lambda shown: shown[0]) -> list[int]:
    """Every product a recommender session shows, round after round, clicking `pick(shown)`, until every product
    has been shown once (the next round would show them again)."""
    shown = session.next_round()
    seen = list(shown)
    while not session.exhausted:
        shown = session.next_round(pick=pick(shown))
        seen += shown
    return seen


class Ran:
    """What a command line gave back: its exit code and what it printed (like subprocess.CompletedProcess)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_in_process(
    module: str, argv: list, env: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Ran:
    """`python MODULE.py ARGV` with `env` set, run in this process (no interpreter start, no imports again): the
    same `main`, the same one-line errors and exit codes. Each CLI keeps a test through a real subprocess too."""
    import importlib

    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    capsys.readouterr()
    try:
        code = importlib.import_module(module).main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def caption_parts(caption: str) -> tuple[str, str]:
    """A tile's caption as (title line, price line): the title line with its mark, if any ("★ Lamp"), the price
    line "" when the product has no price; a last "↺ seen before" line is left out (see `seen_before`). Compare
    prices with catalog.price_text(...), never a written-out format."""
    lines = caption.split("\n")
    return lines[0], next((line for line in lines[1:] if not line.startswith("↺")), "")


def seen_before(caption: str) -> bool:
    """Whether a tile's caption says its product was shown in an earlier pass."""
    return caption.split("\n")[-1].startswith("↺ seen before")


def wait_for(predicate: Callable[[], object], timeout: float = 15.0):
    """`predicate()`'s first truthy result, asked every 0.1 s (what a background writer wrote, say); an
    AssertionError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("timed out waiting")
