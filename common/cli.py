"""What the project's command lines share: one-line errors, settings from environment variables, Ctrl-C.

Every CLI here fails the same way: one line `error: <cause>` on stderr and exit code 2, before any expensive
work; a setting given by an environment variable is checked like the flag it stands for (even with --help
the bad value is not what stops the run); Ctrl-C ends with one line, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: ...`, exit code 2 (the usage block is what --help is for)."""

    def error(self, message: str) -> NoReturn:
        """Print one `error:` line naming --help and exit with code 2 (a usage block hides the cause)."""
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def env(name: str, default: str | None = None) -> str | None:
    """An environment setting as text, '' counting as unset; converted and checked by the flag's `type`."""
    value = os.environ.get(name, "")
    return value if value.strip() != "" else default


def env_flag(name: str) -> bool:
    """A yes/no environment setting (1, true, yes, on)."""
    return (env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def whole_number(low: int, high: int | None = None, env_name: str | None = None) -> Callable[[str], int]:
    """An argparse `type`: an int in [low, high], with an error that names the environment variable too."""

    def convert(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
            where = f" (from the flag or the environment variable {env_name})" if env_name else ""
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {span}{where}")
        return value

    convert.__name__ = "whole number"
    return convert


def env_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    about: str,
    default: str | None = None,
    *,
    span: tuple[int, int | None] | None = None,
    shown: str | None = None,
    **kwargs: object,
) -> argparse.Action:
    """Declare `flag` backed by its environment variable (--per-round: PER_ROUND), else `default`.

    The help is `about` plus "(env NAME, default X)", X being `shown` or else `default`; `span` (low, high) makes
    it a whole number in that range whose error names the variable too; a `store_true` flag reads 1/true/yes/on.
    """
    name = flag.lstrip("-").replace("-", "_").upper()
    value = env_flag(name) if kwargs.get("action") == "store_true" else env(name, default)
    if span is not None:
        kwargs["type"] = whole_number(*span, name)
    shown = default if shown is None else shown
    note = f"env {name}, default {shown}" if shown else f"env {name}"
    return parser.add_argument(flag, default=value, help=f"{about} ({note})", **kwargs)


def one_of(choices: tuple[str, ...], env_name: str) -> Callable[[str], str]:
    """An argparse type: the value when it is one of `choices` (checked for the environment variable's too)."""

    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)} (or env {env_name}), got {text!r}")
        return text

    return check


def add_runtime_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, whose: str) -> None:
    """--runtime (env RUNTIME) and --precision (env PRECISION): how `whose` vision model runs (see embed.py)."""
    from common.onnxrt import PRECISIONS, RUNTIMES

    runtime = f"what runs {whose} model: auto = ONNX Runtime where its vectors agree with torch's, else torch"
    env_option(parser, "--runtime", runtime, "auto", type=one_of(RUNTIMES, "RUNTIME"), metavar="|".join(RUNTIMES))
    precision = f"{whose} vectors: int8 is faster, refused where they stray from float32's (cosine < 0.995)"
    metavar = "|".join(PRECISIONS)
    env_option(parser, "--precision", precision, "float32", type=one_of(PRECISIONS, "PRECISION"), metavar=metavar)


def folder_problem(path: str | os.PathLike, what: str) -> str | None:
    """Why `path` cannot be a folder to write in (a file, under a file, not writable), or None; made when missing."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        return f"{what} {folder} is a file, not a folder"
    except NotADirectoryError:
        return f"{what} {folder} is under a file, not a folder"
    except OSError as exc:
        return f"{what} {folder} is not writable: {exc.strerror or exc}"
    return None


def run(
    main: Callable[[list[str] | None], int], argv: list[str] | None = None, interrupted: str = "interrupted"
) -> int:
    """Call `main(argv)`; Ctrl-C becomes the one line `interrupted` and exit code 130.

    When worker threads are still running (a decode pool, a native thread pool in the middle of a batch), the
    process ends at once after the line: finalizing the interpreter under them can abort in native code
    ("terminate called without an active exception", exit -6). What is done is on disk already; the rest is
    what a resumed run does again."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        if threading.active_count() > 1 and threading.current_thread() is threading.main_thread():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
