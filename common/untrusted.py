"""Checks for values that come from outside: a browser's saved state, a request, a dataset's paths.

Every such value is checked for type, range and size before anything changes; a failed check is a ValueError
that says what is wrong. `True` is not a number here (Python counts a bool as an int), text is made valid
Unicode (a lone surrogate, which a browser can send, would break every later JSON response of the session),
and a path from a dataset must name a regular file inside the dataset's folder. No UI imports here.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

MAX_IMAGE_BYTES = 64 << 20  # a product picture larger than this on disk is not read (a catalog is not a dump)


def whole(value: object, low: int, high: int, what: str) -> int:
    """`value` as an int in [low, high]: a real int (not a bool, a float or a string), else a ValueError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        shown = value if abs(value) < 10**12 else "a huge number"
        raise ValueError(f"{what} has {shown}, outside [{low}, {high}]")
    return value


def whole_list(values: object, low: int, high: int, what: str, max_len: int) -> list[int]:
    """`values` as a list of at most `max_len` ints, each in [low, high] (see `whole`)."""
    if not isinstance(values, list):
        raise ValueError(f"{what} must be a list, got {type(values).__name__}")
    if len(values) > max_len:
        raise ValueError(f"{what} has {len(values)} entries, more than {max_len}")
    return [whole(v, low, high, what) for v in values]


def clean_text(value: object, max_chars: int | None = None) -> str:
    """`value` as valid Unicode text (lone surrogates become U+FFFD), cut to `max_chars`; non-text gives ''."""
    if not isinstance(value, str):
        return ""
    if max_chars is not None:
        value = value[:max_chars]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


# ------------------------------------------------------------------------------------------ dataset paths
class UnsafePath(ValueError):
    """A path from a dataset that must not be opened: outside its folder, not a regular file, or too large."""


def inside(base: str | os.PathLike, name: str | os.PathLike) -> Path:
    """`name` resolved (symlinks followed) against `base`, if it stays inside `base`; else UnsafePath.

    Absolute paths, `..` that climb out, and symlinks that point out are all refused, whatever they point at.
    """
    root = _real(os.fspath(base))
    text = os.fspath(name)
    if not text or "\x00" in text:
        raise UnsafePath("an empty path, or one with a NUL byte")
    if os.path.isabs(text):
        raise UnsafePath(f"{text!r} is an absolute path; a dataset's paths are relative to its folder")
    resolved = os.path.realpath(os.path.join(root, text))
    if not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise UnsafePath(f"{text!r} leads outside the dataset's folder")
    return Path(resolved)


@functools.lru_cache(maxsize=64)
def _real(base: str) -> str:
    """The real path of a dataset's folder (resolved once: it is where a catalog's pictures are looked up)."""
    return os.path.realpath(base)


def read_regular_file(path: Path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`; never blocks on a FIFO or a device."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UnsafePath(f"cannot read {path.name!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(f"{path.name!r} is not a regular file")
    if info.st_size > max_bytes:
        raise UnsafePath(f"{path.name!r} has {info.st_size:,} bytes, more than {max_bytes:,}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        opened = os.fstat(fd)  # what was opened, not what the name pointed at a moment ago
        if not stat.S_ISREG(opened.st_mode) or opened.st_size > max_bytes:
            raise UnsafePath(f"{path.name!r} changed into something else while being opened")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnsafePath(f"{path.name!r} grew past {max_bytes:,} bytes while being read")
    return data


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(size, modification time in ns, inode) of `path`: changes when the file is rewritten or replaced."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns, info.st_ino


def safe_url(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL with a host, else None (javascript:, data:, relative...)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c in text for c in "\r\n\t "):
        return None
    return text


def price_value(value: object) -> float | None:
    """A price as a float ("19.90", "$1,299.00", "19,90 €", 19.9); None when empty; a ValueError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(f"price {value!r} is not a number")
    text = str(value).strip().strip("$€£¥ ").replace(" ", "")
    text = text.replace(",", "") if "," in text and "." in text else text.replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"price {str(value)[:40]!r} is not a number") from None
    if not 0 <= number < float("inf"):
        raise ValueError(f"price {str(value)[:40]!r} is not a price")
    return number


def display_name(name: str | os.PathLike) -> str:
    """Valid UTF-8 text for any file name: bytes that are not UTF-8 appear as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
