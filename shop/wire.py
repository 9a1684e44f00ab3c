"""Every Gradio payload the shop makes by hand, in one place, pinned to the Gradio version in requirements.txt.

The shop sends its outputs with `postprocess=False` (no Gradio processing per output), so it writes Gradio's own
wire formats itself: a picture's FileData, a gallery's value, a table's value, a component update, the file
route's URL, the page's root URL and what a gallery's select event carries; and it reaches into Gradio's session
store to drop a closed tab's session. tests/test_wire.py checks each against Gradio itself and fails loudly when
a Gradio upgrade changes any of them.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

import gradio as gr

from shop.server import PICTURE_ROUTE


def row_of_thumb(value: object) -> int | None:
    """The catalog row encoded in a gallery item's file name (r<row>-<key>.jpg), or None."""
    text = json.dumps(value) if not isinstance(value, str) else value
    match = re.search(r"[\\/]r(\d+)-[0-9a-f]+\.jpg", text or "")
    return int(match.group(1)) if match else None


def gallery_data(items: list[tuple[str, str]]) -> list[dict]:
    """A gallery's value as the page takes it (what Gradio's Gallery.postprocess makes, without its thread pool):
    each picture a FileData (its URL, or a file for Gradio to serve) with its caption."""
    return [{"image": file_data_of(src), "caption": caption} for src, caption in items]


def file_data(root: str | None, path: str | None) -> dict | None:
    """A picture file as an Image output's value (its URL when the page's root URL is known), or None."""
    return None if path is None else file_data_of(picture_url(root, path))


def file_data_of(src: str) -> dict:
    """A JPEG picture's FileData: `src` is its URL (then also the FileData's url) or a file for Gradio to serve."""
    url = src if src.startswith(("http://", "https://")) else None
    return {
        "path": src,
        "url": url,
        "size": None,
        "orig_name": src.rsplit("/", 1)[-1],
        "mime_type": "image/jpeg",
        "is_stream": False,
        "meta": {"_type": "gradio.FileData"},
    }


def table_data(headers: list[str], rows: list[list]) -> dict:
    """A Dataframe's value as the page takes it (what Gradio's Dataframe.postprocess makes of rows)."""
    return {"headers": headers, "data": rows, "metadata": None}


def update(value: object, visible: bool) -> dict:
    """An output's new value that also shows or hides its component (what gr.update(value=, visible=) makes)."""
    return {"__type__": "update", "value": value, "visible": visible}


def skip() -> dict:
    """An output left as the page shows it (what gr.skip() makes)."""
    return {"__type__": "update"}


def file_route(path: str) -> str:
    """A picture file's address relative to the page's root URL: its name under the shop's picture route
    (server.Pictures serves the thumbnail folder by name), so no URL names a path of the server."""
    return f"{PICTURE_ROUTE}{quote(os.path.basename(str(path)))}"


def picture_url(root: str | None, path: str) -> str:
    """A thumbnail's address for a gallery: its URL under the shop's picture route when the page's root URL is
    known (the gallery then sends no file through Gradio's per-event file handling), else the file itself."""
    return f"{root}/{file_route(path)}" if root else path


def page_root(request: gr.Request | None) -> str | None:
    """The page's public root URL as Gradio itself works it out (proxies' forwarded host and scheme included)."""
    raw = getattr(request, "request", None)
    if raw is None:
        return None
    try:
        from gradio import route_utils

        return route_utils.get_root_url(
            request=raw,
            route_path=route_utils.get_api_call_path(request=raw),
            root_path=getattr(raw.app, "root_path", None) or None,
        )
    except Exception:  # noqa: BLE001 - then the gallery sends files, as Gradio does by default
        return None


def clicked_row(rows: list[int], evt: gr.SelectData) -> int | None:
    """The row a click on a gallery of `rows` chose, or None when its index is out of range or its picture is not
    the one at that place (a click on a gallery the shopper no longer sees)."""
    index = evt.index if isinstance(evt.index, int) and not isinstance(evt.index, bool) else None
    if index is None or not 0 <= index < len(rows):
        return None
    clicked = row_of_thumb(evt.value)
    return rows[index] if clicked is None or clicked == rows[index] else None


def event_value(evt: gr.EventData | None, key: str) -> str | None:
    """A text an event's browser sent along (gr.HTML's `trigger(name, {key: ...})`), or None: untrusted, to be
    checked by the caller."""
    data = getattr(evt, "_data", None)
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and len(value) <= 1000 else None


def forget_session(demo: gr.Blocks, request: gr.Request) -> None:
    """A closed tab: drop its state and Gradio's record of it now.

    Gradio keeps a closed session's gr.State for an hour, and its per-session record (~150 KB) until
    `state_session_capacity` sessions push it out; the shopper's place lives on in the browser
    (gr.BrowserState), so nothing is lost by letting it go at once.
    """
    holder = getattr(demo, "state_holder", None)
    session_hash = getattr(request, "session_hash", None)
    if holder is None or session_hash is None:
        return
    holder.delete_state(session_hash)
    with holder.lock:
        holder.session_data.pop(session_hash, None)
        holder.time_last_used.pop(session_hash, None)
    queue = getattr(demo, "_queue", None)  # its per-session message queue and (empty) set of pending events
    if queue is not None and not queue.pending_event_ids_session.get(session_hash):
        queue.pending_event_ids_session.pop(session_hash, None)
        queue.pending_messages_per_session.pop(session_hash, None)
