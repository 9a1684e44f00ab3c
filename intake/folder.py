"""Reading a shop's image folder: discovery, product ids, full-decode checks and the skip report.

Shared by both engines of upload_ds.py (this process, and ray_embed.py on Ray), so neither imports the other.
File names may hold any bytes (non-UTF-8 names arrive as str with surrogate escapes): they are read as they
are, and shown, stored and hashed through `display_name` / `os.fsencode`, so one odd name never stops a run.
Symlinked folders are followed once; a link back into the folder or into itself is reported, not walked.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.images import to_rgb
from common.untrusted import display_name

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".avif", ".heic"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (~ 9459 x 9459)


@dataclass
class FolderScan:
    """Result of reading a folder: the images to keep (id, path) and the files skipped, each with its reason."""

    root: Path
    images: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (name, what is worth knowing): product kept
    downloads: str = ""  # one line on the images fetched from URLs, if any
    opening: str = ""  # a product table's first line: "565 rows -> 84 products (481 variant and image rows folded)"

    def report(self) -> str:
        """The table's opening line, a count line, and one line per skipped file or folder and per note."""
        lines = [self.opening] if self.opening else []
        lines += [f"{len(self.images)} images kept, {len(self.skipped)} skipped"]
        lines += [f"  skipped {display_name(name)}: {reason}" for name, reason in self.skipped]
        lines += [f"  note {display_name(name)}: {text}" for name, text in self.notes]
        return "\n".join(lines)


def relative_name(root: Path, path: str | os.PathLike) -> str:
    """`path` relative to `root`, with / between folders: how the report names a file."""
    return Path(path).relative_to(root).as_posix()


def walk_folder(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under `root` (recursively, by extension, any case) in sorted order, and folders not walked.

    Symlinked folders are followed, except one whose target lies inside `root` (its images are already found
    under their own path) or that leads back to a folder being walked (a loop); each of those, and any folder
    that cannot be listed, is returned with its reason so the report can show it.
    """
    root_real = os.path.realpath(root)
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []

    def unreadable(exc: OSError) -> None:
        skipped.append((relative_name(root, exc.filename), f"folder unreadable: {exc.strerror or exc}"))

    walked = {root_real}  # real paths of the folders walked or about to be, so no folder is walked twice
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        here = os.path.realpath(dirpath)
        walked.add(here)
        keep = []
        for name in sorted(dirnames):
            sub = os.path.join(dirpath, name)
            target = os.path.realpath(sub)
            if os.path.islink(sub):
                loop = (
                    here == target
                    or (here + os.sep).startswith(target + os.sep)
                    or root_real.startswith(target + os.sep)
                )
                if not loop and target.startswith(root_real + os.sep):
                    skipped.append(
                        (
                            relative_name(root, sub),
                            "symlinked folder points inside the image folder; its "
                            "images are included once, under their own path",
                        )
                    )
                    continue
                if loop or target in walked:
                    skipped.append((relative_name(root, sub), "symlinked folder loops back to a folder already walked"))
                    continue
            elif target in walked:  # a real folder reached again through a link above it
                continue
            walked.add(target)
            keep.append(name)
        dirnames[:] = keep
        files += [
            Path(dirpath, f)
            for f in filenames
            if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not os.path.isdir(os.path.join(dirpath, f))
        ]
    files.sort(key=lambda p: relative_name(root, p))
    skipped.sort()
    return files, skipped


def check_image(src: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why a file (path or its bytes) cannot be used as a product image, or None when it decodes fully to RGB."""
    try:
        if (len(src) if isinstance(src, bytes) else os.stat(src).st_size) == 0:
            return "zero-byte file"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
                w, h = img.size
                if w * h > max_pixels:
                    return f"decompression-bomb size: {w}x{h} = {w * h:,} pixels > limit {max_pixels:,}"
                img.load()
                to_rgb(img)
    except UnidentifiedImageError:
        return "not an image (unrecognised format)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"decompression-bomb size: {exc}"
    except PermissionError:
        return "unreadable: permission denied"
    except FileNotFoundError:
        return "unreadable: the file is gone (or a broken symlink)"
    except OSError as exc:
        text = display_name(str(exc))
        if "truncated" in text or "broken data stream" in text or "end of file" in text.lower():
            return f"truncated: {text}"
        return f"unreadable: {text}"
    except Exception as exc:  # a codec bug on a strange file must not stop the whole folder
        return f"unreadable: {type(exc).__name__}: {display_name(str(exc))}"
    return None


def make_ids(root: Path, files: list[Path]) -> list[str]:
    """id = path relative to root without extension; files that would share an id keep their extension.

    Ids are valid UTF-8 (see `display_name`); should two still collide, later ones get a ~2, ~3... suffix.
    """
    stems = [display_name(p.relative_to(root).with_suffix("").as_posix()) for p in files]
    counts = Counter(stems)
    ids = [s if counts[s] == 1 else display_name(relative_name(root, p)) for s, p in zip(stems, files)]
    taken: Counter[str] = Counter()
    out = []
    for ident in ids:
        taken[ident] += 1
        out.append(ident if taken[ident] == 1 else f"{ident}~{taken[ident]}")
    return out


def list_folder(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The folder's image files and skipped folders, or a clear error for a missing folder, a file, or no images."""
    if not root.exists():
        raise FileNotFoundError(f"image folder {display_name(root)} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{display_name(root)} is not a folder")
    files, skipped = walk_folder(root)
    if not files:
        extra = "\n" + FolderScan(root, skipped=skipped).report() if skipped else ""
        raise ValueError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {display_name(root)}{extra}"
        )
    return files, skipped


def check_files(
    items: list[tuple[str, Path, str]], scan: FolderScan, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True
) -> None:
    """Fully decode each (id, file, name in the report) in parallel: good ones go to `scan.images` in order, the
    others to `scan.skipped` with their reason."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        reasons = pool.map(lambda item: check_image(item[1], max_pixels), items)
        for (id_, path, name), reason in tqdm(
            zip(items, reasons), total=len(items), desc="reading", unit="img", disable=not progress
        ):
            if reason is None:
                scan.images.append((id_, Path(path)))
            else:
                scan.skipped.append((name, reason))


def image_rows(files: list[tuple[str, str]]) -> Iterator[dict]:
    """Rows for Dataset.from_generator: one per product, the image's original file bytes inside."""
    for id_, path in files:
        yield {"image": {"bytes": Path(path).read_bytes(), "path": display_name(Path(path).name)}, "id": id_}


def files_key(rows: list[tuple[str, str]], salt: str = "") -> str:
    """A hash of (id, source) rows with each local file's size and mtime, so a changed file changes the key."""
    h = hashlib.sha256(salt.encode())
    for id_, src in rows:
        st = os.stat(src) if os.path.exists(src) else None  # URLs have no local stamp
        h.update(
            id_.encode() + b"\x00" + os.fsencode(src) + f"\x00{st and st.st_size}\x00{st and st.st_mtime_ns}\n".encode()
        )
    return h.hexdigest()
