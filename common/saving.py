"""Saving datasets under a folder (`upload_ds.py --out`) without harming anything that is already there.

    with out_lock(out, names):                        # one run at a time per folder and name; a second says who
        check_out_dir(out, names, overwrite, adopt)   # fails before any work: a file, not writable, not ours
        save_together([(ds1, out / "my-shop", None), (ds2, out / "my-shop-embeddings", card)])

Only a folder that is recognisably a dataset this project wrote (save_to_disk's files and our mark in its
info) is ever replaced; a dataset from before the mark only when the owner says it is theirs (`adopt`);
everything else under `--out` is left as it is. The lock covers every name of a run, so two runs whose names
overlap (`x` writes `x-embeddings`, and so does a run named `x-embeddings`) cannot both write.

The datasets of one run are replaced together or not at all: each is written beside its destination, then all
are swapped in; a failure on the way (a full disk) swaps back what was swapped and removes what was half
written. A server that has the old Arrow files memory-mapped keeps reading them (unlinked, never truncated).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import folder_problem
from common.untrusted import display_name

if TYPE_CHECKING:
    import datasets

MARK = "product-recommender"  # recorded as `written_by` in the info of every dataset this project saves
SAVED_FILES = re.compile(r"state\.json|dataset_info\.json|README\.md|data-\d{5}-of-\d{5}\.arrow")


def written_by_us(path: Path, adopt: bool = False) -> bool:
    """Whether `path` is a dataset folder this project saved: only save_to_disk's files (and our card), and our
    mark in its info; with `adopt`, any such dataset folder (one saved before the mark, which the owner claims).
    Columns or a description that merely mention upload_ds.py are not a mark: another tool can write those."""
    if path.is_symlink() or not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    if not {"state.json", "dataset_info.json"} <= names or not all(SAVED_FILES.fullmatch(n) for n in names):
        return False
    try:
        info = json.loads((path / "dataset_info.json").read_text())
        meta = json.loads(info.get("description") or "{}")
    except (OSError, ValueError, AttributeError):
        return False
    return adopt or (isinstance(meta, dict) and meta.get("written_by") == MARK)


def check_out_dir(out: Path, names: list[str], overwrite: bool, adopt: bool = False) -> None:
    """Fail now, not after embedding, when `out` cannot take the datasets `names` (ValueError, one line)."""
    problem = folder_problem(out, "--out")
    if problem:
        raise ValueError(problem)
    present = [n for n in names if os.path.lexists(out / n)]
    if present and not overwrite:
        raise ValueError(
            f"{', '.join(display_name(out / n) for n in present)} already exist"
            f"{'s' * (len(present) == 1)}; pass --overwrite to replace, or choose another --out/--repo"
        )
    for n in present:
        if not written_by_us(out / n, adopt):
            adoptable = written_by_us(out / n, adopt=True)
            raise ValueError(
                f"{display_name(out / n)} is not a dataset that upload_ds.py wrote (it lacks our mark), and "
                "--overwrite replaces only those; move it away, or choose another --out/--repo"
                + ("; if an older upload_ds.py wrote it, add --adopt" if adoptable else "")
            )


@contextmanager
def out_lock(out: Path, names: str | list[str]) -> Iterator[None]:
    """Hold the locks on datasets `names` under `out` for the block, all or none: a second run that wants any of
    them gets a ValueError naming the holder. Each lock is a file's flock, so a crashed run holds nothing; the
    files are removed on release."""
    problem = folder_problem(out, "--out")
    if problem:
        raise ValueError(problem)
    held: list[tuple[Path, int]] = []
    try:
        for name in [names] if isinstance(names, str) else names:
            held.append((out / f".{name}.lock", _lock(out, name)))
        yield
    finally:
        for path, fd in reversed(held):
            os.unlink(path)
            os.close(fd)


def _lock(out: Path, name: str) -> int:
    """The open, flocked lock file of dataset `name` under `out` (recording who holds it); ValueError when held."""
    path = out / f".{name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ValueError(
                f"another upload_ds.py run ({holder}) is writing {name} under {display_name(out)}; "
                "wait for it to finish, or choose another --out/--repo"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not a file the last holder removed meanwhile
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}".encode())
    return fd


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap(a: Path, b: Path) -> None:
    """Exchange what is at `a` and `b` (one of them may be missing): atomic where Linux allows it, else three
    renames (a moment without `b`, never a half-written `b`)."""
    if not os.path.lexists(b):
        os.replace(a, b)
    elif not os.path.lexists(a):
        os.replace(b, a)
    elif not _exchange(a, b):
        parked = a.with_name(a.name + ".swap")
        os.replace(b, parked)
        os.replace(a, b)
        os.replace(parked, a)


def save_together(items: list[tuple[datasets.Dataset, Path, str | None]], adopt: bool = False) -> None:
    """`save_to_disk` each (dataset, destination, card or None), replacing what is there: all or none of them.

    Each is written to a folder beside its destination; then all are swapped in. On any failure, the ones
    swapped already are swapped back, so the old datasets stay; the new files are removed either way, and after
    success the old ones are (unlinked: a server reading them keeps its open files).
    """
    beside: list[Path] = []
    try:
        for ds, dest, card in items:
            beside.append(Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent)))
            ds.info.description = _marked(ds.info.description)
            ds.save_to_disk(str(beside[-1]))
            if card is not None:
                (beside[-1] / "README.md").write_text(card)
        for _, dest, _ in items:  # checked again under the lock: something else may have appeared there since
            if os.path.lexists(dest) and not written_by_us(dest, adopt):
                raise ValueError(f"{display_name(dest)} is not a dataset that upload_ds.py wrote; not replaced")
        swapped: list[tuple[Path, Path]] = []
        try:
            for tmp, (_, dest, _) in zip(beside, items):
                _swap(tmp, dest)
                swapped.append((tmp, dest))
        except OSError:
            for tmp, dest in reversed(swapped):
                _swap(tmp, dest)
            raise
    finally:
        for tmp in beside:  # the old datasets after the swap, or the new ones after a failure
            shutil.rmtree(tmp, ignore_errors=True)


def save_replacing(ds: datasets.Dataset, dest: Path, card: str | None = None) -> None:
    """`save_to_disk` to `dest`, atomically replacing what is there (see `save_together`)."""
    save_together([(ds, dest, card)])


def _marked(description: str | None) -> str:
    """A dataset description (JSON) with our mark in it, so a later --overwrite knows the dataset is ours."""
    try:
        meta = json.loads(description or "{}")
    except ValueError:
        meta = {"description": description}
    if not isinstance(meta, dict):
        meta = {"description": meta}
    return json.dumps({**meta, "written_by": MARK})
