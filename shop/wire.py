"""Every Gradio payload the shop makes by hand, in one place, pinned to the Gradio version in requirements.txt.

The shop sends its outputs with `postprocess=False` (no Gradio processing per output), so it writes Gradio's own
wire formats itself: a picture's FileData, a gallery's value, a table's value, a component update, the file
route's URL, the page's root URL and what a gallery's select event carries; and it reaches into Gradio's session
store to drop a closed tab's session and to keep none for a call that came without one (`keep_no_sessions_for_calls`).
tests/test_wire.py checks each against Gradio itself and fails loudly when
a Gradio upgrade changes any of them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
from urllib.parse import quote

import gradio as gr
from gradio.state_holder import SessionState, StateHolder

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
    queue = getattr(demo, "_queue", None)
    if queue is not None and not queue.pending_event_ids_session.get(session_hash):
        drop_messages(queue, session_hash)


def drop_messages(queue, session_hash: str) -> None:
    """Drop Gradio's per-session message queue and set of pending events of `session_hash`."""
    queue.pending_event_ids_session.pop(session_hash, None)
    queue.pending_messages_per_session.pop(session_hash, None)


CALL_RESULT_KEEP_S = 600.0  # a session-less call's undelivered result is dropped after this (the caller never read it)
STATE_TTL_WHEN_CLOSED = 3600  # what Gradio's SessionState sets (gradio/state_holder.py)


class CallStateHolder(StateHolder):
    """Gradio's session store, keeping nothing for a call that came without a session of its own.

    Gradio 6.31 gives a call with no session hash (plain HTTP to /gradio_api/call/<name>, as curl makes it) a session
    named after the call's event id, builds it from every block's config (1.6 ms for the shop's page on 2 cores), and
    keeps it, with a message queue, until --max-sessions of them push the shoppers' own sessions out: 56 KB and a
    shopper's state per API call. Here such a call gets a bare session for the call alone (no block configs: Gradio
    makes one on demand if an event writes to it), never stored, and its message queue goes once its result is read
    (or after CALL_RESULT_KEEP_S unread). Sessions with a hash (pages, gradio_client, @gradio/client) are untouched.
    """

    calls: dict[str, float]  # hashes of session-less calls whose message queues are still there -> since when
    swept: float  # when `sweep` last ran (time.monotonic)
    sweeping: threading.Lock

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data and self.sessionless(session_id):
            with self.lock:
                self.calls.setdefault(session_id, time.monotonic())
            self.sweep()
            return bare_session(self.blocks)
        return super().__getitem__(session_id)

    def sessionless(self, session_id: str) -> bool:
        """Whether `session_id` names a call that came with no session: Gradio then names it after the call's own
        event id (an unguessable id it made, so no caller can claim another's)."""
        queue = getattr(self.blocks, "_queue", None)
        event = queue.event_ids_to_events.get(session_id) if queue is not None else None
        return event is not None and event._id == session_id == event.session_hash

    def sweep(self, now: float | None = None) -> None:
        """Drop the message queues of session-less calls whose result was read, or is older than CALL_RESULT_KEEP_S,
        at most once a second."""
        now = time.monotonic() if now is None else now
        if now - self.swept < 1.0 or not self.sweeping.acquire(blocking=False):
            return
        try:
            self.swept = now
            queue = self.blocks._queue
            with self.lock:
                hashes = list(self.calls.items())
            for session_id, since in hashes:
                pending = queue.pending_event_ids_session.get(session_id)
                if session_id in queue.event_ids_to_events or (pending and now - since < CALL_RESULT_KEEP_S):
                    continue  # running, or its result not read yet
                drop_messages(queue, session_id)
                with self.lock:
                    self.calls.pop(session_id, None)
        finally:
            self.sweeping.release()


def bare_session(blocks: gr.Blocks) -> SessionState:
    """A SessionState as Gradio makes one, but without a config of every block (made on demand, see SessionState.
    _update_value_in_config; only deep links read them all, and a call has none)."""
    state = SessionState.__new__(SessionState)
    state.blocks_config = copy.copy(blocks.default_config)
    state.config_values = {}
    state.state_data, state._state_ttl, state.is_closed = {}, {}, False
    state.STATE_TTL_WHEN_CLOSED = STATE_TTL_WHEN_CLOSED
    return state


def keep_no_sessions_for_calls(demo: gr.Blocks) -> None:
    """Make the launched app's session store a CallStateHolder (see there)."""
    holder = demo.state_holder
    holder.__class__ = CallStateHolder
    holder.calls, holder.swept, holder.sweeping = {}, 0.0, threading.Lock()
